//! Letting participants in: a segment's members at the start and at each refresh, or the
//! endpoints whose reported events match the journey's filter, through the store's re-entry
//! rules; entrants are stepped as they enter.

use super::*;

impl JourneyRunner {
    /// Lets participants in; whether there is more to do at once.
    pub(super) async fn enter(
        &self,
        app: &str,
        plan: &Plan,
        progress: &mut JourneyProgress,
        now: DateTime<Utc>,
    ) -> Result<bool, JourneyError> {
        let store = self.store.clone();
        let id = plan.journey.id.as_str();
        let start_state = Position::arrive(plan.graph.start).encode();
        if let Some(m) = &plan.event {
            let after = (progress.event_position > 0).then(|| crate::events::event_id(progress.event_position));
            let events = store.read_events(app, after.as_deref(), ENTRY_PAGE).await?;
            let Some(last) = events.last() else { return Ok(false) };
            let last = crate::events::event_number(&last.event_id).unwrap_or(progress.event_position);
            let mut ids: Vec<String> = events.iter().filter(|e| m.matches(e)).map(|e| e.client_id.clone()).collect();
            ids.sort();
            ids.dedup();
            if !ids.is_empty() {
                let members = self.admissible(app, plan, ids).await?;
                self.admit(app, plan, members, &start_state, now).await?;
            }
            progress.event_position = last;
            self.save(app, progress).await?;
            return Ok(events.len() == ENTRY_PAGE);
        }
        let Some(rule) = &plan.start_rule else { return Ok(false) };
        let segment_id = plan
            .journey
            .start_condition
            .as_ref()
            .and_then(|s| s.segment_start_condition.as_ref())
            .map(|s| s.segment_id.clone())
            .unwrap_or_default();
        if !progress.entry_open {
            let refresh = refresh_secs(&plan.journey);
            let due = progress.segment_read == 0 || refresh.is_some_and(|r| now.timestamp() - progress.segment_read >= r);
            let updated = plan.journey.refresh_on_segment_update && {
                let latest = crate::segments::load(store.as_ref(), app, &segment_id, 0).await.map(|s| s.version).unwrap_or(0);
                latest > 0 && latest != progress.segment_version
            };
            if !due && !updated {
                return Ok(false);
            }
            progress.entry_open = true;
            progress.entry_cursor.clear();
            self.save(app, progress).await?;
        }
        // The segment's latest version at each read (a refresh reads what it is now).
        let segment = crate::segments::load(store.as_ref(), app, &segment_id, 0).await.map_err(segment_error)?;
        let rule = if segment.version == progress.segment_version || progress.segment_version == 0 {
            rule.clone()
        } else {
            Arc::new(crate::segments::compile(store.as_ref(), app, &segment).await.map_err(segment_error)?)
        };
        let after = Some(progress.entry_cursor.clone()).filter(|c| !c.is_empty());
        let stream = crate::segments::MemberStream::open_ordered(store.clone(), app, rule, ENTRY_PAGE, after);
        // A few pages at a time, so that stepping goes on beside a large entry; up to
        // [`BATCHES`] pages are let in and stepped side by side while the next is read.
        let pages = futures::stream::unfold(stream, |mut s| async move {
            let page = s.next_page().await?;
            let cursor = s.last_scanned.clone();
            Some(((page, cursor), s))
        })
        .take(8);
        let start_state = start_state.as_str();
        let mut work = std::pin::pin!(pages
            .map(|(page, cursor)| async move {
                let page = page?;
                let produced = page.len() as i64;
                let (mut inactive, mut opted_out) = (0, 0);
                let mut members = Vec::with_capacity(page.len());
                for e in page {
                    if e.endpoint_status == EndpointStatus::Inactive as i32 {
                        inactive += 1;
                    } else if e.opt_out == crate::proto::v1::OptOut::All as i32 {
                        opted_out += 1;
                    } else {
                        members.push(e);
                    }
                }
                let counters: Vec<(String, i64)> =
                    [(names::ENDPOINT_INACTIVE, inactive), (names::ENDPOINT_OPT_OUT, opted_out), (names::ENDPOINT_PRODUCED, produced)]
                        .into_iter()
                        .filter(|(_, n)| *n > 0)
                        .map(|(k, n)| (k.to_string(), n))
                        .collect();
                self.store.journey_move(app, id, &[], &counters).await?;
                self.admit(app, plan, members, start_state, now).await?;
                Ok::<_, JourneyError>(cursor)
            })
            .buffered(BATCHES));
        let mut read = 0;
        while let Some(cursor) = work.next().await {
            read += 1;
            if let Some(c) = cursor? {
                progress.entry_cursor = c;
            }
            self.save(app, progress).await?;
        }
        if read < 8 {
            progress.entry_open = false;
            progress.segment_read = now.timestamp();
            progress.segment_version = segment.version;
            self.save(app, progress).await?;
        }
        Ok(true)
    }

    /// The endpoints (of those events came from) that may enter: existing, ACTIVE, not opted
    /// out, and in the start condition's segment when it names one.
    pub(super) async fn admissible(&self, app: &str, plan: &Plan, ids: Vec<String>) -> Result<Vec<Endpoint>, JourneyError> {
        match &plan.start_rule {
            Some(rule) => {
                let mut stream = crate::segments::MemberStream::listed(self.store.clone(), app, rule.clone(), ids, None);
                let mut out = Vec::new();
                while let Some(page) = stream.next_page().await {
                    out.extend(page?.into_iter().filter(eligible));
                }
                Ok(out)
            }
            None => {
                let found = self.store.get_endpoints(app, &ids).await?;
                Ok(found.into_iter().flatten().filter(eligible).collect())
            }
        }
    }

    /// Lets endpoints in at the start activity and steps those due now at once, with the
    /// endpoints in hand — or, with local time, lets them in when the journey starts on their
    /// own clock (not at all once it has ended there, counted as `ENDPOINT_TIMEZONE_MISMATCH`).
    ///
    /// Those stepped at once are written due [`CLAIM_SECS`] ahead, so that the due queue does
    /// not step them beside this; should this daemon die before their step is written, they
    /// are stepped from the queue then (their messages' run keys keep anyone from a repeat).
    pub(super) async fn admit(
        &self,
        app: &str,
        plan: &Plan,
        members: Vec<Endpoint>,
        start_state: &str,
        now: DateTime<Utc>,
    ) -> Result<(), JourneyError> {
        let id = plan.journey.id.as_str();
        let mut later: BTreeMap<i64, Vec<String>> = BTreeMap::new();
        let mut at_once = Vec::with_capacity(members.len());
        let mut outside = 0;
        let schedule = plan.journey.schedule.clone().unwrap_or_default();
        for e in members {
            if plan.journey.local_time {
                let tz = e.demographic.as_ref().map(|d| d.timezone.as_str()).filter(|t| !t.is_empty());
                let (start, end) = crate::journeys::local_window(&schedule, tz);
                if end.is_some_and(|end| now >= end) {
                    outside += 1;
                    continue;
                }
                if let Some(due) = start.map(ceil_secs).filter(|due| *due > now.timestamp()) {
                    later.entry(due).or_default().push(e.id.clone());
                    continue;
                }
            }
            at_once.push(e);
        }
        for (due, ids) in later {
            self.store.journey_enter(app, id, &ids, start_state, due, plan.reentry, now.timestamp()).await?;
        }
        if outside > 0 {
            self.store.journey_move(app, id, &[], &[(names::ENDPOINT_TIMEZONE_MISMATCH.to_string(), outside)]).await?;
        }
        if at_once.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = at_once.iter().map(|e| e.id.clone()).collect();
        let claimed = now.timestamp() + CLAIM_SECS;
        let entries = self.store.journey_enter(app, id, &ids, start_state, claimed, plan.reentry, now.timestamp()).await?;
        let mut due = Vec::with_capacity(ids.len());
        let mut known = HashMap::with_capacity(ids.len());
        for (e, entry) in at_once.into_iter().zip(entries) {
            if let Entry::Entered(n) = entry {
                due.push(Participant { endpoint_id: e.id.clone(), due: claimed, state: start_state.to_string(), entries: n });
                known.insert(e.id.clone(), e);
            }
        }
        if due.is_empty() {
            return Ok(());
        }
        self.step_batch(app, plan, due, now, known).await
    }
}
