//! The planner every producer uses between "this message, these recipients" and the engine:
//! Pinpoint's delivery rules for a recipient ([`rules`]), the outcome record a message starts
//! with ([`Planner::outcome`]), and rendering it into a job ([`Planner::job`]) or the refusal
//! that is recorded instead. SendMessages, SendUsersMessages and campaign runs go through it;
//! what differs between them is only who the recipients are and when they go.

use std::collections::HashMap;

use super::compose::{Composer, Origin, Overrides};
use crate::channels::Lane;
use crate::dispatch::engine::{Job, Reply};
use crate::domain::{self, endpoint as endpoint_rules};
use crate::outcomes::{event_for, event_prefix};
use crate::proto::v1::{ChannelType, DeliveryStatus, Endpoint, EndpointStatus, Event, MessageOutcome, MessageSource, OptOut};

/// Why a recipient gets no message: the delivery status it ends with and a sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: DeliveryStatus,
    pub reason: String,
}

impl Refusal {
    fn new(status: DeliveryStatus, reason: impl Into<String>) -> Self {
        Self { status, reason: reason.into() }
    }
}

/// What the rules know of one recipient.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The endpoint id asked for, when the recipient was named by endpoint.
    pub endpoint_id: Option<&'a str>,
    /// The stored endpoint (`None` for a bare address, or an endpoint id that does not exist).
    pub endpoint: Option<&'a Endpoint>,
    pub channel: ChannelType,
    pub address: &'a str,
    /// The address is on the app's suppression list.
    pub suppressed: bool,
    /// The same channel and address came earlier in this request.
    pub duplicate: bool,
}

/// Pinpoint's delivery rules, in its order, before anything is rendered: an unknown or
/// INACTIVE endpoint, an opt-out, a channel Herald cannot deliver to, an invalid address, a
/// suppressed address, a duplicate. The lane the message goes on, or why it does not go.
pub fn rules(f: Facts<'_>) -> Result<Lane, Refusal> {
    let lane = endpoint(f)?;
    if let Err(why) = endpoint_rules::validate_address(f.channel, f.address) {
        return Err(Refusal::new(DeliveryStatus::PermanentFailure, format!("the address {why}")));
    }
    listed(f)?;
    Ok(lane)
}

/// The rules on the recipient's endpoint and channel: unknown, INACTIVE, opted out, or on a
/// channel Herald does not deliver to. A campaign applies these to a segment's members (whose
/// addresses were checked when they were written), then [`listed`] to those that go now.
pub fn endpoint(f: Facts<'_>) -> Result<Lane, Refusal> {
    if let (Some(id), None) = (f.endpoint_id, f.endpoint) {
        return Err(Refusal::new(DeliveryStatus::PermanentFailure, format!("endpoint {id} not found")));
    }
    if f.endpoint.is_some_and(|e| e.endpoint_status == EndpointStatus::Inactive as i32) {
        return Err(Refusal::new(DeliveryStatus::PermanentFailure, "the endpoint is INACTIVE"));
    }
    if f.endpoint.is_some_and(|e| e.opt_out == OptOut::All as i32) {
        return Err(Refusal::new(DeliveryStatus::OptOut, "the endpoint opted out"));
    }
    Lane::of(f.channel).ok_or_else(|| {
        let name = endpoint_rules::channel_name(f.channel);
        Refusal::new(DeliveryStatus::PermanentFailure, format!("no {name} channel is configured for this app"))
    })
}

/// The rules on the address's standing: on the app's suppression list, or a duplicate.
pub fn listed(f: Facts<'_>) -> Result<(), Refusal> {
    if f.suppressed {
        return Err(Refusal::new(DeliveryStatus::PermanentFailure, "the address is on the app's suppression list"));
    }
    if f.duplicate {
        return Err(Refusal::new(DeliveryStatus::Duplicate, "the same address appears earlier in this request"));
    }
    Ok(())
}

/// A message that could not be rendered: its outcome (PERMANENT_FAILURE with why) and, when
/// the template failed for this recipient, its `.rendering_failure` event.
#[derive(Debug)]
pub struct Unrendered {
    pub outcome: MessageOutcome,
    pub event: Option<Event>,
}

/// One send's shared facts: its content, where it comes from, and its ids.
pub struct Planner<'a> {
    pub composer: &'a Composer,
    pub origin: &'a Origin,
    pub source: MessageSource,
    /// The request (a call's id, or a campaign run's).
    pub request_id: &'a str,
    /// When the send was planned (created and updated dates of its outcomes).
    pub stamp: &'a str,
    pub dry_run: bool,
}

impl Planner<'_> {
    /// The outcome record a message to `address` starts with.
    pub fn outcome(&self, endpoint_id: &str, address: &str, channel: ChannelType) -> MessageOutcome {
        MessageOutcome {
            message_id: domain::new_message_id(),
            app_id: self.origin.app_id.clone(),
            source: self.source as i32,
            request_id: self.request_id.to_string(),
            campaign_id: self.origin.campaign_id.clone(),
            treatment_id: self.origin.treatment_id.map_or(0, |t| t as i32),
            endpoint_id: endpoint_id.to_string(),
            address: address.to_string(),
            channel: endpoint_rules::channel_name(channel).to_string(),
            created_date: self.stamp.to_string(),
            updated_date: self.stamp.to_string(),
            dry_run: self.dry_run,
            ..Default::default()
        }
    }

    /// A refused recipient's outcome and its `.rejected` event.
    pub fn refused(&self, mut o: MessageOutcome, r: Refusal) -> (MessageOutcome, Option<Event>) {
        o.delivery_status = r.status as i32;
        o.status_message = r.reason;
        let event = event_for(&o, format!("{}.rejected", event_prefix(&o.channel)));
        (o, Some(event))
    }

    /// Renders one message into the engine's job; when it cannot be rendered, its outcome
    /// (PERMANENT_FAILURE with why) and, if the template failed for this recipient, its
    /// `.rendering_failure` event.
    pub fn job(
        &self,
        lane: Lane,
        channel: ChannelType,
        endpoint: Option<&Endpoint>,
        subs: &HashMap<String, Vec<String>>,
        outcome: MessageOutcome,
        reply: Option<Reply>,
    ) -> Result<Job, Box<Unrendered>> {
        self.job_with(lane, channel, endpoint, subs, outcome, reply, &Overrides::default())
    }

    /// [`Planner::job`] with the recipient's own content over the rendered one.
    #[allow(clippy::too_many_arguments)]
    pub fn job_with(
        &self,
        lane: Lane,
        channel: ChannelType,
        endpoint: Option<&Endpoint>,
        subs: &HashMap<String, Vec<String>>,
        mut outcome: MessageOutcome,
        reply: Option<Reply>,
        overrides: &Overrides,
    ) -> Result<Job, Box<Unrendered>> {
        match self.composer.payload(lane, channel, endpoint, subs, self.origin, &outcome, overrides) {
            Ok(payload) => Ok(Job {
                outcome: Box::new(outcome),
                payload,
                dry_run: self.dry_run,
                first_attempt: None,
                reply,
                not_before: None,
                kept: false,
            }),
            Err(why) => {
                outcome.delivery_status = DeliveryStatus::PermanentFailure as i32;
                outcome.status_message = why.to_string();
                let event =
                    why.is_rendering().then(|| event_for(&outcome, format!("{}.rendering_failure", event_prefix(&outcome.channel))));
                Err(Box::new(Unrendered { outcome, event }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(endpoint: Option<&'a Endpoint>, address: &'a str) -> Facts<'a> {
        Facts { endpoint_id: None, endpoint, channel: ChannelType::Email, address, suppressed: false, duplicate: false }
    }

    #[test]
    fn rules_apply_in_pinpoints_order() {
        assert_eq!(rules(facts(None, "a@example.com")), Ok(Lane::Email));
        let missing = Facts { endpoint_id: Some("e9"), ..facts(None, "") };
        assert_eq!(rules(missing).unwrap_err().reason, "endpoint e9 not found");
        let inactive_and_out =
            Endpoint { endpoint_status: EndpointStatus::Inactive as i32, opt_out: OptOut::All as i32, ..Default::default() };
        assert_eq!(rules(facts(Some(&inactive_and_out), "a@example.com")).unwrap_err().reason, "the endpoint is INACTIVE");
        let out = Endpoint { opt_out: OptOut::All as i32, ..Default::default() };
        assert_eq!(rules(facts(Some(&out), "a@example.com")).unwrap_err().status, DeliveryStatus::OptOut);
        let voice = Facts { channel: ChannelType::Voice, ..facts(None, "+14155550100") };
        assert_eq!(rules(voice).unwrap_err().reason, "no VOICE channel is configured for this app");
        assert_eq!(rules(facts(None, "not an address")).unwrap_err().status, DeliveryStatus::PermanentFailure);
        let both = Facts { suppressed: true, duplicate: true, ..facts(None, "a@example.com") };
        assert_eq!(rules(both).unwrap_err().reason, "the address is on the app's suppression list");
        let dup = Facts { duplicate: true, ..facts(None, "a@example.com") };
        assert_eq!(rules(dup).unwrap_err().status, DeliveryStatus::Duplicate);
    }
}
