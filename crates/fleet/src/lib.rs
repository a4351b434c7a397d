//! # mediaproc-fleet — many mediaproc daemons behind one API
//!
//! A fleet is a set of `mediaproc serve --fleet redis://…` nodes sharing one registry. Each node publishes a
//! [`NodeRecord`] every second (id, API URL, mpUri, `SERVING`/`DRAINING`, capacity, active calls, worker load,
//! version) with a TTL of a few seconds, so a killed node leaves placement by itself. `POST /v1/sessions` on any
//! node picks a node ([`placement::candidates`]: power of two choices by free share of capacity, among fresh
//! serving nodes, reservations counted) and reserves a slot there with ONE atomic operation
//! ([`Registry::reserve`]; on Redis a Lua script that checks state and headroom, reserves and records
//! session → node). The reservation becomes active with the session's first media (the node's heartbeat counts
//! it and releases the reservation in one transaction), or expires.
//!
//! The design follows what the best media systems do (LiveKit: a Redis node registry with stats every 2 s and a
//! 5 s freshness rule; Jitsi's Jicofo: correct the load for recently placed endpoints) and what their users ran
//! into: reserve atomically, never let liveness depend on the registry, never let a draining node attract calls.
//!
//! This crate is the store and the choice; the daemon (`mediaproc-daemon`'s `fleet` module) does the HTTP: the
//! node-to-node creation, forwarding `GET`/`DELETE`, drain and the heartbeat task. Everything here is testable
//! without Redis: [`MemoryRegistry`] has the Redis store's semantics and the placement is a pure function.

pub mod error;
pub mod node;
pub mod placement;
pub mod redis;
pub mod registry;

pub use error::FleetError;
pub use node::{Heartbeat, NodeRecord, NodeState, NodeView};
pub use placement::{Eligibility, candidates, eligible};
pub use registry::{BoxFuture, MemoryRegistry, Refusal, Registry, Reservation, Ttls};

pub use crate::redis::RedisRegistry;

/// The default key prefix in Redis.
pub const DEFAULT_PREFIX: &str = "mediaproc:";

/// Wall-clock now in Unix milliseconds (the registry's time base: records and reservations carry it).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
