//! Connections of the Redis backend: to one Redis (a pool for write transactions beside one
//! shared auto-reconnecting connection) or to a Redis Cluster (one multiplexed connection to
//! every master), behind one [`Conn`] that every store call sends on.

use std::time::Duration;

use deadpool_redis::redis::{self, aio::ConnectionManager, cluster_async::ClusterConnection};
use deadpool_redis::{Manager, Pool, Runtime};

use super::redis::RedisStore;
use super::StoreError;

const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// One Redis, or a Redis Cluster.
pub(super) enum Backend {
    Single {
        /// Connections for write transactions, so a large import never delays reads.
        pool: Pool,
        /// Shared, auto-reconnecting connection for reads and single-command writes.
        shared: ConnectionManager,
    },
    /// One multiplexed connection to every master, routing each command (and each script and
    /// pipeline, whose keys share one app's slot) by its keys, following MOVED and ASK
    /// redirections and the slot map's changes after a failover.
    Cluster(ClusterConnection),
}

/// A connection to the store: the shared one, one of the pool's, or the cluster's.
pub(super) enum Conn {
    Shared(ConnectionManager),
    Pooled(deadpool_redis::Connection),
    /// A second handle on a pooled connection's multiplexed link.
    Multiplexed(redis::aio::MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Conn::Shared(c) => c.req_packed_command(cmd),
            Conn::Pooled(c) => c.req_packed_command(cmd),
            Conn::Multiplexed(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Shared(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Pooled(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Multiplexed(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Shared(c) => c.get_db(),
            Conn::Pooled(c) => c.get_db(),
            Conn::Multiplexed(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

impl Conn {
    /// Another handle on the same link, to send on it concurrently.
    pub(super) fn twin(&self) -> Conn {
        match self {
            Conn::Shared(c) => Conn::Shared(c.clone()),
            Conn::Pooled(c) => Conn::Multiplexed((**c).clone()),
            Conn::Multiplexed(c) => Conn::Multiplexed(c.clone()),
            Conn::Cluster(c) => Conn::Cluster(c.clone()),
        }
    }

    /// A command without keys (SCAN) sent to the master that holds `key`'s slot: the node
    /// where the keys it looks for live, on a cluster; the one server otherwise.
    pub(super) async fn on_node_of<T: redis::FromRedisValue>(&mut self, key: &str, cmd: redis::Cmd) -> Result<T, StoreError> {
        match self {
            Conn::Cluster(c) => {
                use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, Slot, SlotAddr};
                let route = Route::with_slot(Slot::for_key(key), SlotAddr::Master);
                let value = c.route_command(cmd, RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route))).await?;
                redis::from_redis_value(value).map_err(|e| StoreError::Backend(e.to_string()))
            }
            other => Ok(cmd.query_async(other).await?),
        }
    }
}

impl RedisStore {
    pub async fn connect(url: &str, pool_size: usize) -> Result<Self, StoreError> {
        let conn_config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(RESPONSE_TIMEOUT));
        let manager = Manager::new_with_config(url, conn_config)?;
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        let client = redis::Client::open(url)?;
        let cm_config = redis::aio::ConnectionManagerConfig::new().set_response_timeout(Some(RESPONSE_TIMEOUT));
        let shared = ConnectionManager::new_with_config(client, cm_config).await?;
        Ok(Self {
            backend: Backend::Single { pool, shared },
            day_buckets: Default::default(),
            levels: Default::default(),
            dicts: Default::default(),
        })
    }

    /// A Redis Cluster, found from any of its nodes (`seeds`: `redis://host:port` URLs).
    pub async fn connect_cluster(seeds: &[String]) -> Result<Self, StoreError> {
        let client = redis::cluster::ClusterClientBuilder::new(seeds.iter().map(String::as_str))
            .response_timeout(RESPONSE_TIMEOUT)
            .connection_timeout(Duration::from_secs(5))
            .build()?;
        let conn = client.get_async_connection().await?;
        Ok(Self { backend: Backend::Cluster(conn), day_buckets: Default::default(), levels: Default::default(), dicts: Default::default() })
    }

    pub(super) fn conn(&self) -> Conn {
        match &self.backend {
            Backend::Single { shared, .. } => Conn::Shared(shared.clone()),
            Backend::Cluster(c) => Conn::Cluster(c.clone()),
        }
    }

    /// A connection for a write transaction (a pooled one on a single Redis).
    pub(super) async fn pooled(&self) -> Result<Conn, StoreError> {
        match &self.backend {
            Backend::Single { pool, .. } => Ok(Conn::Pooled(pool.get().await?)),
            Backend::Cluster(c) => Ok(Conn::Cluster(c.clone())),
        }
    }
}
