//! The media processor's QUIC endpoint: accepts edge connections, authorizes attaches by session token,
//! and moves RTP between QUIC datagrams and the sessions' packet rings.
//!
//! One task per connection owns everything about that connection (its flow table, its sessions' ring ends,
//! its control stream), so the packet path takes no lock: a datagram is parsed in place, routed by flow id
//! through a hash map and copied into the session's receive ring. Sending drains every attached session's
//! transmit ring whenever a [`TxWaker`] fires (a worker calls it once per tick after queuing the tick's
//! packets) or the fallback poll interval elapses, so datagrams of many calls leave in one burst and quinn
//! packs them into shared QUIC packets. Datagram buffers come from one `BytesMut` arena per connection:
//! no allocation per packet in steady state. The session registry behind a mutex is touched only by
//! control-plane operations (add/remove session, attach/detach).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use mediaproc_wire::control::{
    self, Codec, ControlMessage, Decoded, Direction, FlowDecl, MediaKind, Participant, error_code,
};
use mediaproc_wire::rtcp::{self, RtcpPacket};
use mediaproc_wire::stats::ReceiveStats;
use mediaproc_wire::{RoqDatagram, RtpPacket, roq};
use quinn::VarInt;
use tokio::sync::{Notify, mpsc, oneshot};
use uuid::Uuid;

use crate::error::NetError;
use crate::ring::{
    MAX_PACKET_LEN, PacketConsumer, PacketProducer, RX_RING_CAPACITY, TX_RING_CAPACITY, packet_ring,
};
use crate::stats::{EndpointStats, SessionStats, add, inc};
use crate::tls::{TlsSource, server_crypto};

/// Capacity of a session's control-event queue; when full, new events are dropped and counted.
pub const EVENT_QUEUE_CAPACITY: usize = 256;
/// Default limit of sessions attached on one connection.
pub const MAX_SESSIONS_PER_CONNECTION: usize = 256;
/// Default limit of flows per session.
pub const MAX_FLOWS_PER_SESSION: usize = 64;
/// Fallback interval at which transmit rings are drained even without a wake-up.
pub const TX_POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Default interval of the MP's RTCP reports (RFC 3550's 5 s minimum).
pub const RTCP_INTERVAL: Duration = Duration::from_secs(5);
/// QUIC application close code: normal.
pub const CLOSE_NORMAL: u32 = 0;
/// QUIC application close code: protocol violation.
pub const CLOSE_PROTOCOL_VIOLATION: u32 = 1;
/// QUIC application close code: unsupported version.
pub const CLOSE_UNSUPPORTED_VERSION: u32 = 2;
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
    /// Interval between the MP's RTCP reports on each flow.
    pub rtcp_interval: Duration,
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
            rtcp_interval: RTCP_INTERVAL,
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

/// Wakes the network task(s) so they drain transmit rings now. Call once after queuing a tick's packets
/// (of one or many sessions), not per packet.
#[derive(Debug, Clone)]
pub struct TxWaker(pub(crate) Arc<Notify>);

impl TxWaker {
    /// Requests an immediate drain of the transmit rings.
    pub fn wake(&self) {
        self.0.notify_waiters();
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
        /// An [`error_code`] (`NORMAL`, `REPLACED`, ...).
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
    /// Wakes the sender.
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
    tx_notify: Arc<Notify>,
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
        let endpoint =
            quinn::Endpoint::server(qc, config.bind).map_err(|source| NetError::Bind {
                addr: config.bind,
                source,
            })?;
        let shared = Arc::new(Shared {
            conns: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
            stats: EndpointStats::default(),
            tx_notify: Arc::new(Notify::new()),
            origin: Instant::now(),
            ntp_origin: ntp_now_wallclock(),
            config,
            next_conn: AtomicU64::new(1),
        });
        let accept = tokio::spawn(accept_loop(endpoint.clone(), shared.clone()));
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

    /// A waker for the transmit path (the same one every session handle carries).
    pub fn tx_waker(&self) -> TxWaker {
        TxWaker(self.shared.tx_notify.clone())
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
        let stats = Arc::new(SessionStats::default());
        map.insert(
            spec.id,
            Entry {
                token: spec.token,
                render_contexts: spec.render_contexts,
                source_contexts: spec.source_contexts,
                stats: stats.clone(),
                events: ev_tx,
                ports: Some(NetPorts { rx: rx_p, tx: tx_c }),
                attached: None,
            },
        );
        Ok(QuicSession {
            id: spec.id,
            rx: rx_c,
            tx: tx_p,
            events: ev_rx,
            waker: self.tx_waker(),
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

async fn accept_loop(endpoint: quinn::Endpoint, shared: Arc<Shared>) {
    while let Some(incoming) = endpoint.accept().await {
        let shared = shared.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            match incoming.await {
                Ok(conn) => {
                    inc(&shared.stats.connections);
                    inc(&shared.stats.connections_open);
                    let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(conn = id, %remote, "edge connected");
                    let reason = run_connection(id, conn, shared.clone()).await;
                    tracing::info!(conn = id, %remote, %reason, "edge connection ended");
                    shared
                        .stats
                        .connections_open
                        .fetch_sub(1, Ordering::Relaxed);
                }
                Err(e) => tracing::info!(%remote, error = %e, "handshake failed"),
            }
        });
    }
}

struct Attached {
    id: Uuid,
    ports: NetPorts,
    stats: Arc<SessionStats>,
    events: mpsc::Sender<SessionEvent>,
    render_contexts: Vec<Uuid>,
    source_contexts: Vec<Uuid>,
    flows: Vec<u64>,
}

struct Route {
    slot: usize,
    decl: FlowDecl,
    rx: ReceiveStats,
    clock_rate: u64,
    /// Render flows: SSRC of the edge's stream (last seen).
    remote_ssrc: u32,
    /// Render flows: middle 32 bits of the last SR's NTP time, and when it arrived (ns since origin).
    last_sr: Option<(u32, u64)>,
    /// Source flows: what we sent, for our SRs.
    sender: Option<SenderState>,
}

#[derive(Clone, Copy)]
struct SenderState {
    ssrc: u32,
    packets: u32,
    octets: u32,
    rtp_timestamp: u32,
    at_ns: u64,
}

/// SDES CNAME the MP uses in its RTCP.
const CNAME: &[u8] = b"mediaproc";

struct Conn {
    id: u64,
    cstats: Arc<EndpointStats>,
    conn: quinn::Connection,
    shared: Arc<Shared>,
    cmd_tx: mpsc::UnboundedSender<ConnCommand>,
    sessions: Vec<Option<Attached>>,
    flows: HashMap<u64, Route>,
    send: Option<quinn::SendStream>,
    out: Vec<u8>,
    arena: BytesMut,
    scratch: Box<[u8]>,
}

fn clock_rate(codec: Codec) -> u64 {
    match codec {
        Codec::Pcmu | Codec::Pcma => 8_000,
        _ => 48_000,
    }
}

fn emit(events: &mpsc::Sender<SessionEvent>, stats: &SessionStats, ev: SessionEvent) {
    if events.try_send(ev).is_err() {
        inc(&stats.events_dropped);
    }
}

/// Runs one edge connection to its end; returns why it ended.
async fn run_connection(id: u64, conn: quinn::Connection, shared: Arc<Shared>) -> String {
    let (cmd_tx, mut cmd_rx) = mpsc::unbounded_channel();
    let notify = shared.tx_notify.clone();
    let cstats = Arc::new(EndpointStats::default());
    shared.conns().insert(
        id,
        ConnEntry {
            remote: conn.remote_address(),
            stats: cstats.clone(),
            conn: conn.clone(),
        },
    );
    let mut c = Conn {
        id,
        cstats,
        conn: conn.clone(),
        shared: shared.clone(),
        cmd_tx,
        sessions: Vec::new(),
        flows: HashMap::new(),
        send: None,
        out: vec![0u8; control::MAX_FRAME_LEN],
        arena: BytesMut::with_capacity(ARENA_LEN),
        scratch: vec![0u8; MAX_PACKET_LEN].into_boxed_slice(),
    };
    let mut recv: Option<quinn::RecvStream> = None;
    let mut inbuf: Vec<u8> = Vec::with_capacity(2 * control::MAX_FRAME_LEN);
    let mut chunk = vec![0u8; control::MAX_FRAME_LEN];
    let mut tick = tokio::time::interval(shared.config.tx_poll_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut notified = pin!(notify.notified());
    notified.as_mut().enable();
    let mut last_rtcp = Instant::now();
    let reason = loop {
        tokio::select! {
            biased;
            cmd = cmd_rx.recv() => {
                if let Some(cmd) = cmd {
                    c.on_command(cmd).await;
                }
            }
            () = notified.as_mut() => {
                notified.set(notify.notified());
                notified.as_mut().enable();
                c.flush_tx();
            }
            s = conn.accept_bi(), if recv.is_none() => match s {
                Ok((send, r)) => {
                    c.send = Some(send);
                    recv = Some(r);
                }
                Err(e) => break e.to_string(),
            },
            r = async { match recv.as_mut() { Some(r) => r.read(&mut chunk).await, None => std::future::pending().await } } => {
                match r {
                    Ok(Some(n)) => {
                        inbuf.extend_from_slice(&chunk[..n]);
                        if let Err(reason) = c.on_control_bytes(&mut inbuf).await {
                            break reason;
                        }
                    }
                    Ok(None) => {
                        conn.close(VarInt::from_u32(CLOSE_NORMAL), b"control stream finished");
                        break "control stream finished".into();
                    }
                    Err(e) => break e.to_string(),
                }
            }
            _ = tick.tick() => {
                c.flush_tx();
                let rtt = conn.rtt().as_micros() as u64;
                for s in c.sessions.iter().flatten() {
                    s.stats.rtt_us.store(rtt, Ordering::Relaxed);
                }
                if last_rtcp.elapsed() >= shared.config.rtcp_interval {
                    last_rtcp = Instant::now();
                    c.send_rtcp();
                }
            }
            // Last: a continuous stream of datagrams must not starve the control stream or the tick.
            d = conn.read_datagram() => match d {
                Ok(d) => c.on_datagram(&d),
                Err(e) => break e.to_string(),
            },
        }
    };
    c.detach_all(error_code::NORMAL);
    shared.conns().remove(&id);
    reason
}

impl Conn {
    fn on_datagram(&mut self, d: &Bytes) {
        let st = [&self.shared.stats, &*self.cstats];
        inc2(st, |s| &s.datagrams_rx);
        add2(st, |s| &s.bytes_rx, d.len() as u64);
        let Ok(dg) = RoqDatagram::parse(d) else {
            inc2(st, |s| &s.malformed);
            return;
        };
        let Some(route) = self.flows.get_mut(&dg.flow_id) else {
            inc2(st, |s| &s.unknown_flow);
            return;
        };
        let Some(sess) = self.sessions.get_mut(route.slot).and_then(Option::as_mut) else {
            inc2(st, |s| &s.unknown_flow);
            return;
        };
        if roq::is_rtcp(dg.packet) {
            let now = self.shared.origin.elapsed();
            let now_mid = rtcp::ntp_middle32(self.shared.ntp_at(now));
            let mut ok = true;
            let our_ssrc = route.sender.map(|s| s.ssrc);
            let on_blocks = |blocks: rtcp::ReportBlocks<'_>| {
                for b in blocks.iter() {
                    if Some(b.ssrc) != our_ssrc {
                        continue;
                    }
                    if let Some(rtt) = rtcp::round_trip_time(&b, now_mid) {
                        let us = u64::from(rtt) * 1_000_000 / 65_536;
                        sess.stats.rtcp_rtt_us.store(us.max(1), Ordering::Relaxed);
                    }
                }
            };
            for p in rtcp::parse_compound(dg.packet) {
                match p {
                    Ok(RtcpPacket::SenderReport(sr)) => {
                        route.last_sr = Some((
                            rtcp::ntp_middle32(sr.info.ntp_timestamp),
                            now.as_nanos() as u64,
                        ));
                        on_blocks(sr.reports);
                    }
                    Ok(RtcpPacket::ReceiverReport(rr)) => on_blocks(rr.reports),
                    Ok(_) => {}
                    Err(_) => ok = false,
                }
            }
            if ok {
                inc(&sess.stats.rx_rtcp);
            } else {
                inc(&sess.stats.rx_malformed);
                inc2(st, |s| &s.malformed);
            }
            return;
        }
        if route.decl.direction != Direction::Render {
            inc(&sess.stats.rx_unexpected);
            return;
        }
        let p = match RtpPacket::parse(dg.packet) {
            Ok(p) => p,
            Err(_) => {
                inc(&sess.stats.rx_malformed);
                inc2(st, |s| &s.malformed);
                return;
            }
        };
        let now = self.shared.origin.elapsed();
        let arrival = (now.as_nanos() as u64).wrapping_mul(route.clock_rate) / 1_000_000_000;
        route.rx.on_packet(p.sequence, p.timestamp, arrival as u32);
        route.remote_ssrc = p.ssrc;
        sess.stats
            .lost
            .store(route.rx.lost().max(0) as u64, Ordering::Relaxed);
        sess.stats.jitter_us.store(
            u64::from(route.rx.jitter()) * 1_000_000 / route.clock_rate,
            Ordering::Relaxed,
        );
        if route.decl.media != MediaKind::Audio {
            // Reserved kinds are accepted but not processed in version 1.
            inc(&sess.stats.rx_unexpected);
            return;
        }
        inc(&sess.stats.rx_packets);
        add(&sess.stats.rx_bytes, dg.packet.len() as u64);
        // Cannot fail: parse() bounds RTP packets by the datagram, and quinn datagrams fit the slot size.
        if sess
            .ports
            .rx
            .push(dg.flow_id, now.as_nanos() as u64, dg.packet)
            .is_err()
        {
            inc(&sess.stats.rx_unexpected);
        }
    }

    /// Drains every attached session's transmit ring into datagrams.
    fn flush_tx(&mut self) {
        let st = [&self.shared.stats, &*self.cstats];
        let now_ns = self.shared.origin.elapsed().as_nanos() as u64;
        for (slot, sess) in self.sessions.iter_mut().enumerate() {
            let Some(sess) = sess else { continue };
            while let Some(meta) = sess.ports.tx.pop(&mut self.scratch) {
                let route = match self.flows.get_mut(&meta.flow_id) {
                    Some(r) if r.decl.direction == Direction::Source && r.slot == slot => r,
                    _ => {
                        inc(&sess.stats.tx_dropped);
                        continue;
                    }
                };
                if meta.len > MAX_PACKET_LEN {
                    inc(&sess.stats.tx_dropped);
                    continue;
                }
                if let Ok(p) = RtpPacket::parse(&self.scratch[..meta.len]) {
                    let prev = route.sender.filter(|s| s.ssrc == p.ssrc);
                    route.sender = Some(SenderState {
                        ssrc: p.ssrc,
                        packets: prev.map_or(0, |s| s.packets).wrapping_add(1),
                        octets: prev
                            .map_or(0, |s| s.octets)
                            .wrapping_add(p.payload.len() as u32),
                        rtp_timestamp: p.timestamp,
                        at_ns: now_ns,
                    });
                }
                let total = roq::varint_len(meta.flow_id).unwrap_or(8) + meta.len;
                if self.arena.capacity() - self.arena.len() < total {
                    self.arena.reserve(ARENA_LEN.max(total));
                }
                let start = self.arena.len();
                self.arena.resize(start + total, 0);
                let n = match roq::write_header(meta.flow_id, &mut self.arena[start..]) {
                    Ok(n) => n,
                    Err(_) => {
                        self.arena.truncate(start);
                        inc(&sess.stats.tx_dropped);
                        continue;
                    }
                };
                self.arena[start + n..start + total].copy_from_slice(&self.scratch[..meta.len]);
                let dgram = self.arena.split().freeze();
                match self.conn.send_datagram(dgram) {
                    Ok(()) => {
                        inc(&sess.stats.tx_packets);
                        add(&sess.stats.tx_bytes, meta.len as u64);
                        inc2(st, |s| &s.datagrams_tx);
                        add2(st, |s| &s.bytes_tx, total as u64);
                    }
                    Err(_) => inc(&sess.stats.tx_dropped),
                }
            }
        }
    }

    /// Sends an SR (source flows we sent on) or an RR (render flows we received on), each with an SDES CNAME,
    /// on every flow of the connection (RFC 3550 §6; proto/SPEC.md §4.5).
    fn send_rtcp(&mut self) {
        let st = [&self.shared.stats, &*self.cstats];
        let now = self.shared.origin.elapsed();
        let now_ns = now.as_nanos() as u64;
        let ntp = self.shared.ntp_at(now);
        let mut pkt = [0u8; 256];
        for (flow_id, route) in self.flows.iter_mut() {
            let n = match route.decl.direction {
                Direction::Source => {
                    let Some(s) = route.sender else { continue };
                    let since = now_ns.saturating_sub(s.at_ns) * route.clock_rate / 1_000_000_000;
                    let info = rtcp::SenderInfo {
                        ntp_timestamp: ntp,
                        rtp_timestamp: s.rtp_timestamp.wrapping_add(since as u32),
                        packet_count: s.packets,
                        octet_count: s.octets,
                    };
                    let Ok(a) = rtcp::write_sender_report(s.ssrc, &info, &[], &mut pkt) else {
                        continue;
                    };
                    let Ok(b) = rtcp::write_sdes_cname(s.ssrc, CNAME, &mut pkt[a..]) else {
                        continue;
                    };
                    a + b
                }
                Direction::Render => {
                    if route.rx.received() == 0 {
                        continue;
                    }
                    let (lsr, dlsr) = route.last_sr.map_or((0, 0), |(mid, at)| {
                        (
                            mid,
                            (now_ns.saturating_sub(at) * 65_536 / 1_000_000_000) as u32,
                        )
                    });
                    let block = route.rx.report_block(route.remote_ssrc, lsr, dlsr);
                    let ssrc = 0x4D50_0000 ^ (*flow_id as u32);
                    let Ok(a) = rtcp::write_receiver_report(ssrc, &[block], &mut pkt) else {
                        continue;
                    };
                    let Ok(b) = rtcp::write_sdes_cname(ssrc, CNAME, &mut pkt[a..]) else {
                        continue;
                    };
                    a + b
                }
            };
            let total = roq::varint_len(*flow_id).unwrap_or(8) + n;
            if self.arena.capacity() - self.arena.len() < total {
                self.arena.reserve(ARENA_LEN.max(total));
            }
            let start = self.arena.len();
            self.arena.resize(start + total, 0);
            let Ok(h) = roq::write_header(*flow_id, &mut self.arena[start..]) else {
                self.arena.truncate(start);
                continue;
            };
            self.arena[start + h..start + total].copy_from_slice(&pkt[..n]);
            if self.conn.send_datagram(self.arena.split().freeze()).is_ok() {
                inc2(st, |s| &s.datagrams_tx);
                add2(st, |s| &s.bytes_tx, total as u64);
            }
        }
    }

    async fn send_control(&mut self, msg: &ControlMessage) {
        let Ok(n) = msg.encode(&mut self.out) else {
            return;
        };
        if let Some(s) = self.send.as_mut() {
            let _ = s.write_all(&self.out[..n]).await;
        }
    }

    async fn send_error(&mut self, code: u16, session_id: Uuid, message: &str) {
        self.send_control(&ControlMessage::Error {
            code,
            session_id,
            message: message.to_owned(),
        })
        .await;
    }

    /// Handles complete frames in `inbuf`; `Err` carries the reason to close the connection.
    async fn on_control_bytes(&mut self, inbuf: &mut Vec<u8>) -> Result<(), String> {
        loop {
            match control::decode_frame(inbuf) {
                Ok(Decoded::Incomplete { .. }) => return Ok(()),
                Ok(Decoded::Message(msg, len)) => {
                    inbuf.drain(..len);
                    self.on_control(msg).await;
                }
                Ok(Decoded::Unknown { msg_type, len }) => {
                    inbuf.drain(..len);
                    if msg_type < control::FIRST_IGNORABLE_TYPE {
                        inc2([&self.shared.stats, &*self.cstats], |s| &s.protocol_errors);
                        self.send_error(
                            error_code::UNKNOWN_MESSAGE,
                            Uuid::nil(),
                            "unknown message type",
                        )
                        .await;
                    }
                }
                Err(e) => {
                    inc2([&self.shared.stats, &*self.cstats], |s| &s.protocol_errors);
                    let (code, close) = match e {
                        mediaproc_wire::WireError::UnsupportedVersion { .. } => {
                            (error_code::UNSUPPORTED_VERSION, CLOSE_UNSUPPORTED_VERSION)
                        }
                        _ => (error_code::PROTOCOL_VIOLATION, CLOSE_PROTOCOL_VIOLATION),
                    };
                    let text = e.to_string();
                    let text = &text[..text.len().min(control::MAX_ERROR_TEXT_LEN)];
                    self.send_error(code, Uuid::nil(), text).await;
                    if let Some(s) = self.send.as_mut() {
                        let _ = s.finish();
                    }
                    // Give the error a moment to leave before closing.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    self.conn.close(VarInt::from_u32(close), b"protocol error");
                    return Err(format!("protocol error: {e}"));
                }
            }
        }
    }

    fn slot_of(&self, id: Uuid) -> Option<usize> {
        self.sessions
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.id == id))
    }

    async fn on_control(&mut self, msg: ControlMessage) {
        match msg {
            ControlMessage::Attach {
                session_id,
                token,
                flows,
            } => self.on_attach(session_id, &token, flows).await,
            ControlMessage::KeepAlive { nonce } => {
                self.send_control(&ControlMessage::KeepAliveAck { nonce })
                    .await
            }
            ControlMessage::KeepAliveAck { .. } => {}
            ControlMessage::Error { code, message, .. } => {
                tracing::debug!(conn = self.id, code, %message, "edge reported an error");
            }
            ControlMessage::AttachOk { session_id } => {
                inc2([&self.shared.stats, &*self.cstats], |s| &s.protocol_errors);
                self.send_error(
                    error_code::PROTOCOL_VIOLATION,
                    session_id,
                    "AttachOk is sent by the MP only",
                )
                .await;
            }
            other => {
                let Some(session_id) = other.session_id() else {
                    return;
                };
                let Some(slot) = self.slot_of(session_id) else {
                    inc2([&self.shared.stats, &*self.cstats], |s| &s.protocol_errors);
                    self.send_error(
                        error_code::NOT_ATTACHED,
                        session_id,
                        "session not attached on this connection",
                    )
                    .await;
                    return;
                };
                self.on_session_message(slot, other).await;
            }
        }
    }

    async fn on_session_message(&mut self, slot: usize, msg: ControlMessage) {
        let Some(sess) = self.sessions[slot].as_ref() else {
            return;
        };
        let (events, stats, sid) = (sess.events.clone(), sess.stats.clone(), sess.id);
        match msg {
            ControlMessage::Detach { .. } => {
                self.detach(slot, error_code::NORMAL);
            }
            ControlMessage::OpenFlow { flow, .. } => {
                if let Err(why) = self.check_flows(slot, std::slice::from_ref(&flow)) {
                    self.send_error(why.0, sid, why.1).await;
                    return;
                }
                self.add_flow(slot, flow);
                emit(&events, &stats, SessionEvent::FlowOpened(flow));
            }
            ControlMessage::CloseFlow { flow_id, .. } => {
                let owned = self.flows.get(&flow_id).is_some_and(|r| r.slot == slot);
                if !owned {
                    self.send_error(error_code::INVALID_FLOW, sid, "flow not open")
                        .await;
                    return;
                }
                self.flows.remove(&flow_id);
                if let Some(s) = self.sessions[slot].as_mut() {
                    s.flows.retain(|f| *f != flow_id);
                }
                emit(&events, &stats, SessionEvent::FlowClosed { flow_id });
            }
            ControlMessage::Roster { participants, .. } => {
                emit(&events, &stats, SessionEvent::Roster(participants))
            }
            ControlMessage::DominantSpeaker { msi, .. } => {
                emit(&events, &stats, SessionEvent::DominantSpeaker { msi });
            }
            ControlMessage::Dtmf {
                event, duration_ms, ..
            } => {
                emit(&events, &stats, SessionEvent::Dtmf { event, duration_ms });
            }
            ControlMessage::SendStatus {
                context, active, ..
            } => {
                emit(
                    &events,
                    &stats,
                    SessionEvent::SendStatus { context, active },
                );
            }
            _ => {}
        }
    }

    /// Validates flow declarations for the session in `slot` (or about to be attached with these contexts).
    fn check_flows(&self, slot: usize, flows: &[FlowDecl]) -> Result<(), (u16, &'static str)> {
        let Some(sess) = self.sessions.get(slot).and_then(Option::as_ref) else {
            return Err((
                error_code::NOT_ATTACHED,
                "session not attached on this connection",
            ));
        };
        self.check_flows_for(
            &sess.render_contexts,
            &sess.source_contexts,
            sess.flows.len(),
            flows,
        )
    }

    fn check_flows_for(
        &self,
        render: &[Uuid],
        source: &[Uuid],
        existing: usize,
        flows: &[FlowDecl],
    ) -> Result<(), (u16, &'static str)> {
        if existing + flows.len() > self.shared.config.max_flows_per_session {
            return Err((error_code::LIMIT_EXCEEDED, "too many flows in the session"));
        }
        for (i, f) in flows.iter().enumerate() {
            if self.flows.contains_key(&f.flow_id)
                || flows[..i].iter().any(|g| g.flow_id == f.flow_id)
            {
                return Err((
                    error_code::INVALID_FLOW,
                    "flow id already in use on this connection",
                ));
            }
            let allowed = match f.direction {
                Direction::Render => render,
                Direction::Source => source,
            };
            if !allowed.is_empty() && !allowed.contains(&f.context) {
                return Err((
                    error_code::INVALID_FLOW,
                    "context is not one of the session's",
                ));
            }
            if (64..=95).contains(&f.payload_type) {
                return Err((
                    error_code::INVALID_FLOW,
                    "payload types 64-95 collide with RTCP",
                ));
            }
        }
        Ok(())
    }

    fn add_flow(&mut self, slot: usize, decl: FlowDecl) {
        self.flows.insert(
            decl.flow_id,
            Route {
                slot,
                decl,
                rx: ReceiveStats::default(),
                clock_rate: clock_rate(decl.codec),
                remote_ssrc: 0,
                last_sr: None,
                sender: None,
            },
        );
        if let Some(s) = self.sessions[slot].as_mut() {
            s.flows.push(decl.flow_id);
        }
    }

    async fn on_attach(&mut self, session_id: Uuid, token: &[u8], flows: Vec<FlowDecl>) {
        if self.slot_of(session_id).is_some() {
            inc2([&self.shared.stats, &*self.cstats], |s| &s.protocol_errors);
            self.send_error(
                error_code::PROTOCOL_VIOLATION,
                session_id,
                "session already attached on this connection",
            )
            .await;
            return;
        }
        let attached_count = self.sessions.iter().flatten().count();
        // Authorize and validate under the registry lock; take the ports if they are free.
        enum Next {
            Refuse,
            Fail(u16, &'static str),
            Take(
                NetPorts,
                Vec<Uuid>,
                Vec<Uuid>,
                Arc<SessionStats>,
                mpsc::Sender<SessionEvent>,
            ),
            Release(mpsc::UnboundedSender<ConnCommand>),
        }
        let next = {
            let shared = self.shared.clone();
            let mut map = shared.lock();
            match map.get_mut(&session_id) {
                Some(e) if constant_time_eq(&e.token, token) => {
                    if attached_count >= self.shared.config.max_sessions_per_connection {
                        Next::Fail(
                            error_code::LIMIT_EXCEEDED,
                            "too many sessions on this connection",
                        )
                    } else if let Err((code, why)) =
                        self.check_flows_for(&e.render_contexts, &e.source_contexts, 0, &flows)
                    {
                        Next::Fail(code, why)
                    } else if let Some(ports) = e.ports.take() {
                        e.attached = Some((self.id, self.cmd_tx.clone()));
                        Next::Take(
                            ports,
                            e.render_contexts.clone(),
                            e.source_contexts.clone(),
                            e.stats.clone(),
                            e.events.clone(),
                        )
                    } else if let Some((_, cmd)) = &e.attached {
                        Next::Release(cmd.clone())
                    } else {
                        Next::Fail(error_code::INTERNAL, "session unavailable")
                    }
                }
                _ => Next::Refuse,
            }
        };
        let next = match next {
            Next::Release(cmd) => {
                // Another connection holds the session: ask it to let go (it sends Detach{REPLACED}).
                let (reply_tx, reply_rx) = oneshot::channel();
                let _ = cmd.send(ConnCommand::Release {
                    session_id,
                    reply: reply_tx,
                });
                let ports = tokio::time::timeout(Duration::from_secs(2), reply_rx)
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .flatten();
                let shared = self.shared.clone();
                let mut map = shared.lock();
                match (map.get_mut(&session_id), ports) {
                    (Some(e), Some(ports)) => {
                        e.attached = Some((self.id, self.cmd_tx.clone()));
                        Next::Take(
                            ports,
                            e.render_contexts.clone(),
                            e.source_contexts.clone(),
                            e.stats.clone(),
                            e.events.clone(),
                        )
                    }
                    (Some(e), None) => match e.ports.take() {
                        Some(ports) => {
                            e.attached = Some((self.id, self.cmd_tx.clone()));
                            Next::Take(
                                ports,
                                e.render_contexts.clone(),
                                e.source_contexts.clone(),
                                e.stats.clone(),
                                e.events.clone(),
                            )
                        }
                        None => Next::Fail(error_code::INTERNAL, "session busy, retry"),
                    },
                    (None, _) => Next::Refuse,
                }
            }
            n => n,
        };
        match next {
            Next::Refuse => {
                inc2([&self.shared.stats, &*self.cstats], |s| &s.refused);
                tracing::info!(conn = self.id, "attach refused");
                self.send_error(error_code::ATTACH_REFUSED, session_id, "attach refused")
                    .await;
            }
            Next::Fail(code, why) => self.send_error(code, session_id, why).await,
            Next::Take(ports, render_contexts, source_contexts, stats, events) => {
                let slot = match self.sessions.iter().position(Option::is_none) {
                    Some(i) => i,
                    None => {
                        self.sessions.push(None);
                        self.sessions.len() - 1
                    }
                };
                self.sessions[slot] = Some(Attached {
                    id: session_id,
                    ports,
                    stats: stats.clone(),
                    events: events.clone(),
                    render_contexts,
                    source_contexts,
                    flows: Vec::with_capacity(flows.len()),
                });
                for f in &flows {
                    self.add_flow(slot, *f);
                }
                stats
                    .rtt_us
                    .store(self.conn.rtt().as_micros() as u64, Ordering::Relaxed);
                emit(
                    &events,
                    &stats,
                    SessionEvent::Attached {
                        remote: self.conn.remote_address(),
                        flows,
                    },
                );
                self.send_control(&ControlMessage::AttachOk { session_id })
                    .await;
            }
            Next::Release(_) => {}
        }
    }

    /// Removes the session in `slot` from this connection; returns its ports.
    fn take_session(&mut self, slot: usize) -> Option<Attached> {
        let sess = self.sessions.get_mut(slot)?.take()?;
        for f in &sess.flows {
            self.flows.remove(f);
        }
        Some(sess)
    }

    /// Detaches the session in `slot` (edge asked, or connection ending): ports go back to the registry.
    fn detach(&mut self, slot: usize, reason: u16) {
        let Some(sess) = self.take_session(slot) else {
            return;
        };
        emit(&sess.events, &sess.stats, SessionEvent::Detached { reason });
        let mut map = self.shared.lock();
        if let Some(e) = map.get_mut(&sess.id) {
            if e.attached.as_ref().is_some_and(|(c, _)| *c == self.id) {
                e.attached = None;
            }
            e.ports = Some(sess.ports);
        }
    }

    fn detach_all(&mut self, reason: u16) {
        for slot in 0..self.sessions.len() {
            self.detach(slot, reason);
        }
    }

    async fn on_command(&mut self, cmd: ConnCommand) {
        match cmd {
            ConnCommand::Release { session_id, reply } => {
                let ports = match self.slot_of(session_id).and_then(|s| self.take_session(s)) {
                    Some(sess) => {
                        emit(
                            &sess.events,
                            &sess.stats,
                            SessionEvent::Detached {
                                reason: error_code::REPLACED,
                            },
                        );
                        self.send_control(&ControlMessage::Detach {
                            session_id,
                            reason: error_code::REPLACED,
                        })
                        .await;
                        Some(sess.ports)
                    }
                    None => None,
                };
                if let Err(Some(ports)) = reply.send(ports) {
                    // The requester gave up waiting: keep the session reachable by parking its ports in the
                    // registry, where the next attach finds them.
                    let mut map = self.shared.lock();
                    if let Some(e) = map.get_mut(&session_id) {
                        e.attached = None;
                        e.ports = Some(ports);
                    }
                }
            }
            ConnCommand::End { session_id } => {
                if let Some(sess) = self.slot_of(session_id).and_then(|s| self.take_session(s)) {
                    emit(
                        &sess.events,
                        &sess.stats,
                        SessionEvent::Detached {
                            reason: error_code::SESSION_ENDED,
                        },
                    );
                    self.send_control(&ControlMessage::Detach {
                        session_id,
                        reason: error_code::SESSION_ENDED,
                    })
                    .await;
                }
            }
        }
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

type Pick = fn(&EndpointStats) -> &AtomicU64;

/// Counts in the endpoint totals and in the connection's own counters.
fn inc2(st: [&EndpointStats; 2], pick: Pick) {
    inc(pick(st[0]));
    inc(pick(st[1]));
}

fn add2(st: [&EndpointStats; 2], pick: Pick, n: u64) {
    add(pick(st[0]), n);
    add(pick(st[1]), n);
}

/// Compares tokens without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
