//! Sending a run's members page by page: each page through the delivery rules and caps into
//! the engine, pages settled behind a window, and the run's cursor moved as they settle.

use super::*;

impl Runner {
    /// Sends a stream of members page by page, settling pages behind a window and moving the
    /// run's cursor; `releasing`: they are held members whose time has come.
    pub(super) async fn pump(
        &self,
        app: &str,
        run: &mut CampaignRun,
        plan: &Arc<Plan>,
        mut stream: MemberStream,
        (releasing, resumed): (bool, bool),
        lost: &AtomicBool,
    ) -> Result<Pumped, RunError> {
        let mut pending: VecDeque<Pending> = VecDeque::new();
        let mut stopped_by_quota = false;
        let mut window = Window::default();
        loop {
            if self.stopping() {
                // What was handed out settles and the exact position is recorded; the run
                // stays EXECUTING for the next daemon.
                self.settle_all(app, run, &mut pending, &mut window).await?;
                return Err(RunError::Stopped);
            }
            let Some(page) = stream.next_page().await else { break };
            let members = page?;
            if lost.load(Ordering::SeqCst) {
                tracing::warn!(run = %plan.request_id, "Lost the run's lease; another daemon goes on.");
                return Ok(Pumped::Stopped);
            }
            if let Some(state) = self.interruption(app, run).await? {
                // What was handed out settles first: a paused run has nothing left in flight.
                self.settle_all(app, run, &mut pending, &mut window).await?;
                self.stop(app, run, state).await?;
                return Ok(Pumped::Stopped);
            }
            let last = stream.last_scanned.clone().unwrap_or_default();
            let mut tasks = Vec::new();
            let tally = Tally::new();
            let mut counts = vec![Activity::default(); run.activities.len()];
            run.in_flight = pending.iter().map(|p| p.messages).sum();
            let before = run.in_flight;
            if !stopped_by_quota {
                let page = Page { members, releasing, resumed, tasks: &mut tasks, tally: &tally, counts: &mut counts };
                self.send_page(app, run, plan, page, &mut stopped_by_quota).await?;
            }
            pending.push_back(Pending { last, tasks, messages: run.in_flight - before, tally, counts });
            while pending.len() > WINDOW {
                self.settle_one(app, run, &mut pending, &mut window).await?;
            }
        }
        self.settle_all(app, run, &mut pending, &mut window).await?;
        if window.frozen {
            // Some messages went back unsent (the engine stopped): the run resumes before them.
            return Err(RunError::Stopped);
        }
        Ok(Pumped::Done)
    }

    /// Waits for the oldest page's outcomes, counts them and moves the cursor past it — unless
    /// a message of it (or of a page before it) ended unsettled: then the cursor stays, the
    /// counts are not added, and the run resumes there later, skipping who has an outcome.
    pub(super) async fn settle_one(
        &self,
        app: &str,
        run: &mut CampaignRun,
        pending: &mut VecDeque<Pending>,
        window: &mut Window,
    ) -> Result<(), RunError> {
        let Some(page) = pending.pop_front() else { return Ok(()) };
        let mut submitted = 0;
        let mut counts = page.counts;
        let mut complete = true;
        for task in page.tasks {
            let done = task.await.map_err(|e| RunError::Task(e.to_string()))?;
            for (t, n) in done.unrendered {
                *counts[t].failed.entry(status_name(DeliveryStatus::PermanentFailure)).or_insert(0) += n;
            }
            submitted += done.submitted;
            complete &= done.complete;
        }
        for (treatment, status) in page.tally.wait(submitted).await {
            if status == UNSETTLED {
                complete = false;
                continue;
            }
            count_status(&mut counts[treatment], status);
        }
        window.frozen |= !complete;
        if window.frozen {
            run.in_flight = 0;
            return Ok(());
        }
        for (a, c) in run.activities.iter_mut().zip(&counts) {
            add_counts(a, c);
        }
        run.cursor = page.last;
        run.in_flight = pending.iter().map(|p| p.messages).sum();
        for a in &mut run.activities {
            a.state = CampaignState::Executing as i32;
            a.start = run.start.clone();
        }
        self.save(app, run).await
    }

    pub(super) async fn settle_all(
        &self,
        app: &str,
        run: &mut CampaignRun,
        pending: &mut VecDeque<Pending>,
        window: &mut Window,
    ) -> Result<(), RunError> {
        while !pending.is_empty() {
            self.settle_one(app, run, pending, window).await?;
        }
        if window.frozen {
            // The position of the last complete page, with nothing in flight past it.
            self.save(app, run).await?;
        }
        Ok(())
    }

    /// Filters a page by the delivery rules and limits, counts it into `page.counts`, and hands
    /// what may go to render-and-submit tasks.
    pub(super) async fn send_page(
        &self,
        app: &str,
        run: &mut CampaignRun,
        plan: &Arc<Plan>,
        page: Page<'_>,
        stopped_by_quota: &mut bool,
    ) -> Result<(), RunError> {
        let Page { members, releasing, resumed, tasks, tally, counts } = page;
        let (cohorts, limits, request_id) = (&plan.cohorts, &plan.limits, plan.request_id.as_str());
        let store = self.store.as_ref();
        // A resumed run: the statuses already recorded for this page's members.
        let recorded = if resumed && !members.is_empty() {
            let ids: Vec<String> = members.iter().map(|e| e.id.clone()).collect();
            // Its messages are no older than the run's start (five minutes' margin for the clocks
            // of the daemons that share it).
            let since = chrono::DateTime::parse_from_rfc3339(&run.start).ok().map(|t| t.timestamp() - 300);
            self.patiently(|| store.run_outcomes(app, request_id, &ids, since)).await?
        } else {
            Vec::new()
        };
        // Members the campaign addresses: an ACTIVE endpoint on a channel it has content for.
        let mut eligible = Vec::with_capacity(members.len());
        let mut held: std::collections::BTreeMap<i64, Vec<String>> = std::collections::BTreeMap::new();
        for (i, e) in members.into_iter().enumerate() {
            // Only endpoints on a channel the campaign has content for are its audience.
            if !(0..plan.lanes.len()).any(|t| plan.route(t, e.channel_type).is_some()) {
                continue;
            }
            if e.endpoint_status == EndpointStatus::Inactive as i32 {
                continue;
            }
            let cohort = e.cohort_id.clamp(0, 99) as usize;
            let Some(treatment) = cohorts[cohort] else {
                counts[0].holdout += 1;
                continue;
            };
            let Some(lane) = plan.route(treatment, e.channel_type) else { continue };
            if !releasing {
                counts[treatment].total_endpoints += 1;
            }
            if let Some(Some(status)) = recorded.get(i) {
                // Sent before this run resumed: counted from its recorded outcome, not sent again.
                count_status(&mut counts[treatment], *status);
                continue;
            }
            // Pinpoint's rules on the endpoint (an opt-out, here), as every producer applies them.
            if let Err(refused) = planner::endpoint(member_facts(&e, false)) {
                count_status(&mut counts[treatment], refused.status as i32);
                continue;
            }
            if !releasing {
                let tz = e.demographic.as_ref().and_then(|d| localtime::zone(&d.timezone));
                let (schedule, start, later) = &plan.schedules[treatment];
                let now = chrono::Utc::now();
                let hold =
                    if *later { localtime::hold_from(schedule, *start, tz, now) } else { localtime::hold(schedule, *start, tz, now) };
                if let Some(h) = hold {
                    if matches!(h, localtime::Hold::QuietTime(_)) {
                        counts[treatment].held_by_quiet_time += 1;
                    }
                    // Released at the start of the minute after it may go.
                    let minute = (h.until().timestamp() + 59) / 60 * 60;
                    held.entry(minute).or_default().push(e.id.clone());
                    continue;
                }
            }
            eligible.push((e, lane, treatment));
        }
        // Held members are recorded before the cursor can move past them.
        for (minute, ids) in held {
            let set = held_set(request_id, minute);
            self.patiently(|| store.add_members(app, &set, &ids)).await?;
            if let Err(at) = run.held_releases.binary_search(&minute) {
                run.held_releases.insert(at, minute);
            }
        }
        if eligible.is_empty() {
            return Ok(());
        }
        let now = chrono::Utc::now();
        eligible.retain(|(_, _, t)| {
            let late = plan.deadlines[*t].is_some_and(|d| now > d);
            if late {
                counts[*t].timed_out += 1;
            }
            !late
        });
        if eligible.is_empty() {
            return Ok(());
        }
        let addresses: Vec<String> = eligible.iter().map(|(e, _, _)| crate::api::suppressions::normalize(&e.address)).collect();
        let suppressed = self.patiently(|| store.get_suppressions(app, &addresses)).await?;
        let mut go = Vec::with_capacity(eligible.len());
        for ((e, lane, t), s) in eligible.into_iter().zip(suppressed) {
            match planner::listed(member_facts(&e, s.is_some())) {
                Err(refused) => count_status(&mut counts[t], refused.status as i32),
                Ok(()) => go.push((e, lane, t)),
            }
        }
        if let Some((hook, http)) = &plan.hook {
            go = filter_by_hook(run, plan, hook, http, go, counts).await;
        }
        if limits.daily.is_some() || limits.total.is_some() {
            let ids: Vec<String> = go.iter().map(|(e, _, _)| e.id.clone()).collect();
            let ok = self
                .patiently(|| {
                    store.take_endpoint_caps(app, &run.campaign_id, &ids, limits.daily.map(|d| (d, 86_400)), limits.total, now.timestamp())
                })
                .await?;
            let mut kept = Vec::with_capacity(go.len());
            for (item, ok) in go.into_iter().zip(ok) {
                if ok {
                    kept.push(item);
                } else {
                    counts[item.2].capped += 1;
                }
            }
            go = kept;
        }
        // The channel quotas: wait for their rate, stop at their daily or total.
        for lane in Lane::ALL {
            let n = go.iter().filter(|(_, l, _)| *l == lane).count() as u64;
            if n == 0 {
                continue;
            }
            let channel = lane.quota_channel();
            let granted = self.patiently(|| self.engine.admit(app, channel, n)).await?;
            if granted < n {
                *stopped_by_quota = true;
                let mut seen = 0;
                let mut kept = Vec::with_capacity(go.len());
                for item in go {
                    if item.1 == lane {
                        seen += 1;
                        if seen > granted {
                            counts[item.2].throttled += 1;
                            continue;
                        }
                    }
                    kept.push(item);
                }
                go = kept;
            }
        }
        // What is about to go out is recorded first: if this daemon dies, the run resumes
        // before these messages, skips those with a recorded outcome and reports the rest as
        // possible repeats.
        run.in_flight += go.len() as i64;
        self.save(app, run).await?;
        // Rendering and submitting go on in tasks beside the run (one per core's share of the
        // page) while it reads and filters the next page; the page settles once they are done.
        let stamp: Arc<str> = domain::timestamp(now).into();
        let origins: Arc<Vec<Origin>> = Arc::new(
            run.activities
                .iter()
                .enumerate()
                .map(|(t, a)| Origin { treatment_id: Some(t as u32), activity_id: a.id.clone(), ..plan.origin_base.clone() })
                .collect(),
        );
        if plan.limits.per_second.is_some() {
            // Paced: the run itself waits for the gate, so a pause stops it between messages.
            let done = submit_chunk(&self.engine, plan, &origins, &stamp, tally, &self.stop, go).await;
            tasks.push(tokio::spawn(async move { done }));
            return Ok(());
        }
        let parts = render_tasks(go.len());
        let share = go.len().div_ceil(parts);
        while !go.is_empty() {
            let chunk: Vec<_> = go.drain(..share.min(go.len())).collect();
            let (engine, plan, origins, stamp, tally, stop) =
                (self.engine.clone(), plan.clone(), origins.clone(), stamp.clone(), tally.clone(), self.stop.clone());
            tasks.push(tokio::spawn(async move { submit_chunk(&engine, &plan, &origins, &stamp, &tally, &stop, chunk).await }));
        }
        Ok(())
    }
}
