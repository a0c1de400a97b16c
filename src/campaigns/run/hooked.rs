//! The campaign hook's part of a run: each page of members narrowed and personalized by the
//! hook before limits and quotas apply (see [`crate::campaigns::hook`]).

use super::{Activity, CampaignRun, Lane, Plan};

/// A page's members after the campaign hook: each treatment's, up to [`hook::PAGE`] per call
/// (four calls at a time), narrowed and personalized by the answer; a call that fails leaves its
/// endpoints out, counted as HOOK_FAILURE.
pub(super) async fn filter_by_hook(
    run: &CampaignRun,
    plan: &Plan,
    hook: &crate::campaigns::hook::Hook,
    http: &reqwest::Client,
    go: Vec<(crate::proto::v1::Endpoint, Lane, usize)>,
    counts: &mut [Activity],
) -> Vec<(crate::proto::v1::Endpoint, Lane, usize)> {
    use futures::StreamExt as _;
    let mut by_treatment: Vec<Vec<(crate::proto::v1::Endpoint, Lane)>> = vec![Vec::new(); plan.lanes.len()];
    for (e, lane, t) in go {
        by_treatment[t].push((e, lane));
    }
    let mut calls = Vec::new();
    for (t, members) in by_treatment.into_iter().enumerate() {
        let mut members = members.into_iter().peekable();
        while members.peek().is_some() {
            calls.push((t, members.by_ref().take(crate::campaigns::hook::PAGE).collect::<Vec<_>>()));
        }
    }
    let answers = futures::stream::iter(calls.into_iter().map(|(t, page)| async move {
        let event = crate::campaigns::hook::Event {
            message: &plan.messages[t],
            app_id: &plan.origin_base.app_id,
            campaign_id: &run.campaign_id,
            treatment_id: t,
            activity_id: &run.activities[t].id,
            scheduled_time: &run.scheduled_start,
        };
        let endpoints: Vec<crate::proto::v1::Endpoint> = page.iter().map(|(e, _)| e.clone()).collect();
        let answer = hook.filter(http, &event, &endpoints).await;
        (t, page, answer)
    }))
    .buffered(4)
    .collect::<Vec<_>>()
    .await;
    let mut out = Vec::new();
    for (t, page, answer) in answers {
        match answer {
            Ok(mut kept) => {
                metrics::counter!(crate::telemetry::CAMPAIGN_HOOK_CALLS, "result" => "kept").increment(1);
                for (e, lane) in page {
                    match kept.remove(&e.id) {
                        Some(k) => out.push((k, lane, t)),
                        None => counts[t].filtered_by_hook += 1,
                    }
                }
            }
            Err(why) => {
                metrics::counter!(crate::telemetry::CAMPAIGN_HOOK_CALLS, "result" => "failed").increment(1);
                tracing::warn!(campaign = %run.campaign_id, hook = %hook.url, endpoints = page.len(), %why, "Campaign hook failed: its page gets nothing.");
                *counts[t].failed.entry("HOOK_FAILURE".into()).or_insert(0) += page.len() as i64;
            }
        }
    }
    out
}
