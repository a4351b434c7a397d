//! The fleet glue (issue 12): this daemon as one node of a fleet sharing a registry (`mediaproc-fleet`).
//!
//! - **Heartbeat** ([`heartbeat`]): every `heartbeat_ms` the node publishes its record (state, capacity, active
//!   sessions, worker load) and its session ids; after a failure it retries every 200 ms, so a restarted Redis
//!   sees every node again well within 2 s. A failing registry never touches the calls.
//! - **Placement** ([`Fleet::place`]): `POST /v1/sessions` on any node reads the nodes, orders the candidates
//!   (power of two choices by free share) and reserves on the first that accepts (one atomic script). The chosen
//!   node creates the session with the reserved id when asked on `POST /v1/fleet/sessions/{id}` with the fleet
//!   secret — never the user's token, which stays on the node it was sent to. If the registry is unreachable, the
//!   node places locally or refuses, per `fleet.when_unreachable`.
//! - **Lookup** ([`Fleet::forward`]): `GET`/`DELETE /v1/sessions/{id}` for a session another node holds are
//!   forwarded to it; a session whose node left the fleet answers `410 session_lost`.
//! - **Drain** ([`Drain`]): refuses new sessions, keeps the calls, completes when the last ends or at the deadline;
//!   undrain reverts it. Drain works without a fleet too (`mediaproc drain`).
//!
//! This module sits below the API (it returns [`DaemonError`]s and raw forwarded answers; `api` maps them).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use mediaproc_fleet::{
    Eligibility, Heartbeat, NodeRecord, NodeState, NodeView, RedisRegistry, Registry, Reservation,
    Ttls,
};
use tokio::sync::watch;
use uuid::Uuid;

use crate::config::{Config, WhenUnreachable};
use crate::error::DaemonError;

/// Header a forwarding node adds so the answering node's logs say who asked.
pub const FORWARDED_BY: &str = "x-mediaproc-fleet-node";
/// Nodes tried for one creation before it is refused (each refusal is a race lost to another placer).
pub const PLACEMENT_ATTEMPTS: usize = 3;
/// A node-to-node request that takes longer has failed (the next candidate is tried).
pub const NODE_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Retry period of a failed heartbeat.
pub const HEARTBEAT_RETRY: Duration = Duration::from_millis(200);

/// Counters of the fleet glue, for `/metrics` and `/v1/fleet/nodes`.
#[derive(Debug, Default)]
pub struct FleetCounters {
    /// Sessions placed on this node by the registry.
    pub placed_here: AtomicU64,
    /// Sessions placed on another node (created there node to node).
    pub placed_remote: AtomicU64,
    /// Sessions created here because the registry was unreachable (`when_unreachable = local`).
    pub placed_local_unreachable: AtomicU64,
    /// Creations refused: no node had headroom, or the registry was unreachable and the config says refuse.
    pub refused: AtomicU64,
    /// Reservations the script refused (full, draining, gone): races lost to other placers.
    pub reservations_refused: AtomicU64,
    /// Node-to-node creations that failed (the next candidate was tried).
    pub remote_failures: AtomicU64,
    /// Heartbeats that failed.
    pub heartbeat_failures: AtomicU64,
    /// Requests forwarded to the node holding the session.
    pub forwarded: AtomicU64,
}

/// Where [`Fleet::place`] put a session.
#[derive(Debug)]
pub enum Placed {
    /// Create it here with this id (reserved here, or the registry is unreachable and the node places locally).
    Here {
        /// The session id to create.
        id: Uuid,
        /// True when a reservation was taken (forget it if the creation fails).
        reserved: bool,
    },
    /// Created on another node; its answer.
    Remote(Forwarded),
}

/// Another node's HTTP answer, passed through.
#[derive(Debug)]
pub struct Forwarded {
    /// Its status.
    pub status: u16,
    /// Its `Content-Type`.
    pub content_type: Option<String>,
    /// Its `Location`.
    pub location: Option<String>,
    /// Its body.
    pub body: Vec<u8>,
}

/// This node's membership of a fleet. See the module docs.
#[derive(Debug)]
pub struct Fleet {
    registry: Arc<dyn Registry>,
    node_id: String,
    secret: String,
    /// This node's API as other nodes reach it.
    pub api_url: String,
    capacity: u64,
    when_unreachable: WhenUnreachable,
    heartbeat_period: Duration,
    reservation_ms: u64,
    rules: Eligibility,
    http: reqwest::Client,
    registered: AtomicBool,
    /// Wakes the heartbeat early (a drain or undrain is published at once, not a period later).
    wake: tokio::sync::Notify,
    /// Counters.
    pub counters: FleetCounters,
}

impl Fleet {
    /// The fleet of `config`, if it names a registry. `api_url` is the node's API as others reach it.
    pub fn from_config(config: &Config, api_url: String) -> Result<Option<Fleet>, DaemonError> {
        let fleet = &config.fleet;
        let Some(url) = &fleet.redis else {
            return Ok(None);
        };
        let ttls = Ttls {
            node_ms: fleet.node_ttl_ms,
            reservation_ms: fleet.reservation_ttl_ms,
            ..Ttls::default()
        };
        let registry = RedisRegistry::new(url, &fleet.key_prefix, ttls)
            .map_err(|err| DaemonError::Config(err.to_string()))?;
        Ok(Some(Fleet::with_registry(
            config,
            Arc::new(registry),
            api_url,
        )?))
    }

    /// A fleet member on any [`Registry`] (tests use the in-memory one).
    pub fn with_registry(
        config: &Config,
        registry: Arc<dyn Registry>,
        api_url: String,
    ) -> Result<Fleet, DaemonError> {
        let fleet = &config.fleet;
        let node_id = fleet
            .node_id
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .filter(|id| !id.trim().is_empty())
            .unwrap_or_else(|| format!("node-{}", Uuid::new_v4().simple()));
        let http = reqwest::Client::builder()
            .timeout(NODE_REQUEST_TIMEOUT)
            .build()
            .map_err(|err| DaemonError::Config(format!("fleet HTTP client: {err}")))?;
        Ok(Fleet {
            registry,
            node_id,
            secret: fleet.secret.clone().unwrap_or_default(),
            api_url: fleet.api_url.clone().unwrap_or(api_url),
            capacity: if fleet.capacity == 0 {
                config.max_sessions as u64
            } else {
                fleet.capacity as u64
            },
            when_unreachable: fleet.when_unreachable,
            heartbeat_period: Duration::from_millis(fleet.heartbeat_ms),
            reservation_ms: fleet.reservation_ttl_ms,
            rules: Eligibility {
                // Fresh means within the record's TTL (LiveKit: stats under 5 s old).
                stale_after_ms: fleet.node_ttl_ms.max(1),
                load_limit: config.overloaded_at,
            },
            http,
            registered: AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
            counters: FleetCounters::default(),
        })
    }

    /// How long a reservation lives (ms): a session still waiting for its edge after this counts as active.
    pub fn reservation_ms(&self) -> u64 {
        self.reservation_ms
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// True while the last heartbeat reached the registry.
    pub fn registered(&self) -> bool {
        self.registered.load(Ordering::Relaxed)
    }

    /// Publishes the record now (after a drain or undrain).
    pub fn beat_now(&self) {
        self.wake.notify_one();
    }

    /// True when the node should report ready while the registry is unreachable (it places locally).
    pub fn places_locally_when_unreachable(&self) -> bool {
        self.when_unreachable == WhenUnreachable::Local
    }

    /// True when `token` is the fleet secret (constant time).
    pub fn secret_matches(&self, token: &str) -> bool {
        let (a, b) = (token.as_bytes(), self.secret.as_bytes());
        !b.is_empty()
            && a.len() == b.len()
            && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    /// The fleet's nodes as the registry holds them.
    pub async fn nodes(&self) -> Result<Vec<NodeView>, DaemonError> {
        self.registry
            .nodes(mediaproc_fleet::unix_ms())
            .await
            .map_err(|err| DaemonError::FleetUnavailable(err.to_string()))
    }

    /// Places a session (the body of `POST /v1/sessions`, already validated by the caller): reserves on the best
    /// candidate that accepts and, for another node, creates it there. See the module docs.
    pub async fn place(&self, body: &[u8], draining_here: bool) -> Result<Placed, DaemonError> {
        let now = mediaproc_fleet::unix_ms();
        let nodes = match self.registry.nodes(now).await {
            Ok(nodes) => nodes,
            Err(err) => return self.unreachable(&err.to_string()),
        };
        let random = Uuid::new_v4().as_u64_pair();
        let candidates = mediaproc_fleet::candidates(&nodes, now, &self.rules, random);
        let candidates = candidates
            .into_iter()
            // Our own record may say SERVING for up to a heartbeat after a drain began.
            .filter(|node| !(draining_here && node.record.id == self.node_id));
        for node in candidates.take(PLACEMENT_ATTEMPTS) {
            let id = Uuid::new_v4();
            let session = id.to_string();
            match self.registry.reserve(&node.record.id, &session, now).await {
                Ok(Reservation::Reserved { .. }) => {}
                Ok(Reservation::Refused(_)) => {
                    self.counters
                        .reservations_refused
                        .fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Err(err) => return self.unreachable(&err.to_string()),
            }
            if node.record.id == self.node_id {
                self.counters.placed_here.fetch_add(1, Ordering::Relaxed);
                return Ok(Placed::Here { id, reserved: true });
            }
            match self.create_remote(&node.record, id, body).await {
                Ok(answer) if answer.status == 201 => {
                    self.counters.placed_remote.fetch_add(1, Ordering::Relaxed);
                    return Ok(Placed::Remote(answer));
                }
                // A refusal of the request itself (a 4xx) is the caller's answer; another node would say the same.
                Ok(answer) if (400..500).contains(&answer.status) => {
                    self.forget(&node.record.id, &session).await;
                    return Ok(Placed::Remote(answer));
                }
                outcome => {
                    self.counters
                        .remote_failures
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(node = %node.record.id, ?outcome, "node-to-node creation failed; trying the next node");
                    self.forget(&node.record.id, &session).await;
                }
            }
        }
        self.counters.refused.fetch_add(1, Ordering::Relaxed);
        Err(DaemonError::FleetUnavailable(
            "no node of the fleet can take a session now (all full, draining or unreachable)"
                .into(),
        ))
    }

    fn unreachable(&self, why: &str) -> Result<Placed, DaemonError> {
        match self.when_unreachable {
            WhenUnreachable::Local => {
                self.counters
                    .placed_local_unreachable
                    .fetch_add(1, Ordering::Relaxed);
                Ok(Placed::Here {
                    id: Uuid::new_v4(),
                    reserved: false,
                })
            }
            WhenUnreachable::Refuse => {
                self.counters.refused.fetch_add(1, Ordering::Relaxed);
                Err(DaemonError::FleetUnavailable(format!(
                    "the fleet registry is unreachable ({why}) and this node is configured to refuse \
                     (fleet.when_unreachable = \"refuse\")"
                )))
            }
        }
    }

    async fn create_remote(
        &self,
        node: &NodeRecord,
        id: Uuid,
        body: &[u8],
    ) -> Result<Forwarded, String> {
        let url = format!("{}/v1/fleet/sessions/{id}", node.api_url);
        let request = self
            .http
            .post(url)
            .bearer_auth(&self.secret)
            .header(FORWARDED_BY, &self.node_id)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec());
        forwarded(request).await
    }

    /// Forwards `GET`/`DELETE /v1/sessions/{id}` to the node holding the session. `None`: no node has it.
    pub async fn forward(
        &self,
        method: reqwest::Method,
        id: &str,
    ) -> Result<Option<Forwarded>, DaemonError> {
        if Uuid::parse_str(id).is_err() {
            return Ok(None);
        }
        let unavailable = |err: mediaproc_fleet::FleetError| {
            DaemonError::FleetUnavailable(format!("cannot look the session up: {err}"))
        };
        let Some(node) = self.registry.lookup(id).await.map_err(unavailable)? else {
            return Ok(None);
        };
        if node == self.node_id {
            // Placed here but not held (ended, or its creation failed): as unknown.
            return Ok(None);
        }
        let nodes = self
            .registry
            .nodes(mediaproc_fleet::unix_ms())
            .await
            .map_err(unavailable)?;
        let Some(holder) = nodes.iter().find(|view| view.record.id == node) else {
            return Err(DaemonError::SessionLost {
                id: id.to_owned(),
                node,
            });
        };
        self.counters.forwarded.fetch_add(1, Ordering::Relaxed);
        let url = format!("{}/v1/fleet/sessions/{id}", holder.record.api_url);
        let request = self
            .http
            .request(method, url)
            .bearer_auth(&self.secret)
            .header(FORWARDED_BY, &self.node_id);
        match forwarded(request).await {
            Ok(answer) => Ok(Some(answer)),
            Err(err) => Err(DaemonError::FleetUnavailable(format!(
                "node `{node}` holds the session but did not answer: {err}"
            ))),
        }
    }

    /// A session of this node ended (or its creation failed): its reservation and lookup key go.
    pub async fn forget(&self, node: &str, session: &str) {
        if let Err(err) = self.registry.forget(node, session).await {
            tracing::debug!(session, "fleet forget failed (the keys expire): {err}");
        }
    }

    /// [`Fleet::forget`] for a session of this node.
    pub async fn forget_here(&self, session: &str) {
        self.forget(&self.node_id, session).await;
    }

    /// [`Fleet::forget_here`] for many sessions (at exit); stops at the first failure, so an unreachable registry
    /// does not hold the exit for a timeout per session (the keys expire anyway).
    pub async fn forget_all_here(&self, sessions: &[String]) {
        for session in sessions {
            if self.registry.forget(&self.node_id, session).await.is_err() {
                break;
            }
        }
    }

    /// The node leaves the registry (at exit).
    pub async fn deregister(&self) {
        if let Err(err) = self.registry.deregister(&self.node_id).await {
            tracing::warn!("fleet: could not deregister (the record expires): {err}");
        }
    }
}

/// Sends a node-to-node request and reads the whole answer.
async fn forwarded(request: reqwest::RequestBuilder) -> Result<Forwarded, String> {
    let response = request.send().await.map_err(|err| err.to_string())?;
    let header = |name: reqwest::header::HeaderName| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let status = response.status().as_u16();
    let content_type = header(reqwest::header::CONTENT_TYPE);
    let location = header(reqwest::header::LOCATION);
    let body = response
        .bytes()
        .await
        .map_err(|err| err.to_string())?
        .to_vec();
    Ok(Forwarded {
        status,
        content_type,
        location,
        body,
    })
}

/// What the heartbeat reads from the node each period.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSnapshot {
    /// The node's media endpoint.
    pub mp_uri: String,
    /// Draining (or shutting down).
    pub draining: bool,
    /// Ids of the sessions held.
    pub sessions: Vec<String>,
    /// The sessions whose media began (their reservations become active).
    pub with_media: Vec<String>,
    /// Sessions counted as load: with media, or waiting for their edge past the reservation's lifetime.
    pub active: u64,
    /// Highest worker load.
    pub load: f64,
}

/// Publishes the node's record until `stop` says so (then deregisters). See the module docs.
pub async fn heartbeat(
    fleet: Arc<Fleet>,
    snapshot: impl Fn() -> NodeSnapshot + Send,
    mut stop: watch::Receiver<bool>,
) {
    // Logged on transitions only (a dead registry must not flood the log), the first failure included.
    let mut said_down = false;
    loop {
        let node = snapshot();
        let beat = Heartbeat {
            record: NodeRecord {
                id: fleet.node_id.clone(),
                api_url: fleet.api_url.clone(),
                mp_uri: node.mp_uri,
                state: if node.draining {
                    NodeState::Draining
                } else {
                    NodeState::Serving
                },
                capacity: fleet.capacity,
                active: node.active,
                load: node.load,
                version: env!("CARGO_PKG_VERSION").to_owned(),
                updated_unix_ms: mediaproc_fleet::unix_ms(),
            },
            sessions: node.sessions,
            released: node.with_media,
        };
        let next = match fleet.registry.heartbeat(&beat).await {
            Ok(()) => {
                if !fleet.registered.swap(true, Ordering::Relaxed) {
                    tracing::info!(node = %fleet.node_id, api = %fleet.api_url, "fleet: registered");
                }
                said_down = false;
                fleet.heartbeat_period
            }
            Err(err) => {
                fleet
                    .counters
                    .heartbeat_failures
                    .fetch_add(1, Ordering::Relaxed);
                fleet.registered.store(false, Ordering::Relaxed);
                if !said_down {
                    said_down = true;
                    tracing::warn!(node = %fleet.node_id, "fleet: registry unreachable, calls go on: {err}");
                }
                HEARTBEAT_RETRY
            }
        };
        tokio::select! {
            () = tokio::time::sleep(next) => {}
            () = fleet.wake.notified() => {}
            _ = stop.wait_for(|stop| *stop) => break,
        }
    }
    fleet.deregister().await;
}

/// Where a drain is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainPhase {
    /// Taking sessions.
    Serving,
    /// Refusing new sessions; generation `n` (an undrain and a new drain start another).
    Draining(u64),
    /// The drain completed: the last call ended, or the deadline passed (`ended_at_deadline` calls were ended).
    Done {
        /// Calls still running at the deadline (the process ends them).
        left_at_deadline: usize,
    },
}

/// The drain state machine (works with or without a fleet). See the module docs.
#[derive(Debug)]
pub struct Drain {
    phase: watch::Sender<DrainPhase>,
    generation: AtomicU64,
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            phase: watch::channel(DrainPhase::Serving).0,
            generation: AtomicU64::new(0),
        }
    }
}

/// How often a drain looks at the session count.
pub const DRAIN_POLL: Duration = Duration::from_millis(100);

impl Drain {
    /// The current phase.
    pub fn phase(&self) -> DrainPhase {
        *self.phase.borrow()
    }

    /// Starts a drain that completes when `sessions()` reaches 0 or at `deadline`. The caller has set the
    /// engine's draining flag. A drain already running is replaced (the new deadline counts).
    pub fn start(
        self: &Arc<Self>,
        deadline: Duration,
        sessions: impl Fn() -> usize + Send + 'static,
    ) {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        self.phase.send_replace(DrainPhase::Draining(generation));
        let drain = self.clone();
        tokio::spawn(async move {
            let until = tokio::time::Instant::now() + deadline;
            let mut phase = drain.phase.subscribe();
            loop {
                if *phase.borrow_and_update() != DrainPhase::Draining(generation) {
                    return; // Undrained, or replaced by a newer drain.
                }
                let left = sessions();
                if left == 0 || tokio::time::Instant::now() >= until {
                    if left > 0 {
                        tracing::warn!(
                            calls = left,
                            "drain deadline reached: ending the calls left (reason: drain deadline)"
                        );
                    } else {
                        tracing::info!("drain complete: no call left");
                    }
                    drain.phase.send_if_modified(|now| {
                        let ours = *now == DrainPhase::Draining(generation);
                        if ours {
                            *now = DrainPhase::Done {
                                left_at_deadline: left,
                            };
                        }
                        ours
                    });
                    return;
                }
                tokio::select! {
                    () = tokio::time::sleep(DRAIN_POLL) => {}
                    _ = phase.changed() => {}
                }
            }
        });
    }

    /// Reverts a drain that has not completed; false if it had (the process is exiting).
    pub fn undrain(&self) -> bool {
        let mut reverted = false;
        self.phase.send_if_modified(|phase| {
            reverted = !matches!(phase, DrainPhase::Done { .. });
            let changed = matches!(phase, DrainPhase::Draining(_));
            if changed {
                *phase = DrainPhase::Serving;
            }
            changed
        });
        reverted
    }

    /// Resolves once a drain completed; returns the calls left at the deadline.
    pub async fn done(&self) -> usize {
        let mut phase = self.phase.subscribe();
        loop {
            if let DrainPhase::Done { left_at_deadline } = *phase.borrow_and_update() {
                return left_at_deadline;
            }
            if phase.changed().await.is_err() {
                return 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mediaproc_fleet::MemoryRegistry;

    fn member(registry: Arc<MemoryRegistry>, id: &str) -> Fleet {
        let mut config = Config::default();
        config.fleet.node_id = Some(id.to_owned());
        config.fleet.secret = Some("a-secret-of-16-chars".to_owned());
        config.fleet.capacity = 2;
        Fleet::with_registry(&config, registry, format!("http://{id}.invalid")).unwrap()
    }

    fn beat(id: &str, state: NodeState, sessions: &[&str]) -> Heartbeat {
        Heartbeat {
            record: NodeRecord {
                id: id.to_owned(),
                api_url: format!("http://{id}.invalid"),
                mp_uri: String::new(),
                state,
                capacity: 2,
                active: sessions.len() as u64,
                load: 0.0,
                version: "test".to_owned(),
                updated_unix_ms: mediaproc_fleet::unix_ms(),
            },
            sessions: sessions.iter().map(|s| (*s).to_owned()).collect(),
            released: sessions.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[tokio::test]
    async fn placement_reserves_here_until_full_and_never_on_a_draining_self() {
        let registry = Arc::new(MemoryRegistry::new(Ttls::default()));
        let fleet = member(registry.clone(), "a");
        registry
            .heartbeat(&beat("a", NodeState::Serving, &[]))
            .await
            .unwrap();
        for _ in 0..2 {
            assert!(matches!(
                fleet.place(b"{}", false).await.unwrap(),
                Placed::Here { reserved: true, .. }
            ));
        }
        // Full (two reservations on capacity 2), and a draining self is skipped even while its record says
        // SERVING: both refuse with 503 fleet_unavailable.
        assert!(matches!(
            fleet.place(b"{}", false).await,
            Err(DaemonError::FleetUnavailable(_))
        ));
        let fresh = member(Arc::new(MemoryRegistry::new(Ttls::default())), "b");
        fresh
            .registry
            .heartbeat(&beat("b", NodeState::Serving, &[]))
            .await
            .unwrap();
        assert!(matches!(
            fresh.place(b"{}", true).await,
            Err(DaemonError::FleetUnavailable(_))
        ));
        assert_eq!(fleet.counters.placed_here.load(Ordering::Relaxed), 2);
        assert_eq!(fleet.counters.refused.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_session_of_a_node_that_left_is_lost_and_an_unknown_one_is_not_found() {
        let registry = Arc::new(MemoryRegistry::new(Ttls::default()));
        let fleet = member(registry.clone(), "a");
        let id = Uuid::new_v4().to_string();
        // Node `gone` reported the session, then its record went (deregistered: as if killed and expired).
        registry
            .heartbeat(&beat("gone", NodeState::Serving, &[&id]))
            .await
            .unwrap();
        registry.deregister("gone").await.unwrap();
        assert!(matches!(
            fleet.forward(reqwest::Method::GET, &id).await,
            Err(DaemonError::SessionLost { node, .. }) if node == "gone"
        ));
        let unknown = Uuid::new_v4().to_string();
        assert!(
            fleet
                .forward(reqwest::Method::GET, &unknown)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            fleet
                .forward(reqwest::Method::GET, "not-a-uuid")
                .await
                .unwrap()
                .is_none()
        );
        assert!(fleet.secret_matches("a-secret-of-16-chars"));
        assert!(!fleet.secret_matches("a-secret-of-16-charX"));
        assert!(!fleet.secret_matches(""));
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_completes_when_empty_or_at_its_deadline_and_undrain_reverts_it() {
        let count = Arc::new(AtomicU64::new(2));
        let drain = Arc::new(Drain::default());
        let c = count.clone();
        drain.start(Duration::from_secs(60), move || {
            c.load(Ordering::Relaxed) as usize
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(matches!(drain.phase(), DrainPhase::Draining(_)));
        assert!(drain.undrain());
        assert_eq!(drain.phase(), DrainPhase::Serving);
        // Again; this time the calls end by themselves.
        let c = count.clone();
        drain.start(Duration::from_secs(60), move || {
            c.load(Ordering::Relaxed) as usize
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        count.store(0, Ordering::Relaxed);
        assert_eq!(drain.done().await, 0);
        assert!(!drain.undrain(), "a completed drain cannot be reverted");
        // A deadline: one call left.
        let drain = Arc::new(Drain::default());
        drain.start(Duration::from_secs(5), || 1);
        let started = tokio::time::Instant::now();
        assert_eq!(drain.done().await, 1);
        assert!(started.elapsed() >= Duration::from_secs(5));
    }
}
