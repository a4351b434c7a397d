//! The node record every member of the fleet publishes with each heartbeat.

use serde::{Deserialize, Serialize};

/// Whether a node takes new sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NodeState {
    /// Takes new sessions.
    Serving,
    /// Keeps its calls, takes no new session (drain; reversible with undrain).
    Draining,
}

/// One node as the registry holds it (JSON in Redis; the reservation script reads `state`, `capacity`, `active`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    /// Stable node id (the pod name in Kubernetes).
    pub id: String,
    /// Base URL of the node's control API as other nodes reach it (`http://10.0.0.7:8080`).
    pub api_url: String,
    /// The node's media endpoint, written into the blobs it issues.
    pub mp_uri: String,
    /// Serving or draining.
    pub state: NodeState,
    /// Calls the node may carry.
    pub capacity: u64,
    /// Sessions the node counts as its own load: those whose media began, and those still waiting for their edge
    /// after their reservation expired (they hold a slot all the same).
    pub active: u64,
    /// Highest media worker load (share of the 20 ms tick spent working, 0..1).
    pub load: f64,
    /// mediaproc version.
    pub version: String,
    /// Wall-clock time of this heartbeat, Unix milliseconds.
    pub updated_unix_ms: u64,
}

/// A node as placement sees it: its record and its reservations not yet counted in `active`.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    /// The last heartbeat's record.
    pub record: NodeRecord,
    /// Live reservations (placed sessions the node has not yet reported as active).
    pub reserved: u64,
}

impl NodeView {
    /// Calls the node can still take: capacity less active and reserved.
    pub fn headroom(&self) -> u64 {
        self.record
            .capacity
            .saturating_sub(self.record.active + self.reserved)
    }

    /// Share of the capacity still free (0..1); 0 for a node without capacity.
    pub fn free_share(&self) -> f64 {
        if self.record.capacity == 0 {
            0.0
        } else {
            self.headroom() as f64 / self.record.capacity as f64
        }
    }
}

/// What a node publishes each heartbeat.
#[derive(Debug, Clone, PartialEq)]
pub struct Heartbeat {
    /// The node's record.
    pub record: NodeRecord,
    /// Ids of every session it holds: their session → node keys are refreshed (or rewritten after a registry
    /// restart).
    pub sessions: Vec<String>,
    /// The sessions whose media began (a subset of `sessions`): their reservations become active — released,
    /// since `record.active` counts them now.
    pub released: Vec<String>,
}
