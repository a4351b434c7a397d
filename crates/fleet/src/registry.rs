//! The registry a fleet shares: a trait, so a store other than Redis can follow, and an in-memory store with the
//! same semantics for tests.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use crate::error::FleetError;
use crate::node::{Heartbeat, NodeRecord, NodeState, NodeView};

/// A boxed future, so the trait is object safe (`Arc<dyn Registry>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How long the registry keeps what the fleet writes. Everything expires: a node that dies leaves nothing behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ttls {
    /// A node record lives this long after its last heartbeat (ms): a killed node leaves placement by then.
    pub node_ms: u64,
    /// A reservation lives this long (ms) unless the node reports the session as its own first.
    pub reservation_ms: u64,
    /// A session → node key lives this long after the node last reported the session (ms); after a node died
    /// its sessions answer "lost" until then.
    pub session_ms: u64,
}

impl Default for Ttls {
    fn default() -> Self {
        Ttls {
            node_ms: 3_000,
            reservation_ms: 15_000,
            session_ms: 60_000,
        }
    }
}

/// Why a reservation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// No record: the node is gone (or never heartbeated since the registry restarted).
    Gone,
    /// The node is draining.
    Draining,
    /// Active plus reserved reached the capacity.
    Full,
    /// The session id is already placed.
    Duplicate,
}

/// The answer of [`Registry::reserve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// Reserved; the node now holds this many reservations.
    Reserved {
        /// Reservations on the node, this one included.
        reserved: u64,
    },
    /// Not reserved.
    Refused(Refusal),
}

/// The shared store of a fleet. Every write has a TTL ([`Ttls`]) or is removed.
pub trait Registry: Send + Sync + std::fmt::Debug {
    /// Publishes a node's record (TTL `node_ms`), refreshes its sessions' session → node keys and releases the
    /// reservations of the sessions whose media began (the record's `active` counts them now) — all in one
    /// transaction.
    fn heartbeat<'a>(&'a self, beat: &'a Heartbeat) -> BoxFuture<'a, Result<(), FleetError>>;

    /// Every registered node with its live reservations.
    fn nodes(&self, now_unix_ms: u64) -> BoxFuture<'_, Result<Vec<NodeView>, FleetError>>;

    /// Atomically: checks the node is registered, serving and has headroom (capacity > active + reserved),
    /// reserves a slot for `session` (expiring after `reservation_ms`) and records session → node.
    fn reserve<'a>(
        &'a self,
        node: &'a str,
        session: &'a str,
        now_unix_ms: u64,
    ) -> BoxFuture<'a, Result<Reservation, FleetError>>;

    /// The node that holds (or was given) `session`.
    fn lookup<'a>(&'a self, session: &'a str) -> BoxFuture<'a, Result<Option<String>, FleetError>>;

    /// A session ended or its creation failed: removes its reservation and its session → node key.
    fn forget<'a>(
        &'a self,
        node: &'a str,
        session: &'a str,
    ) -> BoxFuture<'a, Result<(), FleetError>>;

    /// The node leaves: removes its record (at exit, after a drain).
    fn deregister<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Result<(), FleetError>>;
}

/// An in-memory [`Registry`] with the Redis store's semantics (TTLs by the `now` it is given). For tests and for
/// a single process that wants the fleet code paths without Redis.
#[derive(Debug, Default)]
pub struct MemoryRegistry {
    ttls: Ttls,
    inner: Mutex<Memory>,
}

#[derive(Debug, Default)]
struct Memory {
    /// Node id → (record, expiry).
    nodes: HashMap<String, (NodeRecord, u64)>,
    /// Node id → session → expiry.
    reservations: HashMap<String, HashMap<String, u64>>,
    /// Session → (node, expiry).
    sessions: HashMap<String, (String, u64)>,
    /// The latest `now` seen (heartbeats carry their own time).
    now: u64,
}

impl MemoryRegistry {
    /// An empty registry with these TTLs.
    pub fn new(ttls: Ttls) -> Self {
        MemoryRegistry {
            ttls,
            inner: Mutex::new(Memory::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Memory {
    fn expire(&mut self, now: u64) {
        self.now = self.now.max(now);
        let now = self.now;
        self.nodes.retain(|_, (_, expiry)| *expiry > now);
        for reservations in self.reservations.values_mut() {
            reservations.retain(|_, expiry| *expiry > now);
        }
        self.sessions.retain(|_, (_, expiry)| *expiry > now);
    }
}

impl Registry for MemoryRegistry {
    fn heartbeat<'a>(&'a self, beat: &'a Heartbeat) -> BoxFuture<'a, Result<(), FleetError>> {
        Box::pin(async move {
            let now = beat.record.updated_unix_ms;
            let mut memory = self.lock();
            memory.expire(now);
            let id = beat.record.id.clone();
            memory
                .nodes
                .insert(id.clone(), (beat.record.clone(), now + self.ttls.node_ms));
            for session in &beat.sessions {
                memory
                    .sessions
                    .insert(session.clone(), (id.clone(), now + self.ttls.session_ms));
            }
            if let Some(reservations) = memory.reservations.get_mut(&id) {
                for session in &beat.released {
                    reservations.remove(session);
                }
            }
            Ok(())
        })
    }

    fn nodes(&self, now_unix_ms: u64) -> BoxFuture<'_, Result<Vec<NodeView>, FleetError>> {
        Box::pin(async move {
            let mut memory = self.lock();
            memory.expire(now_unix_ms);
            let mut views: Vec<NodeView> = memory
                .nodes
                .values()
                .map(|(record, _)| NodeView {
                    record: record.clone(),
                    reserved: memory
                        .reservations
                        .get(&record.id)
                        .map_or(0, |r| r.len() as u64),
                })
                .collect();
            views.sort_by(|a, b| a.record.id.cmp(&b.record.id));
            Ok(views)
        })
    }

    fn reserve<'a>(
        &'a self,
        node: &'a str,
        session: &'a str,
        now_unix_ms: u64,
    ) -> BoxFuture<'a, Result<Reservation, FleetError>> {
        Box::pin(async move {
            let mut memory = self.lock();
            memory.expire(now_unix_ms);
            let Some((record, _)) = memory.nodes.get(node) else {
                return Ok(Reservation::Refused(Refusal::Gone));
            };
            if record.state != NodeState::Serving {
                return Ok(Reservation::Refused(Refusal::Draining));
            }
            let (capacity, active) = (record.capacity, record.active);
            let reserved = memory.reservations.get(node).map_or(0, |r| r.len() as u64);
            if active + reserved >= capacity {
                return Ok(Reservation::Refused(Refusal::Full));
            }
            if memory.sessions.contains_key(session) {
                return Ok(Reservation::Refused(Refusal::Duplicate));
            }
            let expiry = memory.now + self.ttls.reservation_ms;
            memory
                .reservations
                .entry(node.to_owned())
                .or_default()
                .insert(session.to_owned(), expiry);
            memory
                .sessions
                .insert(session.to_owned(), (node.to_owned(), expiry));
            Ok(Reservation::Reserved {
                reserved: reserved + 1,
            })
        })
    }

    fn lookup<'a>(&'a self, session: &'a str) -> BoxFuture<'a, Result<Option<String>, FleetError>> {
        Box::pin(async move {
            let mut memory = self.lock();
            let now = memory.now;
            memory.expire(now);
            Ok(memory.sessions.get(session).map(|(node, _)| node.clone()))
        })
    }

    fn forget<'a>(
        &'a self,
        node: &'a str,
        session: &'a str,
    ) -> BoxFuture<'a, Result<(), FleetError>> {
        Box::pin(async move {
            let mut memory = self.lock();
            if let Some(reservations) = memory.reservations.get_mut(node) {
                reservations.remove(session);
            }
            memory.sessions.remove(session);
            Ok(())
        })
    }

    fn deregister<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Result<(), FleetError>> {
        Box::pin(async move {
            let mut memory = self.lock();
            memory.nodes.remove(node);
            memory.reservations.remove(node);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(id: &str, capacity: u64, active: u64, now: u64, sessions: &[&str]) -> Heartbeat {
        Heartbeat {
            record: NodeRecord {
                id: id.to_owned(),
                api_url: String::new(),
                mp_uri: String::new(),
                state: NodeState::Serving,
                capacity,
                active,
                load: 0.0,
                version: "test".to_owned(),
                updated_unix_ms: now,
            },
            sessions: sessions.iter().map(|s| (*s).to_owned()).collect(),
            released: sessions.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[tokio::test]
    async fn reservations_fill_expire_and_turn_active() {
        let registry = MemoryRegistry::new(Ttls::default());
        registry
            .heartbeat(&beat("a", 2, 0, 1_000, &[]))
            .await
            .unwrap();
        assert_eq!(
            registry.reserve("a", "s1", 1_000).await.unwrap(),
            Reservation::Reserved { reserved: 1 }
        );
        assert_eq!(
            registry.reserve("a", "s1", 1_000).await.unwrap(),
            Reservation::Refused(Refusal::Duplicate)
        );
        registry.reserve("a", "s2", 1_000).await.unwrap();
        assert_eq!(
            registry.reserve("a", "s3", 1_000).await.unwrap(),
            Reservation::Refused(Refusal::Full)
        );
        assert_eq!(registry.lookup("s1").await.unwrap().as_deref(), Some("a"));
        // The node reports s1 as its own: one active, one reserved, still full.
        registry
            .heartbeat(&beat("a", 2, 1, 2_000, &["s1"]))
            .await
            .unwrap();
        let nodes = registry.nodes(2_000).await.unwrap();
        assert_eq!((nodes[0].record.active, nodes[0].reserved), (1, 1));
        // s2 never came: its reservation expires, a slot is free again.
        registry
            .heartbeat(&beat("a", 2, 1, 16_500, &["s1"]))
            .await
            .unwrap();
        assert_eq!(registry.nodes(16_500).await.unwrap()[0].reserved, 0);
        assert_eq!(registry.lookup("s2").await.unwrap(), None);
        assert_eq!(registry.lookup("s1").await.unwrap().as_deref(), Some("a"));
        assert!(matches!(
            registry.reserve("a", "s4", 16_500).await.unwrap(),
            Reservation::Reserved { .. }
        ));
    }

    #[tokio::test]
    async fn a_silent_node_expires_and_a_draining_one_refuses() {
        let registry = MemoryRegistry::new(Ttls::default());
        let mut draining = beat("d", 10, 0, 1_000, &[]);
        draining.record.state = NodeState::Draining;
        registry.heartbeat(&draining).await.unwrap();
        registry
            .heartbeat(&beat("k", 10, 0, 1_000, &[]))
            .await
            .unwrap();
        assert_eq!(
            registry.reserve("d", "s", 1_000).await.unwrap(),
            Reservation::Refused(Refusal::Draining)
        );
        assert_eq!(registry.nodes(3_999).await.unwrap().len(), 2);
        assert!(registry.nodes(4_001).await.unwrap().is_empty());
        assert_eq!(
            registry.reserve("k", "s", 4_001).await.unwrap(),
            Reservation::Refused(Refusal::Gone)
        );
    }
}
