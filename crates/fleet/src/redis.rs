//! The [`Registry`] on Redis.
//!
//! Keys (with the configured prefix, `mediaproc:` by default), every one with a TTL:
//! - `node:{id}` — the node's record as JSON; `SET … PX node_ms` each heartbeat.
//! - `resv:{id}` — the node's reservations, a sorted set of session ids scored by expiry (Unix ms); the key itself
//!   expires `reservation_ms` after the last reservation or heartbeat.
//! - `session:{sid}` — the node holding the session; `reservation_ms` when reserved, `session_ms` once the node
//!   reports the session, refreshed each heartbeat.
//!
//! The reservation is ONE Lua script ([`RESERVE_SCRIPT`]), so the check of state and headroom, the reservation and
//! the session → node record cannot interleave with another placer's. The connection is opened lazily and
//! re-opened by the connection manager: a node starts, and keeps its calls, while Redis is away.

use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Mutex;

use crate::error::FleetError;
use crate::node::{Heartbeat, NodeRecord, NodeView};
use crate::registry::{BoxFuture, Refusal, Registry, Reservation, Ttls};

/// Check the node, reserve, record session → node — atomically (Redis runs a script without interleaving).
///
/// KEYS: node record, node reservations, session → node. ARGV: session id, node id, now (Unix ms), reservation TTL
/// (ms). Returns `{1, reserved}` or `{0, reason}`.
pub const RESERVE_SCRIPT: &str = r"
local raw = redis.call('GET', KEYS[1])
if not raw then return {0, 'gone'} end
local node = cjson.decode(raw)
if node.state ~= 'SERVING' then return {0, 'draining'} end
local now = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local reserved = redis.call('ZCARD', KEYS[2])
if node.active + reserved >= node.capacity then return {0, 'full'} end
if redis.call('EXISTS', KEYS[3]) == 1 then return {0, 'duplicate'} end
redis.call('ZADD', KEYS[2], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('SET', KEYS[3], ARGV[2], 'PX', ttl)
return {1, reserved + 1}
";

/// How long one registry operation may take before it counts as unreachable: placement falls back (or refuses)
/// instead of hanging a creation on a dead Redis.
pub const OPERATION_TIMEOUT: Duration = Duration::from_millis(500);

/// The Redis registry. See the module docs.
pub struct RedisRegistry {
    client: redis::Client,
    prefix: String,
    ttls: Ttls,
    connection: Mutex<Option<ConnectionManager>>,
    script: redis::Script,
}

impl std::fmt::Debug for RedisRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRegistry")
            .field("prefix", &self.prefix)
            .field("ttls", &self.ttls)
            .finish_non_exhaustive()
    }
}

impl RedisRegistry {
    /// A registry at `url` (`redis://host:6379/0`); connects on first use.
    pub fn new(url: &str, prefix: &str, ttls: Ttls) -> Result<Self, FleetError> {
        let client = redis::Client::open(url)
            .map_err(|err| FleetError::Config(format!("`{url}` is not a Redis URL: {err}")))?;
        Ok(RedisRegistry {
            client,
            prefix: prefix.to_owned(),
            ttls,
            connection: Mutex::new(None),
            script: redis::Script::new(RESERVE_SCRIPT),
        })
    }

    fn key(&self, kind: &str, id: &str) -> String {
        format!("{}{kind}:{id}", self.prefix)
    }

    /// The connection manager, opened on first use (and again after a failed open).
    async fn connection(&self) -> Result<ConnectionManager, FleetError> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(OPERATION_TIMEOUT)
            .set_response_timeout(OPERATION_TIMEOUT)
            .set_number_of_retries(1)
            .set_max_delay(200);
        let connection = tokio::time::timeout(
            OPERATION_TIMEOUT * 2,
            self.client.get_connection_manager_with_config(config),
        )
        .await
        .map_err(|_| FleetError::Unreachable("connect timed out".to_owned()))??;
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// Runs `op` within [`OPERATION_TIMEOUT`].
    async fn timed<T>(op: impl Future<Output = Result<T, FleetError>>) -> Result<T, FleetError> {
        tokio::time::timeout(OPERATION_TIMEOUT, op)
            .await
            .map_err(|_| FleetError::Unreachable("operation timed out".to_owned()))?
    }
}

impl Registry for RedisRegistry {
    fn heartbeat<'a>(&'a self, beat: &'a Heartbeat) -> BoxFuture<'a, Result<(), FleetError>> {
        Box::pin(async move {
            let mut connection = self.connection().await?;
            let id = &beat.record.id;
            let json = serde_json::to_string(&beat.record)
                .map_err(|err| FleetError::Protocol(err.to_string()))?;
            let reservations = self.key("resv", id);
            let mut pipe = redis::pipe();
            pipe.atomic()
                .cmd("SET")
                .arg(self.key("node", id))
                .arg(json)
                .arg("PX")
                .arg(self.ttls.node_ms)
                .ignore();
            for session in &beat.sessions {
                pipe.cmd("SET")
                    .arg(self.key("session", session))
                    .arg(id)
                    .arg("PX")
                    .arg(self.ttls.session_ms)
                    .ignore();
            }
            if !beat.released.is_empty() {
                pipe.zrem(&reservations, &beat.released).ignore();
            }
            pipe.zrembyscore(&reservations, "-inf", beat.record.updated_unix_ms)
                .ignore();
            Self::timed(async {
                pipe.query_async::<()>(&mut connection).await?;
                Ok(())
            })
            .await
        })
    }

    fn nodes(&self, now_unix_ms: u64) -> BoxFuture<'_, Result<Vec<NodeView>, FleetError>> {
        Box::pin(async move {
            let mut connection = self.connection().await?;
            Self::timed(async {
                let pattern = format!("{}node:*", self.prefix);
                let mut keys: Vec<String> = Vec::new();
                {
                    let mut iter = connection.scan_match::<_, String>(&pattern).await?;
                    while let Some(key) = iter.next_item().await {
                        keys.push(key?);
                    }
                }
                if keys.is_empty() {
                    return Ok(Vec::new());
                }
                let records: Vec<Option<String>> = connection.mget(&keys).await?;
                let mut views = Vec::with_capacity(keys.len());
                let mut pipe = redis::pipe();
                let mut parsed = Vec::new();
                for raw in records.into_iter().flatten() {
                    let record: NodeRecord = serde_json::from_str(&raw)
                        .map_err(|err| FleetError::Protocol(format!("node record: {err}")))?;
                    pipe.zcount(
                        self.key("resv", &record.id),
                        format!("({now_unix_ms}"),
                        "+inf",
                    );
                    parsed.push(record);
                }
                let counts: Vec<u64> = pipe.query_async(&mut connection).await?;
                for (record, reserved) in parsed.into_iter().zip(counts) {
                    views.push(NodeView { record, reserved });
                }
                views.sort_by(|a, b| a.record.id.cmp(&b.record.id));
                Ok(views)
            })
            .await
        })
    }

    fn reserve<'a>(
        &'a self,
        node: &'a str,
        session: &'a str,
        now_unix_ms: u64,
    ) -> BoxFuture<'a, Result<Reservation, FleetError>> {
        Box::pin(async move {
            let mut connection = self.connection().await?;
            let (ok, detail): (u8, redis::Value) = Self::timed(async {
                Ok(self
                    .script
                    .key(self.key("node", node))
                    .key(self.key("resv", node))
                    .key(self.key("session", session))
                    .arg(session)
                    .arg(node)
                    .arg(now_unix_ms)
                    .arg(self.ttls.reservation_ms)
                    .invoke_async(&mut connection)
                    .await?)
            })
            .await?;
            if ok == 1 {
                let reserved: u64 = redis::from_redis_value(&detail).unwrap_or(1);
                return Ok(Reservation::Reserved { reserved });
            }
            let reason: String = redis::from_redis_value(&detail).unwrap_or_default();
            Ok(Reservation::Refused(match reason.as_str() {
                "gone" => Refusal::Gone,
                "draining" => Refusal::Draining,
                "full" => Refusal::Full,
                "duplicate" => Refusal::Duplicate,
                other => {
                    return Err(FleetError::Protocol(format!(
                        "the reservation script answered `{other}`"
                    )));
                }
            }))
        })
    }

    fn lookup<'a>(&'a self, session: &'a str) -> BoxFuture<'a, Result<Option<String>, FleetError>> {
        Box::pin(async move {
            let mut connection = self.connection().await?;
            Self::timed(async { Ok(connection.get(self.key("session", session)).await?) }).await
        })
    }

    fn forget<'a>(
        &'a self,
        node: &'a str,
        session: &'a str,
    ) -> BoxFuture<'a, Result<(), FleetError>> {
        Box::pin(async move {
            let mut connection = self.connection().await?;
            let mut pipe = redis::pipe();
            pipe.atomic()
                .zrem(self.key("resv", node), session)
                .ignore()
                .del(self.key("session", session))
                .ignore();
            Self::timed(async {
                pipe.query_async::<()>(&mut connection).await?;
                Ok(())
            })
            .await
        })
    }

    fn deregister<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Result<(), FleetError>> {
        Box::pin(async move {
            let mut connection = self.connection().await?;
            Self::timed(async {
                connection
                    .del::<_, ()>(&[self.key("node", node), self.key("resv", node)])
                    .await?;
                Ok(())
            })
            .await
        })
    }
}
