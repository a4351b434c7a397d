//! The WebRTC edge: a browser tab (or any WebRTC stack: OBS's WHIP output, aiortc, Pipecat, LiveKit agents) as a
//! session's far end.
//!
//! One peer per [`WebRtcPeer::accept`]: the WHIP offer is checked (it must parse, have an audio m-line and offer
//! Opus), a UDP socket is bound from the configured port range, [str0m](https://docs.rs/str0m) answers as an
//! **ICE-lite** agent with host candidates on the configured addresses, and **DTLS-SRTP** keys the media. str0m is
//! sans-IO: a thin tokio task here owns the socket and the `Rtc`, and passes it packets and the time.
//!
//! **RTP mode.** str0m runs in its RTP mode: each SRTP packet it decrypts is re-written as a plain RTP packet
//! (sequence number, timestamp, SSRC, marker and payload kept; the payload type mapped to the session's) into a
//! receive ring ([`UdpSession`], which the worker drains as it does the QUIC edge's), and each packet the worker queues is handed to str0m with its
//! own sequence number and timestamp. The session's jitter buffer therefore sees the browser's real sequence
//! numbers and arrival times — the kernel's receive stamps ([`crate::rxtime`]), so a delay of this task on a busy
//! machine does not look like network jitter — (loss, reordering and FEC work as on the other edges), and the pipeline's Opus
//! packets go out unchanged; str0m's frame API would have re-timed both. str0m does the RTCP (receiver and sender
//! reports, NACK) itself; its statistics (round trip, the peer's loss report) are copied into the session's
//! [`SessionStats`], so the encoder's adaptive FEC follows the browser's loss reports as it follows an RTP/UDP
//! peer's.
//!
//! **Failure.** ICE and DTLS must complete within [`WebRtcConfig::connect_timeout`]; a failure, a timeout, the
//! peer's close or a lost ICE connection ends the peer's task and is reported as a [`PeerEvent`] (the session
//! itself is kept: another offer can replace the peer). Packets str0m refuses are counted (`rx_malformed`).
//!
//! **Cost.** str0m allocates per packet (its RTP packets hold `Arc<[u8]>` payloads); that happens on this task,
//! never on a media worker, whose rings and pipeline stay allocation-free.

use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU16, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use mediaproc_wire::RtpPacket;
use str0m::change::SdpOffer;
use str0m::format::Codec;
use str0m::media::{MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{Notify, mpsc};

use crate::error::NetError;
use crate::ring::{
    MAX_PACKET_LEN, PacketConsumer, PacketProducer, RX_RING_CAPACITY, TX_RING_CAPACITY, packet_ring,
};
use crate::rtcp::StreamRtcp;
use crate::rxtime;
use crate::server::{TX_POLL_INTERVAL, TxWaker};
use crate::stats::{SessionStats, add, inc};
use crate::udp::UdpSession;

/// Events a peer queues for its owner before they are dropped (and counted in `events_dropped`).
pub const PEER_EVENT_CAPACITY: usize = 16;
/// Default time ICE and DTLS have to complete after the answer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How often str0m reports statistics (round trip, loss) into the session's counters.
pub const STATS_INTERVAL: Duration = Duration::from_secs(1);
/// The reason of a close the peer's owner asked for (dropping the [`WebRtcPeer`]).
const CLOSED_BY_OWNER: &str = "closed by the daemon (DELETE, a newer offer, or the session ended)";
/// Largest datagram read from the socket (above any MTU WebRTC uses).
const DATAGRAM_BUFFER: usize = 2048;

/// How the WebRTC edge binds and answers.
#[derive(Debug, Clone)]
pub struct WebRtcConfig {
    /// Address the peers' sockets bind (`0.0.0.0` for all interfaces).
    pub bind_ip: IpAddr,
    /// Addresses offered as ICE host candidates; empty = `bind_ip` (which must then not be unspecified).
    pub candidates: Vec<IpAddr>,
    /// First UDP port of the range peers' sockets are taken from.
    pub port_min: u16,
    /// Last UDP port of the range (inclusive). `port_min = port_max = 0` lets the OS pick.
    pub port_max: u16,
    /// Payload type of Opus in the session's pipeline: received packets get it before the worker sees them,
    /// and sent packets carry the negotiated one instead.
    pub payload_type: u8,
    /// Receive ring capacity.
    pub rx_ring_capacity: usize,
    /// Transmit ring capacity.
    pub tx_ring_capacity: usize,
    /// Fallback drain interval of the transmit ring.
    pub tx_poll_interval: Duration,
    /// ICE and DTLS must complete within this time after the answer.
    pub connect_timeout: Duration,
}

impl WebRtcConfig {
    /// Loopback, any port, the given Opus payload type, default capacities.
    pub fn loopback(payload_type: u8) -> Self {
        Self {
            bind_ip: IpAddr::from([127, 0, 0, 1]),
            candidates: Vec::new(),
            port_min: 0,
            port_max: 0,
            payload_type,
            rx_ring_capacity: RX_RING_CAPACITY,
            tx_ring_capacity: TX_RING_CAPACITY,
            tx_poll_interval: TX_POLL_INTERVAL,
            connect_timeout: CONNECT_TIMEOUT,
        }
    }
}

/// What happened to a peer (its state also shows in [`PeerInfo`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerEvent {
    /// ICE and DTLS completed: media flows.
    Connected {
        /// The peer's address ICE selected.
        remote: Option<SocketAddr>,
        /// Time from the answer to the connection, in milliseconds.
        after_ms: u64,
    },
    /// ICE or DTLS failed, or did not complete in time; the peer is gone.
    Failed {
        /// Why.
        reason: String,
    },
    /// The peer closed, or its ICE connection was lost; the peer is gone.
    Closed {
        /// Why.
        reason: String,
    },
}

/// The life of a peer, as [`PeerInfo::state`] tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PeerState {
    /// Answered; ICE and DTLS under way.
    Connecting = 0,
    /// Media flows.
    Connected = 1,
    /// Failed (ICE, DTLS, or the connect timeout).
    Failed = 2,
    /// Closed by the peer, by us, or after ICE was lost.
    Closed = 3,
}

impl PeerState {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => PeerState::Connected,
            2 => PeerState::Failed,
            3 => PeerState::Closed,
            _ => PeerState::Connecting,
        }
    }

    /// Lower-case name for APIs.
    pub fn name(self) -> &'static str {
        match self {
            PeerState::Connecting => "connecting",
            PeerState::Connected => "connected",
            PeerState::Failed => "failed",
            PeerState::Closed => "closed",
        }
    }
}

/// Live facts about a peer beyond the session counters: state, ICE state, timings.
#[derive(Debug, Default)]
pub struct PeerInfo {
    state: AtomicU8,
    ice: AtomicU8,
    connect_ms: AtomicU64,
    opus_pt: AtomicU16,
    /// Datagrams str0m did not accept (not STUN/DTLS/SRTP of this peer, failed authentication).
    rejected: AtomicU64,
}

impl PeerInfo {
    /// The peer's state.
    pub fn state(&self) -> PeerState {
        PeerState::from_u8(self.state.load(Relaxed))
    }

    /// The ICE agent's state (`new`, `checking`, `connected`, `completed`, `disconnected`).
    pub fn ice_state(&self) -> &'static str {
        match self.ice.load(Relaxed) {
            1 => "checking",
            2 => "connected",
            3 => "completed",
            4 => "disconnected",
            _ => "new",
        }
    }

    /// Milliseconds from the answer to the connection (0 until connected).
    pub fn connect_ms(&self) -> u64 {
        self.connect_ms.load(Relaxed)
    }

    /// The Opus payload type the offer chose.
    pub fn opus_payload_type(&self) -> u8 {
        self.opus_pt.load(Relaxed) as u8
    }

    /// Datagrams the peer's WebRTC stack did not accept (strangers, failed SRTP authentication, garbage).
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Relaxed)
    }

    fn set_state(&self, s: PeerState) {
        self.state.store(s as u8, Relaxed);
    }

    fn set_ice(&self, s: IceConnectionState) {
        let v = match s {
            IceConnectionState::New => 0,
            IceConnectionState::Checking => 1,
            IceConnectionState::Connected => 2,
            IceConnectionState::Completed => 3,
            IceConnectionState::Disconnected => 4,
        };
        self.ice.store(v, Relaxed);
    }
}

/// A running WebRTC peer; dropping it closes the peer (DTLS close and RTCP BYE are sent) and frees its port.
#[derive(Debug)]
pub struct WebRtcPeer {
    local: SocketAddr,
    origin: Instant,
    info: Arc<PeerInfo>,
    close: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WebRtcPeer {
    fn drop(&mut self) {
        // The task closes the peer gracefully and exits; it holds nothing the owner needs.
        self.close.notify_one();
    }
}

/// What [`WebRtcPeer::accept`] hands back.
#[derive(Debug)]
pub struct AcceptedPeer {
    /// The running peer.
    pub peer: WebRtcPeer,
    /// The worker's ring ends (flow id 0, like the RTP/UDP edge).
    pub session: UdpSession,
    /// The SDP answer.
    pub answer: String,
    /// The peer's events (connected, failed, closed).
    pub events: mpsc::Receiver<PeerEvent>,
    /// The offer's Opus asks for DTX (`usedtx=1`: the peer's receiver prefers it, RFC 7587 §6.1).
    pub wants_dtx: bool,
}

impl WebRtcPeer {
    /// Checks an SDP offer, binds a socket from the port range and answers it; the peer's task then runs ICE,
    /// DTLS and the media. Errors: [`NetError::Sdp`] (malformed, no audio), [`NetError::NoOpus`],
    /// [`NetError::NoPort`] (every port of the range is taken).
    pub async fn accept(offer: &str, config: &WebRtcConfig) -> Result<AcceptedPeer, NetError> {
        let offer = check_offer(offer)?;
        let wants_dtx = offer_wants_dtx(&offer);
        let sock = bind_in_range(config)?;
        let local = sock.local_addr()?;
        let now = Instant::now();
        let mut rtc = RtcConfig::new()
            // Per instance rather than process-wide: installing a process default twice panics.
            .set_crypto_provider(Arc::new(str0m::crypto::from_feature_flags()))
            .set_ice_lite(true)
            .clear_codecs()
            .enable_opus(true, false)
            .set_rtp_mode(true)
            .set_stats_interval(Some(STATS_INTERVAL))
            .build(now);
        let candidates: Vec<IpAddr> = if config.candidates.is_empty() {
            vec![local.ip()]
        } else {
            config.candidates.clone()
        };
        for ip in candidates {
            let candidate = Candidate::host(SocketAddr::new(ip, local.port()), "udp")
                .map_err(|e| NetError::Sdp(format!("host candidate {ip}: {e}")))?;
            rtc.add_local_candidate(candidate);
        }
        let mids: Vec<Mid> = offer.media_lines.iter().map(|m| m.mid()).collect();
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| NetError::Sdp(e.to_string()))?;
        let (mid, opus_pt) = negotiated_audio(&rtc, &mids).ok_or(NetError::NoOpus(
            "the offer's audio m-line was not accepted with Opus".into(),
        ))?;
        let info = Arc::new(PeerInfo::default());
        info.opus_pt.store(u16::from(opus_pt), Relaxed);
        let (rx_p, rx_c) = packet_ring(config.rx_ring_capacity);
        let (tx_p, tx_c) = packet_ring(config.tx_ring_capacity);
        let notify = Arc::new(Notify::new());
        let stats = Arc::new(SessionStats::with_rings(rx_c.probe(), tx_c.probe()));
        let (event_tx, events) = mpsc::channel(PEER_EVENT_CAPACITY);
        let close = Arc::new(Notify::new());
        let driver = Driver {
            rtc,
            sock,
            local,
            mid,
            opus_pt,
            session_pt: config.payload_type,
            rx: rx_p,
            tx: tx_c,
            stats: stats.clone(),
            info: info.clone(),
            events: event_tx,
            origin: now,
            rtcp: StreamRtcp::new(48_000),
            next_seq: None,
            out: vec![0u8; MAX_PACKET_LEN].into_boxed_slice(),
            arrived: now,
        };
        let task = tokio::spawn(driver.run(
            notify.clone(),
            close.clone(),
            config.tx_poll_interval,
            config.connect_timeout,
        ));
        Ok(AcceptedPeer {
            peer: WebRtcPeer {
                local,
                origin: now,
                info,
                close,
                task,
            },
            session: UdpSession {
                rx: rx_c,
                tx: tx_p,
                waker: TxWaker::single(notify),
                stats,
            },
            answer: answer.to_sdp_string(),
            events,
            wants_dtx,
        })
    }

    /// The peer's UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The instant that ring timestamps count from.
    pub fn clock_origin(&self) -> Instant {
        self.origin
    }

    /// State, ICE state and timings.
    pub fn info(&self) -> &Arc<PeerInfo> {
        &self.info
    }

    /// True while the peer is connecting or connected (it holds a port and counts against a peer cap).
    pub fn is_live(&self) -> bool {
        matches!(
            self.info.state(),
            PeerState::Connecting | PeerState::Connected
        ) && !self.task.is_finished()
    }
}

/// Parses an offer and checks it has what the edge needs: an audio m-line offering Opus.
pub fn check_offer(offer: &str) -> Result<SdpOffer, NetError> {
    if offer.trim().is_empty() {
        return Err(NetError::Sdp("the offer is empty".into()));
    }
    let parsed = SdpOffer::from_sdp_string(offer).map_err(|e| NetError::Sdp(e.to_string()))?;
    let audio: Vec<_> = parsed
        .media_lines
        .iter()
        .filter(|m| m.typ.to_string() == "audio" && !m.disabled)
        .collect();
    if audio.is_empty() {
        return Err(NetError::Sdp(
            "the offer has no (enabled) audio m-line".into(),
        ));
    }
    let mut offered = Vec::new();
    for line in &audio {
        for params in line.rtp_params() {
            let spec = params.spec();
            if spec.codec == Codec::Opus {
                return Ok(parsed);
            }
            offered.push(format!("{}/{}", spec.codec, spec.clock_rate.get()));
        }
    }
    Err(NetError::NoOpus(if offered.is_empty() {
        "the offer's audio m-line lists no codec".into()
    } else {
        format!(
            "the offer's audio lists {} but not opus/48000/2",
            offered.join(", ")
        )
    }))
}

/// Whether the offer's Opus says `usedtx=1`. Chromium's does not (its default is 0); a page can add it to its
/// offer (the talk page does), and aiortc's receiver, which plays the packets back to back, must not get DTX.
fn offer_wants_dtx(offer: &SdpOffer) -> bool {
    offer.media_lines.iter().any(|line| {
        line.rtp_params().iter().any(|p| {
            let spec = p.spec();
            spec.codec == Codec::Opus && spec.format.use_dtx == Some(true)
        })
    })
}

/// The audio media (of the offer's `mids`) the answer accepted, and its Opus payload type.
fn negotiated_audio(rtc: &Rtc, mids: &[Mid]) -> Option<(Mid, u8)> {
    let opus: Vec<u8> = rtc
        .codec_config()
        .params()
        .iter()
        .filter(|p| p.spec().codec == Codec::Opus)
        .map(|p| *p.pt())
        .collect();
    for &mid in mids {
        if let Some(media) = rtc.media(mid) {
            if media.kind() == MediaKind::Audio && !media.disabled() {
                if let Some(pt) = media
                    .remote_pts()
                    .iter()
                    .map(|p| **p)
                    .find(|p| opus.contains(p))
                {
                    return Some((mid, pt));
                }
            }
        }
    }
    None
}

/// Binds a UDP socket on the first free port of the range, starting at a rotating offset so consecutive peers
/// do not all probe the same ports.
fn bind_in_range(config: &WebRtcConfig) -> Result<UdpSocket, NetError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let (lo, hi) = (config.port_min, config.port_max.max(config.port_min));
    let span = u64::from(hi - lo) + 1;
    let start = NEXT.fetch_add(1, Relaxed) % span;
    for i in 0..span {
        let port = lo + ((start + i) % span) as u16;
        let addr = SocketAddr::new(config.bind_ip, port);
        let Ok(std_sock) = std::net::UdpSocket::bind(addr) else {
            continue;
        };
        std_sock.set_nonblocking(true)?;
        rxtime::enable(&std_sock)?;
        return UdpSocket::from_std(std_sock).map_err(NetError::Io);
    }
    Err(NetError::NoPort {
        first: lo,
        last: hi,
    })
}

/// The peer's task: owns the socket, the `Rtc` and the network ends of the rings.
struct Driver {
    rtc: Rtc,
    sock: UdpSocket,
    local: SocketAddr,
    mid: Mid,
    opus_pt: u8,
    session_pt: u8,
    rx: PacketProducer,
    tx: PacketConsumer,
    stats: Arc<SessionStats>,
    info: Arc<PeerInfo>,
    events: mpsc::Sender<PeerEvent>,
    origin: Instant,
    /// Jitter and loss of the received stream, as the RTP/UDP edge counts them.
    rtcp: StreamRtcp,
    /// Extended sequence number of the next packet we send (str0m wants the rollover counter).
    next_seq: Option<u64>,
    out: Box<[u8]>,
    /// When the datagram being handled reached the host (its kernel stamp).
    arrived: Instant,
}

/// Why the task stops.
enum Stop {
    Failed(String),
    Closed(String),
}

impl Driver {
    async fn run(
        mut self,
        wake: Arc<Notify>,
        close: Arc<Notify>,
        tx_poll: Duration,
        connect_timeout: Duration,
    ) {
        let mut inbuf = vec![0u8; DATAGRAM_BUFFER].into_boxed_slice();
        let mut cmsg = [0u8; rxtime::CMSG_SPACE];
        let mut poll = tokio::time::interval(tx_poll);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut woken = pin!(wake.notified());
        woken.as_mut().enable();
        let mut closing = pin!(close.notified());
        closing.as_mut().enable();
        let connect_deadline = tokio::time::Instant::from_std(self.origin + connect_timeout);
        let _ = self.sock.writable().await;
        let stop = loop {
            let timeout = match self.drain() {
                Ok(t) => t,
                Err(stop) => break stop,
            };
            let connected = self.info.state() == PeerState::Connected;
            tokio::select! {
                r = self.sock.readable() => {
                    if r.is_err() { continue }
                    // One datagram per pass: the top of the loop drains str0m's events for it before the next.
                    let sock = &self.sock;
                    let read = sock.try_io(Interest::READABLE, || rxtime::recv_stamped(sock, &mut inbuf, &mut cmsg));
                    let Ok((n, source, arrived)) = read else { continue };
                    self.on_datagram(&inbuf[..n], source, arrived);
                }
                () = tokio::time::sleep_until(tokio::time::Instant::from_std(timeout)) => {
                    if let Err(e) = self.rtc.handle_input(Input::Timeout(Instant::now())) {
                        break Stop::Failed(e.to_string());
                    }
                }
                () = woken.as_mut() => {
                    woken.set(wake.notified());
                    woken.as_mut().enable();
                    if let Err(stop) = self.send_queued() { break stop; }
                }
                _ = poll.tick() => {
                    if let Err(stop) = self.send_queued() { break stop; }
                }
                () = tokio::time::sleep_until(connect_deadline), if !connected => {
                    break Stop::Failed(format!(
                        "ICE/DTLS did not complete within {} s (ICE state {})",
                        connect_timeout.as_secs(),
                        self.info.ice_state()
                    ));
                }
                () = closing.as_mut() => {
                    self.rtc.disconnect();
                    let _ = self.drain();
                    break Stop::Closed(CLOSED_BY_OWNER.into());
                }
            }
        };
        let by_owner = matches!(stop, Stop::Closed(ref r) if r == CLOSED_BY_OWNER);
        let event = match stop {
            Stop::Failed(reason) => {
                self.info.set_state(PeerState::Failed);
                PeerEvent::Failed { reason }
            }
            Stop::Closed(reason) => {
                self.info.set_state(PeerState::Closed);
                PeerEvent::Closed { reason }
            }
        };
        self.emit(event);
        if by_owner {
            return;
        }
        // The port and the WebRTC state go now; the worker may still queue packets until its owner replaces or
        // removes the peer: they are taken and counted (`tx_dropped`) rather than left to overflow the ring.
        let Driver {
            mut tx,
            stats,
            rtc,
            sock,
            ..
        } = self;
        drop((rtc, sock));
        let mut buf = [0u8; MAX_PACKET_LEN];
        loop {
            tokio::select! {
                () = woken.as_mut() => {
                    woken.set(wake.notified());
                    woken.as_mut().enable();
                }
                _ = poll.tick() => {}
                () = closing.as_mut() => return,
            }
            while tx.pop(&mut buf).is_some() {
                inc(&stats.tx_dropped);
            }
        }
    }

    fn emit(&self, event: PeerEvent) {
        if self.events.try_send(event).is_err() {
            inc(&self.stats.events_dropped);
        }
    }

    /// Polls str0m until it only has a timeout left: sends its datagrams, handles its events.
    fn drain(&mut self) -> Result<Instant, Stop> {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => return Ok(t),
                Ok(Output::Transmit(t)) => {
                    // A full socket buffer drops the datagram, as a router would; SRTP and RTCP recover.
                    let _ = self.sock.try_send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(e)) => self.on_event(e)?,
                Err(e) => return Err(Stop::Failed(format!("WebRTC: {e}"))),
            }
        }
    }

    fn on_event(&mut self, event: Event) -> Result<(), Stop> {
        match event {
            Event::IceConnectionStateChange(state) => {
                self.info.set_ice(state);
                if state == IceConnectionState::Disconnected
                    && self.info.state() == PeerState::Connected
                {
                    return Err(Stop::Closed("the ICE connection was lost".into()));
                }
            }
            Event::Connected => {
                let after_ms = self.origin.elapsed().as_millis() as u64;
                self.info.connect_ms.store(after_ms.max(1), Relaxed);
                self.info.set_state(PeerState::Connected);
                let remote = None;
                self.emit(PeerEvent::Connected { remote, after_ms });
            }
            Event::RtpPacket(packet) => self.on_rtp(&packet),
            Event::MediaEgressStats(s) => {
                if let Some(rtt) = s.rtt {
                    self.stats
                        .rtcp_rtt_us
                        .store(rtt.as_micros() as u64, Relaxed);
                }
                if let Some(loss) = s.loss {
                    let fraction = (loss.clamp(0.0, 1.0) * 256.0).min(255.0) as u64;
                    self.stats.remote_fraction_lost.store(fraction, Relaxed);
                    inc(&self.stats.remote_reports);
                }
            }
            Event::Closed => return Err(Stop::Closed("the peer closed the connection".into())),
            _ => {}
        }
        Ok(())
    }

    /// A datagram that reached the host at `arrived` (its kernel stamp; see [`rxtime`]).
    fn on_datagram(&mut self, data: &[u8], source: SocketAddr, arrived: Instant) {
        let Ok(contents) = data.try_into() else {
            inc(&self.stats.rx_malformed);
            self.info.rejected.fetch_add(1, Relaxed);
            return;
        };
        // str0m's clock moves forward only, so it gets the time of the read; the jitter buffer gets the stamp (the
        // packet's event comes out of this datagram's drain, at the top of the loop).
        self.arrived = arrived;
        let input = Input::Receive(
            Instant::now(),
            Receive {
                proto: Protocol::Udp,
                source,
                destination: self.local,
                contents,
            },
        );
        if !self.rtc.accepts(&input) {
            self.info.rejected.fetch_add(1, Relaxed);
            inc(&self.stats.rx_wrong_source);
            return;
        }
        if self.rtc.handle_input(input).is_err() {
            // A packet that fails (SRTP authentication, a broken record) is dropped, the peer lives on.
            inc(&self.stats.rx_malformed);
        }
    }

    /// A decrypted RTP packet: rewritten with the session's payload type into the receive ring.
    fn on_rtp(&mut self, packet: &str0m::rtp::RtpPacket) {
        let pt = *packet.header.payload_type;
        if pt != self.opus_pt {
            inc(&self.stats.rx_unexpected);
            return;
        }
        let mut rtp = RtpPacket::new(
            self.session_pt,
            packet.header.sequence_number,
            packet.header.timestamp,
            *packet.header.ssrc,
            &packet.payload,
        );
        rtp.marker = packet.header.marker;
        let Ok(len) = rtp.write(&mut self.out) else {
            inc(&self.stats.rx_malformed);
            return;
        };
        // The time the datagram reached the host, as the jitter buffer needs it.
        let now = self
            .arrived
            .saturating_duration_since(self.origin)
            .as_nanos() as u64;
        if let Ok(parsed) = RtpPacket::parse(&self.out[..len]) {
            self.rtcp.on_received(&parsed, now, &self.stats);
        }
        inc(&self.stats.rx_packets);
        add(&self.stats.rx_bytes, len as u64);
        if self.rx.push(0, now, &self.out[..len]).is_err() {
            inc(&self.stats.rx_unexpected);
        }
    }

    /// Hands the worker's queued packets to str0m (each write followed by a full drain, as str0m requires).
    fn send_queued(&mut self) -> Result<(), Stop> {
        let mut buf = [0u8; MAX_PACKET_LEN];
        let now_ns = self.origin.elapsed().as_nanos() as u64;
        while let Some(meta) = self.tx.pop(&mut buf) {
            let bytes = &buf[..meta.len.min(MAX_PACKET_LEN)];
            let Ok(p) = RtpPacket::parse(bytes) else {
                inc(&self.stats.tx_dropped);
                continue;
            };
            if self.info.state() != PeerState::Connected {
                inc(&self.stats.tx_dropped);
                continue;
            }
            let seq = match self.next_seq {
                None => u64::from(p.sequence),
                // Extend the 16-bit number by its step from the last one (wraps raise the rollover counter).
                Some(last) => {
                    let step = p.sequence.wrapping_sub(last as u16) as i16;
                    if step <= 0 {
                        // A time-shifted duplicate (the session's `encoder.duplicate`): SRTP would refuse it as a
                        // replay, and str0m's send history expects each number once. Not a loss: the first
                        // copy went out.
                        continue;
                    }
                    last.wrapping_add_signed(i64::from(step))
                }
            };
            self.next_seq = Some(seq);
            let mut api = self.rtc.direct_api();
            let Some(stream) = api.stream_tx_by_mid(self.mid, None) else {
                inc(&self.stats.tx_dropped);
                continue;
            };
            stream.write_rtp(
                RtpWrite::new(
                    self.opus_pt.into(),
                    SeqNo::from(seq),
                    p.timestamp,
                    Instant::now(),
                    p.payload,
                )
                .marker(p.marker),
            );
            self.stats.record_tx_wait(meta.time_ns, now_ns);
            inc(&self.stats.tx_packets);
            add(&self.stats.tx_bytes, bytes.len() as u64);
            self.drain()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER_HEAD: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
        a=fingerprint:sha-256 AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99\r\n";

    fn offer(rtpmap: &str, pts: &str) -> String {
        format!(
            "{OFFER_HEAD}m=audio 9 UDP/TLS/RTP/SAVPF {pts}\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n\
             a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=setup:actpass\r\na=sendrecv\r\n\
             a=rtcp-mux\r\n{rtpmap}"
        )
    }

    #[test]
    fn malformed_offers_say_what_is_wrong() {
        let err = check_offer("").unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
        let err = check_offer("hello world").unwrap_err();
        assert!(matches!(err, NetError::Sdp(_)), "{err}");
        let video = offer("a=rtpmap:96 VP8/90000\r\n", "96").replace("m=audio", "m=video");
        let err = check_offer(&video).unwrap_err();
        assert!(err.to_string().contains("no (enabled) audio"), "{err}");
    }

    #[test]
    fn an_offer_without_opus_is_refused_naming_its_codecs() {
        let err = check_offer(&offer("a=rtpmap:0 PCMU/8000\r\n", "0")).unwrap_err();
        assert!(matches!(err, NetError::NoOpus(_)), "{err}");
        assert!(
            err.to_string().contains("PCMU") || err.to_string().contains("pcmu"),
            "{err}"
        );
        check_offer(&offer("a=rtpmap:111 opus/48000/2\r\n", "111")).unwrap();
    }

    #[tokio::test]
    async fn an_opus_offer_is_answered_with_a_host_candidate_in_the_range() {
        let mut config = WebRtcConfig::loopback(111);
        let base = 40_000 + (std::process::id() % 10_000) as u16;
        config.port_min = base;
        config.port_max = base + 3;
        let accepted = WebRtcPeer::accept(&offer("a=rtpmap:109 opus/48000/2\r\n", "109"), &config)
            .await
            .unwrap();
        let port = accepted.peer.local_addr().port();
        assert!((base..=base + 3).contains(&port));
        assert!(
            accepted.answer.contains("a=ice-lite"),
            "{}",
            accepted.answer
        );
        assert!(
            accepted.answer.contains(&format!("{port} typ host")),
            "{}",
            accepted.answer
        );
        assert!(
            accepted.answer.contains("opus/48000/2"),
            "{}",
            accepted.answer
        );
        assert_eq!(accepted.peer.info().opus_payload_type(), 109);
        assert_eq!(accepted.peer.info().state(), PeerState::Connecting);
        assert!(!accepted.wants_dtx, "no usedtx in the offer");
    }

    #[test]
    fn usedtx_in_the_offer_is_seen() {
        let asks = |fmtp: &str| {
            let sdp = offer(&format!("a=rtpmap:111 opus/48000/2\r\n{fmtp}"), "111");
            offer_wants_dtx(&check_offer(&sdp).unwrap())
        };
        assert!(asks("a=fmtp:111 minptime=10;useinbandfec=1;usedtx=1\r\n"));
        assert!(!asks("a=fmtp:111 minptime=10;useinbandfec=1;usedtx=0\r\n"));
        assert!(!asks("a=fmtp:111 minptime=10;useinbandfec=1\r\n"));
        assert!(!asks(""));
    }

    #[tokio::test]
    async fn an_audio_and_video_offer_gets_audio_and_a_rejected_video_line() {
        // What a WHIP encoder (OBS) offers: audio and video, bundled.
        let sdp = offer("a=rtpmap:111 opus/48000/2\r\n", "111")
            .replace("a=group:BUNDLE 0", "a=group:BUNDLE 0 1")
            + "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\n\
             a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=setup:actpass\r\na=sendonly\r\n\
             a=rtcp-mux\r\na=rtpmap:96 VP8/90000\r\n";
        let accepted = WebRtcPeer::accept(&sdp, &WebRtcConfig::loopback(111))
            .await
            .unwrap();
        let video = accepted
            .answer
            .split("m=")
            .find(|m| m.starts_with("video"))
            .unwrap_or("");
        assert!(video.starts_with("video 0 "), "{}", accepted.answer);
        assert_eq!(accepted.peer.info().opus_payload_type(), 111);
    }

    /// Untrusted offers never panic: every truncation and every dropped line of a valid offer (str0m's parser and
    /// its negotiation both run), and arbitrary text.
    #[tokio::test]
    async fn broken_offers_are_refused_without_panicking() {
        let valid = offer(
            "a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n",
            "111",
        );
        let lines: Vec<&str> = valid.split_inclusive("\r\n").collect();
        let mut variants: Vec<String> = (0..valid.len())
            .step_by(7)
            .map(|n| valid[..n].to_owned())
            .collect();
        for skip in 0..lines.len() {
            let without: String = lines
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != skip)
                .map(|(_, l)| *l)
                .collect();
            variants.push(without);
        }
        variants.push(valid.replace("opus/48000/2", "opus/0/0"));
        variants.push(valid.replace("a=rtpmap:111", "a=rtpmap:999"));
        variants.push(valid.replace("UDP/TLS/RTP/SAVPF 111", "UDP/TLS/RTP/SAVPF"));
        variants.push(valid.replace("a=setup:actpass", "a=setup:passive"));
        variants.push(valid.replace("a=ice-pwd:abcdefghijklmnopqrstuvwx", "a=ice-pwd:"));
        let config = WebRtcConfig::loopback(111);
        for variant in &variants {
            let _ = WebRtcPeer::accept(variant, &config).await;
        }
        const ALPHABET: &[u8] = b" =\r\nvmoac:0123456789abcdefghijklmnopqrstuvwxyz/";
        let mut seed = 0x2545_f491_u32;
        for _ in 0..200 {
            let text: String = (0..(seed % 300))
                .map(|_| {
                    seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    char::from(ALPHABET[(seed >> 24) as usize % ALPHABET.len()])
                })
                .collect();
            assert!(check_offer(&text).is_err() || text.contains("opus"));
        }
    }

    #[tokio::test]
    async fn a_full_port_range_is_refused() {
        let hold = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = hold.local_addr().unwrap().port();
        let mut config = WebRtcConfig::loopback(111);
        config.port_min = port;
        config.port_max = port;
        let err = WebRtcPeer::accept(&offer("a=rtpmap:111 opus/48000/2\r\n", "111"), &config)
            .await
            .unwrap_err();
        assert!(matches!(err, NetError::NoPort { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_peer_that_never_connects_fails_at_the_deadline() {
        let mut config = WebRtcConfig::loopback(111);
        config.connect_timeout = Duration::from_millis(200);
        let mut accepted =
            WebRtcPeer::accept(&offer("a=rtpmap:111 opus/48000/2\r\n", "111"), &config)
                .await
                .unwrap();
        let event = accepted.events.recv().await.unwrap();
        assert!(
            matches!(event, PeerEvent::Failed { ref reason } if reason.contains("did not complete")),
            "{event:?}"
        );
        assert_eq!(accepted.peer.info().state(), PeerState::Failed);
    }
}
