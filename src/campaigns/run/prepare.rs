//! Loading what a run works with: the campaign, its segment's rule, the composers of its
//! treatments, its limits and schedules.

use super::*;

impl Runner {
    /// Loads what a run works with (the campaign, its segment's rule, composers, limits,
    /// schedules) into a [`Plan`]; `None` when the campaign is gone. The coordinator (the
    /// run's lease holder) also starts the run's record; a helper leaves it as it is.
    pub(super) async fn prepare(
        &self,
        app: &str,
        run: &mut CampaignRun,
        coordinator: bool,
    ) -> Result<Option<(Arc<Plan>, Arc<segments::Rule>)>, RunError> {
        let store = self.store.as_ref();
        let (cid, version) = (run.campaign_id.clone(), run.campaign_version);
        let raw = self.patiently(|| store.get_record(app, crate::campaigns::KIND, &cid, Some(version))).await?;
        let Some(raw) = raw else { return Ok(None) };
        let campaign = Campaign::decode(raw.as_slice()).map_err(StoreError::from)?;
        let settings = self.patiently(|| store.get_app(app)).await?.and_then(|a| a.settings).unwrap_or_default();
        let limits = limits(&campaign, &settings);
        let rule = loop {
            let loaded = async {
                let segment = segments::load(store, app, &campaign.segment_id, campaign.segment_version).await?;
                let rule = segments::compile(store, app, &segment).await?;
                Ok::<_, segments::SegmentError>(rule)
            };
            match loaded.await {
                Ok(v) => break v,
                Err(segments::SegmentError::Store(e)) if e.is_transient() => {
                    // Waits until the store answers again, then loads once more.
                    self.patiently(|| store.ping()).await?;
                }
                Err(e) => return Err(e.into()),
            }
        };
        // Composers per treatment: the default, then the additional ones (their own content,
        // else the campaign's).
        let mut composers = Vec::new();
        let base =
            (campaign.message_configuration.clone().unwrap_or_default(), campaign.template_configuration.clone().unwrap_or_default());
        let mut contents = vec![base.clone()];
        for t in &campaign.additional_treatments {
            let own = t.message_configuration.is_some() || t.template_configuration.is_some();
            contents.push(if own {
                (t.message_configuration.clone().unwrap_or_default(), t.template_configuration.clone().unwrap_or_default())
            } else {
                base.clone()
            });
        }
        // Campaign emails are tracked unless the campaign or the app turns it off, and always
        // offer Herald's one-click unsubscribe.
        let tracking = crate::pipeline::compose::Tracking {
            links: self.links.clone(),
            track: campaign.engagement_tracking != Some(false) && settings.engagement_tracking != Some(false),
            unsubscribe: true,
        };
        for (m, tc) in &contents {
            let composer = loop {
                match Composer::build(store, self.cache.clone(), app, m, tc, tracking.clone()).await {
                    Ok(c) => break c,
                    Err(crate::pipeline::compose::ComposeError::Store(e)) if e.is_transient() => {
                        self.patiently(|| store.ping()).await?;
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            composers.push(composer);
        }
        let hook = match crate::campaigns::hook::is_set(campaign.hook.as_ref()) {
            true => (campaign.hook.as_ref(), crate::campaigns::hook::campaign_place(app, &campaign.id)),
            false => (settings.campaign_hook.as_ref(), crate::campaigns::hook::app_place(app)),
        };
        let hook = match (crate::campaigns::hook::is_set(hook.0), &self.sealer, &self.hook_http) {
            (false, _, _) => None,
            (true, Some(sealer), Some(http)) => {
                crate::campaigns::hook::Hook::open(sealer, &hook.1, hook.0).map_err(RunError::Hook)?.map(|h| (h, http.clone()))
            }
            (true, _, _) => return Err(RunError::Hook(crate::campaigns::hook::HookError::Unavailable)),
        };
        let cohorts = assignment(&campaign);
        if run.activities.is_empty() {
            let mut names =
                vec![(0, if campaign.treatment_name.is_empty() { "Default".to_string() } else { campaign.treatment_name.clone() })];
            names.extend(campaign.additional_treatments.iter().enumerate().map(|(i, t)| (i as i32 + 1, t.treatment_name.clone())));
            run.activities = names
                .into_iter()
                .map(|(tid, name)| Activity {
                    id: crate::campaigns::activity_id(&key(run), tid),
                    campaign_id: run.campaign_id.clone(),
                    campaign_version: run.campaign_version,
                    treatment_id: tid,
                    treatment_name: name,
                    scheduled_start: run.scheduled_start.clone(),
                    ..Default::default()
                })
                .collect();
        }
        // A run that started before (in this daemon or another) checks each member against the
        // outcomes recorded for it, so nobody who has one gets the message again.
        let resumed = !run.start.is_empty();
        if !coordinator {
            // A daemon helping with the run's units changes nothing of the run's record.
        } else if run.start.is_empty() {
            run.start = domain::timestamp(chrono::Utc::now());
        } else if run.in_flight > 0 {
            // What was at a provider with no outcome recorded may go again: at most what the
            // engine can hold unrecorded.
            run.activities[0].possible_repeats += run.in_flight.min(self.engine.repeat_bound() as i64);
            run.in_flight = 0;
        }
        if coordinator {
            run.state = CampaignState::Executing as i32;
            self.save(app, run).await?;
        }
        let scheduled = segments::rule::parse_instant(&run.scheduled_start).unwrap_or_else(chrono::Utc::now);
        let schedule = campaign.schedule.clone().unwrap_or_default();
        let mut schedules = vec![(schedule.clone(), scheduled, false)];
        for t in &campaign.additional_treatments {
            schedules.push(match &t.schedule {
                Some(own) => {
                    let start = localtime::treatment_start(&schedule, own, &campaign.creation_date, scheduled);
                    (own.clone(), start, start > scheduled)
                }
                None => (schedule.clone(), scheduled, false),
            });
        }
        // The app's quiet time holds every treatment whose schedule gives none (Pinpoint's
        // campaign QuietTime overrides the application's).
        if let Some(q) = settings.quiet_time.as_ref().filter(|q| !q.start.is_empty() && !q.end.is_empty()) {
            for (s, _, _) in &mut schedules {
                if s.quiet_time.as_ref().is_none_or(|own| own.start.is_empty() && own.end.is_empty()) {
                    s.quiet_time = Some(q.clone());
                }
            }
        }
        for (a, (_, start, _)) in run.activities.iter_mut().zip(&schedules) {
            a.scheduled_start = domain::timestamp(*start);
        }
        // A triggered message goes within 5 minutes of its event or not at all.
        let trigger_deadline = run
            .trigger
            .as_ref()
            .and_then(|t| segments::rule::parse_instant(&t.arrival))
            .map(|a| a + chrono::Duration::seconds(TRIGGER_DEADLINE_SECS));
        let deadlines = schedules
            .iter()
            .map(|(_, start, _)| {
                let own = limits.maximum_duration.map(|s| *start + chrono::Duration::seconds(s));
                match (own, trigger_deadline) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            })
            .collect();
        let lanes = composers.iter().map(Composer::lanes).collect();
        let plan = Arc::new(Plan {
            lanes,
            custom: custom_deliveries(&campaign),
            hook,
            messages: contents.iter().map(|(m, _)| m.clone()).collect(),
            cohorts,
            composers,
            schedules,
            deadlines,
            gate: RateGate::new(limits.per_second, limits.per_second.map(|r| r.clamp(1, 100))),
            run_rate: limits.per_second.map(|r| crate::dispatch::quota::RunRate::new(r, self.store.clone(), app, &key(run))),
            limits,
            origin_base: Origin {
                app_id: app.to_string(),
                scheduled_time: run.scheduled_start.clone(),
                campaign_id: run.campaign_id.clone(),
                ..Default::default()
            },
            request_id: key(run),
            resumed,
        });
        Ok(Some((plan, Arc::new(rule))))
    }
}
