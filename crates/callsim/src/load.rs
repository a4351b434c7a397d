//! A load edge: many calls, each with one talking participant, on QUIC (`calls_per_connection` calls multiplexed
//! on each connection, the way a calling service carries them) or on plain RTP/UDP (a socket per call). One task
//! sends every call's packet of a tick by absolute deadline; pre-encoded audio keeps the edge's own CPU small, so
//! what a load run measures is the media processor.
//!
//! A few *probe* calls ([`PROBE_CALLS`]) send a tone burst once a second instead of speech, and only their returned
//! streams are decoded: the echo round trip is the time from the burst leaving the edge to its onset in the returned
//! audio (onset to onset, as a far end that plays at once would measure it). Every other returned packet is counted,
//! not decoded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mediaproc_net::{EdgeConfig, EdgeConnection, ServerTrust};
use mediaproc_pipeline::{
    CLASSIC_DECODER_COMPLEXITY, EncoderSettings, OpusDecoder, OpusEncoder, SampleRate,
};
use mediaproc_wire::control::{Codec, Direction, FlowDecl, MediaKind, NO_MSI};
use mediaproc_wire::rtp::RtpPacket;
use tokio::net::UdpSocket;
use tokio::time::Instant;

use crate::edge::{EdgeTarget, OPUS_PAYLOAD_TYPE};
use crate::error::CallsimError;
use crate::voice::{FRAME_SAMPLES, Voice};

/// Calls whose returned audio is decoded to measure the echo round trip.
pub const PROBE_CALLS: usize = 4;
/// Frames per probe cycle: a tone burst starts every second.
const PROBE_CYCLE_FRAMES: u64 = 50;
/// Frames of tone at the start of a probe cycle (60 ms).
const PROBE_TONE_FRAMES: u64 = 3;
/// A returned sample above this is the burst's onset (the tone's amplitude is 8000).
const ONSET_THRESHOLD: i16 = 2000;
/// Quiet frames after which the detector re-arms.
const REARM_FRAMES: u32 = 10;
/// Round trips kept per run (more are counted, not kept).
const MAX_RTT_SAMPLES: usize = 4096;

/// Counters of a load run, readable while it runs.
#[derive(Debug, Default)]
pub struct LoadCounters {
    /// Packets sent to the daemon.
    pub sent: AtomicU64,
    /// Packets received from the daemon.
    pub received: AtomicU64,
    /// Sends the transport refused (datagram buffer full, socket error).
    pub send_errors: AtomicU64,
    /// Echo round trips measured on the probe calls.
    pub probes: AtomicU64,
}

/// How the edge reaches the daemon.
#[derive(Debug, Clone)]
pub enum LoadTransport {
    /// QUIC at the daemon's mpUri, `calls_per_connection` calls on each connection.
    Quic {
        /// Certificate trust for every connection.
        trust: ServerTrust,
        /// Calls multiplexed on one connection (1 = a connection per call).
        calls_per_connection: usize,
    },
    /// Plain RTP/UDP: each call's own socket ([`LoadCall::rtp`]).
    Rtp,
}

/// One call of a load run.
#[derive(Debug, Clone)]
pub struct LoadCall {
    /// The session's QUIC target (from its blob); used with [`LoadTransport::Quic`].
    pub target: EdgeTarget,
    /// With [`LoadTransport::Rtp`]: the edge's socket for this call (the session's `rtp.remote`) and the daemon's
    /// RTP/UDP address (`rtp.local` of the session).
    pub rtp: Option<(Arc<UdpSocket>, SocketAddr)>,
}

/// What a load run measured on the edge side.
#[derive(Debug, Default)]
pub struct LoadEdgeReport {
    /// Echo round trips of the probe calls, in ms.
    pub rtt_ms: Vec<f64>,
}

/// Returns an RTP/UDP socket on loopback for one call.
pub async fn rtp_socket() -> Result<Arc<UdpSocket>, CallsimError> {
    UdpSocket::bind(("127.0.0.1", 0))
        .await
        .map(Arc::new)
        .map_err(|err| CallsimError::Media(format!("cannot bind an RTP socket: {err}")))
}

/// Frames the edge sends: a second of speech for ordinary calls, a second of tone burst + silence for probes.
struct Payloads {
    voice: Vec<Vec<u8>>,
    probe: Vec<Vec<u8>>,
}

fn encode_second(mut frame: impl FnMut(u64, &mut [i16])) -> Result<Vec<Vec<u8>>, CallsimError> {
    let codec = |err: mediaproc_pipeline::Error| CallsimError::Media(err.to_string());
    let mut encoder =
        OpusEncoder::new(SampleRate::HZ_16000, EncoderSettings::default()).map_err(codec)?;
    let (mut pcm, mut payload) = ([0i16; FRAME_SAMPLES], [0u8; 1500]);
    (0..PROBE_CYCLE_FRAMES)
        .map(|n| {
            frame(n, &mut pcm);
            let len = encoder.encode(&pcm, &mut payload).map_err(codec)?;
            Ok(payload[..len].to_vec())
        })
        .collect()
}

impl Payloads {
    fn new() -> Result<Self, CallsimError> {
        let mut voice = Voice::new(0, 1, 1000, 1000);
        let voice = encode_second(|n, pcm| voice.frame(n, pcm))?;
        let probe = encode_second(|n, pcm| {
            for (i, s) in pcm.iter_mut().enumerate() {
                *s = if n < PROBE_TONE_FRAMES {
                    let t = (n as usize * FRAME_SAMPLES + i) as f64 / 16_000.0;
                    (8000.0 * (2.0 * std::f64::consts::PI * 1000.0 * t).sin()) as i16
                } else {
                    0
                };
            }
        })?;
        Ok(Self { voice, probe })
    }
}

/// When each probe burst left the edge (ns since the run's start), by cycle modulo the array's length.
struct ProbeClock {
    start: Instant,
    sent_ns: [AtomicU64; 64],
}

impl ProbeClock {
    fn record(&self, cycle: u64) {
        let ns = self.start.elapsed().as_nanos() as u64;
        self.sent_ns[(cycle % 64) as usize].store(ns, Ordering::Relaxed);
    }
}

/// Decodes one probe call's returned stream and finds the bursts' onsets.
struct ProbeReceiver {
    decoder: OpusDecoder,
    pcm: [i16; FRAME_SAMPLES],
    quiet_frames: u32,
    clock: Arc<ProbeClock>,
    rtts: Arc<std::sync::Mutex<Vec<f64>>>,
    counters: Arc<LoadCounters>,
}

impl ProbeReceiver {
    fn new(
        clock: Arc<ProbeClock>,
        rtts: Arc<std::sync::Mutex<Vec<f64>>>,
        counters: Arc<LoadCounters>,
    ) -> Result<Self, CallsimError> {
        Ok(Self {
            decoder: OpusDecoder::with_complexity(SampleRate::HZ_16000, CLASSIC_DECODER_COMPLEXITY)
                .map_err(|err| CallsimError::Media(err.to_string()))?,
            pcm: [0; FRAME_SAMPLES],
            quiet_frames: 0,
            clock,
            rtts,
            counters,
        })
    }

    fn on_packet(&mut self, packet: &[u8]) {
        let arrival_ns = self.clock.start.elapsed().as_nanos() as u64;
        let Ok(rtp) = RtpPacket::parse(packet) else {
            return;
        };
        if self.decoder.decode(rtp.payload, &mut self.pcm).is_err() {
            return;
        }
        let onset = self
            .pcm
            .iter()
            .position(|s| s.unsigned_abs() > ONSET_THRESHOLD as u16);
        match onset {
            Some(i) if self.quiet_frames >= REARM_FRAMES => {
                self.quiet_frames = 0;
                let at_ns = arrival_ns + i as u64 * 1_000_000_000 / 16_000;
                // The burst that left last before this onset (bursts are a second apart; an echo takes far less).
                let sent = self
                    .clock
                    .sent_ns
                    .iter()
                    .map(|t| t.load(Ordering::Relaxed))
                    .filter(|&t| t > 0 && t <= at_ns)
                    .max();
                if let Some(sent) = sent {
                    let rtt = (at_ns - sent) as f64 / 1e6;
                    if rtt < 900.0 {
                        self.counters.probes.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut rtts) = self.rtts.lock()
                            && rtts.len() < MAX_RTT_SAMPLES
                        {
                            rtts.push(rtt);
                        }
                    }
                }
            }
            Some(_) => self.quiet_frames = 0,
            None => self.quiet_frames = self.quiet_frames.saturating_add(1),
        }
    }
}

fn flow_decls(i: usize, target: &EdgeTarget) -> Vec<FlowDecl> {
    let mut flows = vec![FlowDecl {
        flow_id: 2 * i as u64,
        direction: Direction::Render,
        media: MediaKind::Audio,
        context: target.render_context,
        msi: 100,
        payload_type: OPUS_PAYLOAD_TYPE,
        codec: Codec::Opus,
    }];
    if let Some(context) = target.source_context {
        flows.push(FlowDecl {
            flow_id: 2 * i as u64 + 1,
            direction: Direction::Source,
            media: MediaKind::Audio,
            context,
            msi: NO_MSI,
            payload_type: OPUS_PAYLOAD_TYPE,
            codec: Codec::Opus,
        });
    }
    flows
}

/// Where the sender puts call `i`'s packets.
enum Sink {
    Quic(Arc<EdgeConnection>, u64),
    Rtp(Arc<UdpSocket>, SocketAddr),
}

/// Attaches every call, streams one participant into each for `duration` and counts what comes back.
pub async fn run_load(
    transport: LoadTransport,
    calls: &[LoadCall],
    duration: Duration,
    counters: Arc<LoadCounters>,
) -> Result<LoadEdgeReport, CallsimError> {
    let media = |err: mediaproc_net::NetError| CallsimError::Media(err.to_string());
    let payloads = Payloads::new()?;
    let clock = Arc::new(ProbeClock {
        start: Instant::now(),
        sent_ns: std::array::from_fn(|_| AtomicU64::new(0)),
    });
    let rtts = Arc::new(std::sync::Mutex::new(Vec::new()));
    let probes = calls.len().min(PROBE_CALLS);
    // Call `i`'s returned stream is decoded only if it is one of the probe calls.
    let probe_for = |i: usize| -> Result<Option<ProbeReceiver>, CallsimError> {
        (i < probes)
            .then(|| ProbeReceiver::new(clock.clone(), rtts.clone(), counters.clone()))
            .transpose()
    };
    let mut sinks = Vec::with_capacity(calls.len());
    let mut listeners = Vec::new();
    let mut connections = Vec::new();
    match &transport {
        LoadTransport::Quic {
            trust,
            calls_per_connection,
        } => {
            for (c, chunk) in calls.chunks((*calls_per_connection).max(1)).enumerate() {
                let Some(first) = chunk.first() else { continue };
                let conn = Arc::new(
                    EdgeConnection::connect(&EdgeConfig {
                        server: first.target.server,
                        server_name: first.target.server_name.clone(),
                        trust: trust.clone(),
                        keep_alive: Duration::from_secs(2),
                    })
                    .await
                    .map_err(media)?,
                );
                // Flow ids on a connection: 2j for its call j's participant, 2j+1 for the bot's audio.
                let base = c * (*calls_per_connection).max(1);
                for (j, call) in chunk.iter().enumerate() {
                    conn.attach(
                        call.target.session_id,
                        call.target.token.as_bytes(),
                        flow_decls(j, &call.target),
                    )
                    .await
                    .map_err(media)?;
                    sinks.push(Sink::Quic(conn.clone(), 2 * j as u64));
                }
                let mut probe_rx = Vec::new();
                for j in 0..chunk.len() {
                    probe_rx.push(probe_for(base + j)?);
                }
                let (conn2, counters) = (conn.clone(), counters.clone());
                listeners.push(tokio::spawn(async move {
                    while let Ok((flow, packet)) = conn2.recv_packet().await {
                        if flow % 2 == 1 {
                            counters.received.fetch_add(1, Ordering::Relaxed);
                            if let Some(Some(p)) = probe_rx.get_mut((flow / 2) as usize) {
                                p.on_packet(&packet);
                            }
                        }
                    }
                }));
                connections.push(conn);
            }
        }
        LoadTransport::Rtp => {
            for (i, call) in calls.iter().enumerate() {
                let Some((socket, daemon)) = &call.rtp else {
                    return Err(CallsimError::Media(format!(
                        "call {i} has no RTP/UDP socket"
                    )));
                };
                sinks.push(Sink::Rtp(socket.clone(), *daemon));
                let mut probe = probe_for(i)?;
                let (socket, counters) = (socket.clone(), counters.clone());
                listeners.push(tokio::spawn(async move {
                    let mut buf = [0u8; 1500];
                    while let Ok(n) = socket.recv(&mut buf).await {
                        // RTCP (second byte 192-223) is not audio.
                        if n >= 2 && (192..=223).contains(&buf[1]) {
                            continue;
                        }
                        counters.received.fetch_add(1, Ordering::Relaxed);
                        if let Some(p) = probe.as_mut() {
                            p.on_packet(&buf[..n]);
                        }
                    }
                }));
            }
        }
    }

    let frames = (duration.as_secs_f64() / 0.02) as u64;
    let mut packet = vec![0u8; 1500];
    let start = Instant::now();
    for n in 0..frames {
        tokio::time::sleep_until(start + Duration::from_millis(20) * n as u32).await;
        let cycle_frame = n % PROBE_CYCLE_FRAMES;
        if cycle_frame == 0 {
            clock.record(n / PROBE_CYCLE_FRAMES);
        }
        for (i, sink) in sinks.iter().enumerate() {
            let body = if i < probes {
                &payloads.probe[cycle_frame as usize]
            } else {
                &payloads.voice[cycle_frame as usize]
            };
            let rtp = RtpPacket::new(
                OPUS_PAYLOAD_TYPE,
                n as u16,
                (n as u32).wrapping_mul(960),
                0x1000 + i as u32,
                body,
            );
            let Ok(len) = rtp.write(&mut packet) else {
                continue;
            };
            let ok = match sink {
                Sink::Quic(conn, flow) => conn.send_packet(*flow, &packet[..len]).is_ok(),
                Sink::Rtp(socket, to) => socket.try_send_to(&packet[..len], *to).is_ok(),
            };
            let counter = if ok {
                &counters.sent
            } else {
                &counters.send_errors
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }
    // The last packets' echoes are still on their way.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for listener in listeners {
        listener.abort();
    }
    drop(sinks);
    for conn in connections {
        if let Ok(conn) = Arc::try_unwrap(conn) {
            conn.close().await;
        }
    }
    let rtt_ms = rtts.lock().map(|r| r.clone()).unwrap_or_default();
    Ok(LoadEdgeReport { rtt_ms })
}
