//! The emulated media edge: connects to a session's mpUri, attaches with the blob's token, speaks for the
//! participants (Opus over RTP in QUIC datagrams, with optional loss, jitter and clock drift) and listens to the
//! bot, measuring the round trip of talk-spurt onsets, loss and concealment per direction.

use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use mediaproc_blob::MediaSessionConfig;
use mediaproc_net::{EdgeConfig, EdgeConnection, ServerTrust, parse_mp_uri};
use mediaproc_pipeline::{
    CLASSIC_DECODER_COMPLEXITY, EncoderSettings, OpusDecoder, OpusEncoder, SampleRate,
};
use mediaproc_wire::control::{
    Codec, ControlMessage, Direction, FlowDecl, MediaKind, NO_MSI, Participant,
};
use mediaproc_wire::rtp::{
    AudioLevel, ExtensionElement, ExtensionForm, HeaderExtension, RtpPacket,
    write_extension_elements,
};
use tokio::time::Instant;
use uuid::Uuid;

use crate::error::CallsimError;
use crate::voice::{FRAME_SAMPLES, Voice};

/// RTP payload type the edge uses for Opus.
pub const OPUS_PAYLOAD_TYPE: u8 = 111;
/// RFC 8285 id of the audio level extension (proto/SPEC.md §4.4).
pub const AUDIO_LEVEL_ID: u8 = 1;
/// First media source id given to participants (100, 101, …).
pub const FIRST_MSI: u32 = 100;
/// Flow id of the bot's audio (the source flow).
const SOURCE_FLOW: u64 = 1;
/// RMS above which a received frame counts as speech, for onset detection.
const SPEECH_RMS: f64 = 400.0;
/// Quiet frames that must precede an onset.
const QUIET_BEFORE_ONSET: u32 = 5;

/// What the edge does.
#[derive(Debug, Clone)]
pub struct EdgeOptions {
    /// Participants speaking (taking turns).
    pub participants: usize,
    /// How long to stream.
    pub duration: Duration,
    /// Probability that a packet to the daemon is lost (0.0..1.0).
    pub loss: f64,
    /// Each packet to the daemon is delayed by a uniform random 0..=jitter.
    pub jitter: Duration,
    /// The edge's clock runs this many parts per million fast (positive) or slow (negative).
    pub drift_ppm: f64,
    /// A turn: each participant speaks `talk` out of every `turn` when its turn comes.
    pub turn: Duration,
    /// See `turn`.
    pub talk: Duration,
    /// Seed of the impairments.
    pub seed: u64,
    /// How to authenticate the media processor.
    pub trust: ServerTrust,
    /// Recordings to speak (participant `i` speaks `recordings[i % len]`); synthetic voices when empty.
    pub recordings: Vec<Arc<[i16]>>,
}

impl EdgeOptions {
    /// Three participants taking turns (1.6 s of speech in every 2 s turn), a clean network.
    pub fn new(trust: ServerTrust, duration: Duration) -> Self {
        EdgeOptions {
            participants: 3,
            duration,
            loss: 0.0,
            jitter: Duration::ZERO,
            drift_ppm: 0.0,
            turn: Duration::from_millis(2000),
            talk: Duration::from_millis(1600),
            seed: 1,
            trust,
            recordings: Vec::new(),
        }
    }
}

/// Counters the edge updates while it runs (read for progress lines).
#[derive(Debug, Default)]
pub struct EdgeLive {
    /// Packets sent to the daemon.
    pub packets_sent: AtomicU64,
    /// Packets dropped by the loss option.
    pub packets_dropped: AtomicU64,
    /// Packets received from the daemon.
    pub packets_received: AtomicU64,
    /// Packets from the daemon missing (sequence gaps).
    pub packets_missing: AtomicU64,
    /// Last measured round trip in microseconds (0 before the first).
    pub last_round_trip_us: AtomicU64,
    /// Set when the edge is attached.
    pub attached: AtomicBool,
}

/// What the edge measured.
#[derive(Debug, Clone, Default)]
pub struct EdgeReport {
    /// Packets sent to the daemon.
    pub packets_sent: u64,
    /// Packets the loss option dropped.
    pub packets_dropped: u64,
    /// Packets received from the daemon.
    pub packets_received: u64,
    /// Packets from the daemon that never came (sequence gaps).
    pub packets_missing: u64,
    /// Frames the edge's decoder concealed.
    pub frames_concealed: u64,
    /// Round trips (send of a talk-spurt onset → its echo arriving back), one per spurt heard back.
    pub round_trips: Vec<Duration>,
    /// Talk spurts sent.
    pub onsets_sent: u64,
    /// Mean interarrival jitter of the daemon's packets (RFC 3550 estimator), microseconds.
    pub jitter_us: f64,
}

impl EdgeReport {
    /// The `p`-quantile (0..=1) of the round trips, if any were measured.
    pub fn round_trip_quantile(&self, p: f64) -> Option<Duration> {
        let mut sorted = self.round_trips.clone();
        sorted.sort();
        let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted.get(index).copied()
    }
}

/// The parts of a blob an edge needs.
#[derive(Debug, Clone)]
pub struct EdgeTarget {
    /// Where to connect.
    pub server: SocketAddr,
    /// TLS server name (the mpUri host).
    pub server_name: String,
    /// `mpMediaSessionId`.
    pub session_id: Uuid,
    /// `edgeToken`.
    pub token: String,
    /// First audio render context.
    pub render_context: Uuid,
    /// First audio source context, if the bot sends.
    pub source_context: Option<Uuid>,
}

impl EdgeTarget {
    /// Reads mpUri, session id, token and contexts from a blob; resolves the host.
    pub async fn from_blob(config: &MediaSessionConfig) -> Result<Self, CallsimError> {
        let bad = |what: &str| CallsimError::Blob(what.to_owned());
        let uri = config.mp_uri.as_ref().ok_or_else(|| bad("no mpUri"))?;
        let (host, port) = parse_mp_uri(uri).ok_or_else(|| {
            bad(&format!(
                "mpUri `{uri}` is not quic://host:port/MediaProcessor"
            ))
        })?;
        let server = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|err| CallsimError::Media(format!("cannot resolve {host}: {err}")))?
            .next()
            .ok_or_else(|| CallsimError::Media(format!("{host} has no address")))?;
        let uuid = |text: Option<&String>, what: &str| {
            text.and_then(|t| Uuid::parse_str(t).ok())
                .ok_or_else(|| bad(&format!("{what} is missing or not a UUID")))
        };
        Ok(EdgeTarget {
            server,
            server_name: host,
            session_id: uuid(config.mp_media_session_id.as_ref(), "mpMediaSessionId")?,
            token: config
                .edge_token
                .as_ref()
                .cloned()
                .ok_or_else(|| bad("no edgeToken (the session cannot be attached)"))?,
            render_context: uuid(
                config
                    .audio_render_contexts
                    .as_ref()
                    .and_then(|l| l.first()),
                "audioRenderContexts[0]",
            )?,
            source_context: config
                .audio_source_contexts
                .as_ref()
                .and_then(|l| l.first())
                .and_then(|t| Uuid::parse_str(t).ok()),
        })
    }
}

/// A packet waiting for its (jittered) send time.
#[derive(PartialEq, Eq)]
struct Scheduled {
    at: Instant,
    order: u64,
    flow: u64,
    bytes: Vec<u8>,
}

impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Earliest first in a max-heap.
        other.at.cmp(&self.at).then(other.order.cmp(&self.order))
    }
}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Runs the edge for one call until `options.duration` has passed; `live` is updated as it goes.
pub async fn run_edge(
    target: EdgeTarget,
    options: EdgeOptions,
    live: Arc<EdgeLive>,
) -> Result<EdgeReport, CallsimError> {
    let media = |err: mediaproc_net::NetError| CallsimError::Media(err.to_string());
    let conn = Arc::new(
        EdgeConnection::connect(&EdgeConfig {
            server: target.server,
            server_name: target.server_name.clone(),
            trust: options.trust.clone(),
            keep_alive: Duration::from_secs(2),
        })
        .await
        .map_err(media)?,
    );
    let render_flow = |i: usize| 2 + i as u64;
    let mut flows: Vec<FlowDecl> = (0..options.participants)
        .map(|i| FlowDecl {
            flow_id: render_flow(i),
            direction: Direction::Render,
            media: MediaKind::Audio,
            context: target.render_context,
            msi: FIRST_MSI + i as u32,
            payload_type: OPUS_PAYLOAD_TYPE,
            codec: Codec::Opus,
        })
        .collect();
    if let Some(context) = target.source_context {
        flows.push(FlowDecl {
            flow_id: SOURCE_FLOW,
            direction: Direction::Source,
            media: MediaKind::Audio,
            context,
            msi: NO_MSI,
            payload_type: OPUS_PAYLOAD_TYPE,
            codec: Codec::Opus,
        });
    }
    conn.attach(target.session_id, target.token.as_bytes(), flows)
        .await
        .map_err(media)?;
    live.attached.store(true, Ordering::Relaxed);
    let participants = (0..options.participants)
        .map(|i| Participant {
            id: format!("participant-{}", i + 1),
            msi: FIRST_MSI + i as u32,
            muted: false,
        })
        .collect();
    conn.send_control(&ControlMessage::Roster {
        session_id: target.session_id,
        participants,
    })
    .await
    .map_err(media)?;

    let start = Instant::now();
    let onsets: Arc<std::sync::Mutex<Vec<Instant>>> = Arc::default();
    let listener = tokio::spawn(listen(
        conn.clone(),
        start,
        options.duration + Duration::from_millis(500),
        options.turn / 2,
        onsets.clone(),
        live.clone(),
    ));
    let (sent, dropped, onsets_sent) = speak(&conn, &options, start, &onsets, &live).await?;
    let mut report = listener
        .await
        .map_err(|err| CallsimError::Media(format!("listener: {err}")))?;
    report.packets_sent = sent;
    report.packets_dropped = dropped;
    report.onsets_sent = onsets_sent;
    let _ = conn
        .send_control(&ControlMessage::Detach {
            session_id: target.session_id,
            reason: 0,
        })
        .await;
    if let Ok(conn) = Arc::try_unwrap(conn) {
        conn.close().await;
    }
    Ok(report)
}

/// Sends every participant's audio by absolute deadlines (scaled by the drift), with loss and jitter applied.
async fn speak(
    conn: &EdgeConnection,
    options: &EdgeOptions,
    start: Instant,
    onsets: &std::sync::Mutex<Vec<Instant>>,
    live: &EdgeLive,
) -> Result<(u64, u64, u64), CallsimError> {
    let codec = |err: mediaproc_pipeline::Error| CallsimError::Media(format!("opus: {err}"));
    let mut rng = fastrand::Rng::with_seed(options.seed);
    let n = options.participants;
    let turn = options.turn.as_millis() as u64;
    let talk = options.talk.as_millis() as u64;
    let mut voices: Vec<Voice> = (0..n)
        .map(|i| {
            let voice = Voice::new(i, n, turn, talk);
            match options.recordings.get(i % options.recordings.len().max(1)) {
                Some(recording) => voice.with_recording(recording.clone()),
                None => voice,
            }
        })
        .collect();
    let mut encoders = (0..n)
        .map(|_| OpusEncoder::new(SampleRate::HZ_16000, EncoderSettings::default()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(codec)?;
    let ssrcs: Vec<u32> = (0..n).map(|_| rng.u32(..)).collect();
    let mut pcm = [0i16; FRAME_SAMPLES];
    let mut payload = [0u8; 1500];
    let mut ext = [0u8; 8];
    // A clock `drift_ppm` fast ticks 20 ms a little early in true time.
    let frame = Duration::from_millis(20).mul_f64(1.0 / (1.0 + options.drift_ppm / 1e6));
    let frames = (options.duration.as_secs_f64() / 0.02) as u64;
    let mut queue: BinaryHeap<Scheduled> = BinaryHeap::new();
    let (mut sent, mut dropped, mut onsets_sent, mut order) = (0u64, 0u64, 0u64, 0u64);
    for index in 0..frames {
        let deadline = start + frame * (index as u32 + 1);
        // Send what is due before this frame's deadline, then wait for it.
        while let Some(next) = queue.peek() {
            if next.at > deadline {
                break;
            }
            tokio::time::sleep_until(next.at).await;
            if let Some(packet) = queue.pop() {
                let _ = conn.send_packet(packet.flow, &packet.bytes);
                sent += 1;
                live.packets_sent.fetch_add(1, Ordering::Relaxed);
            }
        }
        tokio::time::sleep_until(deadline).await;
        for (i, voice) in voices.iter_mut().enumerate() {
            voice.frame(index, &mut pcm);
            if voice.onset(index) {
                onsets_sent += 1;
                onsets
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(Instant::now());
            }
            let len = encoders[i].encode(&pcm, &mut payload).map_err(codec)?;
            let level = AudioLevel {
                voice: voice.talking(index),
                level: AudioLevel::level_of_pcm16(&pcm),
            };
            let ext_len = write_extension_elements(
                ExtensionForm::OneByte,
                &[ExtensionElement {
                    id: AUDIO_LEVEL_ID,
                    data: &[level.to_byte()],
                }],
                &mut ext,
            )
            .map_err(|err| CallsimError::Media(err.to_string()))?;
            let mut rtp = RtpPacket::new(
                OPUS_PAYLOAD_TYPE,
                index as u16,
                (index as u32).wrapping_mul(960),
                ssrcs[i],
                &payload[..len],
            );
            rtp.extension = Some(HeaderExtension {
                profile: ExtensionForm::OneByte.profile(),
                data: &ext[..ext_len],
            });
            let mut bytes = vec![0u8; rtp.encoded_len()];
            rtp.write(&mut bytes)
                .map_err(|err| CallsimError::Media(err.to_string()))?;
            if options.loss > 0.0 && rng.f64() < options.loss {
                dropped += 1;
                live.packets_dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let delay = if options.jitter.is_zero() {
                Duration::ZERO
            } else {
                options.jitter.mul_f64(rng.f64())
            };
            order += 1;
            queue.push(Scheduled {
                at: Instant::now() + delay,
                order,
                flow: 2 + i as u64,
                bytes,
            });
        }
    }
    while let Some(packet) = queue.pop() {
        tokio::time::sleep_until(packet.at).await;
        let _ = conn.send_packet(packet.flow, &packet.bytes);
        sent += 1;
        live.packets_sent.fetch_add(1, Ordering::Relaxed);
    }
    Ok((sent, dropped, onsets_sent))
}

/// Receives the bot's audio, decodes it in order (concealing gaps) and matches talk-spurt onsets to sent ones.
async fn listen(
    conn: Arc<EdgeConnection>,
    start: Instant,
    limit: Duration,
    longest_round_trip: Duration,
    onsets: Arc<std::sync::Mutex<Vec<Instant>>>,
    live: Arc<EdgeLive>,
) -> EdgeReport {
    let mut report = EdgeReport::default();
    let Ok(mut decoder) =
        OpusDecoder::with_complexity(SampleRate::HZ_16000, CLASSIC_DECODER_COMPLEXITY)
    else {
        return report;
    };
    let mut pcm = [0i16; FRAME_SAMPLES];
    let mut expected: Option<u16> = None;
    // The call starts quiet: its first talk spurt is an onset too.
    let mut quiet = QUIET_BEFORE_ONSET;
    let (mut previous, mut jitter) = (None::<(f64, u32)>, 0.0f64);
    while start.elapsed() < limit {
        let remaining = limit.saturating_sub(start.elapsed());
        let Ok(Ok((flow, bytes))) = tokio::time::timeout(remaining, conn.recv_packet()).await
        else {
            break;
        };
        let arrived = Instant::now();
        if flow != SOURCE_FLOW {
            continue;
        }
        let Ok(rtp) = RtpPacket::parse(&bytes) else {
            continue;
        };
        report.packets_received += 1;
        live.packets_received.fetch_add(1, Ordering::Relaxed);
        // RFC 3550 interarrival jitter in microseconds (RTP clock 48 kHz; timestamps compared wrapping).
        let arrival_us = arrived.duration_since(start).as_secs_f64() * 1e6;
        if let Some((prev_arrival, prev_timestamp)) = previous {
            let media_us =
                f64::from(rtp.timestamp.wrapping_sub(prev_timestamp) as i32) * 1000.0 / 48.0;
            let d = (arrival_us - prev_arrival) - media_us;
            // A timestamp jump (a resync after the sender skipped slots) is not jitter.
            if d.abs() < 1e6 {
                jitter += (d.abs() - jitter) / 16.0;
            }
        }
        previous = Some((arrival_us, rtp.timestamp));
        if let Some(next) = expected {
            let gap = rtp.sequence.wrapping_sub(next);
            if gap > 0 && gap < 100 {
                report.packets_missing += u64::from(gap);
                live.packets_missing
                    .fetch_add(u64::from(gap), Ordering::Relaxed);
                for _ in 0..gap {
                    if decoder.conceal(&mut pcm).is_ok() {
                        report.frames_concealed += 1;
                    }
                }
            } else if gap >= 0x8000 {
                continue; // late or duplicate
            }
        }
        expected = Some(rtp.sequence.wrapping_add(1));
        // A packet the decoder refuses (e.g. the sender's 1-byte "nothing to say" packets) is concealed like a
        // lost one, so quiet spells stay on the timeline and onsets after them are found.
        if decoder.decode(rtp.payload, &mut pcm).is_err() && decoder.conceal(&mut pcm).is_err() {
            pcm.fill(0);
        }
        let rms =
            (pcm.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / pcm.len() as f64).sqrt();
        if rms < SPEECH_RMS {
            quiet += 1;
            continue;
        }
        if quiet >= QUIET_BEFORE_ONSET {
            // The first loud sample's position inside the frame refines the arrival to sample precision.
            let first = pcm
                .iter()
                .position(|s| f64::from(s.unsigned_abs()) > SPEECH_RMS)
                .unwrap_or(0);
            let heard = arrived + Duration::from_micros(first as u64 * 1_000_000 / 16_000);
            let sent = onsets
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .rev()
                .find(|at| **at <= heard)
                .copied();
            if let Some(sent) = sent {
                let round_trip = heard - sent;
                // An onset heard more than half a turn after the last one sent is not its echo (a gap inside a
                // spurt, e.g. concealment, looks like an onset too).
                if round_trip < longest_round_trip {
                    report.round_trips.push(round_trip);
                    live.last_round_trip_us
                        .store(round_trip.as_micros() as u64, Ordering::Relaxed);
                }
            }
        }
        quiet = 0;
    }
    report.jitter_us = jitter;
    report
}
