//! Stepping the participants that are due: each walks its path (splits, holdouts, waits
//! that have elapsed) until it waits, leaves or reaches a message activity, and the batch's
//! new positions and counters are written in one step once its messages' outcomes are in.

use super::*;

impl JourneyRunner {
    /// Steps the participants due by `now`, [`BATCHES`] batches at a time side by side (their
    /// messages in the engine together); whether every batch was full (more may be due).
    pub(super) async fn step(&self, app: &str, plan: &Plan, now: DateTime<Utc>) -> Result<bool, JourneyError> {
        let id = plan.journey.id.as_str();
        let mut due = self.store.journey_due(app, id, now.timestamp(), PAGE * BATCHES).await?;
        if due.is_empty() {
            return Ok(false);
        }
        let full = due.len() == PAGE * BATCHES;
        let mut batches = Vec::with_capacity(BATCHES);
        while !due.is_empty() {
            let rest = due.split_off(due.len().min(PAGE));
            batches.push(std::mem::replace(&mut due, rest));
        }
        for r in futures::future::join_all(batches.into_iter().map(|b| self.step_batch(app, plan, b, now, HashMap::new()))).await {
            r?;
        }
        Ok(full)
    }

    /// Steps one batch of due participants: walks them, sends their messages, and writes their
    /// new positions once the messages' outcomes are in.
    pub(super) async fn step_batch(
        &self,
        app: &str,
        plan: &Plan,
        due: Vec<Participant>,
        now: DateTime<Utc>,
        known: HashMap<String, Endpoint>,
    ) -> Result<(), JourneyError> {
        let id = plan.journey.id.as_str();
        let mut batch = Batch { known, ..Default::default() };
        let mut frontier: Vec<(Participant, Position)> = Vec::with_capacity(due.len());
        for p in due {
            match Position::decode(&p.state) {
                Some(pos) if pos.activity < plan.graph.steps.len() => frontier.push((p, pos)),
                _ => batch.leave(&p.endpoint_id),
            }
        }
        // Participants walk until each waits, leaves, or reaches a message; messages go in one
        // batch per activity, then their participants walk on. The graph has no cycles, so
        // this ends within as many rounds as it has activities.
        for _ in 0..=plan.graph.steps.len() {
            if frontier.is_empty() {
                break;
            }
            let mut at_message: BTreeMap<usize, Vec<(Participant, Position)>> = BTreeMap::new();
            let mut conditional: BTreeMap<usize, Vec<(Participant, Position)>> = BTreeMap::new();
            let mut next = Vec::new();
            for (p, pos) in frontier.drain(..) {
                let act = pos.activity;
                let aid = plan.graph.ids[act].as_str();
                if !pos.waited {
                    batch.count(aid, names::ENTER_ACTIVITY, 1);
                }
                match &plan.graph.steps[act] {
                    Step::Message { .. } => at_message.entry(act).or_default().push((p, pos)),
                    Step::Wait { wait, next: to } => {
                        if pos.waited {
                            batch.count(aid, names::EXIT_ACTIVITY, 1);
                            walk(&mut batch, &mut next, p, pos, *to);
                        } else {
                            let due = ceil_secs(wait.due(now));
                            if due <= now.timestamp() {
                                batch.count(aid, names::EXIT_ACTIVITY, 1);
                                walk(&mut batch, &mut next, p, pos, *to);
                            } else {
                                let mut held = pos.clone();
                                held.waited = true;
                                batch.stay(&p.endpoint_id, due, &held);
                            }
                        }
                    }
                    Step::Split { evaluation, .. } | Step::Multi { evaluation, .. } => match evaluation {
                        Some(w) if !pos.waited => {
                            let mut held = pos.clone();
                            held.waited = true;
                            batch.stay(&p.endpoint_id, ceil_secs(w.due(now)).max(now.timestamp() + 1), &held);
                        }
                        _ => conditional.entry(act).or_default().push((p, pos)),
                    },
                    Step::Random { branches } => {
                        let s = share(id, aid, &p.endpoint_id, p.entries);
                        let mut acc = 0;
                        let mut chosen = (branches.len().saturating_sub(1), None);
                        for (k, (pct, to)) in branches.iter().enumerate() {
                            acc += pct;
                            if s < acc {
                                chosen = (k, *to);
                                break;
                            }
                        }
                        batch.count(aid, &format!("BRANCH_{}", chosen.0 + 1), 1);
                        batch.count(aid, names::EXIT_ACTIVITY, 1);
                        walk(&mut batch, &mut next, p, pos, chosen.1);
                    }
                    Step::Holdout { percentage, next: to } => {
                        if share(id, aid, &p.endpoint_id, p.entries) < *percentage {
                            batch.count(aid, names::HOLDOUT, 1);
                            batch.leave(&p.endpoint_id);
                        } else {
                            batch.count(aid, names::EXIT_ACTIVITY, 1);
                            walk(&mut batch, &mut next, p, pos, *to);
                        }
                    }
                }
            }
            for (act, group) in conditional {
                self.evaluate(app, plan, act, group, &mut batch, &mut next, now).await?;
            }
            for (act, group) in at_message {
                self.send(app, plan, act, group, &mut batch, &mut next, now).await?;
            }
            frontier = next;
        }
        // The batch's messages went out: their participants' new positions are written even
        // if the store is away for a while (retried until it answers, or the daemon stops).
        let counters = batch.counters();
        let mut delay = Duration::from_millis(100);
        loop {
            match self.store.journey_move(app, id, &batch.moves, &counters).await {
                Ok(()) => return Ok(()),
                Err(e) if e.is_transient() && !self.stopping() => {
                    tracing::warn!(error = %e, journey = id, "Store unreachable; the journey step's positions wait for it.");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Tests a split's conditions for its participants and sends each down its branch.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn evaluate(
        &self,
        app: &str,
        plan: &Plan,
        act: usize,
        group: Vec<(Participant, Position)>,
        batch: &mut Batch,
        next: &mut Vec<(Participant, Position)>,
        now: DateTime<Utc>,
    ) -> Result<(), JourneyError> {
        let aid = plan.graph.ids[act].clone();
        let conds = plan.graph.steps[act].conditions();
        // Each condition's answer per participant, fetched for the whole group at once.
        let mut answers: Vec<Vec<bool>> = Vec::with_capacity(conds.len());
        let ids: Vec<String> = group.iter().map(|(p, _)| p.endpoint_id.clone()).collect();
        let needs_endpoints = conds.iter().any(|c| matches!(c, Cond::Dimensions(_)));
        let endpoints = if needs_endpoints { batch.endpoints(self.store.as_ref(), app, &ids).await? } else { Vec::new() };
        for c in &conds {
            answers.push(match c {
                Cond::Event { activity, types, exclude } => {
                    let mut keys = Vec::new();
                    let mut slots = Vec::new();
                    for (i, (_, pos)) in group.iter().enumerate() {
                        if let Some(m) = pos.message(*activity) {
                            for t in types {
                                keys.push(format!("{t}:{m}"));
                                slots.push(i);
                            }
                        }
                    }
                    let seen = if keys.is_empty() { Vec::new() } else { self.store.engaged(app, &keys).await? };
                    let mut any = vec![false; group.len()];
                    for (slot, s) in slots.into_iter().zip(seen) {
                        any[slot] |= s;
                    }
                    // EXCLUSIVE: none of the listed events.
                    if *exclude {
                        any.iter().map(|a| !a).collect()
                    } else {
                        any
                    }
                }
                Cond::Segment(segment) => {
                    let rule = plan
                        .segments
                        .get(segment)
                        .cloned()
                        .ok_or_else(|| JourneyError::Invalid(format!("segment {segment} not loaded")))?;
                    let mut sorted = ids.clone();
                    sorted.sort();
                    let mut stream = crate::segments::MemberStream::listed(self.store.clone(), app, rule, sorted, None);
                    let mut members = HashSet::new();
                    while let Some(page) = stream.next_page().await {
                        members.extend(page?.into_iter().map(|e| e.id));
                    }
                    ids.iter().map(|i| members.contains(i)).collect()
                }
                Cond::Dimensions(c) => endpoints.iter().map(|e| e.as_ref().is_some_and(|e| c.matches(e, now))).collect(),
            });
        }
        for (i, (p, pos)) in group.into_iter().enumerate() {
            let to = match &plan.graph.steps[act] {
                Step::Split { any, yes, no, .. } => {
                    let holds = if *any { answers.iter().any(|a| a[i]) } else { answers.iter().all(|a| a[i]) };
                    batch.count(&aid, if holds { names::TRUE_BRANCH } else { names::FALSE_BRANCH }, 1);
                    if holds {
                        *yes
                    } else {
                        *no
                    }
                }
                Step::Multi { branches, default, .. } => match answers.iter().position(|a| a[i]) {
                    Some(k) => {
                        batch.count(&aid, &format!("BRANCH_{}", k + 1), 1);
                        branches[k].1
                    }
                    None => {
                        batch.count(&aid, names::DEFAULT_BRANCH, 1);
                        *default
                    }
                },
                _ => None,
            };
            batch.count(&aid, names::EXIT_ACTIVITY, 1);
            walk(batch, next, p, pos, to);
        }
        Ok(())
    }
}
