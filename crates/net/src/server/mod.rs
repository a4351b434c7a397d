//! The media processor's QUIC endpoint: accepts edge connections, authorizes attaches by session token,
//! and moves RTP between QUIC datagrams and the sessions' packet rings.
//!
//! The module is split by job:
//! * this file — the public face ([`MediaServer`], [`ServerConfig`], session handles, [`TxWaker`]) and the
//!   session registry;
//! * `endpoint` — accepting connections and the endpoint's limits: global and per-source-address
//!   connection caps (refused at `Incoming`, before any handshake state), stateless Retry when handshakes
//!   come faster than the configured rate, a handshake timeout, rate-limited logs;
//! * `connection` — one task per connection that owns everything about it (flow table, its sessions' ring
//!   ends, the attach deadline, refusal count), attach/detach and the hand-over of a session between
//!   connections;
//! * `datagram` — the media path: datagram → flow → receive ring, transmit rings → datagrams, RTCP (via the
//!   sans-IO [`crate::rtcp`] shared with the RTP/UDP edge);
//! * `control` — the control stream: decoding and handling messages, and a separate writer task per
//!   connection with a bounded send queue and a write timeout, so a peer that stops reading never blocks
//!   the connection's datagram path and is closed (its sessions released) within the write timeout.
//!
//! The packet path takes no lock: a datagram is parsed in place, routed by flow id through a hash map and
//! copied into the session's receive ring. Sending drains the connection's sessions' transmit rings when
//! its own wake-up fires (a session's [`TxWaker`] wakes only the connection the session is attached to) or
//! the fallback poll interval elapses, so datagrams of many calls leave in one burst and quinn packs them
//! into shared QUIC packets. Datagram buffers come from one `BytesMut` arena per connection: no allocation
//! per packet in steady state. The session registry behind a mutex is touched only by control-plane
//! operations (add/remove session, attach/detach).

mod connection;
mod control_stream;
mod datagram;
mod endpoint;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mediaproc_wire::control::{self, Codec, FlowDecl, Participant};
use quinn::VarInt;
use tokio::sync::{Notify, mpsc, oneshot};
use uuid::Uuid;

use crate::error::NetError;
use crate::ring::{
    PacketConsumer, PacketProducer, RX_RING_CAPACITY, TX_RING_CAPACITY, packet_ring,
};
use crate::stats::{EndpointStats, SessionStats, inc};
use crate::tls::{TlsSource, server_crypto};

pub use endpoint::LogWindow;

/// Capacity of a session's control-event queue; when full, new events are dropped and counted.
pub const EVENT_QUEUE_CAPACITY: usize = 256;
/// Default limit of sessions attached on one connection.
pub const MAX_SESSIONS_PER_CONNECTION: usize = 256;
/// Default limit of flows per session.
pub const MAX_FLOWS_PER_SESSION: usize = 64;
/// Fallback interval at which transmit rings are drained even without a wake-up. Wake-ups are reliable (a
/// `Notify` keeps its permit when nobody waits), so this only bounds the damage of a bug; at 20 ms it was a timer
/// per session per frame — a third of the network thread's wake-ups under load.
pub const TX_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Default interval of the MP's RTCP reports (RFC 3550's 5 s minimum).
pub const RTCP_INTERVAL: Duration = Duration::from_secs(5);
/// QUIC application close code: normal.
pub const CLOSE_NORMAL: u32 = 0;
/// QUIC application close code: protocol violation.
pub const CLOSE_PROTOCOL_VIOLATION: u32 = 1;
/// QUIC application close code: unsupported version.
pub const CLOSE_UNSUPPORTED_VERSION: u32 = 2;
/// QUIC application close code: no session was attached within the attach deadline.
pub const CLOSE_ATTACH_DEADLINE: u32 = 3;
/// QUIC application close code: too many refused attaches on the connection.
pub const CLOSE_REFUSED_ATTACHES: u32 = 4;
/// QUIC application close code: the peer stopped reading its control stream (send queue full or a write
/// took longer than the write timeout).
pub const CLOSE_CONTROL_STALLED: u32 = 5;
/// Default attach deadline: a connection without an attached session this long after its handshake (or
/// after its last session detached) is closed with [`CLOSE_ATTACH_DEADLINE`].
pub const ATTACH_DEADLINE: Duration = Duration::from_secs(5);
/// Default cap on connections (open or in handshake) of the endpoint.
pub const MAX_CONNECTIONS: usize = 1024;
/// Default cap on connections (open or in handshake) from one source IP address.
pub const MAX_CONNECTIONS_PER_ADDRESS: usize = 64;
/// Default number of refused attaches after which a connection is closed.
pub const MAX_REFUSED_ATTACHES: u32 = 3;
/// Default sustained handshake rate (per second) above which unvalidated peers get a stateless Retry.
pub const HANDSHAKE_RATE: u32 = 50;
/// Default burst of handshakes admitted above the sustained rate.
pub const HANDSHAKE_BURST: u32 = 100;
/// Default time a handshake may take before it is abandoned.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default capacity (messages) of a connection's control send queue.
pub const CONTROL_QUEUE_CAPACITY: usize = 64;
/// Default time one control write may take before the peer is considered stalled and closed.
pub const CONTROL_WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// Default kernel buffer of the endpoint's UDP socket.
pub const SOCKET_BUFFER: usize = 4 << 20;
/// Size of the per-connection datagram arena (refilled when used up).
const ARENA_LEN: usize = 64 * 1024;

/// Configuration of the QUIC endpoint.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// UDP address to listen on.
    pub bind: SocketAddr,
    /// Certificate source.
    pub tls: TlsSource,
    /// Sessions one connection may attach.
    pub max_sessions_per_connection: usize,
    /// Flows one session may have.
    pub max_flows_per_session: usize,
    /// QUIC idle timeout.
    pub idle_timeout: Duration,
    /// Fallback drain interval of the transmit rings.
    pub tx_poll_interval: Duration,
    /// Receive ring capacity of each session (packets).
    pub rx_ring_capacity: usize,
    /// Transmit ring capacity of each session (packets).
    pub tx_ring_capacity: usize,
    /// quinn's datagram receive buffer in bytes (it drops the oldest datagrams when full).
    pub datagram_buffer: usize,
    /// Kernel receive and send buffer of the UDP socket (`SO_RCVBUF`/`SO_SNDBUF`; the kernel caps it at
    /// `net.core.rmem_max`/`wmem_max`). The default 4 MiB lets a burst of handshakes or a flood at the port
    /// queue while the endpoint's driver catches up, instead of the kernel dropping healthy calls' packets.
    pub socket_buffer: usize,
    /// Interval between the MP's RTCP reports on each flow.
    pub rtcp_interval: Duration,
    /// A connection with no attached session this long after its handshake (or after its last session
    /// detached) is closed with [`CLOSE_ATTACH_DEADLINE`].
    pub attach_deadline: Duration,
    /// Connections (open or in handshake) the endpoint holds at most; more are refused before the
    /// handshake. Also sizes the table of per-connection wake-ups.
    pub max_connections: usize,
    /// Connections (open or in handshake) one source IP address holds at most.
    pub max_connections_per_address: usize,
    /// Refused attaches after which a connection is closed with [`CLOSE_REFUSED_ATTACHES`].
    pub max_refused_attaches: u32,
    /// Sustained handshakes per second; above it (after `handshake_burst`), peers whose address is not yet
    /// validated get a stateless Retry. 0 = always Retry unvalidated peers.
    pub handshake_rate: u32,
    /// Handshakes admitted in a burst above the sustained rate.
    pub handshake_burst: u32,
    /// A handshake not complete after this long is abandoned.
    pub handshake_timeout: Duration,
    /// Control messages queued for the writer of a connection at most; a peer that lets the queue fill is
    /// closed with [`CLOSE_CONTROL_STALLED`].
    pub control_queue_capacity: usize,
    /// Time one control write may take; a peer that takes longer is closed with [`CLOSE_CONTROL_STALLED`].
    pub control_write_timeout: Duration,
}

impl ServerConfig {
    /// Development defaults: a self-signed certificate for `localhost` and the bind IP.
    pub fn development(bind: SocketAddr) -> Self {
        Self {
            bind,
            tls: TlsSource::SelfSigned {
                names: vec!["localhost".into(), bind.ip().to_string()],
            },
            max_sessions_per_connection: MAX_SESSIONS_PER_CONNECTION,
            max_flows_per_session: MAX_FLOWS_PER_SESSION,
            idle_timeout: Duration::from_secs(30),
            tx_poll_interval: TX_POLL_INTERVAL,
            rx_ring_capacity: RX_RING_CAPACITY,
            tx_ring_capacity: TX_RING_CAPACITY,
            datagram_buffer: 4 << 20,
            socket_buffer: SOCKET_BUFFER,
            rtcp_interval: RTCP_INTERVAL,
            attach_deadline: ATTACH_DEADLINE,
            max_connections: MAX_CONNECTIONS,
            max_connections_per_address: MAX_CONNECTIONS_PER_ADDRESS,
            max_refused_attaches: MAX_REFUSED_ATTACHES,
            handshake_rate: HANDSHAKE_RATE,
            handshake_burst: HANDSHAKE_BURST,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            control_queue_capacity: CONTROL_QUEUE_CAPACITY,
            control_write_timeout: CONTROL_WRITE_TIMEOUT,
        }
    }
}

/// What the daemon registers for a media session before any edge attaches.
#[derive(Debug, Clone)]
pub struct SessionSpec {
    /// `mpMediaSessionId`.
    pub id: Uuid,
    /// The edge token (16..=64 bytes) carried in the blob's `edgeToken`; see [`generate_token`].
    pub token: Vec<u8>,
    /// The blob's `audioRenderContexts` (and video/data render contexts); empty = accept any context.
    pub render_contexts: Vec<Uuid>,
    /// The blob's `audioSourceContexts` (and video/data source contexts); empty = accept any context.
    pub source_contexts: Vec<Uuid>,
}

/// A fresh edge token: 32 random bytes as 64 lower-case hex characters.
pub fn generate_token() -> Result<String, NetError> {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| NetError::Tls("system random generator failed".into()))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Wakes the network task that drains a transmit ring. Call once after queuing a tick's packets, not per
/// packet. A session's own waker ([`QuicSession::waker`], [`crate::UdpSession::waker`]) wakes only the one
/// task that serves it — on QUIC the connection the session is attached to, nothing while it is not — so a
/// worker's pass never wakes connections that have nothing to send. Waking is lock-free: an atomic load
/// and a `Notify::notify_one` (which keeps one permit, so a wake-up is never lost and repeated wakes
/// coalesce).
#[derive(Debug, Clone)]
pub struct TxWaker(pub(crate) WakeTarget);

#[derive(Debug, Clone)]
pub(crate) enum WakeTarget {
    /// One task (the RTP/UDP endpoint).
    One(Arc<Notify>),
    /// The connection a QUIC session is attached to.
    Session(Arc<SessionWake>),
    /// Every open connection of the endpoint (the legacy endpoint-wide waker).
    All(Arc<WakeHub>),
}

impl TxWaker {
    pub(crate) fn single(notify: Arc<Notify>) -> Self {
        Self(WakeTarget::One(notify))
    }

    /// Requests an immediate drain of the transmit ring(s) this waker serves.
    pub fn wake(&self) {
        match &self.0 {
            WakeTarget::One(n) => n.notify_one(),
            WakeTarget::Session(s) => s.wake(),
            WakeTarget::All(h) => h.wake_all(),
        }
    }
}

/// One wake-up per connection slot, allocated once for `max_connections` slots; a connection holds its slot
/// for its lifetime.
#[derive(Debug)]
pub(crate) struct WakeHub {
    slots: Box<[WakeSlot]>,
}

#[derive(Debug, Default)]
struct WakeSlot {
    notify: Notify,
    in_use: AtomicBool,
}

impl WakeHub {
    fn new(n: usize) -> Self {
        Self {
            slots: (0..n.max(1)).map(|_| WakeSlot::default()).collect(),
        }
    }

    pub(crate) fn notify(&self, slot: usize) -> Option<&Notify> {
        self.slots.get(slot).map(|s| &s.notify)
    }

    pub(crate) fn set_in_use(&self, slot: usize, in_use: bool) {
        if let Some(s) = self.slots.get(slot) {
            s.in_use.store(in_use, Ordering::Release);
        }
    }

    fn wake_all(&self) {
        for s in self.slots.iter() {
            if s.in_use.load(Ordering::Acquire) {
                s.notify.notify_one();
            }
        }
    }
}

/// Where a QUIC session's wake-ups go: the slot of the connection it is attached to (+1; 0 = none).
#[derive(Debug)]
pub(crate) struct SessionWake {
    hub: Arc<WakeHub>,
    slot: AtomicUsize,
}

impl SessionWake {
    fn wake(&self) {
        let s = self.slot.load(Ordering::Acquire);
        if let Some(n) = s.checked_sub(1).and_then(|s| self.hub.notify(s)) {
            n.notify_one();
        }
    }

    pub(crate) fn attach(&self, slot: usize) {
        self.slot.store(slot + 1, Ordering::Release);
    }

    /// Forgets the connection in `slot`, unless the session already moved to another one.
    pub(crate) fn detach(&self, slot: usize) {
        let _ = self
            .slot
            .compare_exchange(slot + 1, 0, Ordering::AcqRel, Ordering::Relaxed);
    }
}

/// A control event of a media session, for its worker / the bot.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionEvent {
    /// An edge attached with these initial flows.
    Attached {
        /// Remote address of the edge's connection.
        remote: SocketAddr,
        /// Declared flows.
        flows: Vec<FlowDecl>,
    },
    /// The edge detached (or its connection was lost, or another connection replaced it).
    Detached {
        /// An [`control::error_code`] (`NORMAL`, `REPLACED`, ...).
        reason: u16,
    },
    /// A flow was declared after attach.
    FlowOpened(FlowDecl),
    /// A flow ended.
    FlowClosed {
        /// Its id.
        flow_id: u64,
    },
    /// The participant list.
    Roster(Vec<Participant>),
    /// Dominant speaker changed ([`control::NO_MSI`] = none).
    DominantSpeaker {
        /// Media source id.
        msi: u32,
    },
    /// A DTMF tone.
    Dtmf {
        /// RFC 4733 event code.
        event: u8,
        /// Duration.
        duration_ms: u16,
    },
    /// Whether the bot's audio on a source context is forwarded.
    SendStatus {
        /// Source context.
        context: Uuid,
        /// Active.
        active: bool,
    },
}

/// The worker-side handle of a media session on the QUIC endpoint: its rings, events and statistics.
#[derive(Debug)]
pub struct QuicSession {
    /// Session id.
    pub id: Uuid,
    /// RTP packets received from the edge; [`crate::PacketMeta::flow_id`] tells the flow (see events).
    pub rx: PacketConsumer,
    /// RTP packets to send; push with the flow id of a source flow, then call `waker.wake()`.
    pub tx: PacketProducer,
    /// Control events.
    pub events: mpsc::Receiver<SessionEvent>,
    /// Wakes the connection this session is attached to (and no other).
    pub waker: TxWaker,
    /// Live statistics.
    pub stats: Arc<SessionStats>,
}

struct NetPorts {
    rx: PacketProducer,
    tx: PacketConsumer,
}

struct Entry {
    token: Vec<u8>,
    render_contexts: Vec<Uuid>,
    source_contexts: Vec<Uuid>,
    stats: Arc<SessionStats>,
    events: mpsc::Sender<SessionEvent>,
    wake: Arc<SessionWake>,
    ports: Option<NetPorts>,
    attached: Option<(u64, mpsc::UnboundedSender<ConnCommand>)>,
}

enum ConnCommand {
    /// Give the session's ports back (another connection attached it).
    Release {
        session_id: Uuid,
        reply: oneshot::Sender<Option<NetPorts>>,
    },
    /// The session ended on the MP side.
    End { session_id: Uuid },
}

struct ConnEntry {
    remote: SocketAddr,
    stats: Arc<EndpointStats>,
    conn: quinn::Connection,
}

/// Statistics of one edge connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// Connection number (in accept order).
    pub id: u64,
    /// Edge address.
    pub remote: SocketAddr,
    /// QUIC's round-trip estimate in microseconds.
    pub rtt_us: u64,
    /// The connection's counters (`connections*` fields are zero).
    pub stats: crate::stats::ConnectionStatsSnapshot,
}

struct Shared {
    conns: Mutex<HashMap<u64, ConnEntry>>,
    sessions: Mutex<HashMap<Uuid, Entry>>,
    stats: EndpointStats,
    wake: Arc<WakeHub>,
    limits: endpoint::Limits,
    /// Rate limits of the log lines a peer can provoke (one a second each, with a count).
    refusal_log: Mutex<LogWindow>,
    stall_log: Mutex<LogWindow>,
    squatter_log: Mutex<LogWindow>,
    origin: Instant,
    /// NTP time (RFC 5905 64-bit format) at `origin`.
    ntp_origin: u64,
    config: ServerConfig,
    next_conn: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, HashMap<Uuid, Entry>> {
        // A panic while holding the lock cannot leave the map inconsistent (no multi-step updates), so a
        // poisoned lock is still usable.
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// NTP time `elapsed` after the origin.
    fn ntp_at(&self, elapsed: Duration) -> u64 {
        ntp_after(self.ntp_origin, elapsed)
    }

    fn conns(&self) -> MutexGuard<'_, HashMap<u64, ConnEntry>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a rate-limited log line may be written now: `Some(events since the last line)`.
    fn log_hit(window: &Mutex<LogWindow>) -> Option<u64> {
        window
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .hit(Instant::now())
    }

    /// Ring timestamps: nanoseconds since the origin.
    fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }
}

/// The QUIC endpoint of the media processor (`quic://host:port/MediaProcessor`).
#[derive(Debug)]
pub struct MediaServer {
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    fingerprint: [u8; 32],
    accept: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("stats", &self.stats)
            .finish()
    }
}

impl MediaServer {
    /// Binds the endpoint and starts accepting connections (needs a tokio runtime).
    pub async fn bind(config: ServerConfig) -> Result<Self, NetError> {
        let identity = config.tls.load()?;
        let fingerprint = identity.fingerprint;
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(server_crypto(identity)?)
            .map_err(|e| NetError::Tls(e.to_string()))?;
        let mut qc = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        transport
            .max_concurrent_bidi_streams(VarInt::from_u32(1))
            .max_concurrent_uni_streams(VarInt::from_u32(0))
            .max_idle_timeout(Some(
                quinn::IdleTimeout::try_from(config.idle_timeout)
                    .map_err(|e| NetError::Tls(e.to_string()))?,
            ))
            .datagram_receive_buffer_size(Some(config.datagram_buffer))
            .datagram_send_buffer_size(config.datagram_buffer);
        qc.transport_config(Arc::new(transport));
        let bind_err = |source| NetError::Bind {
            addr: config.bind,
            source,
        };
        let socket = bind_udp(config.bind, config.socket_buffer).map_err(bind_err)?;
        let runtime = quinn::default_runtime()
            .ok_or_else(|| NetError::Tls("no async runtime for the QUIC endpoint".into()))?;
        let endpoint =
            quinn::Endpoint::new(quinn::EndpointConfig::default(), Some(qc), socket, runtime)
                .map_err(bind_err)?;
        let shared = Arc::new(Shared {
            conns: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
            stats: EndpointStats::default(),
            wake: Arc::new(WakeHub::new(config.max_connections)),
            limits: endpoint::Limits::new(&config),
            refusal_log: Mutex::new(LogWindow::new(Duration::from_secs(1))),
            stall_log: Mutex::new(LogWindow::new(Duration::from_secs(1))),
            squatter_log: Mutex::new(LogWindow::new(Duration::from_secs(1))),
            origin: Instant::now(),
            ntp_origin: ntp_now_wallclock(),
            config,
            next_conn: AtomicU64::new(1),
        });
        let accept = tokio::spawn(endpoint::accept_loop(endpoint.clone(), shared.clone()));
        Ok(Self {
            endpoint,
            shared,
            fingerprint,
            accept,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr, NetError> {
        Ok(self.endpoint.local_addr()?)
    }

    /// The mpUri for the blob, e.g. `quic://bot.example.com:18732/MediaProcessor`.
    pub fn mp_uri(&self, host: &str) -> Result<String, NetError> {
        Ok(format!(
            "quic://{host}:{}/MediaProcessor",
            self.local_addr()?.port()
        ))
    }

    /// SHA-256 fingerprint of the certificate (pin it on the edge for self-signed certificates).
    pub fn certificate_fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }

    /// The instant that ring timestamps ([`crate::PacketMeta::time_ns`]) count from.
    pub fn clock_origin(&self) -> Instant {
        self.shared.origin
    }

    /// An endpoint-wide waker that wakes **every** open connection. Kept for callers that wake once per
    /// pass for many sessions; prefer each session's own [`QuicSession::waker`], which wakes only the
    /// connection that has the session's packets.
    pub fn tx_waker(&self) -> TxWaker {
        TxWaker(WakeTarget::All(self.shared.wake.clone()))
    }

    /// Endpoint-wide statistics.
    pub fn stats(&self) -> crate::stats::ConnectionStatsSnapshot {
        self.shared.stats.snapshot()
    }

    /// Per-connection statistics of the open edge connections.
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        let mut v: Vec<_> = self
            .shared
            .conns()
            .iter()
            .map(|(id, c)| ConnectionInfo {
                id: *id,
                remote: c.remote,
                rtt_us: c.conn.rtt().as_micros() as u64,
                stats: c.stats.snapshot(),
            })
            .collect();
        v.sort_by_key(|c| c.id);
        v
    }

    /// Registers a media session so that an edge presenting its token can attach; returns the worker handle.
    pub fn add_session(&self, spec: SessionSpec) -> Result<QuicSession, NetError> {
        if !(16..=control::MAX_TOKEN_LEN).contains(&spec.token.len()) {
            return Err(NetError::BadToken(spec.token.len()));
        }
        let mut map = self.shared.lock();
        if map.contains_key(&spec.id) {
            return Err(NetError::SessionExists(spec.id));
        }
        let (rx_p, rx_c) = packet_ring(self.shared.config.rx_ring_capacity);
        let (tx_p, tx_c) = packet_ring(self.shared.config.tx_ring_capacity);
        let (ev_tx, ev_rx) = mpsc::channel(EVENT_QUEUE_CAPACITY);
        let stats = Arc::new(SessionStats::with_rings(rx_p.probe(), tx_c.probe()));
        let wake = Arc::new(SessionWake {
            hub: self.shared.wake.clone(),
            slot: AtomicUsize::new(0),
        });
        map.insert(
            spec.id,
            Entry {
                token: spec.token,
                render_contexts: spec.render_contexts,
                source_contexts: spec.source_contexts,
                stats: stats.clone(),
                events: ev_tx,
                wake: wake.clone(),
                ports: Some(NetPorts { rx: rx_p, tx: tx_c }),
                attached: None,
            },
        );
        Ok(QuicSession {
            id: spec.id,
            rx: rx_c,
            tx: tx_p,
            events: ev_rx,
            waker: TxWaker(WakeTarget::Session(wake)),
            stats,
        })
    }

    /// Ends a session: the attached edge (if any) receives `Detach{SESSION_ENDED}`; later attaches are
    /// refused. Returns whether the session existed.
    pub fn remove_session(&self, id: Uuid) -> bool {
        let entry = self.shared.lock().remove(&id);
        match entry {
            Some(e) => {
                if let Some((_, cmd)) = e.attached {
                    let _ = cmd.send(ConnCommand::End { session_id: id });
                }
                true
            }
            None => false,
        }
    }

    /// Closes all connections and the endpoint.
    pub async fn shutdown(self) {
        self.endpoint
            .close(VarInt::from_u32(CLOSE_NORMAL), b"shutdown");
        self.accept.abort();
        self.endpoint.wait_idle().await;
    }
}

/// The wall clock as a 64-bit NTP timestamp (seconds since 1900 in the high half).
/// `ntp` advanced by `elapsed`.
pub(crate) fn ntp_after(ntp: u64, elapsed: Duration) -> u64 {
    ntp.wrapping_add(elapsed.as_secs() << 32)
        .wrapping_add((u64::from(elapsed.subsec_nanos()) << 32) / 1_000_000_000)
}

pub(crate) fn ntp_now_wallclock() -> u64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    ((d.as_secs() + 2_208_988_800) << 32) + ((u64::from(d.subsec_nanos()) << 32) / 1_000_000_000)
}

/// Compares tokens without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A UDP socket bound to `addr` with kernel buffers of `buffer` bytes (best effort: the kernel may cap them).
fn bind_udp(addr: SocketAddr, buffer: usize) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    let _ = socket.set_recv_buffer_size(buffer);
    let _ = socket.set_send_buffer_size(buffer);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// RTP clock rate of a codec.
fn clock_rate(codec: Codec) -> u64 {
    match codec {
        Codec::Pcmu | Codec::Pcma => 8_000,
        _ => 48_000,
    }
}

/// Queues an event for the session's consumer; counts it when the queue is full.
fn emit(events: &mpsc::Sender<SessionEvent>, stats: &SessionStats, ev: SessionEvent) {
    if events.try_send(ev).is_err() {
        inc(&stats.events_dropped);
    }
}
