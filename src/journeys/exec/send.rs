//! A message activity's step: the delivery rules, the journey's sending schedule and caps,
//! the channel quotas, then rendering and handing the batch's messages to the engine and
//! walking each participant on with its message's status.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};

use super::{ceil_secs, names, walk, Batch, JourneyError, JourneyRunner, Plan, Position, SUBMIT_WAIT, THROTTLED_RETRY_SECS};
use crate::dispatch::engine::{Lane, Reply, Tally};
use crate::dispatch::reply::UNSETTLED;
use crate::domain;
use crate::journeys::{Channel, Step};
use crate::pipeline::compose::Origin;
use crate::pipeline::planner::{self, Planner};
use crate::proto::v1::journey_activity::Kind;
use crate::proto::v1::{
    ChannelType, DeliveryStatus, DirectMessageConfiguration, EmailMessage, Endpoint, MessageActivity, MessageSource, SmsMessage,
    SmsMessageType, TemplateConfiguration, TemplateReference,
};
use crate::store::Participant;

impl JourneyRunner {
    /// Sends a message activity's messages to its participants and walks them on.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn send(
        &self,
        app: &str,
        plan: &Plan,
        act: usize,
        group: Vec<(Participant, Position)>,
        batch: &mut Batch,
        next: &mut Vec<(Participant, Position)>,
        now: DateTime<Utc>,
    ) -> Result<(), JourneyError> {
        let store = self.store.as_ref();
        let journey = plan.journey.id.as_str();
        let aid = plan.graph.ids[act].clone();
        let Step::Message { channel, next: to } = plan.graph.steps[act] else { return Ok(()) };
        let Some(composer) = plan.composers.get(&act) else { return Ok(()) };
        let activity = match &plan.journey.activities[&aid].kind {
            Some(Kind::Email(m) | Kind::Sms(m) | Kind::Push(m) | Kind::Custom(m)) => m.clone(),
            _ => MessageActivity::default(),
        };
        let ids: Vec<String> = group.iter().map(|(p, _)| p.endpoint_id.clone()).collect();
        let endpoints = batch.endpoints(store, app, &ids).await?;
        // Walks on without a message, counted under `metric`.
        let pass = |batch: &mut Batch, next: &mut Vec<(Participant, Position)>, p: Participant, pos: Position, metric: &str| {
            batch.count(&aid, metric, 1);
            batch.count(&aid, names::EXIT_ACTIVITY, 1);
            walk(batch, next, p, pos, to);
        };
        let mut candidates = Vec::with_capacity(group.len());
        for ((p, pos), e) in group.into_iter().zip(endpoints) {
            let Some(e) = e else {
                pass(batch, next, p, pos, status_metric(DeliveryStatus::PermanentFailure));
                continue;
            };
            let ct = ChannelType::try_from(e.channel_type).unwrap_or_default();
            let lane = match channel {
                Channel::Custom => {
                    activity.endpoint_types.iter().any(|t| t == crate::domain::endpoint::channel_name(ct)).then_some(Lane::Custom)
                }
                Channel::Email => (ct == ChannelType::Email).then_some(Lane::Email),
                Channel::Sms => (ct == ChannelType::Sms).then_some(Lane::Sms),
                Channel::Push => Lane::of(ct).filter(|l| matches!(l, Lane::Apns | Lane::Gcm)),
            };
            let Some(lane) = lane else {
                pass(batch, next, p, pos, names::CHANNEL_MISMATCH);
                continue;
            };
            if let Err(refused) = planner::endpoint(facts(&e, ct, false)) {
                pass(batch, next, p, pos, status_metric(refused.status));
                continue;
            }
            // The sending schedule: hold until it opens, or go on without the message.
            let tz = e.demographic.as_ref().map(|d| d.timezone.as_str()).filter(|t| !t.is_empty());
            if let Some(until) = plan.sending.hold(channel, tz, now) {
                if plan.journey.wait_for_quiet_time {
                    batch.count(&aid, names::QUIET_TIME_WAIT, 1);
                    batch.stay(&p.endpoint_id, ceil_secs(until).max(now.timestamp() + 1), &pos);
                } else {
                    pass(batch, next, p, pos, names::QUIET_TIME);
                }
                continue;
            }
            candidates.push((p, pos, e, lane, ct));
        }
        if candidates.is_empty() {
            return Ok(());
        }
        // A message recorded for this activity and entry before a crash is not sent again.
        let mut recorded: HashMap<String, i32> = HashMap::new();
        let mut by_entry: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        for (p, ..) in &candidates {
            by_entry.entry(p.entries).or_default().push(p.endpoint_id.clone());
        }
        for (entries, ids) in &by_entry {
            let request = request_id(journey, &aid, *entries);
            for (id, status) in ids.iter().zip(store.run_outcomes(app, &request, ids, None).await?) {
                if let Some(s) = status {
                    recorded.insert(id.clone(), s);
                }
            }
        }
        let mut resent_ids: HashMap<String, String> = HashMap::new();
        if !recorded.is_empty() && plan.graph.asked[act] {
            for entries in by_entry.keys() {
                let request = crate::store::OutcomeIndex::Request(request_id(journey, &aid, *entries));
                let mut offset = 0;
                loop {
                    let page = store.list_outcomes(app, &request, offset, 1_000).await?;
                    offset += page.len();
                    for o in &page {
                        resent_ids.insert(o.endpoint_id.clone(), o.message_id.clone());
                    }
                    if page.len() < 1_000 {
                        break;
                    }
                }
            }
        }
        let mut go = Vec::with_capacity(candidates.len());
        for (p, mut pos, e, lane, ct) in candidates {
            if let Some(s) = recorded.get(&p.endpoint_id) {
                if plan.graph.asked[act] {
                    if let Some(m) = resent_ids.get(&p.endpoint_id) {
                        pos.messages.push((act, m.clone()));
                    }
                }
                pass(batch, next, p, pos, status_metric(DeliveryStatus::try_from(*s).unwrap_or(DeliveryStatus::UnknownFailure)));
                continue;
            }
            go.push((p, pos, e, lane, ct));
        }
        // Suppressed addresses, then the journey's caps.
        let addresses: Vec<String> = go.iter().map(|(_, _, e, ..)| crate::api::suppressions::normalize(&e.address)).collect();
        let suppressed = if go.is_empty() { Vec::new() } else { store.get_suppressions(app, &addresses).await? };
        let mut kept = Vec::with_capacity(go.len());
        for (item, s) in go.into_iter().zip(suppressed) {
            match planner::listed(facts(&item.2, item.4, s.is_some())) {
                Err(refused) => pass(batch, next, item.0, item.1, status_metric(refused.status)),
                Ok(()) => kept.push(item),
            }
        }
        let mut go = kept;
        for (scope, recent, total, metric) in [
            (format!("journey:{journey}"), plan.daily.map(|d| (d, 86_400)), plan.total, None),
            (format!("journey-timeframe:{journey}"), plan.timeframe, None, Some(names::TIMEFRAME_CAP)),
        ] {
            if go.is_empty() || (recent.is_none() && total.is_none()) {
                continue;
            }
            let ids: Vec<String> = go.iter().map(|(p, ..)| p.endpoint_id.clone()).collect();
            let ok = store.take_endpoint_caps(app, &scope, &ids, recent, total, now.timestamp()).await?;
            let mut kept = Vec::with_capacity(go.len());
            for (item, ok) in go.into_iter().zip(ok) {
                if ok {
                    kept.push(item);
                } else {
                    let m = metric.unwrap_or(names::DAILY_CAP);
                    pass(batch, next, item.0, item.1, m);
                }
            }
            go = kept;
        }
        // The channel quotas: what they refuse now tries again in a minute.
        for lane in Lane::ALL {
            let n = go.iter().filter(|(.., l, _)| *l == lane).count() as u64;
            if n == 0 {
                continue;
            }
            let granted = self.engine.admit(app, lane.quota_channel(), n).await?;
            if granted < n {
                let mut seen = 0;
                let mut kept = Vec::with_capacity(go.len());
                for item in go {
                    if item.3 == lane {
                        seen += 1;
                        if seen > granted {
                            batch.count(&aid, names::THROTTLED, 1);
                            batch.stay(&item.0.endpoint_id, now.timestamp() + THROTTLED_RETRY_SECS, &item.1);
                            continue;
                        }
                    }
                    kept.push(item);
                }
                go = kept;
            }
        }
        if go.is_empty() {
            return Ok(());
        }
        let stamp = domain::timestamp(now);
        let origin = Origin { app_id: app.to_string(), scheduled_time: stamp.clone(), activity_id: aid.clone(), ..Default::default() };
        let tally = Tally::new();
        // Every job made holds a slot of the tally, numbered by `k`; a slot dropped without an
        // outcome (unrendered, or handed back by a stopping engine) reports UNSETTLED.
        let mut slots: Vec<Option<(Participant, Position)>> = Vec::with_capacity(go.len());
        for (p, mut pos, e, lane, ct) in go {
            if self.stopping() {
                // Not handed out: these participants stay where they are.
                break;
            }
            plan.gate.take().await;
            let k = slots.len();
            let request = request_id(journey, &aid, p.entries);
            let planner =
                Planner { composer, origin: &origin, source: MessageSource::Journey, request_id: &request, stamp: &stamp, dry_run: false };
            let address = if channel == Channel::Custom { activity.delivery_uri.clone() } else { e.address.clone() };
            let mut outcome = planner.outcome(&e.id, &address, if channel == Channel::Custom { ChannelType::Custom } else { ct });
            outcome.journey_id = journey.to_string();
            outcome.journey_activity_id = aid.clone();
            outcome.journey_asked = plan.graph.asked[act];
            let message_id = outcome.message_id.clone();
            let subs = composer.substitutions_for(lane);
            match planner.job(lane, ct, Some(&e), subs, outcome, Some(Reply::Tally(tally.slot(k)))) {
                Ok(job) => {
                    if plan.graph.asked[act] {
                        pos.messages.push((act, message_id));
                    }
                    slots.push(Some((p, pos)));
                    if self.engine.submit(lane, job, SUBMIT_WAIT).await.is_err() {
                        // The engine is stopping: its slot reports the message unsettled.
                        break;
                    }
                }
                Err(unrendered) => {
                    tracing::debug!(endpoint = %e.id, why = %unrendered.outcome.status_message, "Journey message not rendered.");
                    slots.push(None);
                    pass(batch, next, p, pos, status_metric(DeliveryStatus::PermanentFailure));
                }
            }
        }
        for (k, status) in tally.wait(slots.len()).await {
            let Some((p, pos)) = slots.get_mut(k).and_then(Option::take) else { continue };
            if status == UNSETTLED {
                // Back unsent: it stays where it is and goes again (an outcome recorded for
                // it keeps it from going twice).
                continue;
            }
            let st = DeliveryStatus::try_from(status).unwrap_or(DeliveryStatus::UnknownFailure);
            pass(batch, next, p, pos, status_metric(st));
        }
        Ok(())
    }
}

/// A message activity's content as the composer takes it: its template, or its inline
/// content, with the activity's sender settings.
pub fn content_of(m: &MessageActivity, channel: Channel) -> (DirectMessageConfiguration, TemplateConfiguration) {
    let mut config = m.message_configuration.clone().unwrap_or_default();
    let mut templates = TemplateConfiguration::default();
    let reference = (!m.template_name.is_empty())
        .then(|| TemplateReference { name: m.template_name.clone(), version: m.template_version.parse().unwrap_or(0) });
    match channel {
        Channel::Email => {
            templates.email_template = reference;
            if !m.from_address.is_empty() {
                config.email_message.get_or_insert_with(EmailMessage::default).from_address = m.from_address.clone();
            }
        }
        Channel::Sms => {
            templates.sms_template = reference;
            if !m.origination_number.is_empty() || !m.sender_id.is_empty() || !m.message_type.is_empty() {
                let sms = config.sms_message.get_or_insert_with(SmsMessage::default);
                sms.origination_number = m.origination_number.clone();
                sms.sender_id = m.sender_id.clone();
                sms.message_type = match m.message_type.as_str() {
                    "TRANSACTIONAL" => SmsMessageType::Transactional as i32,
                    "PROMOTIONAL" => SmsMessageType::Promotional as i32,
                    _ => sms.message_type,
                };
            }
        }
        Channel::Push => {
            templates.push_template = reference;
            if let Ok(ttl) = m.time_to_live.parse::<i32>() {
                config.apns_message.get_or_insert_with(Default::default).time_to_live = ttl;
                config.gcm_message.get_or_insert_with(Default::default).time_to_live = ttl;
            }
        }
        Channel::Custom => {
            templates.custom_template = reference;
            if !m.data.is_empty() {
                config.custom_message.get_or_insert_with(Default::default).data = m.data.clone();
            }
        }
    }
    (config, templates)
}

/// The run index key of a journey activity's messages for one entry of its participants.
pub fn request_id(journey: &str, activity: &str, entries: u32) -> String {
    format!("{journey}:{activity}:{entries}")
}

fn facts(e: &Endpoint, channel: ChannelType, suppressed: bool) -> planner::Facts<'_> {
    planner::Facts { endpoint_id: None, endpoint: Some(e), channel, address: &e.address, suppressed, duplicate: false }
}

pub(super) fn status_metric(s: DeliveryStatus) -> &'static str {
    match s {
        DeliveryStatus::Successful => names::SUCCESS,
        other => other.as_str_name().trim_start_matches("DELIVERY_STATUS_"),
    }
}
