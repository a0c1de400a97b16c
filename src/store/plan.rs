//! The endpoint write planner both backends share.
//!
//! A backend calls [`plan`] with a [`Snapshot`] of what it has loaded so far. The planner
//! simulates the whole operation in memory; when it needs a record, address index entry or
//! user list the snapshot lacks, it returns [`Needs`], the backend loads them (one round trip
//! on Redis) and calls again. Once nothing is missing it returns the [`Plan`]: every key to
//! write or delete, which the backend applies atomically. The rules live here once:
//!
//! - a write merges into the stored endpoint ([`crate::domain::endpoint::merge`]);
//! - writing an ACTIVE endpoint with the (channel, address) of another ACTIVE endpoint makes
//!   the other one INACTIVE;
//! - a user has at most 15 ACTIVE endpoints: one more native push endpoint retires the user's
//!   oldest ACTIVE push endpoint, anything else is rejected.

use std::collections::{HashMap, HashSet};

use crate::domain::endpoint::{self, is_active, is_push, MAX_ENDPOINTS_PER_USER};
use crate::domain::FieldViolation;
use crate::proto::v1::{ChannelType, Endpoint, EndpointStatus};

/// An endpoint write operation under one app.
#[derive(Debug, Clone)]
pub enum EndpointOp {
    /// Merge these writes (each with its id) in order.
    Upsert {
        writes: Vec<Endpoint>,
        /// Reject the whole operation if any write is rejected; otherwise skip rejected writes.
        all_or_nothing: bool,
        /// ISO-8601 time of the write.
        now: String,
        request_id: String,
    },
    /// Delete these endpoints; ids that do not exist are skipped.
    Delete { ids: Vec<String> },
    /// Delete every endpoint of a user.
    DeleteUser { user_id: String },
    /// Move existing endpoints' last activity forward (id, ISO-8601 instant); ids that do not
    /// exist are skipped. Nothing else of the endpoint changes.
    Touch { activity: Vec<(String, String)> },
}

/// A write the planner refused: its position in the operation, the field and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub index: usize,
    pub violation: FieldViolation,
}

/// What the planner needs loaded before it can decide.
#[derive(Debug, Default)]
pub struct Needs {
    pub endpoints: Vec<String>,
    pub addresses: Vec<String>,
    pub users: Vec<String>,
}

impl Needs {
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty() && self.addresses.is_empty() && self.users.is_empty()
    }
}

/// Stored state as loaded by a backend; a loaded key that does not exist is `None` (users: an
/// empty list).
#[derive(Debug, Default)]
pub struct Snapshot {
    pub endpoints: HashMap<String, Option<Endpoint>>,
    pub addresses: HashMap<String, Option<String>>,
    pub users: HashMap<String, Vec<String>>,
}

impl Snapshot {
    pub fn absorb_endpoints(&mut self, ids: Vec<String>, found: Vec<Option<Endpoint>>) {
        self.endpoints.extend(ids.into_iter().zip(found));
    }

    pub fn absorb_addresses(&mut self, keys: Vec<String>, found: Vec<Option<String>>) {
        self.addresses.extend(keys.into_iter().zip(found));
    }

    pub fn absorb_users(&mut self, users: Vec<String>, found: Vec<Option<String>>) {
        self.users.extend(users.into_iter().zip(found.into_iter().map(|ids| decode_user_list(ids.as_deref()))));
    }
}

/// Everything an operation changes, for the backend to apply atomically.
#[derive(Debug, Default)]
pub struct Plan {
    pub put_endpoints: Vec<Endpoint>,
    pub delete_endpoints: Vec<String>,
    pub put_addresses: Vec<(String, String)>,
    pub delete_addresses: Vec<String>,
    pub put_users: Vec<(String, String)>,
    pub delete_users: Vec<String>,
    /// Ids that did not exist before.
    pub created: Vec<String>,
    /// Upserts: for each accepted write, in order, the index in `put_endpoints` of the
    /// endpoint it resulted in.
    pub written: Vec<usize>,
    /// Deletes: the endpoints deleted.
    pub deleted: Vec<Endpoint>,
    pub rejections: Vec<Rejection>,
}

impl Plan {
    /// The endpoints the accepted writes resulted in, in write order.
    pub fn written_endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.written.iter().map(|&i| &self.put_endpoints[i])
    }

    /// Whether applying this plan changes nothing.
    pub fn is_noop(&self) -> bool {
        self.put_endpoints.is_empty()
            && self.delete_endpoints.is_empty()
            && self.put_addresses.is_empty()
            && self.delete_addresses.is_empty()
            && self.put_users.is_empty()
            && self.delete_users.is_empty()
    }
}

/// The address index key of a (channel, address) pair.
pub fn address_key(channel: i32, address: &str) -> String {
    let mut k = String::with_capacity(address.len() + 4);
    k.push_str(itoa_small(channel));
    k.push(':');
    k.push_str(address);
    k
}

/// Channel numbers as text without the formatting machinery (hot on imports).
fn itoa_small(n: i32) -> &'static str {
    const NAMES: [&str; 16] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15"];
    usize::try_from(n).ok().and_then(|i| NAMES.get(i)).copied().unwrap_or("?")
}

/// A user's endpoint ids are stored as one value, newline-separated (ids hold no control
/// characters).
pub fn encode_user_list(ids: &[String]) -> String {
    ids.join("\n")
}

pub fn decode_user_list(v: Option<&str>) -> Vec<String> {
    match v {
        None | Some("") => Vec::new(),
        Some(s) => s.split('\n').map(str::to_string).collect(),
    }
}

/// Plans `op` under `app_id` against `snap`, or says what must be loaded first.
pub fn plan(app_id: &str, op: &EndpointOp, snap: &Snapshot) -> Result<Plan, Needs> {
    let mut sim = Sim { snap, endpoints: HashMap::new(), addresses: HashMap::new(), users: HashMap::new(), missing: Missing::default() };
    let mut plan = Plan::default();
    let mut written_ids = Vec::new();
    match op {
        EndpointOp::Upsert { writes, now, request_id, .. } => {
            for (index, write) in writes.iter().enumerate() {
                match sim.upsert(app_id, write, now, request_id) {
                    Ok(()) => written_ids.push(write.id.as_str()),
                    Err(violations) => plan.rejections.extend(violations.into_iter().map(|violation| Rejection { index, violation })),
                }
            }
        }
        EndpointOp::Delete { ids } => {
            for id in ids {
                if let Some(e) = sim.delete(id) {
                    plan.deleted.push(e);
                }
            }
        }
        EndpointOp::DeleteUser { user_id } => {
            for id in sim.user(user_id) {
                if let Some(e) = sim.delete(&id) {
                    plan.deleted.push(e);
                }
            }
        }
        EndpointOp::Touch { activity } => {
            for (id, at) in activity {
                if let Some(mut e) = sim.endpoint(id) {
                    endpoint::touch(&mut e, at);
                    sim.endpoints.insert(id.clone(), Some(e));
                    written_ids.push(id.as_str());
                }
            }
        }
    }
    if !sim.missing.is_empty() {
        return Err(sim.missing.into_needs());
    }
    sim.finish(&mut plan, &written_ids);
    Ok(plan)
}

/// What an operation will certainly read, known without simulating it: the first load, so
/// that a write of new endpoints is usually planned after a single round trip.
pub fn prefetch(op: &EndpointOp) -> Needs {
    let mut needs = Needs::default();
    match op {
        EndpointOp::Upsert { writes, .. } => {
            let mut seen = HashSet::with_capacity(writes.len());
            for w in writes {
                if seen.insert(w.id.as_str()) {
                    needs.endpoints.push(w.id.clone());
                }
                if w.channel_type != 0 && !w.address.is_empty() {
                    needs.addresses.push(address_key(w.channel_type, &w.address));
                }
                if let Some(u) = endpoint::user_id(w) {
                    needs.users.push(u.to_string());
                }
            }
            needs.addresses.sort_unstable();
            needs.addresses.dedup();
            needs.users.sort_unstable();
            needs.users.dedup();
        }
        EndpointOp::Delete { ids } => needs.endpoints = ids.clone(),
        EndpointOp::DeleteUser { user_id } => needs.users.push(user_id.clone()),
        EndpointOp::Touch { activity } => needs.endpoints = activity.iter().map(|(id, _)| id.clone()).collect(),
    }
    needs
}

#[derive(Default)]
struct Missing {
    endpoints: HashSet<String>,
    addresses: HashSet<String>,
    users: HashSet<String>,
}

impl Missing {
    fn is_empty(&self) -> bool {
        self.endpoints.is_empty() && self.addresses.is_empty() && self.users.is_empty()
    }

    fn into_needs(self) -> Needs {
        Needs {
            endpoints: self.endpoints.into_iter().collect(),
            addresses: self.addresses.into_iter().collect(),
            users: self.users.into_iter().collect(),
        }
    }
}

/// The simulation: the snapshot plus the changes made so far. A key missing from both is
/// recorded and read as absent; the result is then discarded and the backend loads it.
struct Sim<'a> {
    snap: &'a Snapshot,
    endpoints: HashMap<String, Option<Endpoint>>,
    addresses: HashMap<String, Option<String>>,
    users: HashMap<String, Vec<String>>,
    missing: Missing,
}

impl Sim<'_> {
    fn endpoint(&mut self, id: &str) -> Option<Endpoint> {
        if let Some(e) = self.endpoints.get(id) {
            return e.clone();
        }
        match self.snap.endpoints.get(id) {
            Some(e) => e.clone(),
            None => {
                self.missing.endpoints.insert(id.to_string());
                None
            }
        }
    }

    fn address(&mut self, key: &str) -> Option<String> {
        if let Some(a) = self.addresses.get(key) {
            return a.clone();
        }
        match self.snap.addresses.get(key) {
            Some(a) => a.clone(),
            None => {
                self.missing.addresses.insert(key.to_string());
                None
            }
        }
    }

    fn user(&mut self, user_id: &str) -> Vec<String> {
        if let Some(u) = self.users.get(user_id) {
            return u.clone();
        }
        match self.snap.users.get(user_id) {
            Some(u) => u.clone(),
            None => {
                self.missing.users.insert(user_id.to_string());
                Vec::new()
            }
        }
    }

    fn set_status(&mut self, id: &str, status: EndpointStatus) {
        if let Some(mut e) = self.endpoint(id) {
            e.endpoint_status = status as i32;
            self.endpoints.insert(id.to_string(), Some(e));
        }
    }

    fn upsert(&mut self, app_id: &str, write: &Endpoint, now: &str, request_id: &str) -> Result<(), Vec<FieldViolation>> {
        let id = write.id.as_str();
        let old = self.endpoint(id);
        let (old_key, old_user) = match &old {
            Some(o) => (Some(address_key(o.channel_type, &o.address)), endpoint::user_id(o).map(str::to_string)),
            None => (None, None),
        };
        let merged = endpoint::merge(old, write, app_id, now, request_id);
        let violations = endpoint::validate_merged(&merged);
        if !violations.is_empty() {
            return Err(violations);
        }
        let active = is_active(&merged);
        let channel = ChannelType::try_from(merged.channel_type).unwrap_or(ChannelType::Unspecified);
        let new_user = endpoint::user_id(&merged).map(str::to_string);

        // The per-user cap, decided before anything changes.
        let mut retire = None;
        if let (Some(user), true) = (&new_user, active) {
            let mut active_others = Vec::new();
            for member in self.user(user) {
                if member == id {
                    continue;
                }
                if let Some(e) = self.endpoint(&member) {
                    if is_active(&e) {
                        active_others.push(e);
                    }
                }
            }
            if active_others.len() >= MAX_ENDPOINTS_PER_USER {
                let oldest_push = active_others
                    .iter()
                    .filter(|e| is_push(ChannelType::try_from(e.channel_type).unwrap_or_default()))
                    .min_by(|a, b| a.creation_date.cmp(&b.creation_date).then_with(|| a.id.cmp(&b.id)));
                match oldest_push {
                    Some(e) if is_push(channel) => retire = Some(e.id.clone()),
                    _ => {
                        return Err(vec![FieldViolation::new(
                            "user.user_id",
                            format!("user '{user}' already has {MAX_ENDPOINTS_PER_USER} active endpoints"),
                        )])
                    }
                }
            }
        }
        if let Some(oldest) = retire {
            self.set_status(&oldest, EndpointStatus::Inactive);
        }

        // The address index points at the latest ACTIVE endpoint of each (channel, address).
        let new_key = address_key(merged.channel_type, &merged.address);
        if let Some(old_key) = old_key {
            if old_key != new_key && self.address(&old_key).as_deref() == Some(id) {
                self.addresses.insert(old_key, None);
            }
        }
        if active {
            match self.address(&new_key) {
                Some(other) if other == id => {}
                Some(other) => {
                    if self.endpoint(&other).is_some_and(|e| is_active(&e)) {
                        self.set_status(&other, EndpointStatus::Inactive);
                    }
                    self.addresses.insert(new_key, Some(id.to_string()));
                }
                None => {
                    self.addresses.insert(new_key, Some(id.to_string()));
                }
            }
        }

        // User membership.
        if old_user != new_user {
            if let Some(u) = &old_user {
                let mut list = self.user(u);
                list.retain(|m| m != id);
                self.users.insert(u.clone(), list);
            }
        }
        if let Some(u) = &new_user {
            let mut list = self.user(u);
            if !list.iter().any(|m| m == id) {
                list.push(id.to_string());
                self.users.insert(u.clone(), list);
            }
        }

        self.endpoints.insert(id.to_string(), Some(merged));
        Ok(())
    }

    fn delete(&mut self, id: &str) -> Option<Endpoint> {
        let old = self.endpoint(id)?;
        let key = address_key(old.channel_type, &old.address);
        if self.address(&key).as_deref() == Some(id) {
            self.addresses.insert(key, None);
        }
        if let Some(u) = endpoint::user_id(&old) {
            let mut list = self.user(u);
            list.retain(|m| m != id);
            self.users.insert(u.to_string(), list);
        }
        self.endpoints.insert(id.to_string(), None);
        Some(old)
    }

    fn finish(self, plan: &mut Plan, written_ids: &[&str]) {
        let mut positions = HashMap::with_capacity(self.endpoints.len());
        for (id, e) in self.endpoints {
            let existed = self.snap.endpoints.get(&id).is_some_and(Option::is_some);
            match e {
                Some(e) => {
                    positions.insert(id.clone(), plan.put_endpoints.len());
                    if !existed {
                        plan.created.push(id);
                    }
                    plan.put_endpoints.push(e);
                }
                None if existed => plan.delete_endpoints.push(id),
                None => {}
            }
        }
        for (key, target) in self.addresses {
            match target {
                Some(id) => plan.put_addresses.push((key, id)),
                None => plan.delete_addresses.push(key),
            }
        }
        for (user, ids) in self.users {
            if ids.is_empty() {
                plan.delete_users.push(user);
            } else {
                plan.put_users.push((user, encode_user_list(&ids)));
            }
        }
        plan.written = written_ids.iter().filter_map(|id| positions.get(*id).copied()).collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1::EndpointUser;

    fn ep(id: &str, ch: ChannelType, addr: &str, user: Option<&str>) -> Endpoint {
        Endpoint {
            id: id.into(),
            channel_type: ch as i32,
            address: addr.into(),
            user: user.map(|u| EndpointUser { user_id: u.into(), ..Default::default() }),
            ..Default::default()
        }
    }

    fn upsert(writes: Vec<Endpoint>) -> EndpointOp {
        EndpointOp::Upsert { writes, all_or_nothing: true, now: "2026-01-01T00:00:00.000Z".into(), request_id: "r".into() }
    }

    fn load(store: &Snapshot, snap: &mut Snapshot, needs: Needs) {
        for id in needs.endpoints {
            snap.endpoints.insert(id.clone(), store.endpoints.get(&id).cloned().flatten());
        }
        for k in needs.addresses {
            snap.addresses.insert(k.clone(), store.addresses.get(&k).cloned().flatten());
        }
        for u in needs.users {
            snap.users.insert(u.clone(), store.users.get(&u).cloned().unwrap_or_default());
        }
    }

    /// Runs the planner the way a backend does, against an in-memory "store".
    fn run(store: &mut Snapshot, op: &EndpointOp) -> Plan {
        let mut snap = Snapshot::default();
        load(store, &mut snap, prefetch(op));
        let mut rounds = 0;
        let plan = loop {
            rounds += 1;
            assert!(rounds < 10, "planner does not converge");
            match plan("app", op, &snap) {
                Ok(p) => break p,
                Err(needs) => load(store, &mut snap, needs),
            }
        };
        if plan.rejections.is_empty() {
            for e in &plan.put_endpoints {
                store.endpoints.insert(e.id.clone(), Some(e.clone()));
            }
            for id in &plan.delete_endpoints {
                store.endpoints.remove(id);
            }
            for (k, v) in &plan.put_addresses {
                store.addresses.insert(k.clone(), Some(v.clone()));
            }
            for k in &plan.delete_addresses {
                store.addresses.remove(k);
            }
            for (u, v) in &plan.put_users {
                store.users.insert(u.clone(), decode_user_list(Some(v)));
            }
            for u in &plan.delete_users {
                store.users.remove(u);
            }
        }
        plan
    }

    fn status(store: &Snapshot, id: &str) -> i32 {
        store.endpoints[id].as_ref().unwrap().endpoint_status
    }

    #[test]
    fn same_address_retires_the_older_endpoint_even_within_one_batch() {
        let mut store = Snapshot::default();
        run(&mut store, &upsert(vec![ep("a", ChannelType::Email, "x@y.z", None)]));
        let p = run(&mut store, &upsert(vec![ep("b", ChannelType::Email, "x@y.z", None), ep("c", ChannelType::Email, "x@y.z", None)]));
        assert!(p.rejections.is_empty());
        assert_eq!(status(&store, "a"), EndpointStatus::Inactive as i32);
        assert_eq!(status(&store, "b"), EndpointStatus::Inactive as i32);
        assert_eq!(status(&store, "c"), EndpointStatus::Active as i32);
        // Same address on another channel is another destination.
        run(&mut store, &upsert(vec![ep("d", ChannelType::Sms, "+14155550100", None), ep("e", ChannelType::Voice, "+14155550100", None)]));
        assert_eq!(status(&store, "d"), EndpointStatus::Active as i32);
    }

    #[test]
    fn user_cap_rejects_non_push_and_retires_oldest_push() {
        let mut store = Snapshot::default();
        let mut writes: Vec<_> = (0..5).map(|i| ep(&format!("p{i}"), ChannelType::Gcm, &format!("tok{i}"), Some("u"))).collect();
        writes.extend((0..10).map(|i| ep(&format!("m{i}"), ChannelType::Email, &format!("m{i}@y.z"), Some("u"))));
        // Distinct creation dates so "oldest" is well defined.
        for (i, w) in writes.into_iter().enumerate() {
            let op = EndpointOp::Upsert {
                writes: vec![w],
                all_or_nothing: true,
                now: format!("2026-01-01T00:00:{i:02}.000Z"),
                request_id: "r".into(),
            };
            assert!(run(&mut store, &op).rejections.is_empty());
        }
        let p = run(&mut store, &upsert(vec![ep("m99", ChannelType::Email, "m99@y.z", Some("u"))]));
        assert_eq!(p.rejections[0].violation.field, "user.user_id");
        assert!(!store.endpoints.contains_key("m99"));
        let p = run(&mut store, &upsert(vec![ep("p99", ChannelType::Apns, "tok99", Some("u"))]));
        assert!(p.rejections.is_empty());
        assert_eq!(status(&store, "p0"), EndpointStatus::Inactive as i32);
        assert_eq!(status(&store, "p1"), EndpointStatus::Active as i32);
        assert_eq!(store.users["u"].len(), 16);
    }

    #[test]
    fn moving_and_deleting_keep_indexes_exact() {
        let mut store = Snapshot::default();
        run(&mut store, &upsert(vec![ep("a", ChannelType::Email, "x@y.z", Some("u1"))]));
        run(&mut store, &upsert(vec![ep("a", ChannelType::Email, "w@y.z", Some("u2"))]));
        assert!(!store.addresses.contains_key(&address_key(ChannelType::Email as i32, "x@y.z")));
        assert!(!store.users.contains_key("u1"));
        assert_eq!(store.users["u2"], ["a"]);
        let p = run(&mut store, &EndpointOp::DeleteUser { user_id: "u2".into() });
        assert_eq!(p.deleted.len(), 1);
        assert!(store.endpoints.is_empty() && store.addresses.is_empty() && store.users.is_empty());
    }

    #[test]
    fn rejected_writes_are_reported_by_index() {
        let mut store = Snapshot::default();
        let p = run(&mut store, &upsert(vec![ep("a", ChannelType::Email, "x@y.z", None), ep("b", ChannelType::Sms, "12", None)]));
        assert_eq!(p.rejections.len(), 1);
        assert_eq!(p.rejections[0].index, 1);
        assert_eq!(p.rejections[0].violation.field, "address");
        assert!(store.endpoints.is_empty(), "an all-or-nothing plan with rejections is not applied");
    }
}
