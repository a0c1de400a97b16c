//! The embedded store's endpoint write: the planner's reads and its plan, in one redb write
//! transaction.

use redb::{Database, ReadableTable};

use super::codec;
use super::embedded::{app_exists, backend, key};
use super::embedded_tables::{ADDRESSES, ENDPOINTS, USERS};
use super::plan::{self, EndpointOp, Plan, Snapshot};
use super::StoreError;

pub(super) fn write_endpoints(db: &Database, app_id: &str, op: &EndpointOp) -> Result<Plan, StoreError> {
    let txn = db.begin_write().map_err(backend)?;
    if !app_exists(&txn, app_id)? {
        return Err(StoreError::AppNotFound(app_id.to_string()));
    }
    let plan = {
        let endpoints = txn.open_table(ENDPOINTS).map_err(backend)?;
        let addresses = txn.open_table(ADDRESSES).map_err(backend)?;
        let users = txn.open_table(USERS).map_err(backend)?;
        let mut snap = Snapshot::default();
        let mut needs = plan::prefetch(op);
        loop {
            {
                for id in needs.endpoints {
                    let found = endpoints.get(key(app_id, &id).as_str()).map_err(backend)?;
                    let e = found.map(|g| codec::decode_endpoint(app_id, g.value())).transpose()?;
                    snap.endpoints.insert(id, e);
                }
                for k in needs.addresses {
                    let found = addresses.get(key(app_id, &k).as_str()).map_err(backend)?;
                    snap.addresses.insert(k, found.map(|g| g.value().to_string()));
                }
                for u in needs.users {
                    let found = users.get(key(app_id, &u).as_str()).map_err(backend)?;
                    snap.users.insert(u, plan::decode_user_list(found.as_ref().map(|g| g.value())));
                }
            }
            match plan::plan(app_id, op, &snap) {
                Ok(p) => break p,
                Err(more) => needs = more,
            }
        }
    };
    let all_or_nothing = matches!(op, EndpointOp::Upsert { all_or_nothing: true, .. });
    if plan.is_noop() || (all_or_nothing && !plan.rejections.is_empty()) {
        txn.abort().map_err(backend)?;
        return Ok(plan);
    }
    {
        let mut endpoints = txn.open_table(ENDPOINTS).map_err(backend)?;
        for e in &plan.put_endpoints {
            endpoints.insert(key(app_id, &e.id).as_str(), codec::encode_endpoint(app_id, e).as_slice()).map_err(backend)?;
        }
        for id in &plan.delete_endpoints {
            endpoints.remove(key(app_id, id).as_str()).map_err(backend)?;
        }
        let mut addresses = txn.open_table(ADDRESSES).map_err(backend)?;
        for (k, id) in &plan.put_addresses {
            addresses.insert(key(app_id, k).as_str(), id.as_str()).map_err(backend)?;
        }
        for k in &plan.delete_addresses {
            addresses.remove(key(app_id, k).as_str()).map_err(backend)?;
        }
        let mut users = txn.open_table(USERS).map_err(backend)?;
        for (u, ids) in &plan.put_users {
            users.insert(key(app_id, u).as_str(), ids.as_str()).map_err(backend)?;
        }
        for u in &plan.delete_users {
            users.remove(key(app_id, u).as_str()).map_err(backend)?;
        }
    }
    txn.commit().map_err(backend)?;
    Ok(plan)
}
