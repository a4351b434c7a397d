//! [`MediaSession`]: one call's media, sans-IO (the str0m / quinn-proto shape).
//!
//! The driver (a media worker thread in the daemon, a simulator in tests) feeds it:
//! * [`MediaSession::handle_packet`] for each received RTP packet (already parsed by the wire crate),
//! * [`MediaSession::handle_tick`] whenever [`MediaSession::poll_timeout`] has passed — or, for a driver that runs
//!   bot logic itself, [`MediaSession::handle_receive`], then the bot, then [`MediaSession::handle_send`], so the
//!   bot's answer to this tick's frame is sent in this tick,
//!
//! and drains [`MediaSession::poll_output`] after each call: packets to transmit and events. Audio for the bot goes
//! into the inbound ring and audio from the bot comes from the outbound ring ([`BotEndpoint`], the two ring ends the
//! bot side owns, typically on another thread).
//!
//! Each tick (every 20 ms at `start + phase + n × 20 ms`): every inbound stream's [`PlayoutEngine`] produces one frame
//! (packets from the jitter buffer decoded into its sync buffer; FEC, concealment, merge, comfort noise, and
//! accelerate / preemptive expand by pitch periods), the speaker tracker updates, the mixed frame plus unmixed frames of
//! the loudest speakers go to the bot (the receive half), and the pacer turns the bot's next queued frame (or silence)
//! into exactly one packet (the send half). The `phase` ([`SessionConfig::tick_phase`]) lets one worker spread many
//! sessions over the 20 ms period.
//!
//! ## A stalled driver
//! On a loaded host the driver's threads are descheduled now and then, its receive thread and its ticks together:
//! the packets that arrived meanwhile are stamped when the thread runs again, after the deadlines of the ticks that
//! then run late in a bunch and still play them. Those stamps say nothing about the path, so such packets (stamped
//! more than [`STALL_MIN_LATENESS`] after the deadline of a tick that has not run yet,
//! [`SessionStats::late_stamped_packets`]) do not feed the jitter
//! buffer's delay statistics ([`JitterBuffer::insert_stalled`]), and the frames of the overdue ticks are no surplus
//! for the playout. Counted at their stamps, a 90 ms stall raised the on-time envelope's 5 s peak by 90 ms: the
//! playout stretched speech by as much and removed it again 5 s later (the quality harness's "overload collapse":
//! STOI 0.4–0.7 in one run in three). A driver more than [`MAX_CATCH_UP_TICKS`] behind skips the missed ticks, and
//! their audio is played out unheard so the streams stay at their delay.
//!
//! ## Codecs
//! The send codec is [`SessionConfig::codec`] with [`SessionConfig::payload_type`] (Opus by default; PCMU/PCMA for
//! SIP gateways), switchable at run time with [`MediaSession::set_send_codec`]. Received packets are decoded by the
//! codec their payload type maps to in a [`ReceiveCodecs`] table ([`SessionConfig::receive_codecs`], changed at run
//! time with [`MediaSession::set_receive_payload_type`], e.g. when a QUIC edge declares its flows); the send payload
//! type is in the table too unless the configuration maps it otherwise. Packets of other payload types are ignored
//! and counted ([`SessionStats::unknown_payload_type`]). Every stream holds an Opus and a G.711 decoder from the
//! start, so a stream that changes codec switches without allocating: its jitter buffer restarts on the new RTP clock
//! (960 ticks per 20 ms for Opus, 160 for G.711); the playout engine (time-scale modification, merge, comfort noise)
//! works on decoded PCM at the session's decode rate for every codec. G.711 is converted between 8 kHz and that rate
//! by rubato ([`crate::g711`]).
//!
//! The outbound encoder starts with in-band FEC off; [`MediaSession::set_remote_loss`] (the far end's RTCP "fraction
//! lost") turns it on and tunes it when the far end loses packets ([`crate::fec`]), and
//! [`MediaSession::set_encoder_overrides`] changes bitrate, complexity, FEC mode and DTX at run time.

use std::collections::VecDeque;
use std::time::Duration;

use crate::codec::{Codec, EncoderSettings, FrameDecoder, OpusDecoder};
use crate::error::{Error, Result};
use crate::fec::{DuplicateMode, EncoderOverrides, FecController, FecMode};
use crate::frame::{
    FRAME_DURATION, FrameInfo, MAX_FRAME_SAMPLES, SILENCE_DBOV, SampleRate, level_dbov, ticks_100ns,
};
use crate::g711::G711Decoder;
use crate::jitter::{JitterBuffer, JitterConfig, JitterStats};
use crate::mixer::{SpeakerConfig, SpeakerTracker, accumulate, level_from_rfc6464, saturate};
use crate::pacer::{OutgoingPacket, PacerStats, SendPacer, SendStatus};
use crate::playout::PlayoutEngine;
use crate::resample::FrameResampler;
use crate::ring::{
    DEFAULT_INBOUND_CAPACITY_FRAMES, DEFAULT_OUTBOUND_CAPACITY_FRAMES, InboundConsumer,
    InboundProducer, MAX_UNMIXED, MarkName, OutboundConsumer, OutboundProducer, ReceivedAudio,
    inbound, outbound,
};

/// Events kept for the driver; on overflow the oldest is dropped and counted.
pub const EVENTS_CAPACITY: usize = 64;
/// Upper bound of inbound streams per session.
pub const MAX_STREAMS: usize = 16;
/// A frame quieter than this is a good place to drop or insert audio (dBov).
pub const QUIET_DBOV: f32 = -40.0;
/// A frame this much quieter than the stream's recent average (≈ 1 s) is also a good place (speech pauses over
/// background noise).
pub const QUIET_BELOW_AVERAGE_DB: f32 = 8.0;
/// Of the ticks skipped after a stall, at most this many (the latest) are played out unheard to keep the streams'
/// playout points with the ticks (a jitter buffer's worth; older audio is gone from the buffers anyway).
pub const MAX_SKIPPED_PLAYOUT_TICKS: u64 = crate::jitter::JITTER_CAPACITY_FRAMES as u64;
/// If the driver falls this many ticks behind, the missed ticks are skipped instead of replayed: the bot does not
/// get their frames and nothing is sent for them.
pub const MAX_CATCH_UP_TICKS: u64 = 5;
/// A packet stamped this much (half a frame) after the deadline of a tick that has not run yet marks a stalled
/// driver (see [`MediaSession::handle_packet`]). Below it the driver's receive thread may well have been on time and
/// only the ticks late (a loaded machine wakes a sleeping worker a few ms late): the stamp is then the packet's
/// real arrival, which the envelope must cover for the ticks that do run on time.
pub const STALL_MIN_LATENESS: Duration = Duration::from_millis(10);
/// A stream without packets for this long may be reused for a new source.
pub const STREAM_IDLE_REUSE: Duration = Duration::from_secs(2);

/// The phase for session `slot` of `slots` sessions sharing one worker: spreads their ticks evenly over the 20 ms
/// period, so a session waits only for its own processing, not for everyone else's.
pub fn spread_tick_phase(slot: usize, slots: usize) -> Duration {
    if slots == 0 {
        return Duration::ZERO;
    }
    let step = FRAME_DURATION.as_nanos() / slots as u128;
    Duration::from_nanos(((slot % slots) as u128 * step) as u64)
}

/// Session settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SessionConfig {
    /// The bot's PCM rate (default 16 kHz, `Pcm16K`).
    pub rate: SampleRate,
    /// Outbound encoder settings: bitrate, complexity, DTX. Its FEC fields are chosen by `fec`.
    pub encoder: EncoderSettings,
    /// Outbound in-band FEC: `Auto` (default) follows the loss the far end reports
    /// ([`MediaSession::set_remote_loss`]) and is off until then; `On`/`Off` force it.
    pub fec: FecMode,
    /// Outbound time-shifted duplicates ([`crate::pacer`]): `Auto` (default) follows the inbound loss; `On`/`Off`
    /// force them.
    pub duplicate: DuplicateMode,
    /// Opus decoder complexity of the inbound streams (0..=10, default [`crate::DEFAULT_DECODER_COMPLEXITY`]: deep
    /// PLC and the NoLACE post-filter; 0 is the classic decoder at a quarter of the cost).
    pub decoder_complexity: u8,
    /// Jitter buffer settings (per inbound stream).
    pub jitter: JitterConfig,
    /// Speaker tracking settings.
    pub speakers: SpeakerConfig,
    /// Inbound streams (participants) decoded at once; allocated at session start (default 4).
    pub max_streams: usize,
    /// Unmixed streams of the loudest speakers handed to the bot with each frame (default 4, 0 = mixed only).
    pub max_unmixed: usize,
    /// Inbound ring capacity in frames (default 50 = 1 s).
    pub inbound_capacity_frames: usize,
    /// Outbound ring capacity in frames (default 500 = 10 s).
    pub outbound_capacity_frames: usize,
    /// Offset of this session's ticks within the 20 ms period.
    pub tick_phase: Duration,
    /// SSRC of our outbound stream.
    pub ssrc: u32,
    /// Codec of our outbound stream (default Opus).
    pub codec: Codec,
    /// RTP payload type of our outbound stream (default 111, dynamic for Opus; 0 for PCMU, 8 for PCMA). Also accepted
    /// on receive as `codec`, unless `receive_codecs` maps it.
    pub payload_type: u8,
    /// Received payload types and their codecs (default empty: only `payload_type`). Others are ignored and counted.
    pub receive_codecs: ReceiveCodecs,
    /// First outbound RTP sequence number (random in production).
    pub initial_sequence: u16,
    /// First outbound RTP timestamp (random in production).
    pub initial_timestamp: u32,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            rate: SampleRate::HZ_16000,
            encoder: EncoderSettings::default(),
            fec: FecMode::Auto,
            duplicate: DuplicateMode::Auto,
            decoder_complexity: crate::DEFAULT_DECODER_COMPLEXITY,
            jitter: JitterConfig::default(),
            speakers: SpeakerConfig::default(),
            max_streams: 4,
            max_unmixed: 4,
            inbound_capacity_frames: DEFAULT_INBOUND_CAPACITY_FRAMES,
            outbound_capacity_frames: DEFAULT_OUTBOUND_CAPACITY_FRAMES,
            tick_phase: Duration::ZERO,
            ssrc: 0x6d70_0001,
            codec: Codec::Opus,
            payload_type: 111,
            receive_codecs: ReceiveCodecs::new(),
            initial_sequence: 0,
            initial_timestamp: 0,
        }
    }
}

/// Which codec each received RTP payload type (0..=127) carries. A fixed table (no allocation), `Copy`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ReceiveCodecs {
    table: [Option<Codec>; 128],
}

impl Default for ReceiveCodecs {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for ReceiveCodecs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl ReceiveCodecs {
    /// An empty table.
    pub const fn new() -> Self {
        Self { table: [None; 128] }
    }

    /// The table with `payload_type` mapped to `codec` (builder style; a payload type above 127 is ignored — use
    /// [`ReceiveCodecs::set`] to see the error).
    pub fn with(mut self, payload_type: u8, codec: Codec) -> Self {
        let _ = self.set(payload_type, Some(codec));
        self
    }

    /// Maps `payload_type` to `codec`, or removes it (`None`). Payload types above 127 are an error.
    pub fn set(&mut self, payload_type: u8, codec: Option<Codec>) -> Result<()> {
        let slot = self
            .table
            .get_mut(usize::from(payload_type))
            .ok_or(Error::Config {
                field: "payload_type",
                problem: "must be 0..=127",
            })?;
        *slot = codec;
        Ok(())
    }

    /// The codec of `payload_type`, if accepted.
    pub fn get(&self, payload_type: u8) -> Option<Codec> {
        self.table.get(usize::from(payload_type)).copied().flatten()
    }

    /// The accepted payload types and their codecs, lowest first.
    pub fn iter(&self) -> impl Iterator<Item = (u8, Codec)> + '_ {
        self.table
            .iter()
            .enumerate()
            .filter_map(|(pt, c)| c.map(|c| (pt as u8, c)))
    }
}

/// The RTP fields the session needs (the wire crate parses them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RtpPacketInfo {
    /// Sender's SSRC.
    pub ssrc: u32,
    /// RTP sequence number.
    pub sequence: u16,
    /// RTP timestamp (on the codec's clock: 48 kHz for Opus, 8 kHz for G.711).
    pub timestamp: u32,
    /// Marker bit.
    pub marker: bool,
    /// Payload type.
    pub payload_type: u8,
    /// RFC 6464 audio level (0..=127, -dBov) if the packet carried the extension.
    pub audio_level: Option<u8>,
    /// Media source id (MSI) of the participant; the SSRC is used when absent.
    pub source_id: Option<u32>,
}

/// Something the driver should know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The bot started sending (`AudioSendStatusChanged`).
    SendStatusChanged(SendStatus),
    /// The dominant speaker changed (`DominantSpeakerChanged`).
    DominantSpeakerChanged {
        /// Previous dominant speaker's MSI.
        previous: Option<u32>,
        /// New dominant speaker's MSI.
        current: Option<u32>,
    },
    /// A mark placed by the bot was reached (its preceding frame sent) or discarded by `clear`.
    Mark {
        /// The bot's name.
        name: MarkName,
        /// True if a clear discarded it.
        cleared: bool,
    },
    /// A new inbound source started.
    StreamStarted {
        /// Its MSI.
        source_id: u32,
    },
}

/// What [`MediaSession::poll_output`] yields.
#[derive(Debug, PartialEq, Eq)]
pub enum Output<'a> {
    /// An RTP packet to send now.
    Transmit(OutgoingPacket<'a>),
    /// An event.
    Event(Event),
}

/// Session counters.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SessionStats {
    /// Ticks processed.
    pub ticks: u64,
    /// Ticks skipped because the driver was more than [`MAX_CATCH_UP_TICKS`] late.
    pub skipped_ticks: u64,
    /// Ticks handled more than one frame after their deadline.
    pub late_ticks: u64,
    /// RTP packets given to the session.
    pub packets_received: u64,
    /// Packets stamped more than [`STALL_MIN_LATENESS`] after the deadline of a tick the driver had not run yet (it
    /// stalled): in time for that tick,
    /// so their stamps do not feed the delay statistics (see [`MediaSession::handle_packet`]).
    pub late_stamped_packets: u64,
    /// Packets ignored (wrong payload type, no stream free, malformed).
    pub packets_ignored: u64,
    /// Of those, packets whose payload type is not in the receive table.
    pub unknown_payload_type: u64,
    /// Frames delivered to the inbound ring.
    pub frames_to_bot: u64,
    /// Inbound frames dropped because the bot fell behind.
    pub frames_dropped_for_bot: u64,
    /// Frames that failed to decode (concealed instead).
    pub decode_errors: u64,
    /// Events dropped because the driver did not drain them.
    pub events_dropped: u64,
    /// Outbound frames discarded by `clear`.
    pub frames_cleared: u64,
    /// Outbound pacing.
    pub pacer: PacerStats,
}

/// The two ring ends the bot side owns.
#[derive(Debug)]
pub struct BotEndpoint {
    /// Frames for the bot (mixed, active speakers, unmixed).
    pub inbound: InboundConsumer,
    /// Frames from the bot, `clear` and `mark`.
    pub outbound: OutboundProducer,
}

/// A stream's decoders: both built up front, so a change of codec allocates nothing.
struct StreamDecoder {
    codec: Codec,
    opus: OpusDecoder,
    g711: G711Decoder,
}

impl StreamDecoder {
    fn set_codec(&mut self, codec: Codec) {
        if codec.is_g711() {
            // Only G.711 laws reach here, so this cannot fail; it also resets the G.711 state.
            let _ = self.g711.set_codec(codec);
        }
        self.codec = codec;
    }
}

impl FrameDecoder for StreamDecoder {
    fn samples_per_frame(&self) -> usize {
        self.opus.samples_per_frame()
    }
    fn decode(&mut self, packet: &[u8], out: &mut [i16]) -> Result<()> {
        match self.codec {
            Codec::Opus => self.opus.decode(packet, out),
            _ => self.g711.decode(packet, out),
        }
    }
    fn conceal(&mut self, out: &mut [i16]) -> Result<()> {
        match self.codec {
            Codec::Opus => self.opus.conceal(out),
            _ => self.g711.conceal(out),
        }
    }
    fn decode_fec(&mut self, next_packet: &[u8], out: &mut [i16]) -> Result<()> {
        match self.codec {
            Codec::Opus => self.opus.decode_fec(next_packet, out),
            _ => self.g711.decode_fec(next_packet, out),
        }
    }
    fn is_dtx(&self, packet: &[u8]) -> bool {
        match self.codec {
            Codec::Opus => FrameDecoder::is_dtx(&self.opus, packet),
            _ => self.g711.is_dtx(packet),
        }
    }
}

struct Stream {
    source_id: Option<u32>,
    last_packet: Duration,
    jitter: JitterBuffer,
    decoder: StreamDecoder,
    resampler: Option<FrameResampler>,
    decoded: [i16; MAX_FRAME_SAMPLES],
    frame: [i16; MAX_FRAME_SAMPLES],
    produced: bool,
    level: f32,
    playout: PlayoutEngine,
}

impl Stream {
    fn new(cfg: &SessionConfig) -> Result<Self> {
        let (opus, resampler) = match cfg.rate.opus_native() {
            // Its libopus state is made when a source claims the stream (`OpusDecoder::start`).
            Some(_) => (
                OpusDecoder::deferred(cfg.rate, cfg.decoder_complexity)?,
                None,
            ),
            None => (
                OpusDecoder::deferred(SampleRate::HZ_48000, cfg.decoder_complexity)?,
                Some(FrameResampler::new(SampleRate::HZ_48000, cfg.rate)?),
            ),
        };
        // G.711 decodes at the Opus decoder's rate, so both share the playout engine and the resampler after it.
        let decode_rate = if resampler.is_some() {
            SampleRate::HZ_48000
        } else {
            cfg.rate
        };
        let decoder = StreamDecoder {
            codec: Codec::Opus,
            opus,
            g711: G711Decoder::new(Codec::Pcmu, decode_rate)?,
        };
        let playout = PlayoutEngine::new(
            decoder.samples_per_frame() as u32 * 50,
            decoder.samples_per_frame(),
        )?;
        Ok(Self {
            source_id: None,
            last_packet: Duration::ZERO,
            jitter: JitterBuffer::new(cfg.jitter)?,
            decoder,
            resampler,
            decoded: [0; MAX_FRAME_SAMPLES],
            frame: [0; MAX_FRAME_SAMPLES],
            produced: false,
            level: -127.0,
            playout,
        })
    }

    /// Switches the stream's codec (its jitter buffer restarts on the new clock; no allocation).
    fn set_codec(&mut self, codec: Codec) {
        if codec != self.decoder.codec {
            self.jitter.set_codec(codec);
            self.decoder.set_codec(codec);
        }
    }

    /// Pulls this tick's frame (the tick due at `deadline`) through the playout engine. Returns decode errors
    /// (already concealed).
    fn tick(&mut self, spf: usize, deadline: Duration) -> u64 {
        let dspf = self.decoder.samples_per_frame();
        let r = self.playout.tick(
            &mut self.jitter,
            &mut self.decoder,
            deadline,
            &mut self.decoded[..dspf],
        );
        self.produced = r.produced;
        if !self.produced {
            return r.decode_errors;
        }
        match &mut self.resampler {
            Some(rs) => {
                if rs
                    .process(&self.decoded[..dspf], &mut self.frame[..spf])
                    .is_err()
                {
                    self.frame[..spf].fill(0);
                }
            }
            None => self.frame[..spf].copy_from_slice(&self.decoded[..spf]),
        }
        self.level = match (r.audio_level, &self.resampler) {
            (Some(v), _) => level_from_rfc6464(v),
            (None, None) => level_dbov(&self.decoded[..dspf]),
            (None, Some(_)) => level_dbov(&self.frame[..spf]),
        };
        r.decode_errors
    }
}

/// One call's media. See the module docs.
pub struct MediaSession {
    cfg: SessionConfig,
    spf: usize,
    streams: Vec<Stream>,
    tracker: SpeakerTracker,
    pacer: SendPacer,
    inbound: InboundProducer,
    outbound: OutboundConsumer,
    to_bot: Box<ReceivedAudio>,
    acc: [i32; MAX_FRAME_SAMPLES],
    bot_frame: [i16; MAX_FRAME_SAMPLES],
    pcm48: [i16; MAX_FRAME_SAMPLES],
    out_resampler: Option<FrameResampler>,
    order: [usize; MAX_STREAMS],
    events: VecDeque<Event>,
    tx_pending: bool,
    /// The pacer's time-shifted duplicate is still to be handed out this tick.
    dup_pending: bool,
    /// The receive half of the due tick ran, its send half has not.
    send_pending: bool,
    delivering: bool,
    stats: SessionStats,
    fec: FecController,
    /// Ticks until the next look at the inbound loss for the FEC controller.
    local_loss_ticks: u32,
    /// The encoder settings apart from FEC (configuration plus overrides).
    encoder_base: EncoderSettings,
    /// The session chose DTX (its config turned it on, or an override set it): an edge's default does not apply.
    dtx_chosen: bool,
}

impl std::fmt::Debug for MediaSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaSession")
            .field("cfg", &self.cfg)
            .field("stats", &self.stats)
            .finish()
    }
}

impl MediaSession {
    /// Creates a session whose media clock starts at `start` (session-relative time, e.g. since the worker began).
    /// Everything the session needs per frame is allocated here.
    pub fn new(cfg: SessionConfig, start: Duration) -> Result<(Self, BotEndpoint)> {
        if cfg.max_streams == 0 || cfg.max_streams > MAX_STREAMS {
            return Err(Error::Config {
                field: "max_streams",
                problem: "must be 1..=MAX_STREAMS (16)",
            });
        }
        if cfg.max_unmixed > MAX_UNMIXED {
            return Err(Error::Config {
                field: "max_unmixed",
                problem: "must be at most MAX_UNMIXED (8)",
            });
        }
        if cfg.tick_phase >= FRAME_DURATION {
            return Err(Error::Config {
                field: "tick_phase",
                problem: "must be shorter than 20 ms",
            });
        }
        let mut cfg = cfg;
        if cfg.receive_codecs.get(cfg.payload_type).is_none() {
            // Also rejects a payload type above 127.
            cfg.receive_codecs.set(cfg.payload_type, Some(cfg.codec))?;
        }
        let streams = (0..cfg.max_streams)
            .map(|_| Stream::new(&cfg))
            .collect::<Result<Vec<_>>>()?;
        let (encode_rate, out_resampler) = match cfg.rate.opus_native() {
            Some(_) => (cfg.rate, None),
            None => (
                SampleRate::HZ_48000,
                Some(FrameResampler::new(cfg.rate, SampleRate::HZ_48000)?),
            ),
        };
        cfg.encoder.validate()?;
        let mut fec = FecController::new(cfg.fec);
        fec.set_duplicate_mode(cfg.duplicate);
        let mut pacer = SendPacer::new(
            start + cfg.tick_phase,
            encode_rate,
            fec.apply(cfg.encoder),
            cfg.ssrc,
            cfg.payload_type,
            cfg.initial_sequence,
            cfg.initial_timestamp,
        )?;
        pacer.set_codec(cfg.codec, cfg.payload_type)?;
        pacer.set_duplicate(fec.duplicate());
        let (inbound_p, inbound_c) =
            inbound(cfg.inbound_capacity_frames, cfg.rate, cfg.max_unmixed)?;
        let (outbound_p, outbound_c) = outbound(cfg.outbound_capacity_frames, cfg.rate)?;
        let session = Self {
            spf: cfg.rate.samples_per_frame(),
            streams,
            tracker: SpeakerTracker::new(cfg.speakers),
            pacer,
            inbound: inbound_p,
            outbound: outbound_c,
            to_bot: Box::new(ReceivedAudio::new(cfg.rate)),
            acc: [0; MAX_FRAME_SAMPLES],
            bot_frame: [0; MAX_FRAME_SAMPLES],
            pcm48: [0; MAX_FRAME_SAMPLES],
            out_resampler,
            order: [0; MAX_STREAMS],
            events: VecDeque::with_capacity(EVENTS_CAPACITY),
            tx_pending: false,
            dup_pending: false,
            send_pending: false,
            delivering: false,
            stats: SessionStats::default(),
            fec,
            local_loss_ticks: crate::fec::LOCAL_LOSS_WINDOW_TICKS,
            encoder_base: cfg.encoder,
            dtx_chosen: cfg.encoder.dtx,
            cfg,
        };
        Ok((
            session,
            BotEndpoint {
                inbound: inbound_c,
                outbound: outbound_p,
            },
        ))
    }

    /// The configuration (with the send codec, payload type and receive table in force).
    pub fn config(&self) -> &SessionConfig {
        &self.cfg
    }

    /// The send codec and payload type in force.
    pub fn send_codec(&self) -> (Codec, u8) {
        self.pacer.codec()
    }

    /// Switches the send codec and payload type from the next packet on (e.g. after a re-INVITE). Both encoders exist
    /// from the start: no allocation. Sequence numbers continue; the RTP timestamp continues in the new codec's ticks
    /// (160 per packet for G.711, 960 for Opus); the next audible packet carries the marker. The receive table is not
    /// changed (see [`MediaSession::set_receive_payload_type`]). A payload type above 127 is rejected.
    pub fn set_send_codec(&mut self, codec: Codec, payload_type: u8) -> Result<()> {
        self.pacer.set_codec(codec, payload_type)?;
        self.cfg.codec = codec;
        self.cfg.payload_type = payload_type;
        Ok(())
    }

    /// The received payload types accepted and their codecs.
    pub fn receive_codecs(&self) -> &ReceiveCodecs {
        &self.cfg.receive_codecs
    }

    /// Accepts received packets of `payload_type` as `codec` from now on (replacing an earlier mapping), e.g. when a
    /// QUIC edge declares a flow's payload type after the session started. A payload type above 127 is rejected.
    pub fn set_receive_payload_type(&mut self, payload_type: u8, codec: Codec) -> Result<()> {
        self.cfg.receive_codecs.set(payload_type, Some(codec))
    }

    /// Stops accepting `payload_type` (its packets are ignored and counted from now on).
    pub fn remove_receive_payload_type(&mut self, payload_type: u8) {
        let _ = self.cfg.receive_codecs.set(payload_type, None);
    }

    /// The codec the stream of `source_id` is decoding.
    pub fn stream_codec(&self, source_id: u32) -> Option<Codec> {
        self.streams
            .iter()
            .find(|s| s.source_id == Some(source_id))
            .map(|s| s.decoder.codec)
    }

    /// Counters.
    pub fn stats(&self) -> SessionStats {
        let mut s = self.stats;
        s.pacer = self.pacer.stats();
        s.frames_dropped_for_bot = self.inbound.dropped();
        s
    }

    /// Jitter statistics of the stream of `source_id`.
    pub fn stream_stats(&self, source_id: u32) -> Option<JitterStats> {
        self.streams
            .iter()
            .find(|s| s.source_id == Some(source_id))
            .map(|s| s.playout.stats(&s.jitter))
    }

    /// Delay the receive path adds for `source_id` on top of the network: the jitter buffer's current level plus the
    /// resampler's delay when the bot's rate is not an Opus rate, plus the 8 kHz conversion's for G.711. Use it to relate frame timestamps to send times.
    pub fn receive_delay(&self, source_id: u32) -> Option<Duration> {
        let s = self
            .streams
            .iter()
            .find(|s| s.source_id == Some(source_id))?;
        let jitter = Duration::from_millis(u64::from(s.playout.stats(&s.jitter).playout_delay_ms));
        let resampler = s.resampler.as_ref().map_or(Duration::ZERO, |r| {
            Duration::from_secs_f64(r.delay_samples() as f64 / f64::from(self.cfg.rate.hz()))
        });
        let g711 = if s.decoder.codec.is_g711() {
            let hz = (s.decoder.samples_per_frame() * 50) as f64;
            Duration::from_secs_f64(s.decoder.g711.delay_samples() as f64 / hz)
        } else {
            Duration::ZERO
        };
        Some(jitter + resampler + g711)
    }

    /// Frames the bot has queued in the outbound ring and the session has not taken yet (a driver may run the send
    /// half early once the bot's answer is there).
    pub fn bot_frames_queued(&self) -> usize {
        self.outbound.queued_frames()
    }

    /// The inbound streams' Opus decoder complexity in force ([`SessionConfig::decoder_complexity`] until
    /// [`MediaSession::set_decoder_complexity`] changes it).
    pub fn decoder_complexity(&self) -> u8 {
        self.cfg.decoder_complexity
    }

    /// Changes every inbound stream's Opus decoder complexity (0..=10) from its next frame on, e.g. to shed the
    /// neural stages' CPU when the host is busy. No allocation.
    pub fn set_decoder_complexity(&mut self, complexity: u8) -> Result<()> {
        for s in &mut self.streams {
            s.decoder.opus.set_complexity(complexity)?;
        }
        self.cfg.decoder_complexity = complexity;
        Ok(())
    }

    /// Changes every inbound stream's late allowance ([`JitterConfig::late_allowance_packets`]) from its next
    /// packet on, e.g. when the session's edge becomes a browser, whose sender stalls now and then. No allocation.
    pub fn set_late_allowance(&mut self, packets: u8) -> Result<()> {
        for s in &mut self.streams {
            s.jitter.set_late_allowance(packets)?;
        }
        self.cfg.jitter.late_allowance_packets = packets;
        Ok(())
    }

    /// The outbound encoder's settings in force.
    pub fn encoder_settings(&self) -> EncoderSettings {
        self.pacer.encoder_settings()
    }

    /// The outbound FEC mode.
    pub fn fec_mode(&self) -> FecMode {
        self.fec.mode()
    }

    /// The outbound time-shifted duplicates' mode, and whether they are on now.
    pub fn duplicate_mode(&self) -> (DuplicateMode, bool) {
        (self.fec.duplicate_mode(), self.pacer.duplicate())
    }

    /// The session's inbound loss, smoothed over one-second windows (percent), once a window had packets.
    pub fn inbound_loss_percent(&self) -> Option<f32> {
        self.fec.inbound_loss_percent()
    }

    /// The loss the far end reported, smoothed (percent), if it reported any.
    pub fn remote_loss_percent(&self) -> Option<f32> {
        self.fec.remote_loss_percent()
    }

    /// The far end's reported loss: an RTCP receiver report's "fraction lost" for our stream (0..=255 =
    /// 0..100 %). With [`FecMode::Auto`] in-band FEC and its expected-loss setting follow it (with hysteresis; see
    /// [`crate::fec`]). Cheap and allocation-free; call on every report.
    pub fn set_remote_loss(&mut self, fraction_lost: u8) {
        self.fec.report_fraction_lost(fraction_lost);
        self.apply_encoder();
    }

    /// Changes the outbound encoder at run time (or right after start): bitrate, complexity, FEC mode, DTX; `None`
    /// fields keep their value. Invalid values are rejected and nothing changes.
    pub fn set_encoder_overrides(&mut self, o: EncoderOverrides) -> Result<()> {
        let mut base = self.encoder_base;
        if let Some(b) = o.bitrate_bps {
            base.bitrate_bps = b;
        }
        if let Some(c) = o.complexity {
            base.complexity = c;
        }
        if let Some(d) = o.dtx {
            base.dtx = d;
        }
        base.validate()?;
        self.encoder_base = base;
        self.dtx_chosen |= o.dtx.is_some();
        if let Some(m) = o.fec {
            self.fec.set_mode(m);
        }
        if let Some(m) = o.duplicate {
            self.fec.set_duplicate_mode(m);
        }
        self.apply_encoder();
        Ok(())
    }

    /// The edge's choice of DTX, in force unless the session's overrides chose (e.g. on toward a WebRTC peer, whose
    /// NetEQ starts each talk spurt afresh after a pause; see [`crate::pacer`]). No allocation.
    pub fn set_dtx_default(&mut self, on: bool) {
        if !self.dtx_chosen {
            self.encoder_base.dtx = on;
            self.apply_encoder();
        }
    }

    fn apply_encoder(&mut self) {
        self.pacer.set_duplicate(self.fec.duplicate());
        let want = self.fec.apply(self.encoder_base);
        if want != self.pacer.encoder_settings() {
            // Validated values only; a libopus refusal keeps the previous settings.
            let _ = self.pacer.set_encoder_settings(want);
        }
    }

    /// The current dominant speaker.
    pub fn dominant_speaker(&self) -> Option<u32> {
        self.tracker.dominant()
    }

    /// The send status.
    pub fn send_status(&self) -> SendStatus {
        self.pacer.status()
    }

    /// When [`MediaSession::handle_tick`] must be called next.
    pub fn poll_timeout(&self) -> Duration {
        self.pacer.next_deadline()
    }

    /// Moves the session's tick phase by `by_us` µs (at most half a frame either way; negative: earlier), between
    /// two ticks: a driver that sees where in the period a peer's packets arrive puts the ticks just after them, so
    /// a frame waits for its tick a few ms instead of up to a frame. One outgoing packet leaves that much sooner or
    /// later (RTP timestamps are unchanged); the jitter buffer's phase-aware target follows the new tick times.
    /// Returns false, changing nothing, inside a tick (between its receive and send halves), for a larger shift, or
    /// if the next tick would fall before `now`.
    pub fn shift_tick_phase(&mut self, by_us: i64, now: Duration) -> bool {
        !self.send_pending && self.pacer.shift(by_us, now)
    }

    /// The smallest [`JitterBuffer::tick_slack_us`] of the streams playing: how much earlier the ticks could come
    /// with every stream's latest arrivals still in time. `None` while no stream has started (or left its first
    /// seconds, whose statistics rest on few packets).
    pub fn tick_slack_us(&self) -> Option<i64> {
        self.streams
            .iter()
            .filter(|s| s.source_id.is_some() && !s.jitter.starting())
            .filter_map(|s| s.jitter.tick_slack_us())
            .min()
    }

    fn push_event(&mut self, e: Event) {
        if self.events.len() == EVENTS_CAPACITY {
            self.events.pop_front();
            self.stats.events_dropped += 1;
        }
        self.events.push_back(e);
    }

    /// Handles one received RTP packet with its `payload` (Opus or G.711, per the receive table). Never fails: bad
    /// packets are counted and dropped.
    pub fn handle_packet(&mut self, now: Duration, rtp: &RtpPacketInfo, payload: &[u8]) {
        self.stats.packets_received += 1;
        let Some(codec) = self.cfg.receive_codecs.get(rtp.payload_type) else {
            self.stats.packets_ignored += 1;
            self.stats.unknown_payload_type += 1;
            return;
        };
        let source = rtp.source_id.unwrap_or(rtp.ssrc);
        let idx = match self
            .streams
            .iter()
            .position(|s| s.source_id == Some(source))
        {
            Some(i) => i,
            None => {
                // A free stream, else the one idle longest if idle long enough.
                let free = self.streams.iter().position(|s| s.source_id.is_none());
                let reuse = || {
                    self.streams
                        .iter()
                        .enumerate()
                        .filter(|(_, s)| now.saturating_sub(s.last_packet) >= STREAM_IDLE_REUSE)
                        .min_by_key(|(_, s)| s.last_packet)
                        .map(|(i, _)| i)
                };
                let Some(i) = free.or_else(reuse) else {
                    self.stats.packets_ignored += 1;
                    return;
                };
                if let Some(old) = self.streams[i].source_id {
                    self.tracker.remove(old);
                }
                let s = &mut self.streams[i];
                s.source_id = Some(source);
                s.set_codec(codec);
                s.jitter.restart();
                // Creates the Opus decoder's state, or clears the previous source's — for a G.711 source too, so a
                // later switch to Opus allocates nothing. A failure (no memory) shows as this stream's decode
                // errors: every decode tries again and conceals.
                let _ = s.decoder.opus.start();
                s.decoder.g711.reset();
                s.playout.restart();
                if let Some(r) = &mut s.resampler {
                    r.reset();
                }
                self.push_event(Event::StreamStarted { source_id: source });
                i
            }
        };
        // A packet handed over before an overdue tick has run was there in time for that tick, whatever its stamp
        // says: on a loaded host the driver's receive thread and its ticks stall together, and the packets that came
        // meanwhile are stamped when the thread runs again, after the deadlines of the ticks that still play them.
        // Counted at their stamps they raised the on-time envelope (and its 5 s peak) by the stall, and the playout
        // stretched speech by as much to cover a delay no packet had, then removed it again: the harness's overload
        // collapse. Such a packet is stored without feeding the delay statistics (its stamp tells nothing about the
        // path).
        let pending = self.pacer.next_deadline()
            + if self.send_pending {
                FRAME_DURATION
            } else {
                Duration::ZERO
            };
        let stalled = now > pending + STALL_MIN_LATENESS;
        self.stats.late_stamped_packets += u64::from(stalled);
        let s = &mut self.streams[idx];
        // The source changed codec (a re-INVITE, a PT switch): restart its jitter buffer on the new clock.
        s.set_codec(codec);
        s.last_packet = now;
        let (seq, ts, level) = (rtp.sequence, rtp.timestamp, rtp.audio_level);
        let outcome = if stalled {
            s.jitter.insert_stalled(now, seq, ts, payload, level)
        } else {
            s.jitter.insert(now, seq, ts, payload, level)
        };
        if outcome == crate::jitter::InsertOutcome::Malformed {
            self.stats.packets_ignored += 1;
        }
        self.delivering = true;
    }

    /// Runs the tick that is due at `now`, if any (one per call; call again while [`MediaSession::poll_timeout`] has
    /// passed). Returns true if a tick ran. The same as [`MediaSession::handle_receive`] then
    /// [`MediaSession::handle_send`]: the bot's frame sent in this tick is the one it queued before the call.
    pub fn handle_tick(&mut self, now: Duration) -> bool {
        self.handle_receive(now);
        self.handle_send(now)
    }

    /// The receive half of the tick due at `now`, if any: every stream's frame is pulled from its jitter buffer,
    /// decoded and mixed, and the frame for the bot is in the inbound ring when this returns. A driver that runs bot
    /// logic itself (an in-worker bot) lets it answer now and then calls [`MediaSession::handle_send`], which sends
    /// the bot's reply within the same tick — 20 ms sooner than after [`MediaSession::handle_tick`]. Returns true if
    /// the receive half ran; false if no tick is due or its receive half already ran (call `handle_send`).
    pub fn handle_receive(&mut self, now: Duration) -> bool {
        if self.send_pending {
            return false;
        }
        let due = self.pacer.next_deadline();
        if now < due {
            return false;
        }
        let behind = ((now - due).as_micros() / FRAME_DURATION.as_micros()) as u64;
        if behind > MAX_CATCH_UP_TICKS {
            // The skipped ticks' audio is played out unheard (the last [`MAX_SKIPPED_PLAYOUT_TICKS`] of them): the
            // streams' playout points move on with the ticks, so after the stall the bot hears the far end at the
            // delay it had, with a gap as after a lost burst. Kept, that audio would play 100+ ms late and be
            // time-scaled back over seconds of speech (and an echo's reply, whose RTP timestamps skip the gap,
            // would be as much later at the far end until then).
            let skipped = behind.min(MAX_SKIPPED_PLAYOUT_TICKS);
            for k in behind - skipped..behind {
                let at = due + FRAME_DURATION * k as u32;
                for s in self.streams.iter_mut().filter(|s| s.source_id.is_some()) {
                    s.playout.set_overdue_ticks((behind - k) as u32);
                    self.stats.decode_errors += s.tick(self.spf, at);
                }
            }
            self.pacer.skip(behind);
            self.stats.skipped_ticks += behind;
        } else if behind >= 1 {
            self.stats.late_ticks += 1;
        }
        let deadline = self.pacer.next_deadline();
        self.stats.ticks += 1;
        // Ticks after this one that are already due (a catch-up): their frames are buffered, no surplus.
        let overdue =
            (now.saturating_sub(deadline).as_micros() / FRAME_DURATION.as_micros()) as u32;
        for s in &mut self.streams {
            s.playout.set_overdue_ticks(overdue);
        }
        self.receive_tick(deadline);
        self.local_loss_ticks -= 1;
        if self.local_loss_ticks == 0 {
            // Once a second: the inbound loss stands in for the far end's report until one comes.
            self.local_loss_ticks = crate::fec::LOCAL_LOSS_WINDOW_TICKS;
            let (mut lost, mut received) = (0, 0);
            for s in self.streams.iter().filter(|s| s.source_id.is_some()) {
                let j = s.jitter.stats();
                lost += j.lost;
                received += j.received;
            }
            if self.fec.observe_local_loss(lost, received) {
                self.apply_encoder();
            }
        }
        self.send_pending = true;
        true
    }

    /// The send half of the tick whose receive half ran ([`MediaSession::handle_receive`]): applies the bot's
    /// `clear`, encodes its next queued frame (or sends silence) as this tick's packet and reports marks; drain
    /// [`MediaSession::poll_output`] afterwards. If the receive half of the tick due at `now` has not run yet, it runs
    /// first (the whole tick, as [`MediaSession::handle_tick`]). Returns true if a tick's send half ran.
    pub fn handle_send(&mut self, now: Duration) -> bool {
        if !self.send_pending && !self.handle_receive(now) {
            return false;
        }
        self.send_pending = false;
        self.send_tick();
        true
    }

    fn receive_tick(&mut self, deadline: Duration) {
        let spf = self.spf;
        let mut n_produced = 0;
        for (i, s) in self.streams.iter_mut().enumerate() {
            let Some(id) = s.source_id else { continue };
            self.stats.decode_errors += s.tick(spf, deadline);
            if s.produced {
                self.tracker.observe(id, s.level);
                self.order[n_produced] = i;
                n_produced += 1;
            }
        }
        if let Some(change) = self.tracker.end_frame() {
            self.push_event(Event::DominantSpeakerChanged {
                previous: change.previous,
                current: change.current,
            });
        }
        if !self.delivering {
            return;
        }
        // Mix (saturating) every stream that produced audio.
        let acc = &mut self.acc[..spf];
        acc.fill(0);
        let mut audible = false;
        for &i in &self.order[..n_produced] {
            let s = &self.streams[i];
            accumulate(acc, &s.frame[..spf]);
            audible |= s.level > SILENCE_DBOV;
        }
        let f = &mut *self.to_bot;
        saturate(acc, f.mixed_mut());
        f.info = FrameInfo {
            timestamp: ticks_100ns(deadline),
            sequence: self.stats.frames_to_bot,
            is_silence: !audible,
        };
        f.set_active_speakers(self.tracker.active_speakers());
        f.clear_unmixed();
        let active_count = self
            .tracker
            .active_speakers()
            .len()
            .min(self.cfg.max_unmixed);
        for k in 0..active_count {
            let id = self.tracker.active_speakers()[k];
            if let Some(s) = self
                .streams
                .iter()
                .find(|s| s.source_id == Some(id) && s.produced)
                && let Some(buf) = f.push_unmixed(id)
            {
                buf.copy_from_slice(&s.frame[..spf]);
            }
        }
        self.inbound.push(f);
        self.stats.frames_to_bot += 1;
    }

    fn send_tick(&mut self) {
        let spf = self.spf;
        self.stats.frames_cleared += self.outbound.apply_clear();
        let have = self.outbound.pop(&mut self.bot_frame[..spf]);
        let frame: Option<&[i16]> = match (&mut self.out_resampler, have) {
            (_, false) => None,
            (None, true) => Some(&self.bot_frame[..spf]),
            (Some(r), true) => {
                if r.process(&self.bot_frame[..spf], &mut self.pcm48).is_err() {
                    self.pcm48.fill(0);
                }
                Some(&self.pcm48[..])
            }
        };
        let became_active = self.pacer.produce(frame).unwrap_or(false);
        self.tx_pending = true;
        self.dup_pending = true;
        if became_active {
            self.push_event(Event::SendStatusChanged(SendStatus::Active));
        }
        while let Some(m) = self.outbound.next_due_mark() {
            self.push_event(Event::Mark {
                name: m.name,
                cleared: m.cleared,
            });
        }
    }

    /// The next thing to do: the tick's packet, then the time-shifted duplicate of an earlier one (when duplicates
    /// are on; see [`crate::pacer`]), then events. With DTX on, a tick inside a pause has no packet. `None` when
    /// there is nothing.
    pub fn poll_output(&mut self) -> Option<Output<'_>> {
        if self.tx_pending {
            self.tx_pending = false;
            if self.pacer.sends() {
                return Some(Output::Transmit(self.pacer.packet()));
            }
        }
        if self.dup_pending {
            self.dup_pending = false;
            if let Some(p) = self.pacer.duplicate_packet() {
                return Some(Output::Transmit(p));
            }
        }
        self.events.pop_front().map(Output::Event)
    }
}
