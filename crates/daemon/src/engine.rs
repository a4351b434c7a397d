//! The media engine: the QUIC endpoint, RTP/UDP endpoints, media worker threads, the bots — and the one registry
//! of sessions.
//!
//! The control plane (the API) calls [`Engine::open_session`], [`Engine::session`] and [`Engine::end_session`];
//! everything per frame happens on the worker threads (see [`crate::worker`]), which own each session's sans-IO
//! [`mediaproc_pipeline::MediaSession`] and its packet rings.
//!
//! `max_sessions` is enforced with a slot counter reserved before the first await of a creation (so concurrent
//! creations cannot overshoot) and released when the session leaves the registry or its creation fails. Ending
//! a session sets its end flag, which the worker checks every pass: no full command queue can leave a session
//! ticking after the registry forgot it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mediaproc_blob::MediaSessionConfig;
use mediaproc_net::{MediaServer, RtpUdpConfig, RtpUdpSocket, ServerConfig, TlsSource};
use mediaproc_pipeline::{Codec, EncoderOverrides, MediaSession, SampleRate, SessionConfig};
use serde_json::Value;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::bots;
use crate::config::Config;
use crate::error::DaemonError;
use crate::health::{HealthStatus, LoadMonitor};
use crate::request::{BotKind, RtpCodec, SessionPlan};
use crate::session::{BotPort, DropCounters, FrameSignal, LiveSession};
use crate::webrtc::{PeerSlot, WebRtcCounters};
use crate::worker::{NetSide, WebRtcEdge, WorkerCommand, WorkerSession};

/// Outbound queue of a session served by a built-in bot (echo, record, play, tone): 1 s.
pub const BUILT_IN_BOT_OUTBOUND_FRAMES: usize = 50;

/// Events queued for a bot before it drains them; when full, new events are dropped and counted.
pub const BOT_EVENT_CAPACITY: usize = 256;
/// Commands queued for a worker (add/remove session).
pub const WORKER_COMMAND_CAPACITY: usize = 1024;
/// Opus payload type on QUIC flows the daemon sends.
pub const QUIC_OPUS_PAYLOAD_TYPE: u8 = 111;
/// How long [`Engine::end_session`] waits for the worker to confirm the end.
pub const END_CONFIRM_TIMEOUT: Duration = Duration::from_secs(2);

/// A random token: 32 bytes from the OS generator as hex (two v4 UUIDs carry 244 random bits).
pub fn new_token() -> String {
    format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple())
}

/// One session as the daemon knows it: what the control plane shows, and the live state shared with the worker.
#[derive(Debug)]
pub struct SessionEntry {
    /// `mpMediaSessionId`.
    pub id: Uuid,
    /// `callId` of the blob.
    pub call_id: String,
    /// Unix time of creation, in milliseconds.
    pub created_unix_ms: u64,
    /// The bot.
    pub bot: BotKind,
    /// mpUri.
    pub mp_uri: String,
    /// The blob text.
    pub blob: String,
    /// The `appHostedMediaConfig` object.
    pub media_config: Value,
    /// The token the edge presents to attach.
    pub edge_token: String,
    /// The token the bot may present on the WebSocket instead of the API token.
    pub bot_token: String,
    /// Bound RTP/UDP address, if the session has one.
    pub rtp_local: Option<SocketAddr>,
    /// The bot's PCM rate.
    pub rate: SampleRate,
    /// Live state shared with the media worker, the bot and the bridge.
    pub live: Arc<LiveSession>,
}

/// What only the engine holds of a session.
struct Held {
    entry: Arc<SessionEntry>,
    worker: usize,
    bot_task: Option<bots::BotTask>,
    /// The session's WebRTC peer, if one answered (dropping it closes the peer).
    webrtc: Option<PeerSlot>,
}

/// A reserved session slot; released on drop unless the session was registered.
struct Reservation<'a> {
    slots: &'a AtomicUsize,
    kept: bool,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.slots.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Control-plane counters of the engine.
#[derive(Debug, Default)]
pub struct EngineCounters {
    /// Sessions created.
    pub sessions_created: AtomicU64,
    /// Sessions refused because the daemon was overloaded.
    pub refused_overloaded: AtomicU64,
    /// Sessions refused because `max_sessions` were held.
    pub refused_full: AtomicU64,
    /// Sessions whose worker did not confirm the end in time (ended by flag later).
    pub end_unconfirmed: AtomicU64,
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
    config: Config,
    /// The scheduling priority the media workers got (see [`crate::priority`]), as `/healthz` reports it.
    media_priority: String,
    bot_limits: bots::BotLimits,
    load: Arc<LoadMonitor>,
    sessions: Mutex<HashMap<Uuid, Held>>,
    /// Sessions held or being created; never above `max_sessions`.
    slots: AtomicUsize,
    draining: AtomicBool,
    /// Drops of every session, daemon-wide.
    pub drops: Arc<DropCounters>,
    /// Control-plane counters.
    pub counters: EngineCounters,
    /// WebRTC edge counters.
    pub webrtc: Arc<WebRtcCounters>,
    /// The talk page's token: it may create built-in-bot sessions through `/v1/talk/…` and nothing else.
    page_token: String,
    /// Sessions the talk page created (only those answer `/v1/talk/sessions/{id}`).
    page_sessions: Mutex<std::collections::HashSet<Uuid>>,
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
        config.apply_endpoint_limits(&mut server_config);
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
        let coalesce = Duration::from_micros(config.worker_wake_coalesce_us);
        let mut workers = Vec::with_capacity(count);
        let mut threads = Vec::with_capacity(count);
        let wanted = config.media_priority;
        let decoder_complexity = config.decoder_complexity;
        let (applied_tx, applied_rx) = std::sync::mpsc::sync_channel(count);
        for index in 0..count {
            let (tx, rx) = std::sync::mpsc::sync_channel(WORKER_COMMAND_CAPACITY);
            let load = load.clone();
            let waker = server.tx_waker();
            let applied_tx = applied_tx.clone();
            let thread = std::thread::Builder::new()
                .name(format!("media-worker-{index}"))
                .spawn(move || {
                    let _ = applied_tx.send(crate::priority::apply_to_current_thread(wanted, true));
                    drop(applied_tx);
                    let governor = crate::governor::Governor::new(decoder_complexity);
                    crate::worker::run(index, origin, rx, load, waker, coalesce, governor)
                })
                .map_err(|source| DaemonError::Io {
                    context: "cannot start a media worker".into(),
                    source,
                })?;
            workers.push(tx);
            threads.push(thread);
        }
        drop(applied_tx);
        // Every worker asks for the same and has the same rights: the first answer speaks for all.
        let media_priority = applied_rx.recv().map_or_else(
            |_| "unknown".to_owned(),
            |applied| {
                if applied.was_refused() {
                    tracing::warn!("media workers: priority {applied}");
                } else {
                    tracing::info!("media workers: priority {applied}");
                }
                applied.to_string()
            },
        );
        Ok(Engine {
            server,
            workers,
            worker_threads: Mutex::new(threads),
            next_worker: AtomicUsize::new(0),
            sessions_started: AtomicU64::new(0),
            mp_uri,
            fingerprint,
            origin,
            config: config.clone(),
            media_priority,
            bot_limits: bots::BotLimits::from_config(config),
            load,
            sessions: Mutex::new(HashMap::new()),
            slots: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            drops: Arc::new(DropCounters::default()),
            counters: EngineCounters::default(),
            webrtc: Arc::new(WebRtcCounters::default()),
            page_token: new_token(),
            page_sessions: Mutex::new(std::collections::HashSet::new()),
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

    /// The configuration the daemon runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Worker load.
    pub fn load(&self) -> &LoadMonitor {
        &self.load
    }

    /// The scheduling priority the media workers got, e.g. "high (nice -10)".
    pub fn media_priority(&self) -> &str {
        &self.media_priority
    }

    /// True once shutdown or a drain began (new sessions are refused).
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Fleet drain (issue 12): `true` refuses new sessions and keeps the running ones; `false` (undrain) takes
    /// sessions again.
    pub fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Ordering::Relaxed);
    }

    /// Reserves a session slot, or says why not. Nothing awaits between the checks and the reservation.
    fn reserve(&self) -> Result<Reservation<'_>, DaemonError> {
        if self.draining() {
            return Err(DaemonError::ShuttingDown);
        }
        if self.load.status() == HealthStatus::Overloaded {
            self.counters
                .refused_overloaded
                .fetch_add(1, Ordering::Relaxed);
            return Err(DaemonError::Overloaded);
        }
        let max = self.config.max_sessions;
        self.slots
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map_err(|_| {
                self.counters.refused_full.fetch_add(1, Ordering::Relaxed);
                DaemonError::TooManySessions { max }
            })?;
        Ok(Reservation {
            slots: &self.slots,
            kept: false,
        })
    }

    /// Creates a session from a validated plan: reserves a slot, builds the blob, starts the media and the bot,
    /// registers the session. Used by `POST /v1/sessions` and by in-process bots.
    pub async fn open_session(&self, plan: SessionPlan) -> Result<Arc<SessionEntry>, DaemonError> {
        self.open_session_as(plan, Uuid::new_v4()).await
    }

    /// [`Engine::open_session`] with the session id given: the fleet reserved this id on this node (issue 12).
    pub async fn open_session_as(
        &self,
        plan: SessionPlan,
        id: Uuid,
    ) -> Result<Arc<SessionEntry>, DaemonError> {
        let mut reservation = self.reserve()?;
        if self.lock_sessions().contains_key(&id) {
            return Err(DaemonError::InvalidSession(format!(
                "session {id} exists already"
            )));
        }
        let edge_token = new_token();
        let bot_token = new_token();
        let mut spec = plan.spec.clone();
        spec.mp_uri = self.mp_uri();
        spec.session_id = Some(id);
        spec.edge_token = Some(edge_token.clone());
        let config = spec
            .build()
            .map_err(|err| DaemonError::InvalidSession(err.to_string()))?;
        let blob = config.to_blob();
        let media_config = serde_json::to_value(config.to_media_config()).unwrap_or(Value::Null);
        let started = self.start_media(id, &plan, &config, &edge_token).await?;
        let entry = Arc::new(SessionEntry {
            id,
            call_id: config.call_id.as_ref().cloned().unwrap_or_default(),
            created_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            bot: plan.bot.clone(),
            mp_uri: spec.mp_uri.clone(),
            blob,
            media_config,
            edge_token,
            bot_token,
            rtp_local: started.rtp_local,
            rate: started.rate,
            live: started.live,
        });
        self.lock_sessions().insert(
            id,
            Held {
                entry: entry.clone(),
                worker: started.worker,
                bot_task: started.bot_task,
                webrtc: None,
            },
        );
        reservation.kept = true;
        self.counters
            .sessions_created
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(session = %id, bot = plan.bot.name(), rtp = ?entry.rtp_local, "session created");
        Ok(entry)
    }

    /// The session with this id (`id` as the API got it).
    pub fn session(&self, id: &str) -> Result<Arc<SessionEntry>, DaemonError> {
        let not_found = || DaemonError::SessionNotFound(id.to_owned());
        let uuid = Uuid::parse_str(id).map_err(|_| not_found())?;
        self.lock_sessions()
            .get(&uuid)
            .map(|held| held.entry.clone())
            .ok_or_else(not_found)
    }

    /// All sessions, oldest first.
    pub fn sessions(&self) -> Vec<Arc<SessionEntry>> {
        let mut all: Vec<_> = self
            .lock_sessions()
            .values()
            .map(|held| held.entry.clone())
            .collect();
        all.sort_by_key(|entry| entry.created_unix_ms);
        all
    }

    /// Sessions held.
    pub fn session_count(&self) -> usize {
        self.lock_sessions().len()
    }

    /// Registers the session with the network, builds its media pipeline, starts its bot and hands it to a worker.
    async fn start_media(
        &self,
        id: Uuid,
        plan: &SessionPlan,
        blob: &MediaSessionConfig,
        edge_token: &str,
    ) -> Result<StartedMedia, DaemonError> {
        let format = plan
            .spec
            .audio
            .as_ref()
            .map(|a| a.format.clone())
            .unwrap_or_default();
        let rate = SampleRate::new(format.sample_rate().unwrap_or(16_000))
            .map_err(|e| DaemonError::media("audio format", &e))?;
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

        // The RTP/UDP edge first: binding can fail on a bad address, and nothing else is registered yet. The socket
        // goes to the session's worker, which reads and writes it on the workers' clock (the engine's origin);
        // it closes when the session ends there.
        let (rtp_socket, payload_type, codec) = match &plan.rtp {
            None => (None, QUIC_OPUS_PAYLOAD_TYPE, Codec::Opus),
            Some(rtp) => {
                let codec = match rtp.codec {
                    RtpCodec::Opus => Codec::Opus,
                    RtpCodec::Pcmu => Codec::Pcmu,
                    RtpCodec::Pcma => Codec::Pcma,
                };
                let mut config = RtpUdpConfig::opus(rtp.local, rtp.payload_type);
                // The RTP clock of the edge's jitter and RTCP: 48 kHz Opus, 8 kHz G.711.
                config.codec = codec.into();
                config.remote = rtp.remote;
                config.source = rtp.source;
                config.rebind_packets =
                    rtp.rebind_packets.unwrap_or(self.config.rtp_rebind_packets);
                config.extra_payload_types = vec![crate::worker::TELEPHONE_EVENT_PAYLOAD_TYPE];
                let socket = RtpUdpSocket::bind(&config, self.origin.elapsed())
                    .map_err(|err| DaemonError::RtpBind(err.to_string()))?;
                (Some(socket), rtp.payload_type, codec)
            }
        };
        let rtp_local = rtp_socket.as_ref().map(RtpUdpSocket::local_addr);

        // Spread sessions' ticks over the 20 ms period (golden-ratio steps keep any prefix evenly spread), so the
        // latency a session sees is its own processing time, not a whole batch's — on a grid of
        // `TICK_PHASE_SLOTS` phases, so that sessions in one slot share a worker wake-up and the network thread's.
        let n = self.sessions_started.fetch_add(1, Ordering::Relaxed);
        let slot = (n * 12_361) % 20_000 / crate::phase::TICK_PHASE_STEP_US;
        let tick_phase = Duration::from_micros(slot * crate::phase::TICK_PHASE_STEP_US);
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
            codec,
            initial_sequence: rand_u32() as u16,
            initial_timestamp: rand_u32(),
            decoder_complexity: self.config.decoder_complexity,
            // A bot outside the daemon may send text-to-speech seconds ahead (the 10 s default); a built-in bot
            // keeps at most PLAYOUT_LEAD_FRAMES queued, so a second is plenty (and 290 KB less per call).
            outbound_capacity_frames: match plan.bot {
                BotKind::WebSocket | BotKind::InProcess => {
                    mediaproc_pipeline::DEFAULT_OUTBOUND_CAPACITY_FRAMES
                }
                _ => BUILT_IN_BOT_OUTBOUND_FRAMES,
            },
            ..SessionConfig::default()
        };
        let now = self.origin.elapsed();
        let (mut media, endpoint) = MediaSession::new(session_config, now)
            .map_err(|err| DaemonError::media("pipeline", &err))?;
        media
            .set_encoder_overrides(plan.encoder)
            .map_err(|err| DaemonError::InvalidSession(format!("encoder: {err}")))?;

        let (event_tx, event_rx) = mpsc::channel(BOT_EVENT_CAPACITY);
        let frames = Arc::new(FrameSignal::default());
        let port = BotPort {
            endpoint,
            events: event_rx,
            frames: frames.clone(),
        };
        // Bots outside the worker that answer frame by frame (WebSocket, in-process) are signalled each tick and get
        // half a tick to answer before the tick's send half runs.
        let bridge = matches!(plan.bot, BotKind::WebSocket | BotKind::InProcess).then_some(frames);
        let new_live = |port| Arc::new(LiveSession::new(port, self.drops.clone()));
        let (in_worker_bot, live, bot_task) = match &plan.bot {
            BotKind::WebSocket | BotKind::InProcess => (None, new_live(Some(port)), None),
            BotKind::Echo => (Some(port.endpoint), new_live(None), None),
            other => {
                let live = new_live(None);
                let task = bots::start(other, port, id, rate, &self.bot_limits, live.clone())
                    .await
                    .map_err(DaemonError::InvalidBot)?;
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
            .map_err(|err| {
                DaemonError::media("cannot register the session on the media endpoint", &err)
            })?;
        let source_context = source.first().copied();
        let net = NetSide::new(quic, rtp_socket, source_context);
        let worker = self.pick_worker();
        let session =
            WorkerSession::new(id, media, net, in_worker_bot, event_tx, live.clone(), rate)
                .with_bridge(bridge);
        if self.workers[worker]
            .try_send(WorkerCommand::Add(Box::new(session)))
            .is_err()
        {
            // Nothing may stay registered for a session that did not start (the bot task stops when dropped).
            self.server.remove_session(id);
            return Err(DaemonError::media(
                "media worker",
                &"its command queue is full or it stopped",
            ));
        }
        Ok(StartedMedia {
            rtp_local,
            rate,
            live,
            worker,
            bot_task,
        })
    }

    /// The talk page's token (see `Config::talk_page`).
    pub fn page_token(&self) -> &str {
        &self.page_token
    }

    /// Marks a session as the talk page's.
    pub fn mark_page_session(&self, id: Uuid) {
        self.page_sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id);
    }

    /// Whether the talk page created this session.
    pub fn is_page_session(&self, id: Uuid) -> bool {
        self.page_sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&id)
    }

    /// WebRTC peers running now, over all sessions.
    pub fn webrtc_peers(&self) -> usize {
        self.lock_sessions()
            .values()
            .filter(|held| held.webrtc.as_ref().is_some_and(PeerSlot::is_live))
            .count()
    }

    /// The session's WebRTC peer as JSON (`null` without one).
    pub fn webrtc_json(&self, id: Uuid) -> Value {
        self.lock_sessions()
            .get(&id)
            .and_then(|held| held.webrtc.as_ref())
            .map_or(Value::Null, |slot| slot.to_json(id))
    }

    /// Answers a WebRTC (WHIP) offer for a session: checks the offer and the peer cap, starts the peer and makes
    /// it the session's packet edge, replacing any previous peer. Returns the resource id and the SDP answer.
    pub async fn attach_webrtc(
        &self,
        entry: &SessionEntry,
        offer: &str,
    ) -> Result<(String, String), DaemonError> {
        let id = entry.id;
        if entry.rtp_local.is_some() {
            return Err(DaemonError::InvalidSession(
                "this session has an RTP/UDP edge; create one without `rtp` for a WebRTC peer"
                    .into(),
            ));
        }
        let max = self.config.webrtc_max_peers;
        let others = {
            let sessions = self.lock_sessions();
            sessions
                .iter()
                .filter(|(other, held)| {
                    **other != id && held.webrtc.as_ref().is_some_and(PeerSlot::is_live)
                })
                .count()
        };
        if others >= max {
            self.webrtc.refused_full.fetch_add(1, Ordering::Relaxed);
            return Err(DaemonError::TooManyPeers { max });
        }
        let config = self.config.webrtc(QUIC_OPUS_PAYLOAD_TYPE);
        let accepted = mediaproc_net::WebRtcPeer::accept(offer, &config)
            .await
            .map_err(|err| {
                let (counter, error) = match err {
                    mediaproc_net::NetError::Sdp(m) => {
                        (&self.webrtc.refused_sdp, DaemonError::InvalidSdp(m))
                    }
                    mediaproc_net::NetError::NoOpus(m) => {
                        (&self.webrtc.refused_no_opus, DaemonError::NoOpus(m))
                    }
                    other @ mediaproc_net::NetError::NoPort { .. } => (
                        &self.webrtc.refused_full,
                        DaemonError::NoWebRtcPort(other.to_string()),
                    ),
                    other => (
                        &self.webrtc.refused_sdp,
                        DaemonError::media("WebRTC", &other),
                    ),
                };
                counter.fetch_add(1, Ordering::Relaxed);
                error
            })?;
        let resource = Uuid::new_v4().simple().to_string();
        let offset = accepted
            .peer
            .clock_origin()
            .saturating_duration_since(self.origin);
        crate::webrtc::forward_events(
            accepted.events,
            entry.live.clone(),
            resource.clone(),
            self.webrtc.clone(),
        );
        let old = {
            let mut sessions = self.lock_sessions();
            let held = sessions
                .get_mut(&id)
                .ok_or_else(|| DaemonError::SessionNotFound(id.to_string()))?;
            // Under the lock, so the worker sees the peers in the order the registry holds them.
            self.workers[held.worker]
                .try_send(WorkerCommand::WebRtc(
                    id,
                    Some(Box::new(WebRtcEdge {
                        rings: accepted.session,
                        offset,
                        dtx: self.config.webrtc_dtx.applies(accepted.wants_dtx),
                    })),
                ))
                .map_err(|_| {
                    DaemonError::Media("the session's media worker is busy; try again".into())
                })?;
            held.webrtc.replace(PeerSlot {
                resource: resource.clone(),
                peer: accepted.peer,
            })
        };
        if old.is_some() {
            self.webrtc.replaced.fetch_add(1, Ordering::Relaxed);
        }
        self.webrtc.answered.fetch_add(1, Ordering::Relaxed);
        tracing::info!(session = %id, resource, replaced = old.is_some(), "WebRTC offer answered");
        Ok((resource, accepted.answer))
    }

    /// Ends the session's WebRTC peer if `resource` names it (WHIP `DELETE`).
    pub fn detach_webrtc(&self, id: Uuid, resource: &str) -> Result<(), DaemonError> {
        let mut sessions = self.lock_sessions();
        let held = sessions
            .get_mut(&id)
            .ok_or_else(|| DaemonError::SessionNotFound(id.to_string()))?;
        if held.webrtc.as_ref().map(|slot| slot.resource.as_str()) != Some(resource) {
            return Err(DaemonError::WebRtcNotFound(resource.to_owned()));
        }
        held.webrtc = None;
        // If the queue is full the peer is closed anyway: its rings simply stop moving.
        let _ = self.workers[held.worker].try_send(WorkerCommand::WebRtc(id, None));
        Ok(())
    }

    fn lock_sessions(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Held>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pick_worker(&self) -> usize {
        self.next_worker.fetch_add(1, Ordering::Relaxed) % self.workers.len()
    }

    /// Ends a session: it leaves the registry at once, the worker stops it (the bot gets `stop`) and confirms,
    /// built-in bots stop (recordings are finalised). Returns false for an unknown session.
    /// Changes a running session's encoder (applied by its worker within a loop pass, at most 5 ms). The overrides
    /// were validated by the request parser.
    pub fn update_encoder(&self, id: Uuid, encoder: EncoderOverrides) -> Result<(), DaemonError> {
        let worker = self
            .lock_sessions()
            .get(&id)
            .map(|held| held.worker)
            .ok_or_else(|| DaemonError::SessionNotFound(id.to_string()))?;
        self.workers[worker]
            .try_send(WorkerCommand::Encoder(id, encoder))
            .map_err(|_| DaemonError::Media("the session's media worker is busy; try again".into()))
    }

    pub async fn end_session(&self, id: Uuid) -> bool {
        let Some(held) = self.lock_sessions().remove(&id) else {
            return false;
        };
        self.slots.fetch_sub(1, Ordering::AcqRel);
        self.page_sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        let live = held.entry.live.clone();
        // The flag ends it on the worker's next pass whatever happens to the command; the command only wakes the
        // worker's command loop sooner.
        live.request_end();
        let _ = self.workers[held.worker].try_send(WorkerCommand::Remove(id));
        self.server.remove_session(id);
        if !live.wait_ended(END_CONFIRM_TIMEOUT).await {
            self.counters
                .end_unconfirmed
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(session = %id, "the media worker did not confirm the end in time");
        }
        if let Some(task) = held.bot_task {
            task.finish().await;
        }
        tracing::info!(session = %id, "session ended");
        true
    }

    /// Refuses new sessions, ends every session (their bots' `stop` says `reason`) and stops the workers (graceful
    /// shutdown).
    pub async fn shutdown(&self, reason: &'static str) {
        self.draining.store(true, Ordering::Relaxed);
        // Flag them all first, so the workers end them in one pass rather than one confirmation at a time.
        let ids: Vec<Uuid> = {
            let sessions = self.lock_sessions();
            for held in sessions.values() {
                held.entry.live.request_end_because(reason);
            }
            sessions.keys().copied().collect()
        };
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

/// What [`Engine::start_media`] hands back to [`Engine::open_session`].
struct StartedMedia {
    rtp_local: Option<SocketAddr>,
    rate: SampleRate,
    live: Arc<LiveSession>,
    worker: usize,
    bot_task: Option<bots::BotTask>,
}

/// A random u32 for SSRCs and initial RTP counters (RFC 3550 wants them unpredictable).
fn rand_u32() -> u32 {
    Uuid::new_v4().as_u128() as u32
}
