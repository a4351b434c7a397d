//! Media worker threads: each owns many sessions and paces them by absolute deadlines.
//!
//! One loop per thread, one sleep per loop: the worker sleeps until the earliest session deadline (each session's
//! ticks sit at its own phase of the 20 ms period, see `SessionConfig::tick_phase`) or [`MAX_IDLE`], whichever is
//! first, then drains every session's receive ring (packets are handed to the jitter buffer with their *arrival*
//! time), runs the ticks that are due, and queues the outgoing packets; the network task is woken once per loop.
//!
//! A session on the RTP/UDP edge has no network task and no rings: its worker owns the socket
//! ([`RtpUdpSocket`]). At the session's tick it reads every queued datagram (non-blocking `recvmsg` until the
//! queue is empty, at most [`MAX_RX_PER_TICK`]; each packet's arrival is the kernel's receive timestamp, so the
//! jitter buffer sees when it really arrived), runs the tick, and sends its packets with `sendto` at once. RTCP
//! reports go out from the once-a-second publish path. Between ticks datagrams wait in the kernel's queue.
//!
//! Nothing here allocates, locks or logs per frame: statistics are published once a second, the roster on change.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use mediaproc_net::server::{QuicSession, SessionEvent, TxWaker};
use mediaproc_net::{
    PacketMeta, RtpUdpSocket, RxEvent, SessionStats, SessionStatsSnapshot, UdpSession,
};
use mediaproc_pipeline::{
    BotEndpoint, Codec as AudioCodec, EncoderOverrides, Event, FecMode, JitterConfig, JitterStats,
    MediaSession, Output, ReceivedAudio, RtpPacketInfo, SampleRate, SendStatus,
};
use mediaproc_wire::control::{Direction as FlowDirection, FlowDecl, MediaKind, NO_MSI};
use mediaproc_wire::rtp::{AudioLevel, RtpPacket, TelephoneEvent};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::health::{LoadMonitor, LocalHistogram};
use crate::phase;
use crate::session::{BotEvent, Dropped, FrameSignal, LiveSession, SessionState};

/// Longest sleep of a worker, so receive rings and control events are drained promptly between ticks.
pub const MAX_IDLE: Duration = Duration::from_millis(5);
/// How often a worker publishes load and session statistics.
pub const PUBLISH_INTERVAL: Duration = Duration::from_secs(1);
/// Payload type of RFC 4733 telephone events on the RTP/UDP edge.
pub const TELEPHONE_EVENT_PAYLOAD_TYPE: u8 = 101;
/// RFC 8285 extension id the daemon reads RFC 6464 audio levels from (see proto/SPEC.md).
pub const AUDIO_LEVEL_EXTENSION_ID: u8 = 1;
/// Late allowance of a WebRTC peer's stream (`JitterConfig::late_allowance_packets`; the other edges wait for
/// every packet): of the last 128 packets (2.6 s) the 6 latest arrivals are concealed rather than waited for, about
/// NetEQ's 95th percentile. Chromium on a busy 2-core host delays groups of five packets by 6–20 ms every few
/// seconds while the others arrive within 2 ms: covering them held every frame 15–20 ms longer.
pub const WEBRTC_LATE_ALLOWANCE_PACKETS: u8 = 6;
/// Largest RTP packet handled.
const PACKET_BUFFER: usize = 1500;
/// Flows remembered per session.
const MAX_FLOWS: usize = 64;
/// Most datagrams read from a session's RTP/UDP socket per tick (a tick normally finds one or two): a flood is
/// left to the kernel's receive queue, whose overflow is counted, rather than stalling the worker's other
/// sessions.
pub const MAX_RX_PER_TICK: usize = 256;

/// A WebRTC peer's side of a session.
#[derive(Debug)]
pub struct WebRtcEdge {
    /// The peer's rings.
    pub rings: UdpSession,
    /// Their clock's offset from the worker's.
    pub offset: Duration,
    /// Opus DTX toward the peer unless the session chose (`webrtc_dtx` and the offer's `usedtx`;
    /// `MediaSession::set_dtx_default`).
    pub dtx: bool,
}

/// A command from the engine.
#[derive(Debug)]
pub enum WorkerCommand {
    /// Take over a session.
    Add(Box<WorkerSession>),
    /// End a session now (the session's end flag ends it on the next pass even if this command was not queued).
    Remove(Uuid),
    /// Change a session's encoder settings (validated by the request parser).
    Encoder(Uuid, EncoderOverrides),
    /// A WebRTC peer became the session's packet edge, replacing the previous peer; `None` detaches it.
    WebRtc(Uuid, Option<Box<WebRtcEdge>>),
    /// Stop the thread (after ending all sessions).
    Stop,
}

/// A session's packet edge besides QUIC.
#[derive(Debug)]
enum PacketEdge {
    /// A WebRTC peer's rings (its network task runs the socket) and the offset of their clock from the worker's.
    /// Its statistics are published as `webrtc`.
    Rings(UdpSession, Duration),
    /// The RTP/UDP socket, read and written by this worker on the worker's clock. Published as `rtpUdp`.
    Socket(Box<RtpUdpSocket>),
}

impl PacketEdge {
    fn stats(&self) -> &Arc<SessionStats> {
        match self {
            PacketEdge::Rings(rings, _) => &rings.stats,
            PacketEdge::Socket(socket) => socket.stats(),
        }
    }
}

/// The network side of a session: its QUIC rings and, optionally, a packet edge (RTP/UDP or WebRTC).
#[derive(Debug)]
pub struct NetSide {
    quic: QuicSession,
    udp: Option<PacketEdge>,
    source_context: Option<Uuid>,
    /// The render flows the edge declared.
    render_flows: Vec<RenderFlow>,
    /// The flow our audio goes out on, and the payload type the edge declared for it.
    send_flow: Option<(u64, u8)>,
}

/// A render flow as the edge declared it (proto/SPEC.md §4.1).
#[derive(Debug, Clone, Copy)]
struct RenderFlow {
    id: u64,
    /// Media source id, or [`NO_MSI`] for the mixed stream.
    msi: u32,
    /// The flow's declared payload type: its packets are Opus whatever number the edge chose; packets with
    /// another payload type are ignored and counted.
    payload_type: u8,
    /// RTP clock of the flow's codec in kHz (48 Opus, 8 G.711): RFC 4733 event durations are in its units.
    clock_khz: u32,
    /// SSRC of the flow's last audio packet: the pipeline's key for a stream without a media source id.
    ssrc: Option<u32>,
}

impl RenderFlow {
    /// The pipeline's key for this flow's stream (see `MediaSession::stream_stats`).
    fn stream_key(&self) -> Option<u32> {
        if self.msi == NO_MSI {
            self.ssrc
        } else {
            Some(self.msi)
        }
    }
}

impl NetSide {
    /// `rtp` is the session's RTP/UDP socket, bound on the engine's (= the workers') clock.
    pub fn new(quic: QuicSession, rtp: Option<RtpUdpSocket>, source_context: Option<Uuid>) -> Self {
        NetSide {
            quic,
            udp: rtp.map(|socket| PacketEdge::Socket(Box::new(socket))),
            source_context,
            render_flows: Vec::with_capacity(MAX_FLOWS),
            send_flow: None,
        }
    }

    /// Takes an audio flow (Opus, PCMU, PCMA; proto/SPEC.md §4.1); returns its codec when it was taken as a
    /// render flow or as the send flow. Other media and codecs are not taken: their packets count as unknown.
    fn open_flow(&mut self, flow: &FlowDecl) -> Option<AudioCodec> {
        if flow.media != MediaKind::Audio {
            return None;
        }
        let codec = AudioCodec::try_from(flow.codec).ok()?;
        match flow.direction {
            FlowDirection::Render => {
                self.render_flows.retain(|f| f.id != flow.flow_id);
                if self.render_flows.len() < MAX_FLOWS {
                    self.render_flows.push(RenderFlow {
                        id: flow.flow_id,
                        msi: flow.msi,
                        payload_type: flow.payload_type,
                        clock_khz: codec.rtp_clock_hz() / 1000,
                        ssrc: None,
                    });
                    return Some(codec);
                }
                None
            }
            FlowDirection::Source => {
                if self.send_flow.is_none() || Some(flow.context) == self.source_context {
                    self.send_flow = Some((flow.flow_id, flow.payload_type));
                    return Some(codec);
                }
                None
            }
        }
    }

    fn close_flow(&mut self, flow_id: u64) {
        self.render_flows.retain(|f| f.id != flow_id);
        if self.send_flow.map(|(id, _)| id) == Some(flow_id) {
            self.send_flow = None;
        }
    }
}

/// One session on a worker.
pub struct WorkerSession {
    id: Uuid,
    media: MediaSession,
    net: NetSide,
    echo: Option<BotEndpoint>,
    frame: Box<ReceivedAudio>,
    events: mpsc::Sender<BotEvent>,
    live: Arc<LiveSession>,
    packet: Box<[u8; PACKET_BUFFER]>,
    out: Box<[u8; PACKET_BUFFER]>,
    last_dtmf_timestamp: Option<u32>,
    counters: Counters,
    next_publish: Duration,
    /// A packet came in on the RTP/UDP edge (it has no attach; the first packet makes the session active).
    udp_seen: bool,
    /// Network counters already added to the session's (and the daemon's) drop counters.
    net_seen: NetSeen,
    /// SSRC of the last audio packet on the RTP/UDP edge: its stream in the pipeline (no flow names it).
    udp_ssrc: Option<u32>,
    /// RTCP loss reports about our stream already given to the encoder's FEC control (QUIC, RTP/UDP).
    loss_reports_seen: (u64, u64),
    /// A bot outside the worker that answers frame by frame (WebSocket bridge, in-process bot): raised when the
    /// tick's frame is in the inbound ring.
    bridge: Option<Arc<FrameSignal>>,
    /// With a bridge: when the pending tick's send half may run, and whether it must then. It runs as soon as the
    /// bot's answer is queued (the WebSocket bridge unparks the worker; a bot that does not is looked at half a tick
    /// after the deadline), at the latest at the next tick's deadline, where it ran before: the answer never waits
    /// longer than without the early look. A single fresh frame goes at once; audio the bot queued ahead goes half a
    /// tick after the deadline and a frame after the bot's last frame at the earliest, never faster than real time.
    send_at: Option<(Duration, bool)>,
    /// With a bridge: when the last send half carrying a frame of the bot's ran.
    last_bot_send: Option<Duration>,
    /// The worker's clock origin (set when the worker takes the session): hand-off timestamps.
    origin: Option<Instant>,
    /// Hand-off latencies since the session started, and as they were at its last publish (the difference is added
    /// to the daemon's then).
    latency: HandOffs,
    latency_published: HandOffs,
    /// The send hand-off (a packet queued at the tick → handed to the socket), counted by the network side, as it
    /// was at the last publish.
    sent_wait_published: LocalHistogram,
    /// When the tick phase is next looked at (see `phase`).
    next_alignment: Duration,
}

/// Where a frame waits inside the daemon, per session (plain counts: the worker owns them).
#[derive(Debug, Default, Clone, Copy)]
struct HandOffs {
    /// A packet's arrival at the socket → the worker took it from the receive ring.
    packet_to_worker: LocalHistogram,
    /// A tick's deadline → its frame in the bot's inbound ring.
    tick_to_bot: LocalHistogram,
}

/// How long after a tick's deadline a bridge's bot has to answer for the answer to go out in the same tick.
const BRIDGE_ANSWER_WINDOW: Duration = Duration::from_millis(10);

/// The network layer's cumulative counters as last counted, so each publish adds only the delta and the
/// daemon-wide totals keep what ended sessions dropped.
#[derive(Debug, Default, Clone, Copy)]
struct NetSeen {
    rx_ring: u64,
    tx_ring: u64,
    wrong_source: u64,
    source_changes: u64,
}

/// One per-stream statistic of the jitter buffer: its member in a stream's JSON (camelCase), its `/metrics`
/// series (`mediaproc_stream_<metric>`, labelled by session, edge and source) and how to read it. QUIC render
/// streams and the RTP/UDP edge's stream report the same table; a new statistic is one line here.
#[derive(Debug, Clone, Copy)]
pub struct StreamField {
    /// JSON member.
    pub json: &'static str,
    /// `/metrics` name after `mediaproc_stream_` (counters end in `_total`).
    pub metric: &'static str,
    /// A counter (monotonic) rather than a gauge.
    pub counter: bool,
    /// `/metrics` help text.
    pub help: &'static str,
    /// The value.
    pub read: fn(&JitterStats) -> u64,
}

const fn gauge(
    json: &'static str,
    metric: &'static str,
    help: &'static str,
    read: fn(&JitterStats) -> u64,
) -> StreamField {
    StreamField {
        json,
        metric,
        counter: false,
        help,
        read,
    }
}

const fn counter(
    json: &'static str,
    metric: &'static str,
    help: &'static str,
    read: fn(&JitterStats) -> u64,
) -> StreamField {
    StreamField {
        json,
        metric,
        counter: true,
        help,
        read,
    }
}

/// The per-stream statistics (see [`StreamField`]).
#[rustfmt::skip]
pub const STREAM_FIELDS: &[StreamField] = &[
    gauge("jitterBufferDelayMs", "jitter_buffer_delay_ms", "Jitter buffer level at the last tick, in ms.", |j| j.current_delay_ms.into()),
    gauge("targetDelayMs", "target_delay_ms", "Jitter buffer target level, in ms.", |j| j.target_delay_ms.into()),
    counter("received", "received_total", "Packets the jitter buffer accepted.", |j| j.received),
    counter("concealed", "concealed_total", "Frames produced by packet-loss concealment.", |j| j.concealed),
    counter("fecRecovered", "fec_recovered_total", "Lost frames rebuilt from in-band FEC.", |j| j.fec_recovered),
    counter("late", "late_total", "Packets that arrived after their playout time (dropped).", |j| j.late),
    counter("duplicate", "duplicate_total", "Duplicate packets (dropped).", |j| j.duplicate),
    counter("reordered", "reordered_total", "Packets that arrived after a higher sequence number.", |j| j.reordered),
    counter("lost", "lost_total", "Frames lost in the network (never arrived in time).", |j| j.lost),
    gauge("envelopeDelayMs", "envelope_delay_ms", "Playout delay above the latest arrivals (the on-time envelope the buffer covers) at the last tick, in ms.", |j| j.envelope_delay_ms.into()),
    gauge("playoutDelayMs", "playout_delay_ms", "Playout delay (packets held plus decoded audio waiting) at the last tick, in ms.", |j| j.playout_delay_ms.into()),
    gauge("packetWaitMs", "packet_wait_ms", "Average time a packet waits from arrival to decoding, in ms.", |j| j.packet_wait_ms.into()),
    counter("accelerated", "accelerated_total", "Audio removed by time-scale compression, in whole frames (rounded).", |j| j.accelerated),
    counter("stretched", "stretched_total", "Audio inserted by time-scale expansion, in whole frames (rounded).", |j| j.stretched),
    counter("acceleratedMs", "accelerated_ms_total", "Audio removed by time-scale compression (one pitch period at a time), in ms.", |j| j.accelerated_ms),
    counter("deceleratedMs", "decelerated_ms_total", "Audio inserted by time-scale expansion (one pitch period at a time), in ms.", |j| j.decelerated_ms),
    counter("merges", "merges_total", "Seams smoothed from concealment into decoded audio.", |j| j.merges),
    counter("concealedMs", "concealed_ms_total", "Audio synthesised by concealment, in ms.", |j| j.concealed_ms),
    counter("comfortNoiseMs", "comfort_noise_ms_total", "Comfort noise played instead of silence, in ms.", |j| j.comfort_noise_ms),
    counter("underruns", "underruns_total", "Ticks with nothing to play while the stream was active.", |j| j.underruns),
    counter("comfortNoise", "comfort_noise_total", "Comfort-noise frames during the sender's DTX or a pause.", |j| j.dtx),
    counter("resyncs", "resyncs_total", "Jitter buffer restarts after a timestamp jump.", |j| j.resyncs),
    counter("malformed", "malformed_total", "Packets the jitter buffer rejected as empty or oversized.", |j| j.malformed),
];

/// The outbound encoder as it runs: its settings, the FEC and duplicate modes and the losses driving them.
fn encoder_json(media: &MediaSession) -> Value {
    let settings = media.encoder_settings();
    let mode = |m: FecMode| match m {
        FecMode::On => "on",
        FecMode::Off => "off",
        _ => "auto",
    };
    let (duplicate, duplicating) = media.duplicate_mode();
    json!({
        "bitrateBps": settings.bitrate_bps,
        "complexity": settings.complexity,
        "fec": mode(media.fec_mode()),
        "inbandFec": settings.inband_fec,
        "expectedLossPercent": settings.expected_loss_percent,
        "duplicate": mode(duplicate),
        "duplicating": duplicating,
        "dtx": settings.dtx,
        "remoteLossPercent": media.remote_loss_percent(),
        "inboundLossPercent": media.inbound_loss_percent(),
    })
}

/// A stream's statistics as JSON: `sourceId` and every [`STREAM_FIELDS`] member.
pub fn stream_json(source_id: u32, jitter: &JitterStats) -> Value {
    let mut stream = Map::with_capacity(STREAM_FIELDS.len() + 1);
    stream.insert("sourceId".to_owned(), source_id.into());
    for field in STREAM_FIELDS {
        stream.insert(field.json.to_owned(), (field.read)(jitter).into());
    }
    Value::Object(stream)
}

impl std::fmt::Debug for WorkerSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerSession")
            .field("id", &self.id)
            .finish()
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    malformed: u64,
    rtcp: u64,
    unknown_flow: u64,
    sent: u64,
    unsent_no_edge: u64,
    tx_ring_full: u64,
    dtmf: u64,
    echo_frames: u64,
    /// QUIC packets whose payload type is not their flow's declared one.
    ignored_payload_type: u64,
    /// Times the ticks moved to just after the peer's arrivals (see `phase`).
    phase_shifts: u64,
}

impl WorkerSession {
    /// A session ready for a worker; `echo` set for the built-in echo bot, which runs on the worker itself.
    pub fn new(
        id: Uuid,
        media: MediaSession,
        net: NetSide,
        echo: Option<BotEndpoint>,
        events: mpsc::Sender<BotEvent>,
        live: Arc<LiveSession>,
        rate: SampleRate,
    ) -> Self {
        WorkerSession {
            id,
            media,
            net,
            echo,
            frame: Box::new(ReceivedAudio::new(rate)),
            events,
            live,
            packet: Box::new([0; PACKET_BUFFER]),
            out: Box::new([0; PACKET_BUFFER]),
            last_dtmf_timestamp: None,
            counters: Counters::default(),
            next_publish: Duration::ZERO,
            udp_seen: false,
            net_seen: NetSeen::default(),
            udp_ssrc: None,
            loss_reports_seen: (0, 0),
            bridge: None,
            send_at: None,
            last_bot_send: None,
            origin: None,
            latency: HandOffs::default(),
            latency_published: HandOffs::default(),
            sent_wait_published: LocalHistogram::default(),
            next_alignment: phase::INTERVAL,
        }
    }

    /// Signals `bridge` each tick and runs the tick's send half [`BRIDGE_ANSWER_WINDOW`] after its deadline when the
    /// bot's answer is queued by then (see `send_at`).
    pub fn with_bridge(mut self, bridge: Option<Arc<FrameSignal>>) -> Self {
        self.bridge = bridge;
        self
    }

    /// True once after the bot's bridge queued audio while a send half waits for it.
    fn answer_arrived(&self) -> bool {
        self.send_at.is_some() && self.bridge.as_ref().is_some_and(|b| b.take_answer())
    }

    /// When this session next needs the worker: its next tick, or the pending send half.
    fn next_deadline(&self) -> Duration {
        self.send_at
            .map_or_else(|| self.media.poll_timeout(), |(at, _)| at)
    }

    /// Puts a WebRTC peer's rings in place of the session's packet edge (or removes them). What the previous
    /// edge dropped is counted first, so the daemon-wide totals keep it.
    fn replace_packet_edge(&mut self, edge: Option<WebRtcEdge>) {
        let quic = self.net.quic.stats.snapshot();
        let old = self.net.udp.as_ref().map(|edge| edge.stats().snapshot());
        self.count_net_drops(&quic, old.as_ref());
        // The new edge's counters start at zero: only the QUIC side's counts stay seen.
        self.count_net_drops(&quic, None);
        // A browser's sender stalls now and then (groups of a few packets up to 20 ms late every few seconds on a
        // busy host): its latest arrivals are concealed rather than waited for by every frame (docs/webrtc.md).
        let allowance = if edge.is_some() {
            WEBRTC_LATE_ALLOWANCE_PACKETS
        } else {
            JitterConfig::default().late_allowance_packets
        };
        // Cannot fail: the value is in range.
        let _ = self.media.set_late_allowance(allowance);
        // A browser's NetEQ starts each talk spurt afresh after a DTX pause (docs/webrtc.md).
        self.media
            .set_dtx_default(edge.as_ref().is_some_and(|e| e.dtx));
        self.net.udp = edge.map(|e| PacketEdge::Rings(e.rings, e.offset));
        self.udp_seen = false;
        self.udp_ssrc = None;
        self.loss_reports_seen.1 = 0;
    }

    fn send_bot(&self, event: BotEvent) {
        // A full queue is a drop; a closed one has no consumer (the echo bot takes no events): nothing lost.
        if let Err(mpsc::error::TrySendError::Full(_)) = self.events.try_send(event) {
            self.live.count(Dropped::BotEvent);
        }
    }

    /// A flow the edge declared: its codec and payload type reach the pipeline (received packets are decoded by
    /// the flow's codec; our audio is encoded with the source flow's).
    fn open_flow(&mut self, flow: &FlowDecl) {
        let Some(codec) = self.net.open_flow(flow) else {
            return;
        };
        // Errors only for a payload type above 127, which the control-message parser already refuses.
        match flow.direction {
            FlowDirection::Render => {
                let _ = self
                    .media
                    .set_receive_payload_type(flow.payload_type, codec);
            }
            FlowDirection::Source => {
                let (current, payload_type) = self.media.send_codec();
                if current != codec {
                    // The number stays the session's; the QUIC packet gets the flow's in place when it is queued.
                    let _ = self.media.set_send_codec(codec, payload_type);
                }
            }
        }
    }

    fn handle_net_events(&mut self) {
        loop {
            let event = match self.net.quic.events.try_recv() {
                Ok(event) => event,
                Err(_) => return,
            };
            match event {
                SessionEvent::Attached { flows, remote } => {
                    self.net.render_flows.clear();
                    self.net.send_flow = None;
                    for flow in &flows {
                        self.open_flow(flow);
                    }
                    self.live.set_state(SessionState::Active);
                    tracing::info!(session = %self.id, %remote, flows = flows.len(), "edge attached");
                }
                SessionEvent::Detached { reason } => {
                    self.net.render_flows.clear();
                    self.net.send_flow = None;
                    self.live.set_state(SessionState::EdgeDetached);
                    tracing::info!(session = %self.id, reason, "edge detached");
                }
                SessionEvent::FlowOpened(flow) => self.open_flow(&flow),
                SessionEvent::FlowClosed { flow_id } => self.net.close_flow(flow_id),
                SessionEvent::Roster(participants) => {
                    let roster: Vec<_> = participants
                        .iter()
                        .map(|p| json!({"id": p.id, "sourceId": p.msi, "muted": p.muted}))
                        .collect();
                    self.live.set_participants(json!(roster));
                    self.send_bot(BotEvent::Participants(json!(roster)));
                }
                SessionEvent::Dtmf { event, duration_ms } => {
                    self.counters.dtmf += 1;
                    self.send_bot(BotEvent::Dtmf {
                        digit: dtmf_digit(event),
                        duration_ms,
                    });
                }
                _ => {}
            }
        }
    }

    /// True when a packet waits in a receive ring (QUIC or a WebRTC peer's; an RTP/UDP socket is read at the
    /// session's tick, not looked at in between).
    fn has_packets(&self) -> bool {
        !self.net.quic.rx.is_empty()
            || matches!(&self.net.udp, Some(PacketEdge::Rings(rings, _)) if !rings.rx.is_empty())
    }

    /// Hands every queued packet to the pipeline with its arrival time; `deadline`: the session's deadline, when it
    /// has come (its RTP/UDP socket is read then).
    fn drain_packets(&mut self, now: Duration, deadline: Option<Duration>) {
        while let Some(meta) = self.net.quic.rx.pop(&mut self.packet[..]) {
            let Some(index) = self
                .net
                .render_flows
                .iter()
                .position(|f| f.id == meta.flow_id)
            else {
                self.counters.unknown_flow += 1;
                continue;
            };
            let flow = self.net.render_flows[index];
            let source = (flow.msi != NO_MSI).then_some(flow.msi);
            let declared = Some((flow.payload_type, flow.clock_khz));
            if let Some(ssrc) =
                self.deliver(meta, Duration::ZERO, source, declared, now, Duration::ZERO)
            {
                self.net.render_flows[index].ssrc = Some(ssrc);
            }
        }
        // Moved out for the loop so `deliver` may borrow the session; put back right after (no allocation).
        match self.net.udp.take() {
            Some(PacketEdge::Rings(mut rings, offset)) => {
                while let Some(meta) = rings.rx.pop(&mut self.packet[..]) {
                    self.deliver_edge_packet(meta, offset, now, Duration::ZERO);
                }
                self.net.udp = Some(PacketEdge::Rings(rings, offset));
            }
            Some(PacketEdge::Socket(mut socket)) => {
                if let Some(deadline) = deadline {
                    for _ in 0..MAX_RX_PER_TICK {
                        match socket.recv(now, &mut self.packet[..]) {
                            RxEvent::Packet { len, arrival } => {
                                let meta = PacketMeta {
                                    flow_id: 0,
                                    time_ns: arrival.as_nanos() as u64,
                                    len,
                                };
                                // Until the deadline a packet waits for its tick by design, as a ring edge's
                                // does in the jitter buffer: only the worker's delay past it is a hand-off wait.
                                self.deliver_edge_packet(meta, Duration::ZERO, now, deadline);
                            }
                            RxEvent::Consumed => {}
                            RxEvent::Empty => break,
                        }
                    }
                }
                self.net.udp = Some(PacketEdge::Socket(socket));
            }
            None => {}
        }
    }

    /// A packet from the packet edge (RTP/UDP or WebRTC; it has no attach, so the first packet makes the session
    /// active).
    fn deliver_edge_packet(
        &mut self,
        meta: PacketMeta,
        offset: Duration,
        now: Duration,
        wait_from: Duration,
    ) {
        if !self.udp_seen {
            self.udp_seen = true;
            self.live.set_state(SessionState::Active);
        }
        if let Some(ssrc) = self.deliver(meta, offset, None, None, now, wait_from) {
            self.udp_ssrc = Some(ssrc);
        }
    }

    /// Hands one packet to the pipeline; returns the SSRC of an audio packet it was given. Its hand-off wait
    /// (`packetToWorker`) counts from its arrival or `wait_from`, whichever is later.
    fn deliver(
        &mut self,
        meta: PacketMeta,
        clock_offset: Duration,
        source_id: Option<u32>,
        declared: Option<(u8, u32)>,
        now: Duration,
        wait_from: Duration,
    ) -> Option<u32> {
        let bytes = &self.packet[..meta.len.min(PACKET_BUFFER)];
        if mediaproc_wire::roq::is_rtcp(bytes) {
            self.counters.rtcp += 1;
            return None;
        }
        let Ok(rtp) = RtpPacket::parse(bytes) else {
            self.counters.malformed += 1;
            return None;
        };
        if rtp.payload_type == TELEPHONE_EVENT_PAYLOAD_TYPE {
            // RFC 4733: one event spans several packets with the same timestamp; report it once, at its end.
            if let Ok(event) = TelephoneEvent::parse(rtp.payload) {
                if event.end && self.last_dtmf_timestamp != Some(rtp.timestamp) {
                    self.last_dtmf_timestamp = Some(rtp.timestamp);
                    self.counters.dtmf += 1;
                    // In the audio's RTP clock units (proto/SPEC.md §4.3): 48 kHz Opus, 8 kHz G.711 — the QUIC
                    // flow's codec, or the session's on the RTP/UDP edge.
                    let clock_khz = declared.map_or_else(
                        || self.media.send_codec().0.rtp_clock_hz() / 1000,
                        |(_, khz)| khz,
                    );
                    let duration_ms = (u32::from(event.duration) / clock_khz.max(1)) as u16;
                    self.send_bot(BotEvent::Dtmf {
                        digit: dtmf_digit(event.event),
                        duration_ms,
                    });
                }
            }
            return None;
        }
        // A QUIC flow's packets carry the payload type its declaration named (proto/SPEC.md §4.1), which the pipeline
        // decodes by the flow's codec (set when the flow opened); any other payload type on the flow is ignored.
        if matches!(declared, Some((declared, _)) if rtp.payload_type != declared) {
            self.counters.ignored_payload_type += 1;
            return None;
        }
        let payload_type = rtp.payload_type;
        let audio_level = rtp
            .extension
            .and_then(|ext| ext.find(AUDIO_LEVEL_EXTENSION_ID))
            .and_then(|data| AudioLevel::parse(data).ok())
            .map(|level| level.to_byte() & 0x7f);
        let info = RtpPacketInfo {
            ssrc: rtp.ssrc,
            sequence: rtp.sequence,
            timestamp: rtp.timestamp,
            marker: rtp.marker,
            payload_type,
            audio_level,
            source_id,
        };
        let arrival = Duration::from_nanos(meta.time_ns) + clock_offset;
        let waited = now.saturating_sub(arrival.max(wait_from)).as_micros() as u64;
        self.latency.packet_to_worker.record(waited);
        self.media.handle_packet(arrival, &info, rtp.payload);
        Some(rtp.ssrc)
    }

    /// Runs due ticks and queues their output. Returns (sent on QUIC, sent on UDP).
    fn tick(&mut self, now: Duration) -> (bool, bool) {
        let mut sent = (false, false);
        loop {
            match self.send_at {
                Some((at, must)) => match self.media.bot_frames_queued() {
                    0 if now < at => break,
                    0 if !must => {
                        // Half a tick on and no answer yet: look again at the next tick's deadline, and send then.
                        self.send_at = Some((at + BRIDGE_ANSWER_WINDOW, true));
                        continue;
                    }
                    // Time is up (the tick goes out without the bot), or a single fresh answer: it goes now (the
                    // bridge woke the worker for it), whatever the phase of the bot's last frame.
                    0 | 1 => self.send_at = None,
                    // Audio the bot queued ahead: half a tick after the deadline and a frame after the bot's last
                    // frame at the earliest, so it is never paced out faster than real time.
                    _ => {
                        let earliest = self
                            .last_bot_send
                            .map_or(at, |sent| at.max(sent + mediaproc_pipeline::FRAME_DURATION));
                        if now < earliest {
                            self.send_at = Some((earliest, true));
                            break;
                        }
                        self.send_at = None;
                    }
                },
                None => {
                    let due = self.media.poll_timeout();
                    if due > now {
                        break;
                    }
                    // The tick in two halves, so the in-worker echo answers within the same tick (20 ms sooner).
                    if !self.media.handle_receive(now) {
                        break;
                    }
                    if let Some(origin) = self.origin {
                        let handed = origin.elapsed().saturating_sub(due).as_micros() as u64;
                        self.latency.tick_to_bot.record(handed);
                    }
                    if let Some(echo) = &mut self.echo {
                        while echo.inbound.pop(&mut self.frame) {
                            if echo.outbound.push(self.frame.mixed()).is_ok() {
                                self.counters.echo_frames += 1;
                            }
                        }
                    }
                    if let Some(bridge) = &self.bridge {
                        bridge.raise();
                        let at = due + BRIDGE_ANSWER_WINDOW;
                        // A worker running late sends at once rather than later still.
                        if at > now {
                            self.send_at = Some((at, false));
                            break;
                        }
                    }
                }
            }
            if self.bridge.is_some() && self.media.bot_frames_queued() > 0 {
                self.last_bot_send = Some(now);
            }
            self.media.handle_send(now);
            while let Some(output) = self.media.poll_output() {
                match output {
                    Output::Transmit(packet) => {
                        let mut rtp = RtpPacket::new(
                            packet.payload_type,
                            packet.sequence,
                            packet.timestamp,
                            packet.ssrc,
                            packet.payload,
                        );
                        rtp.marker = packet.marker;
                        let Ok(len) = rtp.write(&mut self.out[..]) else {
                            self.counters.malformed += 1;
                            continue;
                        };
                        let mut delivered = false;
                        if let Some((flow, payload_type)) = self.net.send_flow {
                            // The source flow's declared payload type (proto/SPEC.md §4.1), in place; the
                            // RTP/UDP edge below gets the packet as the pipeline wrote it.
                            let written = self.out[1];
                            self.out[1] = (written & 0x80) | (payload_type & 0x7f);
                            // Stamped with the tick's time, when the bot's frame was taken: the network side
                            // counts the wait until the packet is handed to the socket (`tx_wait`).
                            let queued = now.as_nanos().max(1) as u64;
                            let pushed = self
                                .net
                                .quic
                                .tx
                                .push(flow, queued, &self.out[..len])
                                .is_ok();
                            self.out[1] = written;
                            if pushed {
                                sent.0 = true;
                                delivered = true;
                            } else {
                                self.counters.tx_ring_full += 1;
                            }
                        }
                        match &mut self.net.udp {
                            Some(PacketEdge::Rings(rings, offset)) => {
                                let queued = now.saturating_sub(*offset).as_nanos().max(1) as u64;
                                if rings.tx.push(0, queued, &self.out[..len]).is_ok() {
                                    sent.1 = true;
                                    delivered = true;
                                }
                            }
                            Some(PacketEdge::Socket(socket)) => {
                                // Straight to the socket: handed to the edge either way, as a ring push is; a send
                                // that fails (no remote yet, socket buffer full) is counted there as `txDropped`.
                                let sent_at = self.origin.map_or(now, |origin| origin.elapsed());
                                let _ = socket.send(&self.out[..len], now, sent_at);
                                delivered = true;
                            }
                            None => {}
                        }
                        if delivered {
                            self.counters.sent += 1;
                        } else {
                            self.counters.unsent_no_edge += 1;
                        }
                    }
                    Output::Event(event) => {
                        let event = match event {
                            Event::SendStatusChanged(status) => BotEvent::SendStatus {
                                active: status == SendStatus::Active,
                            },
                            Event::DominantSpeakerChanged { previous, current } => {
                                BotEvent::DominantSpeaker { previous, current }
                            }
                            Event::Mark { name, cleared } => BotEvent::Mark {
                                name: name.as_str().to_owned(),
                                cleared,
                            },
                            Event::StreamStarted { source_id } => {
                                BotEvent::StreamStarted { source_id }
                            }
                            // Events a newer pipeline adds are not part of the bot protocol yet.
                            _ => continue,
                        };
                        self.send_bot(event);
                    }
                }
            }
        }
        if let Some(PacketEdge::Rings(rings, _)) = &self.net.udp {
            if sent.1 {
                rings.waker.wake();
            }
        }
        sent
    }

    /// Adds what the network layer dropped since the last call to the session's and the daemon's counters.
    fn count_net_drops(&mut self, quic: &SessionStatsSnapshot, udp: Option<&SessionStatsSnapshot>) {
        let udp = udp.copied().unwrap_or_default();
        let now = NetSeen {
            // The RTP/UDP socket's kernel queue is its receive ring: what overflows it counts the same.
            rx_ring: quic.rx_ring_dropped + udp.rx_ring_dropped + udp.rx_kernel_dropped,
            tx_ring: quic.tx_ring_dropped + udp.tx_ring_dropped,
            wrong_source: udp.rx_wrong_source,
            source_changes: udp.source_changes,
        };
        let seen = self.net_seen;
        let live = &self.live;
        live.count_n(
            Dropped::RxRingOverflow,
            now.rx_ring.saturating_sub(seen.rx_ring),
        );
        live.count_n(
            Dropped::TxRingOverflow,
            now.tx_ring.saturating_sub(seen.tx_ring),
        );
        live.count_n(
            Dropped::RtpWrongSource,
            now.wrong_source.saturating_sub(seen.wrong_source),
        );
        live.count_n(
            Dropped::RtpSourceChange,
            now.source_changes.saturating_sub(seen.source_changes),
        );
        self.net_seen = now;
    }

    /// Gives the far end's newest RTCP loss report (either edge) to the encoder: in-band FEC follows the loss the
    /// peer sees (`FecMode::Auto`), off on a clean path.
    fn follow_remote_loss(
        &mut self,
        quic: &SessionStatsSnapshot,
        udp: Option<&SessionStatsSnapshot>,
    ) {
        let (quic_seen, udp_seen) = self.loss_reports_seen;
        if quic.remote_reports != quic_seen {
            self.media.set_remote_loss(quic.remote_fraction_lost);
        }
        if let Some(udp) = udp.filter(|u| u.remote_reports != udp_seen) {
            self.media.set_remote_loss(udp.remote_fraction_lost);
        }
        self.loss_reports_seen = (
            quic.remote_reports,
            udp.map_or(udp_seen, |u| u.remote_reports),
        );
    }

    fn publish(&mut self, now: Duration, load: &LoadMonitor) {
        if now < self.next_publish {
            return;
        }
        self.next_publish = now + PUBLISH_INTERVAL;
        let (now_seen, published) = (self.latency, self.latency_published);
        load.packet_to_worker
            .merge(&now_seen.packet_to_worker.since(&published.packet_to_worker));
        load.tick_to_bot
            .merge(&now_seen.tick_to_bot.since(&published.tick_to_bot));
        self.latency_published = now_seen;
        let mut sent_wait = self.net.quic.stats.tx_wait();
        if let Some(edge) = &mut self.net.udp {
            sent_wait.add(&edge.stats().tx_wait());
            if let PacketEdge::Socket(socket) = edge {
                // RTCP reports (when configured) are due at most once per interval: this once-a-second path is
                // their clock, not the tick.
                socket.poll_rtcp(now);
            }
        }
        load.bot_to_sent
            .merge(&sent_wait.since(&self.sent_wait_published));
        self.sent_wait_published = sent_wait;
        let stats = self.media.stats();
        let net = self.net.quic.stats.snapshot();
        let udp_net = self.net.udp.as_ref().map(|edge| edge.stats().snapshot());
        self.count_net_drops(&net, udp_net.as_ref());
        self.follow_remote_loss(&net, udp_net.as_ref());
        let mut streams = Vec::new();
        for flow in &self.net.render_flows {
            if let Some(jitter) = flow
                .stream_key()
                .and_then(|key| self.media.stream_stats(key))
            {
                streams.push(stream_json(flow.msi, &jitter));
            }
        }
        let c = self.counters;
        // The RTP/UDP (or WebRTC) edge's counters and its stream (by SSRC), when the session has one.
        let udp_key = match self.net.udp {
            Some(PacketEdge::Rings(..)) => "webrtc",
            _ => "rtpUdp",
        };
        let udp = udp_net.map(|n| {
            let stream = self
                .udp_ssrc
                .and_then(|ssrc| Some(stream_json(ssrc, &self.media.stream_stats(ssrc)?)));
            json!({
                "rxPackets": n.rx_packets,
                "rxBytes": n.rx_bytes,
                "rxRtcp": n.rx_rtcp,
                "rxMalformed": n.rx_malformed,
                "rxUnexpected": n.rx_unexpected,
                // Packets from another address than the session's source (strict RTP), dropped.
                "rxWrongSource": n.rx_wrong_source,
                // Times the latched source moved (symmetric RTP after `rebindPackets` in-sequence packets).
                "sourceChanges": n.source_changes,
                "rxRingDropped": n.rx_ring_dropped,
                // RTP/UDP: datagrams the kernel dropped from the socket's full receive queue.
                "rxKernelDropped": n.rx_kernel_dropped,
                "txPackets": n.tx_packets,
                "txBytes": n.tx_bytes,
                "txDropped": n.tx_dropped,
                "txRingDropped": n.tx_ring_dropped,
                "lost": n.lost,
                "jitterUs": n.jitter_us,
                "rtcpRttUs": n.rtcp_rtt_us,
                "remoteLossPercent": u64::from(n.remote_fraction_lost) * 100 / 256,
                "stream": stream,
            })
        });
        let mut stats_json = json!({
            "ticks": stats.ticks,
            "lateTicks": stats.late_ticks,
            "skippedTicks": stats.skipped_ticks,
            // Packets stamped more than half a frame after a tick the worker had not run yet (a stalled host):
            // kept out of the delay statistics.
            "lateStampedPackets": stats.late_stamped_packets,
            "tickPhaseShifts": c.phase_shifts,
            // Wait from the latest on-time arrivals (plus the jitter buffer's margin) to the tick that plays them.
            "tickSlackMs": self.media.tick_slack_us().map(|us| us as f64 / 1000.0),
            "packetsReceived": stats.packets_received,
            "packetsIgnored": stats.packets_ignored + c.ignored_payload_type,
            "encoder": encoder_json(&self.media),
            // The inbound Opus decoders' complexity: the configured one, or less while the worker sheds load.
            "decoderComplexity": self.media.decoder_complexity(),
            "framesToBot": stats.frames_to_bot,
            "overruns": stats.frames_dropped_for_bot,
            "underruns": stats.pacer.underruns,
            "packetsSent": c.sent,
            "packetsUnsentNoEdge": c.unsent_no_edge,
            "txRingFull": c.tx_ring_full,
            "malformed": c.malformed,
            "rtcp": c.rtcp,
            "unknownFlow": c.unknown_flow,
            "dtmf": c.dtmf,
            "echoFrames": c.echo_frames,
            "encoderSkipped": stats.pacer.encoder_skipped,
            "duplicatesSent": stats.pacer.duplicates,
            "framesCleared": stats.frames_cleared,
            "dominantSpeaker": self.media.dominant_speaker(),
            "network": {
                "rxPackets": net.rx_packets,
                "rxBytes": net.rx_bytes,
                "rxRtcp": net.rx_rtcp,
                "rxMalformed": net.rx_malformed,
                "rxUnexpected": net.rx_unexpected,
                "txPackets": net.tx_packets,
                "txBytes": net.tx_bytes,
                "txDropped": net.tx_dropped,
                "lost": net.lost,
                "jitterUs": net.jitter_us,
                "rttUs": net.rtt_us,
                "rtcpRttUs": net.rtcp_rtt_us,
                "eventsDropped": net.events_dropped,
                // Packets the receive ring overwrote before the worker took them (drop-oldest).
                "rxRingDropped": net.rx_ring_dropped,
                // Packets the transmit ring overwrote before the connection sent them (drop-oldest).
                "txRingDropped": net.tx_ring_dropped,
            },
            "streams": streams,
            "latency": {
                "packetToWorkerMs": histogram_json(&self.latency.packet_to_worker),
                "tickToBotMs": histogram_json(&self.latency.tick_to_bot),
                "botToSentMs": histogram_json(&sent_wait),
            },
        });
        stats_json[udp_key] = udp.unwrap_or(Value::Null);
        // Beside "duplicatesSent" (outside the literal: `json!` has a recursion limit).
        stats_json["dtxNotSent"] = json!(stats.pacer.dtx_not_sent);
        self.live.set_stats(stats_json);
    }

    fn end(mut self) {
        // What the network dropped since the last publish still counts daemon-wide.
        let quic = self.net.quic.stats.snapshot();
        let udp = self.net.udp.as_ref().map(|edge| edge.stats().snapshot());
        self.count_net_drops(&quic, udp.as_ref());
        let _ = self.events.try_send(BotEvent::Stop {
            reason: self.live.end_reason().to_owned(),
        });
        self.live.mark_ended();
    }
}

/// A hand-off histogram as `{p50, p99, max}` in ms (quantiles are bucket upper bounds; `null` before a value).
fn histogram_json(h: &LocalHistogram) -> Value {
    let ms = |q: f64| h.quantile_us(q).map(|us| us as f64 / 1000.0);
    json!({"p50": ms(0.5), "p99": ms(0.99), "max": h.max_us as f64 / 1000.0})
}

/// RFC 4733 event code → DTMF character.
pub fn dtmf_digit(event: u8) -> char {
    match event {
        0..=9 => char::from(b'0' + event),
        10 => '*',
        11 => '#',
        12..=15 => char::from(b'A' + event - 12),
        16 => '!', // flash
        _ => '?',
    }
}

/// Moves the ticks of the sessions at `indices` to just after their peers' arrivals (see `phase`), keeping each
/// of the engine's phase slots under its share of the worker's sessions (so aligned calls do not pile onto one
/// wake-up).
fn align_tick_phases(sessions: &mut [WorkerSession], indices: &[usize], now: Duration) {
    const SLOTS: i64 = phase::TICK_PHASE_SLOTS as i64;
    const FRAME_US: i64 = mediaproc_pipeline::FRAME_DURATION.as_micros() as i64;
    let slot_of = |deadline: Duration| {
        (deadline.as_micros() as i64 % FRAME_US / phase::STEP_US).rem_euclid(SLOTS)
    };
    let mut occupancy = [0usize; phase::TICK_PHASE_SLOTS as usize];
    for s in sessions.iter() {
        occupancy[slot_of(s.media.poll_timeout()) as usize] += 1;
    }
    let cap = (2 * sessions.len()).div_ceil(SLOTS as usize).max(8);
    for &i in indices {
        let session = &mut sessions[i];
        // A stream whose statistics are not trusted yet (its first seconds) is looked at again soon: the first
        // move is the one a call's round trip waits for.
        let Some(slack) = session.media.tick_slack_us() else {
            session.next_alignment = now + phase::RETRY;
            continue;
        };
        session.next_alignment = now + phase::INTERVAL;
        let current = slot_of(session.media.poll_timeout());
        let target = |shift: i64| (current + shift / phase::STEP_US).rem_euclid(SLOTS) as usize;
        let choice = phase::earlier_shift_us(slack, |shift| occupancy[target(shift)] >= cap);
        if let Some(shift) = choice {
            if session.media.shift_tick_phase(shift, now) {
                occupancy[current as usize] -= 1;
                occupancy[target(shift)] += 1;
                session.counters.phase_shifts += 1;
            }
        }
    }
}

/// The worker thread's body.
pub fn run(
    index: usize,
    origin: Instant,
    commands: Receiver<WorkerCommand>,
    load: Arc<LoadMonitor>,
    _quic_waker: TxWaker,
    coalesce: Duration,
    mut governor: crate::governor::Governor,
) {
    let mut sessions: Vec<WorkerSession> = Vec::with_capacity(256);
    let mut busy = Duration::ZERO;
    let mut window_start = origin.elapsed();
    let mut late_total = 0u64;
    loop {
        loop {
            match commands.try_recv() {
                Ok(WorkerCommand::Add(mut session)) => {
                    session.origin = Some(origin);
                    if session.media.decoder_complexity() > governor.level() {
                        let _ = session.media.set_decoder_complexity(governor.level());
                    }
                    if let Some(bridge) = &session.bridge {
                        bridge.register_worker();
                    }
                    sessions.push(*session);
                }
                Ok(WorkerCommand::Encoder(id, encoder)) => {
                    if let Some(session) = sessions.iter_mut().find(|s| s.id == id) {
                        // A value the codec still refuses changes nothing (the parser checked the ranges).
                        let _ = session.media.set_encoder_overrides(encoder);
                    }
                }
                Ok(WorkerCommand::WebRtc(id, edge)) => {
                    if let Some(session) = sessions.iter_mut().find(|s| s.id == id) {
                        session.replace_packet_edge(edge.map(|e| *e));
                    }
                }
                Ok(WorkerCommand::Remove(id)) => {
                    if let Some(pos) = sessions.iter().position(|s| s.id == id) {
                        sessions.swap_remove(pos).end();
                    }
                }
                Ok(WorkerCommand::Stop) | Err(TryRecvError::Disconnected) => {
                    for session in sessions.drain(..) {
                        session.end();
                    }
                    return;
                }
                Err(TryRecvError::Empty) => break,
            }
        }
        // The end flag is the reliable path: a Remove that did not fit in the queue still ends the session here.
        let mut i = 0;
        while i < sessions.len() {
            if sessions[i].live.end_requested() {
                sessions.swap_remove(i).end();
            } else {
                i += 1;
            }
        }
        let woke = origin.elapsed();
        // Sessions whose tick phase is due to be looked at (a few per pass; the rest on the next one).
        let mut aligning = [0usize; 4];
        let mut n_aligning = 0;
        for (i, session) in sessions.iter_mut().enumerate() {
            // One wake-up per session deadline: a session that is not due and has no packet waiting costs three
            // loads here, not a pass through its control events, rings and clock (a pass per session per wake-up
            // made the loop quadratic in the sessions a worker holds).
            let due = session.next_deadline();
            // A bot's answer queued within its window: the send half goes now, not at the window's end.
            let answer = due > woke && session.answer_arrived();
            if due > woke && !answer && !session.has_packets() {
                continue;
            }
            session.handle_net_events();
            session.drain_packets(origin.elapsed(), (due <= woke).then_some(due));
            if due > woke && !answer {
                continue;
            }
            let now = origin.elapsed();
            if due <= now {
                load.record_lateness(index, (now - due).as_micros() as u64);
            }
            let (quic, _) = session.tick(now);
            if quic {
                // Wakes only the connection this session is attached to.
                session.net.quic.waker.wake();
            }
            session.publish(now, &load);
            if n_aligning < aligning.len() && now >= session.next_alignment {
                aligning[n_aligning] = i;
                n_aligning += 1;
            }
        }
        if n_aligning > 0 {
            align_tick_phases(&mut sessions, &aligning[..n_aligning], origin.elapsed());
        }
        let done = origin.elapsed();
        busy += done.saturating_sub(woke);
        if done.saturating_sub(window_start) >= PUBLISH_INTERVAL {
            late_total = sessions
                .iter()
                .map(|s| s.media.stats().late_ticks)
                .sum::<u64>()
                .max(late_total);
            let window = done.saturating_sub(window_start).as_secs_f64();
            let share = busy.as_secs_f64() / window;
            load.publish(index, share, late_total);
            if let Some(level) = governor.observe(share) {
                // Once per change, not per frame: the neural decoder stages shed or taken back.
                tracing::info!(
                    worker = index,
                    busy = share,
                    "decoder complexity {level} for this worker's sessions"
                );
                for session in &mut sessions {
                    let _ = session.media.set_decoder_complexity(level);
                }
            }
            busy = Duration::ZERO;
            window_start = done;
        }
        let next = sessions
            .iter()
            .map(WorkerSession::next_deadline)
            .min()
            .unwrap_or(done + MAX_IDLE);
        // Sessions due within `coalesce` of the earliest are served in one wake-up (late by at most that): fewer
        // sleeps and context switches, which a profile under load showed at a tenth of the daemon's CPU.
        let wait = (next + coalesce)
            .saturating_sub(origin.elapsed())
            .min(MAX_IDLE);
        if !wait.is_zero() {
            // A bot's bridge unparks the worker when its answer is queued (`FrameSignal::answered`).
            std::thread::park_timeout(wait);
        }
    }
}
