//! Rendering and handing a page's messages to the engine, in tasks beside the run.

use std::sync::Arc;

use super::{Plan, SUBMIT_WAIT};
use crate::dispatch::engine::{Engine, Lane, Reply, Tally};
use crate::pipeline::compose::Origin;
use crate::pipeline::planner::Planner;
use crate::proto::v1::{ChannelType, MessageSource};

/// How many tasks render a page of `n` messages: one per core, none under 100 messages.
pub(super) fn render_tasks(n: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |c| c.get());
    (n / 100).clamp(1, cores.clamp(1, 8))
}

/// What a render task hands back: how many messages it handed to the engine (their statuses
/// arrive in the page's tally), per treatment the messages that could not be rendered, and
/// whether it went through its whole share (not when the daemon began to stop).
pub(super) struct Submitted {
    pub(super) submitted: usize,
    pub(super) unrendered: Vec<(usize, i64)>,
    pub(super) complete: bool,
}

/// Renders a share of a page and hands it to the engine, paced by the run's rate gate; stops
/// handing out as soon as the daemon stops.
#[allow(clippy::too_many_arguments)]
pub(super) async fn submit_chunk(
    engine: &Engine,
    plan: &Plan,
    origins: &[Origin],
    stamp: &str,
    tally: &Arc<Tally>,
    stop: &tokio::sync::watch::Receiver<bool>,
    chunk: Vec<(crate::proto::v1::Endpoint, Lane, usize)>,
) -> Submitted {
    let mut done = Submitted { submitted: 0, unrendered: Vec::new(), complete: true };
    for (e, lane, t) in chunk {
        if *stop.borrow() {
            done.complete = false;
            return done;
        }
        plan.gate.take().await;
        if let Some(shared) = &plan.run_rate {
            // Every daemon reading the run takes from the same count: the campaign's rate holds
            // across them together.
            while let Err(wait) = shared.try_take().await {
                if *stop.borrow() {
                    done.complete = false;
                    return done;
                }
                tokio::time::sleep(wait).await;
            }
        }
        let composer = &plan.composers[t];
        let subs = composer.substitutions_for(lane);
        let planner =
            Planner { composer, origin: &origins[t], source: MessageSource::Campaign, request_id: &plan.request_id, stamp, dry_run: false };
        // A custom delivery's message goes to its URI, whatever the endpoint's own channel.
        let (channel, outcome) = match (&plan.custom[t], lane) {
            (Some(d), Lane::Custom) => (ChannelType::Custom, planner.outcome(&e.id, &d.uri, ChannelType::Custom)),
            _ => {
                let channel = ChannelType::try_from(e.channel_type).unwrap_or_default();
                (channel, planner.outcome(&e.id, &e.address, channel))
            }
        };
        let job = match planner.job(lane, channel, Some(&e), subs, outcome, Some(Reply::Tally(tally.slot(t)))) {
            Ok(job) => job,
            Err(unrendered) => {
                tracing::debug!(endpoint = %e.id, why = %unrendered.outcome.status_message, "Campaign message not rendered.");
                match done.unrendered.iter_mut().find(|(u, _)| *u == t) {
                    Some((_, n)) => *n += 1,
                    None => done.unrendered.push((t, 1)),
                }
                continue;
            }
        };
        if engine.submit(lane, job, SUBMIT_WAIT).await.is_err() {
            // The engine is stopping: the job went back unsettled (its slot says so, and is
            // waited for like the others).
            done.submitted += 1;
            done.complete = false;
            return done;
        }
        done.submitted += 1;
    }
    done
}
