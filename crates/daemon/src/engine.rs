//! The media engine: the QUIC endpoint, RTP/UDP endpoints, media worker threads and the bots.
//!
//! The control plane (the API) calls [`Engine::start_session`] and [`Engine::end_session`]; everything per frame
//! happens on the worker threads (see [`crate::worker`]), which own each session's sans-IO
//! [`mediaproc_pipeline::MediaSession`] and its packet rings.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use mediaproc_blob::MediaSessionConfig;
use mediaproc_net::{MediaServer, RtpUdpConfig, RtpUdpEndpoint, ServerConfig, TlsSource};
use mediaproc_pipeline::{BotEndpoint, MediaSession, SampleRate, SessionConfig};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::api::ApiError;
use crate::bots::{self, BotEvent};
use crate::config::Config;
use crate::error::DaemonError;
use crate::health::LoadMonitor;
use crate::request::{BotKind, RtpCodec, SessionPlan};
use crate::worker::{NetSide, WorkerCommand, WorkerSession};

/// Events queued for a bot before it drains them; when full, new events are dropped and counted.
pub const BOT_EVENT_CAPACITY: usize = 256;
/// Commands queued for a worker (add/remove session).
pub const WORKER_COMMAND_CAPACITY: usize = 1024;
/// Opus payload type on QUIC flows the daemon sends.
pub const QUIC_OPUS_PAYLOAD_TYPE: u8 = 111;

/// A random token: 32 bytes from the OS generator as hex (two v4 UUIDs carry 244 random bits).
pub fn new_token() -> String {
    format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple())
}

/// What the bot side of a WebSocket session takes when the bot connects.
#[derive(Debug)]
pub struct BotPort {
    /// Ring ends.
    pub endpoint: BotEndpoint,
    /// Events from the worker.
    pub events: mpsc::Receiver<BotEvent>,
}

/// The session's state as the control plane sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SessionState {
    /// Waiting for the edge to attach.
    WaitingForEdge = 0,
    /// Media flows.
    Active = 1,
    /// The edge detached; the session waits for it to come back.
    EdgeDetached = 2,
    /// Ended.
    Ended = 3,
}

/// Live state of a session, written by its worker (counters once a second, roster on change) and read by the API.
#[derive(Debug)]
pub struct LiveSession {
    state: std::sync::atomic::AtomicU8,
    stats: Mutex<Value>,
    participants: Mutex<Value>,
    bot_port: Mutex<Option<BotPort>>,
    /// Bot events dropped because the bot did not drain them.
    pub bot_events_dropped: AtomicU64,
    /// A WebSocket bot is connected now.
    pub bot_connected: std::sync::atomic::AtomicBool,
}

impl LiveSession {
    fn new(port: Option<BotPort>) -> Self {
        LiveSession {
            state: std::sync::atomic::AtomicU8::new(SessionState::WaitingForEdge as u8),
            stats: Mutex::new(json!({})),
            participants: Mutex::new(json!([])),
            bot_port: Mutex::new(port),
            bot_events_dropped: AtomicU64::new(0),
            bot_connected: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Sets the state.
    pub fn set_state(&self, state: SessionState) {
        self.state.store(state as u8, Ordering::Relaxed);
    }

    /// The state's API name.
    pub fn state_name(&self) -> &'static str {
        match self.state.load(Ordering::Relaxed) {
            0 => "waitingForEdge",
            1 => "active",
            2 => "edgeDetached",
            _ => "ended",
        }
    }

    /// Publishes statistics (the worker, once a second).
    pub fn set_stats(&self, stats: Value) {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner()) = stats;
    }

    /// The last published statistics.
    pub fn stats_json(&self) -> Value {
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone();
        stats["botEventsDropped"] = self.bot_events_dropped.load(Ordering::Relaxed).into();
        stats["botConnected"] = self.bot_connected.load(Ordering::Relaxed).into();
        stats
    }

    /// Publishes the roster.
    pub fn set_participants(&self, participants: Value) {
        *self.participants.lock().unwrap_or_else(|p| p.into_inner()) = participants;
    }

    /// The roster.
    pub fn participants_json(&self) -> Value {
        self.participants
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Takes the bot's ring ends (a WebSocket bot connecting); `None` while another bot holds them.
    pub fn take_bot_port(&self) -> Option<BotPort> {
        let port = self
            .bot_port
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if port.is_some() {
            self.bot_connected.store(true, Ordering::Relaxed);
        }
        port
    }

    /// Gives the ring ends back (the WebSocket bot disconnected; it may reconnect).
    pub fn return_bot_port(&self, port: BotPort) {
        *self.bot_port.lock().unwrap_or_else(|p| p.into_inner()) = Some(port);
        self.bot_connected.store(false, Ordering::Relaxed);
    }
}

/// What [`Engine::start_session`] returns to the API.
#[derive(Debug)]
pub struct StartedSession {
    /// Bound RTP/UDP address, if asked for.
    pub rtp_local: Option<SocketAddr>,
    /// The bot's PCM rate.
    pub rate: SampleRate,
    /// Live state.
    pub live: Arc<LiveSession>,
}

struct EngineSession {
    worker: usize,
    /// Keeps the RTP/UDP endpoint's task alive; dropping it stops the task.
    _rtp: Option<RtpUdpEndpoint>,
    bot_task: Option<bots::BotTask>,
}

/// The media engine. See the module docs.
pub struct Engine {
    server: MediaServer,
    workers: Vec<std::sync::mpsc::SyncSender<WorkerCommand>>,
    worker_threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    next_worker: AtomicUsize,
    sessions_started: AtomicU64,
    mp_uri: String,
    fingerprint: String,
    origin: Instant,
    recordings_dir: PathBuf,
    sessions: Mutex<HashMap<Uuid, EngineSession>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("mp_uri", &self.mp_uri)
            .field("workers", &self.workers.len())
            .finish()
    }
}

impl Engine {
    /// Binds the QUIC endpoint and starts the worker threads.
    pub async fn start(config: &Config, load: Arc<LoadMonitor>) -> Result<Engine, DaemonError> {
        let mut server_config = ServerConfig::development(config.media);
        server_config.tls = match (&config.cert, &config.key) {
            (Some(cert), Some(key)) => TlsSource::Files {
                cert_path: cert.display().to_string(),
                key_path: key.display().to_string(),
            },
            _ => {
                let mut names = vec![config.public_host.clone(), "localhost".to_owned()];
                names.push(config.media.ip().to_string());
                names.dedup();
                TlsSource::SelfSigned { names }
            }
        };
        let server = MediaServer::bind(server_config)
            .await
            .map_err(|err| DaemonError::Media(err.to_string()))?;
        let mp_uri = server
            .mp_uri(&config.public_host)
            .map_err(|err| DaemonError::Media(err.to_string()))?;
        let fingerprint = mediaproc_net::fingerprint_hex(&server.certificate_fingerprint());
        let origin = server.clock_origin();
        let count = config.worker_count();
        let mut workers = Vec::with_capacity(count);
        let mut threads = Vec::with_capacity(count);
        for index in 0..count {
            let (tx, rx) = std::sync::mpsc::sync_channel(WORKER_COMMAND_CAPACITY);
            let load = load.clone();
            let waker = server.tx_waker();
            let thread = std::thread::Builder::new()
                .name(format!("media-worker-{index}"))
                .spawn(move || crate::worker::run(index, origin, rx, load, waker))
                .map_err(|source| DaemonError::Io {
                    context: "cannot start a media worker".into(),
                    source,
                })?;
            workers.push(tx);
            threads.push(thread);
        }
        Ok(Engine {
            server,
            workers,
            worker_threads: Mutex::new(threads),
            next_worker: AtomicUsize::new(0),
            sessions_started: AtomicU64::new(0),
            mp_uri,
            fingerprint,
            origin,
            recordings_dir: config.recordings_dir.clone(),
            sessions: Mutex::new(HashMap::new()),
        })
    }

    /// The mpUri edges connect to.
    pub fn mp_uri(&self) -> String {
        self.mp_uri.clone()
    }

    /// SHA-256 fingerprint of the media endpoint's certificate (hex), for edges that pin it.
    pub fn fingerprint_hex(&self) -> String {
        self.fingerprint.clone()
    }

    /// The QUIC endpoint's local address.
    pub fn media_addr(&self) -> Option<SocketAddr> {
        self.server.local_addr().ok()
    }

    /// Endpoint-wide network statistics.
    pub fn network_stats(&self) -> mediaproc_net::ConnectionStatsSnapshot {
        self.server.stats()
    }

    /// Registers the session with the network, builds its media pipeline and hands it to a worker.
    pub async fn start_session(
        &self,
        id: Uuid,
        plan: &SessionPlan,
        blob: &MediaSessionConfig,
        edge_token: &str,
    ) -> Result<StartedSession, ApiError> {
        let internal = |what: &str, err: &dyn std::fmt::Display| ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "media_error",
            message: format!("{what}: {err}"),
        };
        let format = plan
            .spec
            .audio
            .as_ref()
            .map(|a| a.format.clone())
            .unwrap_or_default();
        let rate = SampleRate::new(format.sample_rate().unwrap_or(16_000))
            .map_err(|e| internal("audio format", &e))?;
        let contexts = |lists: &[&mediaproc_blob::Maybe<Vec<String>>]| -> Vec<Uuid> {
            lists
                .iter()
                .flat_map(|list| list.as_ref().into_iter().flatten())
                .filter_map(|id| Uuid::parse_str(id).ok())
                .collect()
        };
        let render = contexts(&[
            &blob.audio_render_contexts,
            &blob.video_render_contexts,
            &blob.data_render_contexts,
        ]);
        let source = contexts(&[
            &blob.audio_source_contexts,
            &blob.video_source_contexts,
            &blob.data_source_contexts,
        ]);

        // The RTP/UDP edge first: binding can fail on a bad address, and nothing else is registered yet.
        let (rtp_endpoint, udp, payload_type) = match &plan.rtp {
            None => (None, None, QUIC_OPUS_PAYLOAD_TYPE),
            Some(rtp) if rtp.codec != RtpCodec::Opus => {
                return Err(ApiError {
                    status: StatusCode::NOT_IMPLEMENTED,
                    code: "codec_not_supported",
                    message: "rtp.codec: the media pipeline transcodes Opus only so far; G.711 is on the wire \
                              format list but not yet in the daemon"
                        .to_owned(),
                });
            }
            Some(rtp) => {
                let mut config = RtpUdpConfig::opus(rtp.local, rtp.payload_type);
                config.remote = rtp.remote;
                config.source = rtp.source;
                config.extra_payload_types = vec![crate::worker::TELEPHONE_EVENT_PAYLOAD_TYPE];
                let (endpoint, session) =
                    RtpUdpEndpoint::bind(config).await.map_err(|err| ApiError {
                        status: StatusCode::BAD_REQUEST,
                        code: "rtp_bind_failed",
                        message: format!("rtp.local: {err}"),
                    })?;
                let offset = endpoint
                    .clock_origin()
                    .saturating_duration_since(self.origin);
                (Some(endpoint), Some((session, offset)), rtp.payload_type)
            }
        };
        let rtp_local = rtp_endpoint.as_ref().map(RtpUdpEndpoint::local_addr);

        // Spread sessions' ticks over the 20 ms period (golden-ratio steps keep any prefix evenly spread), so the
        // latency a session sees is its own processing time, not a whole batch's.
        let n = self.sessions_started.fetch_add(1, Ordering::Relaxed);
        let tick_phase = Duration::from_micros((n * 12_361) % 20_000);
        let unmixed = plan
            .spec
            .audio
            .as_ref()
            .is_some_and(|a| a.unmixed_meeting_audio);
        let session_config = SessionConfig {
            rate,
            tick_phase,
            max_unmixed: if unmixed { 4 } else { 0 },
            ssrc: rand_u32(),
            payload_type,
            initial_sequence: rand_u32() as u16,
            initial_timestamp: rand_u32(),
            ..SessionConfig::default()
        };
        let now = self.origin.elapsed();
        let (media, endpoint) =
            MediaSession::new(session_config, now).map_err(|err| internal("pipeline", &err))?;

        let (event_tx, event_rx) = mpsc::channel(BOT_EVENT_CAPACITY);
        let port = BotPort {
            endpoint,
            events: event_rx,
        };
        let (in_worker_bot, live, bot_task) = match &plan.bot {
            BotKind::WebSocket | BotKind::InProcess => {
                (None, Arc::new(LiveSession::new(Some(port))), None)
            }
            BotKind::Echo => (Some(port.endpoint), Arc::new(LiveSession::new(None)), None),
            other => {
                let live = Arc::new(LiveSession::new(None));
                let task = bots::spawn(other, port, id, rate, &self.recordings_dir)
                    .map_err(|err| ApiError::bad_request("invalid_bot", err))?;
                (None, live, Some(task))
            }
        };

        let quic = self
            .server
            .add_session(mediaproc_net::SessionSpec {
                id,
                token: edge_token.as_bytes().to_vec(),
                render_contexts: render,
                source_contexts: source.clone(),
            })
            .map_err(|err| internal("cannot register the session on the media endpoint", &err))?;
        let source_context = source.first().copied();
        let net = NetSide::new(quic, udp, source_context);
        let worker = self.pick_worker();
        let session =
            WorkerSession::new(id, media, net, in_worker_bot, event_tx, live.clone(), rate);
        if self.workers[worker]
            .try_send(WorkerCommand::Add(Box::new(session)))
            .is_err()
        {
            // Nothing may stay registered for a session that did not start (the bot task stops when dropped).
            self.server.remove_session(id);
            return Err(internal(
                "media worker",
                &"its command queue is full or it stopped",
            ));
        }
        self.lock_sessions().insert(
            id,
            EngineSession {
                worker,
                _rtp: rtp_endpoint,
                bot_task,
            },
        );
        Ok(StartedSession {
            rtp_local,
            rate,
            live,
        })
    }

    fn lock_sessions(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, EngineSession>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pick_worker(&self) -> usize {
        self.next_worker.fetch_add(1, Ordering::Relaxed) % self.workers.len()
    }

    /// Ends a session: the worker sends a final BYE-free stop, the bot gets `stop`, recordings are finalised.
    pub async fn end_session(&self, id: Uuid) {
        let Some(session) = self.lock_sessions().remove(&id) else {
            return;
        };
        let _ = self.workers[session.worker].try_send(WorkerCommand::Remove(id));
        self.server.remove_session(id);
        if let Some(task) = session.bot_task {
            task.finish().await;
        }
    }

    /// Ends every session and stops the workers (graceful shutdown).
    pub async fn shutdown(&self) {
        let ids: Vec<Uuid> = self.lock_sessions().keys().copied().collect();
        for id in ids {
            self.end_session(id).await;
        }
        for worker in &self.workers {
            let _ = worker.try_send(WorkerCommand::Stop);
        }
        let threads = std::mem::take(
            &mut *self
                .worker_threads
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }
}

/// A random u32 for SSRCs and initial RTP counters (RFC 3550 wants them unpredictable).
fn rand_u32() -> u32 {
    Uuid::new_v4().as_u128() as u32
}
