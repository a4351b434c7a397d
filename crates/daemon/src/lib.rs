//! # mediaproc-daemon — the sidecar as a library
//!
//! `mediaproc serve` is [`run`]: a control API on loopback hands out media sessions (each with its blob, its edge
//! token and a bot WebSocket URL); a QUIC endpoint at `mpUri` terminates the edge's media (RTP over QUIC datagrams,
//! `mediaproc-net`); media worker threads run each session's sans-IO pipeline (`mediaproc-pipeline`) by absolute
//! deadlines; bots get 20 ms PCM frames through lock-free rings — on the worker itself (`echo`), on their own
//! threads (`record`, `play`, `tone`), or through the WebSocket bridge for bots in any language.
//!
//! ## Threads and what crosses them
//! - **tokio runtime**: the HTTP API, WebSocket bridges, the QUIC endpoint and RTP/UDP sockets (all I/O).
//! - **media workers** (`media-worker-N`, one per core by default): own the sessions; per loop they drain packet
//!   rings, run due ticks, queue outgoing packets, then sleep until the next session deadline. Sessions' ticks are
//!   spread over the 20 ms period. Workers publish load once a second (`/healthz`).
//! - Between them only bounded SPSC rings (packets: `mediaproc-net`; frames: `mediaproc-pipeline`) and bounded
//!   channels for control events; a slow bot or a bad packet drops and counts, never blocks a worker.
//!
//! ## Control plane
//! [`api`] is axum: bearer-token auth (constant-time compare), JSON errors `{"error":{"code","message"}}`, a body
//! size limit, 503 when overloaded or draining. Shutdown ([`RunningDaemon::shutdown`]) refuses new sessions, ends
//! every session (bots get `stop`, recordings are finalised) and stops the workers.
//!
//! ## Layers
//! Modules depend on each other in one direction only (`tests/layers.rs` fails on a cycle):
//! `config`, `error`, `health` → [`session`] (live session state, the bot port, bot events, drop counters) →
//! [`request`], [`bots`], [`worker`], [`ws`] → [`engine`] (the one session registry) → [`metrics`] → [`api`]
//! (the only place errors become HTTP statuses). This file only wires them together.
//!
//! ## Fleet (issue 12)
//! With `[fleet] redis = "redis://…"` the daemon is one node of a fleet ([`fleet`], on `mediaproc-fleet`): a
//! heartbeat task publishes its record, `POST /v1/sessions` places on the node with headroom, `GET`/`DELETE` of
//! another node's session are forwarded, `POST /v1/drain` / SIGTERM drain it. See `docs/fleet.md`.

pub mod api;
pub mod bots;
pub mod config;
pub mod engine;
pub mod error;
pub mod fleet;
pub mod governor;
pub mod health;
pub mod metrics;
pub mod phase;
pub mod priority;
pub mod request;
pub mod session;
pub mod webrtc;
pub mod worker;
pub mod ws;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

pub use config::Config;
pub use error::DaemonError;
pub use health::HealthStatus;
pub use session::BotPort;

/// A started daemon: its addresses and token, and the way to stop it.
#[derive(Debug)]
pub struct RunningDaemon {
    /// Where the control API listens.
    pub api_addr: SocketAddr,
    /// Where the QUIC media endpoint listens.
    pub media_addr: Option<SocketAddr>,
    /// The API bearer token.
    pub api_token: String,
    /// True when the token was generated (nobody configured one), so the caller should show it once.
    pub token_generated: bool,
    /// The mpUri written into blobs.
    pub mp_uri: String,
    /// SHA-256 of the media certificate, hex.
    pub certificate_sha256: String,
    state: Arc<api::AppState>,
    server: tokio::task::JoinHandle<()>,
    stop_http: tokio::sync::watch::Sender<bool>,
    /// The fleet heartbeat (deregisters when it stops).
    heartbeat: Option<tokio::task::JoinHandle<()>>,
}

/// Binds everything and starts serving; returns once the daemon is ready.
pub async fn start(config: Config) -> Result<RunningDaemon, DaemonError> {
    config.validate()?;
    let (api_token, token_generated) = match &config.api_token {
        Some(token) => (token.clone(), false),
        None => (engine::new_token(), true),
    };
    let workers = config.worker_count();
    let load = Arc::new(health::LoadMonitor::new(
        workers,
        config.heavily_loaded_at,
        config.overloaded_at,
    ));
    let engine = engine::Engine::start(&config, load).await?;
    let listener = tokio::net::TcpListener::bind(config.api)
        .await
        .map_err(|source| DaemonError::Bind {
            addr: config.api,
            source,
        })?;
    let api_addr = listener.local_addr().map_err(|source| DaemonError::Io {
        context: "control API address".into(),
        source,
    })?;
    let mp_uri = engine.mp_uri();
    let certificate_sha256 = engine.fingerprint_hex();
    let media_addr = engine.media_addr();
    // Bots reach an API bound to all interfaces on loopback.
    let mut api_base = format!(
        "http://{}",
        if api_addr.ip().is_unspecified() {
            SocketAddr::from(([127, 0, 0, 1], api_addr.port()))
        } else {
            api_addr
        }
    );
    // Fleet: a node's blobs and mediaUrls name the address other machines reach it at.
    let fleet = fleet::Fleet::from_config(&config, api_base.clone())?.map(Arc::new);
    if let Some(fleet) = &fleet {
        api_base.clone_from(&fleet.api_url);
    }
    let state = Arc::new(api::AppState {
        api_token: api_token.clone(),
        engine,
        api_base,
        http: metrics::HttpCounters::default(),
        fleet: fleet.clone(),
        drain: Arc::new(fleet::Drain::default()),
    });
    let (stop_http, stop_rx) = tokio::sync::watch::channel(false);
    let heartbeat = fleet.map(|fleet| {
        let node = state.clone();
        let reservation_ms = fleet.reservation_ms();
        let snapshot = move || {
            let now = mediaproc_fleet::unix_ms();
            let sessions = node.engine.sessions();
            let mut with_media = Vec::new();
            let mut active = 0;
            for entry in &sessions {
                // A reservation becomes active with the session's first media (edge attached, or the first
                // RTP packet); one whose session still waits after its lifetime expired, and the session counts.
                let media = entry.live.state_name() != "waitingForEdge";
                if media {
                    with_media.push(entry.id.to_string());
                }
                if media || now.saturating_sub(entry.created_unix_ms) >= reservation_ms {
                    active += 1;
                }
            }
            fleet::NodeSnapshot {
                mp_uri: node.engine.mp_uri(),
                draining: node.engine.draining(),
                sessions: sessions.iter().map(|entry| entry.id.to_string()).collect(),
                with_media,
                active,
                load: node.engine.load().loads().into_iter().fold(0.0, f64::max),
            }
        };
        tokio::spawn(fleet::heartbeat(fleet, snapshot, stop_rx.clone()))
    });
    let server = tokio::spawn(api::serve(listener, state.clone(), stop_rx));
    tracing::info!(%api_addr, ?media_addr, %mp_uri, "mediaproc serve ready");
    Ok(RunningDaemon {
        api_addr,
        media_addr,
        api_token,
        token_generated,
        mp_uri,
        certificate_sha256,
        state,
        server,
        stop_http,
        heartbeat,
    })
}

impl RunningDaemon {
    /// Opens a session served by a bot in this process — the Rust bot API. `request` is a `POST /v1/sessions` body
    /// (its `bot` member is ignored). Returns the `201` body (blob, mediaConfig, edge token, …) and the bot's
    /// [`BotPort`]: `endpoint.inbound` yields 20 ms frames from the call (mixed, active speakers, unmixed),
    /// `endpoint.outbound` takes frames, `clear` and `mark`; `events` carries roster, DTMF, marks, send status.
    pub async fn open_session(
        &self,
        request: serde_json::Value,
    ) -> Result<(serde_json::Value, BotPort), DaemonError> {
        let bytes = serde_json::to_vec(&request).unwrap_or_default();
        let mut plan = request::CreateSessionRequest::parse(&bytes)?.into_plan()?;
        plan.bot = request::BotKind::InProcess;
        let entry = self.state.engine.open_session(plan).await?;
        let port = entry.live.take_bot_port().ok_or_else(|| {
            DaemonError::Media(
                "the session's bot port was taken before it was handed out".to_owned(),
            )
        })?;
        Ok((api::created_body(&self.state, &entry), port))
    }

    /// The talk page's URL, with its page token in the fragment (browsers never send a fragment to the server);
    /// `None` unless `talk_page` is on.
    pub fn talk_url(&self) -> Option<String> {
        self.state.engine.config().talk_page.then(|| {
            format!(
                "{}/talk#token={}",
                self.state.api_base,
                self.state.engine.page_token()
            )
        })
    }

    /// Starts a drain (SIGTERM on a fleet node; `POST /v1/drain`): no new session, the calls go on, and
    /// [`RunningDaemon::drained`] resolves when the last ends or at `deadline`.
    pub fn drain(&self, deadline: std::time::Duration) {
        api::start_drain(&self.state, deadline);
    }

    /// Resolves once a drain completed (never, unless one was started); returns the calls left at the deadline,
    /// which [`RunningDaemon::shutdown`] then ends.
    pub async fn drained(&self) -> usize {
        self.state.drain.done().await
    }

    /// This node's id in the fleet, if it is a fleet node.
    pub fn fleet_node_id(&self) -> Option<&str> {
        self.state.fleet.as_deref().map(fleet::Fleet::node_id)
    }

    /// Graceful shutdown: refuse new sessions, end every session (bots get `stop`, recordings are finalised),
    /// stop the workers and the API; a fleet node deregisters.
    pub async fn shutdown(self) {
        self.shutdown_because("the media processor is shutting down")
            .await;
    }

    /// [`RunningDaemon::shutdown`], with the reason the bots' `stop` gives for the calls it ends (say, a drain's
    /// deadline).
    pub async fn shutdown_because(self, reason: &'static str) {
        let ended: Vec<String> = match &self.state.fleet {
            Some(_) => self
                .state
                .engine
                .sessions()
                .iter()
                .map(|entry| entry.id.to_string())
                .collect(),
            None => Vec::new(),
        };
        self.state.engine.shutdown(reason).await;
        self.stop_http.send_replace(true);
        if let Some(heartbeat) = self.heartbeat {
            let _ = heartbeat.await;
        }
        // The calls ended here (at a drain's deadline, say) are ended, not lost: their lookup keys go.
        if let Some(fleet) = &self.state.fleet {
            fleet.forget_all_here(&ended).await;
        }
        let _ = self.server.await;
        tracing::info!("mediaproc serve stopped");
    }
}

/// Runs the daemon until `shutdown` completes (e.g. SIGTERM or Ctrl-C), then stops it gracefully.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
    let daemon = start(config).await?;
    shutdown.await;
    daemon.shutdown().await;
    Ok(())
}
