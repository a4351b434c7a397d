//! The adaptive jitter buffer (one per inbound stream).
//!
//! ## Keying
//! Packets are keyed by their RTP timestamp on the stream's codec clock ([`JitterBuffer::set_codec`]; 48 kHz for
//! Opus, 8 kHz for G.711): frame index = (timestamp − first timestamp) / ticks per frame (960 or 160), unwrapped to
//! 64 bits. Sequence numbers (also unwrapped) classify gaps: a missing frame whose neighbours have
//! consecutive sequence numbers was never sent (the sender was in DTX), otherwise it was lost. Slots live in a
//! fixed array of [`JITTER_CAPACITY_FRAMES`]; a slot keeps its payload inline (no allocation).
//!
//! ## Playout
//! The buffer is pulled once per 20 ms tick ([`JitterBuffer::pop`]). Normally it hands out the packet at the
//! playout index and advances. Otherwise:
//! * **loss** (frame missing, later frames present): if the codec has in-band FEC (Opus) and the next frame is
//!   present, its FEC rebuilds the lost one ([`Playout::Fec`]), else the decoder conceals ([`Playout::Conceal`]); the
//!   index advances.
//! * **underrun** (nothing buffered): conceal *without* advancing (NetEQ's "expand"), so the late packet is still
//!   played when it arrives ([`JitterBuffer::holding`] tells the playout, which then conceals only the shortfall).
//!   If the next packet continues the sequence numbers but jumps in time, the gap was a DTX pause: the playout point
//!   moves on by the held ticks (no delay added) and they are counted as DTX. If a *later* frame arrives while the
//!   held one is still missing, the held frame is lost (or so late that playing it would move the timeline by a
//!   frame in the middle of speech): the concealment played stands in for it and the playout point moves on, so no
//!   frame of delay is added. After [`MAX_HOLD_FRAMES`] the stream is treated as paused and media time flows on
//!   ([`Playout::Silence`]).
//! * **DTX** (the last packet was a ≤ 2-byte Opus DTX packet): comfort noise, time flows; the first packet of the
//!   next talkspurt re-buffers up to the target delay.
//! * **too late** (index already played): dropped and counted.
//!
//! ## On-time envelope
//! What a packet needs is a playout point after its arrival, so the statistic the playout engine steers by is the
//! **largest** transit (arrival − RTP time) of the last [`TRANSIT_WINDOW`] packets, the on-time envelope
//! ([`JitterBuffer::envelope_us`]), and its peak held for [`ENVELOPE_HOLD_US`]. [`JitterBuffer::offset_us`] and
//! [`JitterBuffer::required_offset_us`] express the playout point and the point the envelope needs on the same scale
//! (tick time minus media time; the tick phase taken into account), so a player compares the two directly.
//! Packets a bursty sender sends early (ffmpeg `-re` sends each 128 ms chunk of its input at once: the first packet
//! on time, the others up to 108 ms early) have smaller transits and change nothing; a late packet (even one too
//! late to play) and a held frame that the driver handed over only after the tick that missed it raise the
//! envelope. With a **late allowance** of `n` packets ([`JitterConfig::late_allowance_packets`]; 0 by default) the
//! envelope is the `n+1`-th largest transit of the window instead: up to `n` packets per window that come later than
//! all the others (a sender that stalls for a moment, as a browser's audio thread does on a busy machine) are
//! concealed, like NetEQ's percentile target does, and the `n` latest arrivals do not hold every frame's delay up
//! for [`ENVELOPE_HOLD_US`]. Measured against the smallest transit instead, the on-time packets of such a sender
//! look 100+ ms late and the early ones like surplus to remove, and only one packet in seven is on time, so a 95th
//! percentile of all packets misses a third of the bursts. A packet a stalled driver hands over before the overdue
//! tick that plays it ([`JitterBuffer::insert_stalled`]) is stored without feeding these statistics: its stamp is
//! when the driver ran again, not when the path delivered it.
//!
//! ## Adaptive target delay (the buffer alone)
//! The target level below drives [`JitterBuffer::pop`]'s start-up (the level a stream buffers before it plays),
//! the reported `target_delay_ms` and the whole-frame steering for drivers without the playout engine.
//! For every packet the transit time (arrival − RTP time) is compared with the smallest transit of the last
//! [`TRANSIT_WINDOW`] packets; the difference (relative delay, covering jitter and reordering) is what the packet
//! needs beyond the minimum level. When the driver tells the tick times ([`JitterBuffer::pop_at`], as the session
//! does), the *slack* is taken off first: a packet with the smallest transit arrives some time before the tick that
//! plays it at the minimum level, and delay variation within that slack (less a [`SLACK_MARGIN_US`] safety margin
//! for drifting clocks) costs no frame — on a clean path with a few ms of jitter the target stays at 1 frame unless
//! packets arrive just before the tick. (With [`JitterBuffer::pop`] the worst phase is assumed.) The extra delay
//! lands in a histogram of 20 ms bins with exponential forgetting (factor [`FORGET_FACTOR`] per packet ≈ 4 s memory);
//! at the start the initial target counts as [`INITIAL_TARGET_WEIGHT_PACKETS`] observation(s) and the first packets
//! are averaged with it, so the statistics take over within about 20 packets rather than after the ≈ 600 packets
//! forgetting alone needs. The target level is one frame plus the bin holding the 95th percentile, clamped to
//! `[min, max]`. It starts at `initial_delay_frames` (default 2), which stays a floor for the first
//! [`START_HOLD_PACKETS`] (3 s): the first packets' statistics raise the target at once, but lower it only once there
//! are enough of them to trust the path. Every change of the level moves the audio by a frame, so a call's first
//! seconds (greetings; short end-to-end test clips) are not spent adapting back and forth on a handful of packets;
//! on a clean path the buffer is at its 1-frame minimum about 3.3 s into the stream.
//! After an underrun the target keeps a floor one frame above its value for [`TARGET_HOLD_FRAMES`] (5 s), and a rise
//! of the target is held as long (peak hold): a sporadic late packet costs one concealed frame, not that plus a
//! dropped frame soon after; a burst of late packets cannot starve the buffer again and again while the histogram
//! catches up; and a target that a few packets push up and down (early in a stream, when the statistics rest on few
//! packets) does not make the buffer stretch and accelerate in turn.
//!
//! [`MediaSession`](crate::MediaSession) steers the level to the target with [`crate::playout::PlayoutEngine`]
//! (time-scale modification of decoded audio by pitch periods: no whole frame dropped or inserted in speech). The
//! buffer's own whole-frame steering below remains for drivers that use it alone: the buffer level (frames from the
//! playout index to the newest packet) is smoothed each tick and steered to the target:
//! * **accelerate**: when a spare frame is there (the level a frame above target now and, smoothed, at least
//!   three quarters of a frame above) and the frame just decoded is quiet (below -40 dBov or 8 dB below the stream's
//!   recent average), that frame is dropped and the next one played instead. A signal that is never quiet (music,
//!   steady noise, a sustained vowel) gets [`SURPLUS_WINDOW_FRAMES`] ticks to offer a quiet frame; then the least
//!   energetic frame (within [`LEAST_ENERGETIC_MARGIN_DB`] of the quietest since the spare frame appeared) is
//!   dropped, after twice the window the next one ([`JitterBuffer::accelerate_with_level`]; the session cross-fades
//!   the next frame over the dropped frame's first 5 ms). Three frames above target a frame is dropped whatever its
//!   level;
//! * **stretch**: when the level is below target, the smoothed level more than half a frame below, and the last
//!   output was quiet, a concealment frame is inserted.
//!
//! The gap between the two thresholds keeps them from taking turns under jitter. Both happen at quiet points (or the
//! least energetic one), so clock drift (±500 ppm: one frame every 40 s) is absorbed inaudibly and the buffer neither
//! grows without bound nor starves.
//!
//! ## Statistics
//! [`JitterStats`] mirrors WebRTC NetEQ: current and target delay, packets received, concealed, FEC-recovered, late,
//! lost, duplicate, reordered, accelerated and stretched frames, underruns, DTX frames, resyncs, malformed packets
//! and the packets' average wait; the playout engine adds its figures (playout delay, accelerated / decelerated /
//! concealed / comfort-noise ms, merges).

use std::time::Duration;

use crate::codec::{Codec, MAX_PAYLOAD};
use crate::error::{Error, Result};

/// Frames the jitter buffer can hold (1.28 s).
pub const JITTER_CAPACITY_FRAMES: usize = 64;
/// Packets whose transit times form the baseline for the relative delay (≈ 2.5 s).
pub const TRANSIT_WINDOW: usize = 128;
/// Histogram bins (20 ms each).
pub const HISTOGRAM_BINS: usize = 32;
/// Per-packet forgetting factor of the delay histogram.
pub const FORGET_FACTOR: f32 = 0.995;
/// Ticks of underrun concealment before the stream is treated as paused.
pub const MAX_HOLD_FRAMES: u32 = 10;
/// Opus packets of at most this many bytes are DTX/comfort-noise packets.
pub const DTX_PACKET_MAX_LEN: usize = 2;
/// Weight of the initial target in the delay histogram, in packets: the first packets are averaged with it as if it
/// had been observed this many times (then forgetting takes over), so on a clean path the target reaches its minimum
/// after about 20 × this many packets (≈ 1.6 s) instead of the ≈ 12 s exponential forgetting alone would take.
pub const INITIAL_TARGET_WEIGHT_PACKETS: u32 = 1;
/// Safety margin on the arrival-to-tick slack (µs): a packet counts as needing an extra frame if it arrives less
/// than this before its tick, so the target rises before a drifting clock makes packets late.
pub const SLACK_MARGIN_US: i64 = 3_000;
/// After an underrun the target stays at least a frame above its value then for this many ticks (5 s), and after the
/// target rose it stays at the new value as long: a sporadic late packet costs one concealed frame rather than a
/// concealed frame now and a dropped frame soon after, a burst of them does not starve the buffer again and again,
/// and a target that a few packets push up and down does not make the buffer stretch and accelerate in turn.
pub const TARGET_HOLD_FRAMES: u32 = 250;
/// A stream's initial target is a floor for its first this many packets (3 s): the target rises at once if
/// the first packets show jitter, but comes down below the initial target only after enough packets to trust the
/// path. (Every step changes the timeline by a frame; a quiet path gets its minimum delay after 3 s.)
pub const START_HOLD_PACKETS: u32 = 150;
/// How long the envelope's peak (the largest transit of the window) is held after it was set (5 s): the playout
/// removes delay only when the latest arrivals have stayed earlier for that long, so a path whose envelope wobbles
/// around a tick boundary does not make the playout accelerate and expand in turn.
pub const ENVELOPE_HOLD_US: i64 = 5_000_000;
/// Largest [`JitterConfig::late_allowance_packets`]: an eighth of the window.
pub const MAX_LATE_ALLOWANCE: usize = TRANSIT_WINDOW / 8;
/// Duration of one frame on the media clock (µs); every codec here sends 20 ms frames.
const FRAME_US: i64 = 20_000;
/// Ticks a spare frame may wait for a quiet frame before the least energetic frame is dropped instead (1 s).
pub const SURPLUS_WINDOW_FRAMES: u32 = 25;
/// A frame within this many dB of the quietest frame of the last [`SURPLUS_WINDOW_FRAMES`] counts as least energetic.
pub const LEAST_ENERGETIC_MARGIN_DB: f32 = 1.0;

/// Jitter buffer settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JitterConfig {
    /// Smallest target level in frames (default 1: the packet that arrived during the last 20 ms).
    pub min_delay_frames: u16,
    /// Largest target level in frames (default 25 = 500 ms).
    pub max_delay_frames: u16,
    /// Target at the start (default 2); the first packets' statistics raise it at once if the path needs more, and
    /// lower it after [`START_HOLD_PACKETS`] if the path needs less.
    pub initial_delay_frames: u16,
    /// Fraction of packets that should arrive in time (default 0.95).
    pub quantile: f32,
    /// Packets of the last [`TRANSIT_WINDOW`] the on-time envelope leaves out (default 0: the playout waits for every
    /// packet; at most [`MAX_LATE_ALLOWANCE`]). With `n`, the envelope is the `n+1`-th largest transit of the
    /// window: a packet that arrives later than all but `n - 1` others of the window is concealed (and its audio
    /// merged in if it still comes in time for a shortfall), rather than raising every frame's delay.
    pub late_allowance_packets: u8,
}

impl Default for JitterConfig {
    fn default() -> Self {
        Self {
            min_delay_frames: 1,
            max_delay_frames: 25,
            initial_delay_frames: 2,
            quantile: 0.95,
            late_allowance_packets: 0,
        }
    }
}

impl JitterConfig {
    fn validate(&self) -> Result<()> {
        if self.min_delay_frames == 0 {
            return Err(Error::Config {
                field: "jitter min_delay_frames",
                problem: "must be at least 1",
            });
        }
        if self.max_delay_frames < self.min_delay_frames
            || usize::from(self.max_delay_frames) > JITTER_CAPACITY_FRAMES / 2
        {
            return Err(Error::Config {
                field: "jitter max_delay_frames",
                problem: "must be >= min_delay_frames and <= JITTER_CAPACITY_FRAMES / 2",
            });
        }
        if usize::from(self.late_allowance_packets) > MAX_LATE_ALLOWANCE {
            return Err(Error::Config {
                field: "jitter late_allowance_packets",
                problem: "must be at most MAX_LATE_ALLOWANCE (16)",
            });
        }
        if !(0.5..1.0).contains(&self.quantile) {
            return Err(Error::Config {
                field: "jitter quantile",
                problem: "must be in [0.5, 1.0)",
            });
        }
        Ok(())
    }
}

/// NetEQ-style statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct JitterStats {
    /// Buffer level at the last tick, in ms.
    pub current_delay_ms: u32,
    /// Target level, in ms.
    pub target_delay_ms: u32,
    /// Packets accepted.
    pub received: u64,
    /// Frames produced by concealment (loss without FEC, underruns, stretching).
    pub concealed: u64,
    /// Lost frames rebuilt from the next packet's in-band FEC.
    pub fec_recovered: u64,
    /// Packets that arrived after their playout time (dropped).
    pub late: u64,
    /// Duplicate packets (dropped).
    pub duplicate: u64,
    /// Packets that arrived after a packet with a higher sequence number.
    pub reordered: u64,
    /// Frames dropped at quiet points to reduce delay.
    pub accelerated: u64,
    /// Concealment frames inserted at quiet points to build delay.
    pub stretched: u64,
    /// Ticks with nothing to play while the stream was active: counted (with `concealed`) once the packet that ends
    /// the wait shows it was lateness, not the sender's DTX pause, so the counter never goes down.
    pub underruns: u64,
    /// Comfort-noise frames during the sender's DTX or a pause.
    pub dtx: u64,
    /// Restarts after a timestamp jump beyond the buffer.
    pub resyncs: u64,
    /// Packets rejected as empty or oversized.
    pub malformed: u64,
    /// Frames lost in the network (missing while later ones arrived, and not a DTX gap): FEC-recovered or concealed.
    /// A frame given up this way whose packet still comes afterwards is also counted in `late`; one whose packet came
    /// only together with its successor's (given up on arrival) counts in `late` alone.
    pub lost: u64,
    /// Playout delay at the last tick, in ms: the packets buffered plus the decoded audio waiting in the playout sync
    /// buffer (0 when the jitter buffer is used without [`crate::playout::PlayoutEngine`]).
    pub playout_delay_ms: u32,
    /// Audio removed by time-scale compression (accelerate and merge alignment), in ms.
    pub accelerated_ms: u64,
    /// Audio inserted by time-scale expansion (preemptive expand), in ms.
    pub decelerated_ms: u64,
    /// Seams smoothed from concealment into decoded audio.
    pub merges: u64,
    /// Audio synthesised by packet-loss concealment (loss and underruns), in ms.
    pub concealed_ms: u64,
    /// Comfort noise (or silence) played during DTX gaps, pauses and re-buffering, in ms.
    pub comfort_noise_ms: u64,
    /// Playout delay above the on-time envelope at the last tick, in ms: how long after the *latest* arrivals (the
    /// largest transit of the last ≈ 2.5 s, which the playout covers) the audio is played — the delay the buffer
    /// adds to the network's, comparable with a fixed jitter buffer's latency setting. Packets that arrive earlier
    /// (a sender that sends in bursts) wait longer, but that is not delay: see `packet_wait_ms`. 0 without
    /// [`crate::playout::PlayoutEngine`].
    pub envelope_delay_ms: u32,
    /// How long packets waited in the buffer between arrival and decoding, in ms (moving average over about 1 s of
    /// packets; like WebRTC's jitterBufferDelay per emitted frame). Packets in pairs every 40 ms wait about 10 ms on
    /// average plus the tick phase, though the target says 2 frames.
    pub packet_wait_ms: u32,
}

/// What the decoder should do for this tick.
#[derive(Debug, PartialEq, Eq)]
pub enum Playout<'a> {
    /// Nothing to play: the stream has not started.
    Idle,
    /// Decode this packet.
    Packet {
        /// The Opus payload.
        payload: &'a [u8],
        /// The RFC 6464 audio level (-dBov, 0..=127) sent with it, if any.
        audio_level: Option<u8>,
    },
    /// The frame was lost: rebuild it from the in-band FEC of the following packet.
    Fec {
        /// The following packet's payload.
        next_payload: &'a [u8],
    },
    /// Conceal (packet-loss concealment).
    Conceal,
    /// The sender is silent (DTX or paused): produce comfort silence.
    Silence,
}

/// Outcome of [`JitterBuffer::insert`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertOutcome {
    /// Stored for playout.
    Accepted,
    /// Already buffered or played.
    Duplicate,
    /// Its playout time has passed.
    Late,
    /// Empty or larger than [`MAX_PAYLOAD`].
    Malformed,
}

#[derive(Clone)]
struct Slot {
    used: bool,
    played: bool,
    index: i64,
    seq: i64,
    level: Option<u8>,
    /// Arrival time (µs, the driver's clock).
    arrived_us: i64,
    len: u16,
    data: [u8; MAX_PAYLOAD],
}

impl Slot {
    const EMPTY: Slot = Slot {
        used: false,
        played: false,
        index: i64::MIN,
        seq: 0,
        level: None,
        arrived_us: 0,
        len: 0,
        data: [0; MAX_PAYLOAD],
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No packet yet.
    Idle,
    /// Waiting for the level to reach the target before (re)starting; `resumed` = played before.
    Buffering {
        resumed: bool,
    },
    Playing,
}

/// The jitter buffer. See the module docs for the algorithm.
pub struct JitterBuffer {
    cfg: JitterConfig,
    slots: Box<[Slot]>,
    state: State,
    first_ts: i64,
    last_ts_raw: u32,
    last_ts_ext: i64,
    last_seq_raw: u16,
    highest_seq: i64,
    highest_index: i64,
    playout: i64,
    last_played_seq: Option<i64>,
    in_dtx: bool,
    /// Ticks of the current hold (an underrun concealed while the frame is awaited). They are not yet in
    /// `stats.underruns` / `stats.concealed`: a hold is counted when it ends ([`JitterBuffer::end_hold`]), once it is
    /// known to be lateness or a pause (DTX), so those counters (monotonic in `/metrics`) never go down.
    hold: u32,
    transit: [i64; TRANSIT_WINDOW],
    transit_len: usize,
    transit_pos: usize,
    /// The on-time envelope: the largest transit of the window (µs), and its peak hold (value, held until).
    envelope_us: i64,
    peak_us: i64,
    peak_until_us: i64,
    hist: [f32; HISTOGRAM_BINS],
    target: u16,
    filtered_level: f32,
    level: i64,
    last_low_energy: bool,
    /// Packets seen since the start (for the start-up averaging of the histogram).
    packets_seen: u32,
    /// The last tick's time, if the driver tells it ([`JitterBuffer::pop_at`]).
    tick_at: Option<Duration>,
    /// The target's floor after an underrun, and the ticks it still applies.
    floor: u16,
    floor_ticks: u32,
    /// Consecutive ticks with a spare frame.
    surplus_ticks: u32,
    /// The quietest decoded frame (dBov) during those ticks.
    surplus_min_db: f32,
    /// Moving average of packets' wait (µs; negative until the first).
    wait_us: f32,
    /// The stream's codec: its RTP clock keys the slots, its DTX packets and FEC classify gaps.
    codec: Codec,
    /// The codec changed while the stream played: the next packet resumes it rather than starting it.
    resume_after_switch: bool,
    /// The packet being inserted was handed over by a stalled driver ([`JitterBuffer::insert_stalled`]).
    stalled: bool,
    /// Of `stats.lost`, frames given up while an underrun was held for them (a later frame came first).
    given_up: u64,
    stats: JitterStats,
}

impl std::fmt::Debug for JitterBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JitterBuffer")
            .field("state", &self.state)
            .field("playout", &self.playout)
            .field("target", &self.target)
            .field("stats", &self.stats)
            .finish()
    }
}

impl JitterBuffer {
    /// Creates an empty buffer; all memory is allocated here.
    pub fn new(cfg: JitterConfig) -> Result<Self> {
        cfg.validate()?;
        let initial = cfg
            .initial_delay_frames
            .clamp(cfg.min_delay_frames, cfg.max_delay_frames);
        let mut hist = [0.0; HISTOGRAM_BINS];
        hist[usize::from(initial - 1).min(HISTOGRAM_BINS - 1)] = 1.0;
        Ok(Self {
            cfg,
            slots: vec![Slot::EMPTY; JITTER_CAPACITY_FRAMES].into_boxed_slice(),
            state: State::Idle,
            first_ts: 0,
            last_ts_raw: 0,
            last_ts_ext: 0,
            last_seq_raw: 0,
            highest_seq: 0,
            highest_index: 0,
            playout: 0,
            last_played_seq: None,
            in_dtx: false,
            hold: 0,
            transit: [0; TRANSIT_WINDOW],
            transit_len: 0,
            transit_pos: 0,
            envelope_us: 0,
            peak_us: 0,
            peak_until_us: 0,
            hist,
            target: initial,
            filtered_level: f32::from(initial),
            level: 0,
            last_low_energy: false,
            packets_seen: 0,
            tick_at: None,
            floor: 0,
            floor_ticks: 0,
            surplus_ticks: 0,
            surplus_min_db: f32::INFINITY,
            wait_us: -1.0,
            given_up: 0,
            codec: Codec::Opus,
            resume_after_switch: false,
            stalled: false,
            stats: JitterStats {
                target_delay_ms: u32::from(initial) * 20,
                ..JitterStats::default()
            },
        })
    }

    /// Changes [`JitterConfig::late_allowance_packets`] from the next packet on (e.g. when a session's edge changes
    /// to one whose peer stalls now and then). Fails above [`MAX_LATE_ALLOWANCE`].
    pub fn set_late_allowance(&mut self, packets: u8) -> Result<()> {
        let cfg = JitterConfig {
            late_allowance_packets: packets,
            ..self.cfg
        };
        cfg.validate()?;
        self.cfg = cfg;
        Ok(())
    }

    /// Of the frames counted lost, those given up while an underrun was held for them: a later frame arrived
    /// first, so the awaited one is lost or later than its successor (with a late allowance, usually the latter).
    pub fn given_up(&self) -> u64 {
        self.given_up
    }

    /// [`JitterConfig::late_allowance_packets`] in force.
    pub fn late_allowance(&self) -> u8 {
        self.cfg.late_allowance_packets
    }

    /// The codec whose packets the buffer holds (default Opus).
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Sets the stream's codec: its RTP clock (960 ticks per frame for Opus, 160 for G.711), whether ≤ 2-byte packets
    /// are DTX, whether lost frames are rebuilt from the next packet's FEC. A change while packets are buffered
    /// discards them (their timestamps are on the old codec's clock, their payloads in its format) and counts a
    /// resync; the next packet starts the stream again.
    pub fn set_codec(&mut self, codec: Codec) {
        if codec == self.codec {
            return;
        }
        self.codec = codec;
        if self.state != State::Idle {
            self.stats.resyncs += 1;
            let playing = self.is_active();
            self.reset();
            self.resume_after_switch = playing;
        }
    }

    /// Forgets all packets and statistics' history (stream restart); counters are kept.
    pub fn reset(&mut self) {
        for s in self.slots.iter_mut() {
            s.used = false;
            s.played = false;
            s.index = i64::MIN;
        }
        self.state = State::Idle;
        self.transit_len = 0;
        self.transit_pos = 0;
        self.last_played_seq = None;
        self.in_dtx = false;
        self.end_hold(0);
        self.surplus_ticks = 0;
        self.surplus_min_db = f32::INFINITY;
        self.floor_ticks = 0;
    }

    /// Forgets everything including the counters (the stream is reused for another source).
    pub fn restart(&mut self) {
        self.reset();
        self.resume_after_switch = false;
        let initial = self
            .cfg
            .initial_delay_frames
            .clamp(self.cfg.min_delay_frames, self.cfg.max_delay_frames);
        self.hist = [0.0; HISTOGRAM_BINS];
        self.hist[usize::from(initial - 1).min(HISTOGRAM_BINS - 1)] = 1.0;
        self.target = initial;
        self.filtered_level = f32::from(initial);
        self.packets_seen = 0;
        self.tick_at = None;
        self.surplus_ticks = 0;
        self.surplus_min_db = f32::INFINITY;
        self.wait_us = -1.0;
        self.stats = JitterStats {
            target_delay_ms: u32::from(initial) * 20,
            ..JitterStats::default()
        };
    }

    /// Statistics so far.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// Keeps the target at least at `floor` for the next `ticks` ticks (or longer, if a floor already applies).
    fn raise_floor(&mut self, floor: u16, ticks: u32) {
        self.floor = if self.floor_ticks > 0 {
            self.floor.max(floor)
        } else {
            floor
        };
        self.floor_ticks = self.floor_ticks.max(ticks);
    }

    fn clear_floor(&mut self) {
        self.floor_ticks = 0;
        self.stats.target_delay_ms = u32::from(self.target) * 20;
    }

    /// Current target level in frames (including the floor after an underrun).
    pub fn target_frames(&self) -> u16 {
        let mut target = self.target;
        if self.floor_ticks > 0 {
            target = target.max(self.floor);
        }
        if self.packets_seen < START_HOLD_PACKETS {
            // The first packets' statistics may raise the target at once but lower it only later.
            target = target.max(
                self.cfg
                    .initial_delay_frames
                    .clamp(self.cfg.min_delay_frames, self.cfg.max_delay_frames),
            );
        }
        target
    }

    /// Frames between the playout point and the newest packet.
    pub fn level_frames(&self) -> i64 {
        if self.state == State::Idle {
            0
        } else {
            (self.highest_index - self.playout + 1).max(0)
        }
    }

    /// True if the last [`JitterBuffer::pop`] concealed an underrun without advancing (the frame is still awaited).
    pub fn holding(&self) -> bool {
        self.hold > 0
    }

    /// True if the packet at the playout point is here, so a [`JitterBuffer::pop`] now would hand it out.
    pub fn next_ready(&self) -> bool {
        self.state == State::Playing && self.slot(self.playout).is_some()
    }

    /// True once the stream has played (and is not idle).
    pub fn is_active(&self) -> bool {
        matches!(
            self.state,
            State::Playing | State::Buffering { resumed: true }
        )
    }

    fn slot(&self, index: i64) -> Option<&Slot> {
        let s = &self.slots[index.rem_euclid(JITTER_CAPACITY_FRAMES as i64) as usize];
        (s.used && s.index == index).then_some(s)
    }

    fn slot_mut(&mut self, index: i64) -> &mut Slot {
        &mut self.slots[index.rem_euclid(JITTER_CAPACITY_FRAMES as i64) as usize]
    }

    /// Records a packet's transit in the window and updates the on-time envelope; returns (transit, window minimum).
    fn observe_transit(&mut self, now_us: i64, ext_ts: i64) -> (i64, i64) {
        let media_us = (ext_ts - self.first_ts) * 1_000_000 / i64::from(self.codec.rtp_clock_hz());
        let transit = now_us - media_us;
        self.transit[self.transit_pos] = transit;
        self.transit_pos = (self.transit_pos + 1) % TRANSIT_WINDOW;
        self.transit_len = (self.transit_len + 1).min(TRANSIT_WINDOW);
        let window = &self.transit[..self.transit_len];
        let (min, max) = window
            .iter()
            .fold((transit, transit), |(lo, hi), &t| (lo.min(t), hi.max(t)));
        // The envelope of the latest arrivals: what a packet needs is a playout point after its arrival, so the
        // latest transit (not the earliest) is the one to cover. Early packets (a sender that reads its input in
        // chunks sends most packets of a chunk early) only make the buffer fuller. A late allowance leaves out the
        // `n` latest arrivals, once the window holds enough packets for them to be the exception.
        let skip = usize::from(self.cfg.late_allowance_packets);
        let max = if skip > 0 && window.len() > 8 * skip {
            let mut sorted = [0i64; TRANSIT_WINDOW];
            let sorted = &mut sorted[..window.len()];
            sorted.copy_from_slice(window);
            let k = sorted.len() - 1 - skip;
            *sorted.select_nth_unstable(k).1
        } else {
            max
        };
        self.envelope_us = max;
        if self.transit_len == 1 || max >= self.peak_us || now_us >= self.peak_until_us {
            self.peak_us = max;
            self.peak_until_us = now_us + ENVELOPE_HOLD_US;
        }
        (transit, min)
    }

    /// The arrival time a packet counts with: the frame a held underrun awaits was needed at the last tick, so it
    /// counts as arriving after that tick even if its arrival time says otherwise (the driver handed it over late,
    /// e.g. its receive thread was descheduled): the envelope then covers delivery stalls, too.
    fn effective_arrival_us(&self, now: Duration, index: i64) -> i64 {
        let now_us = i64::try_from(now.as_micros()).unwrap_or(i64::MAX / 2);
        match self.tick_at {
            Some(tick) if self.hold > 0 && index == self.playout => {
                now_us.max(i64::try_from(tick.as_micros()).unwrap_or(i64::MAX / 2) + 1_000)
            }
            _ => now_us,
        }
    }

    fn update_delay_estimate(&mut self, now_us: i64, ext_ts: i64) {
        let (transit, min) = self.observe_transit(now_us, ext_ts);
        let rel = (transit - min).max(0);
        // Slack: how long a packet with the smallest transit waits for the tick that plays it at the minimum level
        // (the first tick at or after its arrival). Delay up to the slack costs no extra frame. Without tick times
        // (`pop` instead of `pop_at`) assume none, i.e. the worst phase.
        let slack = self.tick_at.map_or(0, |tick| {
            let tick_us = i64::try_from(tick.as_micros()).unwrap_or(i64::MAX / 2);
            (tick_us - (now_us - rel)).rem_euclid(20_000)
        });
        let extra = (rel - slack + i64::from(self.tick_at.is_some()) * SLACK_MARGIN_US).max(0);
        let bin = ((extra + 19_999) / 20_000).min(HISTOGRAM_BINS as i64 - 1) as usize;
        // Start-up: average the first packets with the initial target (weighted as INITIAL_TARGET_WEIGHT_PACKETS
        // observations) rather than forgetting it packet by packet over seconds; exponential forgetting thereafter.
        self.packets_seen = self.packets_seen.saturating_add(1);
        let seen = (self.packets_seen + INITIAL_TARGET_WEIGHT_PACKETS) as f32;
        let forget = ((seen - 1.0) / seen).min(FORGET_FACTOR);
        for h in self.hist.iter_mut() {
            *h *= forget;
        }
        self.hist[bin] += 1.0 - forget;
        let total: f32 = self.hist.iter().sum();
        let goal = self.cfg.quantile * total;
        let mut acc = 0.0;
        let mut k = HISTOGRAM_BINS - 1;
        for (i, h) in self.hist.iter().enumerate() {
            acc += h;
            if acc >= goal {
                k = i;
                break;
            }
        }
        let target = (k as u16 + 1).clamp(self.cfg.min_delay_frames, self.cfg.max_delay_frames);
        if target > self.target_frames() {
            // Hold a rise (peak hold): the target comes down only after it has stayed lower for a while.
            self.raise_floor(target, TARGET_HOLD_FRAMES);
        }
        self.target = target;
        self.stats.target_delay_ms = u32::from(self.target_frames()) * 20;
    }

    /// How late the tick due at `now` plays the playout point, relative to the media clock (µs): `now` minus the media
    /// time of the next frame to hand out, on the same scale as the packets' transit (arrival minus media time). A
    /// player adds the audio it holds decoded. `None` before the stream plays.
    pub fn offset_us(&self, now: Duration) -> Option<i64> {
        if self.state == State::Idle || self.transit_len == 0 {
            return None;
        }
        let now_us = i64::try_from(now.as_micros()).unwrap_or(i64::MAX / 2);
        Some(now_us - self.playout * FRAME_US)
    }

    /// The smallest playout offset (see [`JitterBuffer::offset_us`], measured before the tick pulls its frame) at
    /// which every packet on the on-time envelope is there when its tick needs it. With `held` the envelope's peak
    /// hold is used (the offset to come down to), otherwise the current envelope (the offset to stay above); `extra`
    /// adds margin (µs). `None` before the first packet.
    ///
    /// A player pulls frame `k` at the first tick after `media(k) + offset − 20 ms`, so a packet whose transit is at
    /// most `E` (the envelope plus [`SLACK_MARGIN_US`]) is in time when no tick falls between `media(k) + offset −
    /// 20 ms` and `media(k) + E`: the offset needed is 20 ms after the last tick phase before `E`. Every offset from
    /// there to 20 ms more pulls at the same ticks; anything above it is delay without use.
    pub fn required_offset_us(&self, held: bool, extra_us: i64) -> Option<i64> {
        if self.transit_len == 0 {
            return None;
        }
        let e = if held {
            self.peak_us.max(self.envelope_us)
        } else {
            self.envelope_us
        } + SLACK_MARGIN_US
            + extra_us;
        let Some(tick) = self.tick_at else {
            // Tick phase unknown: assume the worst.
            return Some(e + FRAME_US);
        };
        let phase = i64::try_from(tick.as_micros())
            .unwrap_or(i64::MAX / 2)
            .rem_euclid(FRAME_US);
        let last_tick_before = e - 1 - (e - 1 - phase).rem_euclid(FRAME_US);
        Some(last_tick_before + FRAME_US)
    }

    /// How long after the latest arrivals (the held on-time envelope plus [`SLACK_MARGIN_US`]) the tick that plays
    /// them comes, µs (0..20 ms): time every frame waits for nothing, which no playout action removes (they move the
    /// timeline, not the ticks) but moving the ticks earlier does. `None` before the first packet or without tick
    /// times ([`JitterBuffer::pop_at`]).
    pub fn tick_slack_us(&self) -> Option<i64> {
        if self.transit_len == 0 {
            return None;
        }
        let tick = i64::try_from(self.tick_at?.as_micros()).unwrap_or(i64::MAX / 2);
        let e = self.peak_us.max(self.envelope_us) + SLACK_MARGIN_US;
        Some((tick - e).rem_euclid(FRAME_US))
    }

    /// The on-time envelope: the largest transit (arrival minus media time, µs) of the last [`TRANSIT_WINDOW`]
    /// packets; `None` before the first.
    pub fn envelope_us(&self) -> Option<i64> {
        (self.transit_len > 0).then_some(self.envelope_us)
    }

    /// True while the stream's first [`START_HOLD_PACKETS`] packets are in (the statistics rest on few packets).
    pub fn starting(&self) -> bool {
        self.packets_seen < START_HOLD_PACKETS
    }

    /// The configured initial target above the minimum, in µs (the margin a stream starts with).
    pub fn initial_margin_us(&self) -> i64 {
        let initial = self
            .cfg
            .initial_delay_frames
            .clamp(self.cfg.min_delay_frames, self.cfg.max_delay_frames);
        i64::from(initial - self.cfg.min_delay_frames) * FRAME_US
    }

    /// Like [`JitterBuffer::insert`] for a packet the driver handed over while it was stalled: stamped (at `now`)
    /// after the deadline of a tick that had not run yet, so in time for that tick whatever the stamp says. Its
    /// stamp tells nothing about the path, so it does not feed the delay statistics (envelope, target) — unless it
    /// is the frame a held underrun awaits (it really missed a tick) or it is too late to play.
    pub fn insert_stalled(
        &mut self,
        now: Duration,
        seq: u16,
        timestamp: u32,
        payload: &[u8],
        audio_level: Option<u8>,
    ) -> InsertOutcome {
        self.stalled = true;
        let r = self.insert(now, seq, timestamp, payload, audio_level);
        self.stalled = false;
        r
    }

    /// Stores a packet that arrived at `now` (session-relative). Untrusted input: never panics.
    pub fn insert(
        &mut self,
        now: Duration,
        seq: u16,
        timestamp: u32,
        payload: &[u8],
        audio_level: Option<u8>,
    ) -> InsertOutcome {
        if payload.is_empty() || payload.len() > MAX_PAYLOAD {
            self.stats.malformed += 1;
            return InsertOutcome::Malformed;
        }
        let fresh = self.state == State::Idle;
        let (ext_ts, ext_seq) = if fresh {
            (i64::from(timestamp) + (1 << 32), i64::from(seq) + (1 << 16))
        } else {
            let ts = self.last_ts_ext + i64::from(timestamp.wrapping_sub(self.last_ts_raw) as i32);
            let sq = self.highest_seq + i64::from(seq.wrapping_sub(self.last_seq_raw) as i16);
            (ts, sq)
        };
        if fresh {
            self.first_ts = ext_ts;
        }
        let rel = ext_ts - self.first_ts;
        let ticks = i64::from(self.codec.rtp_ticks_per_frame());
        let index = (rel + ticks / 2).div_euclid(ticks);
        if !fresh {
            // A jump beyond the buffer (sender restart, long outage): start again from this packet.
            let behind = self.playout - index;
            let ahead = index - self.playout;
            if ahead >= JITTER_CAPACITY_FRAMES as i64
                || behind >= (JITTER_CAPACITY_FRAMES * 4) as i64
            {
                self.stats.resyncs += 1;
                self.reset();
                return self.insert(now, seq, timestamp, payload, audio_level);
            }
        }
        if let Some(s) = self.slot(index) {
            let _ = s;
            self.stats.duplicate += 1;
            return InsertOutcome::Duplicate;
        }
        if !fresh && index < self.playout {
            if self.in_dtx || matches!(self.state, State::Buffering { .. }) {
                // First packet of a new talkspurt that is "late" against the comfort-noise timeline: re-buffer at it.
                self.playout = index;
                self.state = State::Buffering { resumed: true };
                self.in_dtx = false;
            } else {
                // Too late to play, but what the envelope must cover from now on.
                let at = self.effective_arrival_us(now, index);
                self.observe_transit(at, ext_ts);
                self.stats.late += 1;
                return InsertOutcome::Late;
            }
        }
        if !fresh && ext_seq < self.highest_seq {
            self.stats.reordered += 1;
        }
        if self.state == State::Playing
            && self.hold > 0
            && self.last_played_seq == Some(ext_seq - 1)
            && index > self.playout
        {
            // The underrun we were concealing was a DTX pause (the sender skipped those frames on purpose: the
            // sequence number continues). The held ticks stood in for its silence: move the playout point on so the
            // pause does not add delay, and count them as DTX.
            let held = i64::from(self.hold).min(index - self.playout);
            self.playout += held;
            self.end_hold(held as u32);
            // Nothing was late: no floor.
            self.clear_floor();
        } else if self.state == State::Playing && self.hold > 0 && index > self.playout {
            // A later frame arrived while the held one was awaited: playing the held one now would move the timeline
            // by a frame in the middle of speech. The concealment already played stands in for it; the playout point
            // moves on so no frame of delay is added. A held frame still missing is lost; one that came just before
            // its successor (a sender or host stall delivers a run of packets at once) was late, not lost.
            let held = i64::from(self.hold).min(index - self.playout);
            for i in self.playout..self.playout + held {
                if self.slot(i).is_some() {
                    self.slot_mut(i).used = false;
                    self.stats.late += 1;
                } else {
                    self.stats.lost += 1;
                    self.given_up += 1;
                }
            }
            self.playout += held;
            self.end_hold(0);
        }
        if fresh || ext_ts > self.last_ts_ext {
            self.last_ts_ext = ext_ts;
            self.last_ts_raw = timestamp;
        }
        if fresh || ext_seq > self.highest_seq {
            self.highest_seq = ext_seq;
            self.last_seq_raw = seq;
        }
        if fresh || index > self.highest_index {
            self.highest_index = index;
        }
        if fresh {
            self.playout = index;
            // After a codec switch the stream goes on (comfort noise while it re-buffers), as after a pause.
            self.state = State::Buffering {
                resumed: std::mem::take(&mut self.resume_after_switch),
            };
        }
        let held = self.hold > 0 && index == self.playout;
        if !self.stalled || held || self.transit_len == 0 {
            let at = self.effective_arrival_us(now, index);
            self.update_delay_estimate(at, ext_ts);
        }
        let slot = self.slot_mut(index);
        slot.used = true;
        slot.played = false;
        slot.index = index;
        slot.seq = ext_seq;
        slot.level = audio_level;
        slot.arrived_us = i64::try_from(now.as_micros()).unwrap_or(i64::MAX / 2);
        slot.len = payload.len() as u16;
        slot.data[..payload.len()].copy_from_slice(payload);
        self.stats.received += 1;
        InsertOutcome::Accepted
    }

    /// Tells the buffer whether the frame just output was quiet (where stretching is inaudible).
    pub fn set_last_output_quiet(&mut self, quiet: bool) {
        self.last_low_energy = quiet;
    }

    fn take(&mut self, index: i64) -> Playout<'_> {
        let dtx_max = self.codec.dtx_packet_max_len();
        let s = self.slot_mut(index);
        s.played = true;
        s.used = false;
        let seq = s.seq;
        let arrived = s.arrived_us;
        let dtx = usize::from(s.len) <= dtx_max;
        if let Some(tick) = self.tick_at {
            let wait =
                (i64::try_from(tick.as_micros()).unwrap_or(i64::MAX / 2) - arrived).max(0) as f32;
            self.wait_us = if self.wait_us < 0.0 {
                wait
            } else {
                self.wait_us + (wait - self.wait_us) / 50.0
            };
            self.stats.packet_wait_ms = (self.wait_us / 1000.0).round() as u32;
        }
        self.last_played_seq = Some(seq);
        self.in_dtx = dtx;
        let s = &self.slots[index.rem_euclid(JITTER_CAPACITY_FRAMES as i64) as usize];
        Playout::Packet {
            payload: &s.data[..usize::from(s.len)],
            audio_level: s.level,
        }
    }

    /// Like [`JitterBuffer::pop`], for the tick due at `now` (the driver's clock, the same as [`JitterBuffer::insert`]'s).
    /// Knowing when ticks happen lets the target account for the phase between packet arrivals and ticks: delay
    /// variation that still arrives before the tick needs no extra frame.
    pub fn pop_at(&mut self, now: Duration) -> Playout<'_> {
        self.tick_at = Some(now);
        self.pop()
    }

    /// Decides what to play for this tick (call once per 20 ms).
    pub fn pop(&mut self) -> Playout<'_> {
        let level = self.level_frames();
        self.level = level;
        self.stats.current_delay_ms = (level.max(0) as u32) * 20;
        match self.state {
            State::Idle => return Playout::Idle,
            State::Buffering { resumed } => {
                if level >= i64::from(self.target_frames()) && self.slot(self.playout).is_some() {
                    self.state = State::Playing;
                    self.end_hold(0);
                } else if resumed {
                    self.stats.dtx += 1;
                    return Playout::Silence;
                } else {
                    return Playout::Idle;
                }
            }
            State::Playing => {}
        }
        if self.floor_ticks > 0 {
            self.floor_ticks -= 1;
            self.stats.target_delay_ms = u32::from(self.target_frames()) * 20;
        }
        self.filtered_level += (level as f32 - self.filtered_level) / 8.0;
        let target = i64::from(self.target_frames());
        if self.slot(self.playout).is_some() {
            self.end_hold(0);
            if level < target
                && self.last_low_energy
                && !self.in_dtx
                && self.filtered_level < target as f32 - 0.5
            {
                // Build delay at a quiet point (when the smoothed level is a frame short; the gap to the
                // accelerate threshold, a spare frame, keeps the two from taking turns under jitter).
                self.stats.stretched += 1;
                self.stats.concealed += 1;
                self.last_low_energy = false;
                return Playout::Conceal;
            }
            let idx = self.playout;
            self.playout += 1;
            return self.take(idx);
        }
        if self.highest_index > self.playout {
            // Missing frame with later frames buffered: DTX gap, or loss.
            self.end_hold(0);
            let lost = self.playout;
            self.playout += 1;
            if self.in_dtx {
                self.stats.dtx += 1;
                return Playout::Silence;
            }
            // A consecutive sequence number across the gap means the sender skipped these frames (DTX).
            let next_seq =
                (lost + 1..=self.highest_index).find_map(|i| self.slot(i).map(|s| s.seq));
            if let (Some(n), Some(p)) = (next_seq, self.last_played_seq)
                && n == p + 1
            {
                self.stats.dtx += 1;
                return Playout::Silence;
            }
            self.stats.lost += 1;
            if self.codec.has_inband_fec() && self.slot(lost + 1).is_some() {
                self.stats.fec_recovered += 1;
                let s = &self.slots[(lost + 1).rem_euclid(JITTER_CAPACITY_FRAMES as i64) as usize];
                return Playout::Fec {
                    next_payload: &s.data[..usize::from(s.len)],
                };
            }
            self.stats.concealed += 1;
            return Playout::Conceal;
        }
        // Nothing buffered.
        if self.in_dtx || self.hold >= MAX_HOLD_FRAMES {
            // A pause, not lateness. The ticks held before it (at most MAX_HOLD_FRAMES) are counted when a packet
            // tells which they were (the sender's next packet in sequence: DTX).
            self.clear_floor();
            self.playout += 1;
            self.in_dtx = true;
            self.stats.dtx += 1;
            return Playout::Silence;
        }
        if self.hold == 0 {
            let floor = self.target.saturating_add(1).min(self.cfg.max_delay_frames);
            self.raise_floor(floor, TARGET_HOLD_FRAMES);
        }
        self.stats.target_delay_ms = u32::from(self.target_frames()) * 20;
        self.hold += 1;
        Playout::Conceal
    }

    /// Ends the current hold and counts its ticks: `dtx` of them as the sender's pause (DTX), the others as
    /// underruns concealed.
    fn end_hold(&mut self, dtx: u32) {
        let dtx = dtx.min(self.hold);
        let late = u64::from(self.hold - dtx);
        self.stats.underruns += late;
        self.stats.concealed += late;
        self.stats.dtx += u64::from(dtx);
        self.hold = 0;
    }

    /// After decoding a [`Playout::Packet`]: if the level is above target and the frame was quiet (or the level is far
    /// above target), drop it and return the next packet to play instead. Without the frame's level (see
    /// [`JitterBuffer::accelerate_with_level`]) a spare frame that found no quiet frame for twice
    /// [`SURPLUS_WINDOW_FRAMES`] goes at the next frame.
    pub fn accelerate(&mut self, decoded_was_quiet: bool) -> Option<Playout<'_>> {
        self.accelerate_with_level(decoded_was_quiet, f32::NAN)
    }

    /// Like [`JitterBuffer::accelerate`], also told the decoded frame's level (dBov): when a spare frame has waited
    /// [`SURPLUS_WINDOW_FRAMES`] ticks without a quiet frame (a signal that is never quiet: music, steady noise), the
    /// least energetic frame of the window is dropped instead (within [`LEAST_ENERGETIC_MARGIN_DB`] of the quietest);
    /// after twice the window, the next frame. Returns the packet to play instead of the dropped frame, if any.
    pub fn accelerate_with_level(
        &mut self,
        decoded_was_quiet: bool,
        level_dbov: f32,
    ) -> Option<Playout<'_>> {
        let target = i64::from(self.target_frames());
        let remaining = self.level - 1;
        // At a tick the level should be about the target; after this pop, target - 1 frames remain. One spare frame
        // (consistently, per the smoothed level) is dropped at a quiet point. The smoothed level approaches a new
        // level only asymptotically, hence the tolerance.
        let spare = remaining >= target && self.filtered_level >= (target as f32) + 0.75;
        if spare && self.state == State::Playing {
            self.surplus_ticks = self.surplus_ticks.saturating_add(1);
        } else {
            self.surplus_ticks = 0;
            self.surplus_min_db = f32::INFINITY;
        }
        let least_energetic = self.surplus_ticks > SURPLUS_WINDOW_FRAMES
            && (level_dbov <= self.surplus_min_db + LEAST_ENERGETIC_MARGIN_DB
                || self.surplus_ticks > 2 * SURPLUS_WINDOW_FRAMES);
        if spare && !level_dbov.is_nan() {
            self.surplus_min_db = self.surplus_min_db.min(level_dbov);
        }
        let quiet_ok = spare && (decoded_was_quiet || least_energetic);
        let forced = remaining > target + 2 && self.filtered_level > (target as f32) + 2.0;
        if !(quiet_ok || forced)
            || self.state != State::Playing
            || self.slot(self.playout).is_none()
        {
            return None;
        }
        self.surplus_ticks = 0;
        self.surplus_min_db = f32::INFINITY;
        self.stats.accelerated += 1;
        self.level -= 1;
        self.filtered_level -= 1.0;
        let idx = self.playout;
        self.playout += 1;
        Some(self.take(idx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn jb() -> JitterBuffer {
        JitterBuffer::new(JitterConfig::default()).unwrap()
    }

    fn seq_of(p: &Playout<'_>) -> Option<u8> {
        match p {
            Playout::Packet { payload, .. } => Some(payload[1]),
            _ => None,
        }
    }

    #[test]
    fn a_late_allowance_leaves_the_latest_arrivals_out_of_the_envelope() {
        let mut b = jb();
        assert!(b.set_late_allowance(MAX_LATE_ALLOWANCE as u8 + 1).is_err());
        b.set_late_allowance(2).unwrap();
        assert_eq!(b.late_allowance(), 2);
        // 40 packets on time, the 10th and the 20th 15 and 9 ms late, the 30th 4 ms late.
        for n in 0..40u16 {
            let late = match n {
                10 => 15,
                20 => 9,
                30 => 4,
                _ => 0,
            };
            b.insert(
                ms(u64::from(n) * 20 + late),
                n,
                u32::from(n) * 960,
                &[1, 2, 3],
                None,
            );
        }
        // The two latest arrivals are left out: the envelope is the third-latest transit, 4 ms.
        assert_eq!(b.envelope_us(), Some(4_000));
        b.set_late_allowance(0).unwrap();
        b.insert(ms(40 * 20), 40, 40 * 960, &[1, 2, 3], None);
        assert_eq!(b.envelope_us(), Some(15_000));
    }

    #[test]
    fn a_held_frame_that_comes_with_its_successor_is_late_not_lost() {
        let mut b = jb();
        let pkt = |n: u8| [0x48, n, 1];
        let ins = |b: &mut JitterBuffer, t: u64, n: u16| {
            b.insert(ms(t), n, 960 * u32::from(n), &pkt(n as u8), None)
        };
        ins(&mut b, 0, 0);
        ins(&mut b, 20, 1);
        assert_eq!(seq_of(&b.pop_at(ms(21))), Some(0));
        assert_eq!(seq_of(&b.pop_at(ms(41))), Some(1));
        // The sender stalls: frame 2 misses its tick and comes with frame 3 (nothing is lost on the way).
        assert_eq!(b.pop_at(ms(61)), Playout::Conceal);
        assert_eq!(ins(&mut b, 75, 2), InsertOutcome::Accepted);
        assert_eq!(ins(&mut b, 75, 3), InsertOutcome::Accepted);
        // The concealment stood in for frame 2: the timeline goes on with frame 3, frame 2 counts as late.
        assert_eq!(seq_of(&b.pop_at(ms(81))), Some(3));
        let s = b.stats();
        assert_eq!(
            (s.lost, s.late, s.underruns, b.given_up()),
            (0, 1, 1, 0),
            "{s:?}"
        );
        // A held frame that never comes, with its successor there, is lost.
        assert_eq!(b.pop_at(ms(101)), Playout::Conceal);
        assert_eq!(ins(&mut b, 115, 5), InsertOutcome::Accepted);
        assert_eq!(seq_of(&b.pop_at(ms(121))), Some(5));
        let s = b.stats();
        assert_eq!((s.lost, s.late, b.given_up()), (1, 1, 1), "{s:?}");
    }

    #[test]
    fn a_hold_that_was_a_dtx_pause_never_counts_as_underruns() {
        let mut b = jb();
        let ins = |b: &mut JitterBuffer, t: u64, seq: u16, frame: u32| {
            b.insert(ms(t), seq, 960 * frame, &[0x48, seq as u8, 1], None)
        };
        ins(&mut b, 0, 0, 0);
        ins(&mut b, 20, 1, 1);
        let mut underruns = Vec::new();
        for tick in 0..20u32 {
            let now = u64::from(tick) * 20 + 21;
            // Frames 2..5 on time, then the sender pauses (DTX) for 6 frames: its next packet, sequence number 6,
            // carries frame 12.
            match tick + 1 {
                n @ 2..=5 => {
                    ins(&mut b, now - 1, n as u16, n);
                }
                12 => {
                    ins(&mut b, now - 1, 6, 12);
                }
                n if n > 12 => {
                    ins(&mut b, now - 1, (n - 6) as u16, n);
                }
                _ => {}
            }
            b.pop_at(ms(now));
            underruns.push(b.stats().underruns);
        }
        // `/metrics` exports these as counters: the held ticks are not counted before the pause is known.
        assert!(underruns.iter().all(|&u| u == 0), "{underruns:?}");
        let s = b.stats();
        assert_eq!((s.underruns, s.concealed, s.lost), (0, 0, 0), "{s:?}");
        assert!(s.dtx >= 6, "{s:?}");
    }

    #[test]
    fn reorder_duplicate_late_and_loss() {
        let mut b = jb();
        let pkt = |n: u8| [0x48, n, 1];
        assert_eq!(b.pop(), Playout::Idle);
        let base_ts = u32::MAX - 960; // wraps during the test
        let ins = |b: &mut JitterBuffer, t: u64, n: u16| {
            b.insert(
                ms(t),
                65534u16.wrapping_add(n),
                base_ts.wrapping_add(960 * u32::from(n)),
                &pkt(n as u8),
                None,
            )
        };
        assert_eq!(ins(&mut b, 0, 0), InsertOutcome::Accepted);
        assert_eq!(ins(&mut b, 1, 0), InsertOutcome::Duplicate);
        assert_eq!(ins(&mut b, 20, 2), InsertOutcome::Accepted);
        assert_eq!(ins(&mut b, 21, 1), InsertOutcome::Accepted); // reordered
        assert_eq!(b.stats().reordered, 1);
        assert_eq!(seq_of(&b.pop()), Some(0));
        assert_eq!(seq_of(&b.pop()), Some(1));
        assert_eq!(seq_of(&b.pop()), Some(2));
        // 3 lost, 4 present: FEC from 4.
        assert_eq!(ins(&mut b, 80, 4), InsertOutcome::Accepted);
        assert!(matches!(b.pop(), Playout::Fec { next_payload } if next_payload[1] == 4));
        assert_eq!(seq_of(&b.pop()), Some(4));
        assert_eq!(ins(&mut b, 90, 3), InsertOutcome::Late);
        assert_eq!(ins(&mut b, 91, 4), InsertOutcome::Late);
        // Underrun: conceal without advancing; the late packet 5 is then still played.
        assert_eq!(b.pop(), Playout::Conceal);
        assert_eq!(ins(&mut b, 120, 5), InsertOutcome::Accepted);
        assert_eq!(seq_of(&b.pop()), Some(5));
        let s = b.stats();
        assert_eq!(
            (
                s.duplicate,
                s.late,
                s.fec_recovered,
                s.underruns,
                s.received
            ),
            (1, 2, 1, 1, 5)
        );
        // Malformed input never panics.
        assert_eq!(b.insert(ms(130), 9, 9, &[], None), InsertOutcome::Malformed);
        assert_eq!(
            b.insert(ms(130), 9, 9, &[0; MAX_PAYLOAD + 1], None),
            InsertOutcome::Malformed
        );
    }

    #[test]
    fn dtx_gap_and_resync() {
        let mut b = jb();
        let speech = [0x48u8, 9, 9, 9];
        // Talkspurt: frames 0..5 (seq 0..5), then the sender goes quiet (DTX) and resumes at frame 30 with seq 6.
        for n in 0..6u16 {
            b.insert(ms(u64::from(n) * 20), n, u32::from(n) * 960, &speech, None);
        }
        let mut out = Vec::new();
        for t in 6..40u64 {
            if t == 31 {
                b.insert(ms(t * 20), 6, 30 * 960, &speech, None);
                b.insert(ms(t * 20), 7, 31 * 960, &speech, None);
            }
            out.push(
                format!("{:?}", b.pop())
                    .split(' ')
                    .next()
                    .unwrap_or("")
                    .to_owned(),
            );
        }
        let packets = out.iter().filter(|p| p.starts_with("Packet")).count();
        assert_eq!(packets, 8, "all packets played: {out:?}");
        // The pause adds no delay: exactly the 24 frames the sender skipped are filled between the talkspurts.
        let first = out.iter().position(|p| p != "Packet").unwrap();
        let resumed = first + out[first..].iter().position(|p| p == "Packet").unwrap();
        assert_eq!(resumed - first, 24, "{out:?}");
        let s = b.stats();
        // The pause is neither loss nor delay: no concealment remains counted for it, no FEC attempted.
        assert_eq!((s.fec_recovered, s.late), (0, 0), "{s:?}");
        assert!(s.dtx >= 10, "{s:?}");
        assert!(s.concealed <= 2, "{s:?}");
        assert!(b.level_frames() <= 2);
        // A sender restart (timestamp jump far beyond the buffer) resyncs instead of waiting or dropping.
        assert_eq!(
            b.insert(ms(5000), 100, 0x8000_0000, &speech, None),
            InsertOutcome::Accepted
        );
        assert_eq!(b.stats().resyncs, 1);
        let mut played = false;
        for _ in 0..4 {
            played |= matches!(b.pop(), Playout::Packet { .. });
            b.insert(ms(5000), 101, 0x8000_0000 + 960, &speech, None);
        }
        assert!(played);
    }

    #[test]
    fn target_follows_jitter() {
        let mut b = jb();
        // 100 ms of jitter on every 4th packet for 20 s.
        for n in 0..1000u32 {
            let extra = if n % 4 == 0 { 100 } else { 0 };
            b.insert(
                ms(u64::from(n) * 20 + extra),
                n as u16,
                n * 960,
                &[0x48, 1, 2],
                None,
            );
        }
        assert!(
            b.target_frames() >= 5 && b.target_frames() <= 7,
            "target {}",
            b.target_frames()
        );
        let mut c = jb();
        for n in 0..1000u32 {
            c.insert(
                ms(u64::from(n) * 20),
                n as u16,
                n * 960,
                &[0x48, 1, 2],
                None,
            );
        }
        assert_eq!(c.target_frames(), 1);
    }

    /// Packets every 20 ms arriving `arrive_ms` after their frame boundary (+ `jitter(n)` ms), ticks at
    /// `tick_ms` after each boundary, `frames` of them; returns the target after each tick.
    fn run_phase(
        b: &mut JitterBuffer,
        from: u32,
        frames: u32,
        arrive_ms: u64,
        tick_ms: u64,
        jitter: impl Fn(u32) -> u64,
    ) -> Vec<u16> {
        let mut targets = Vec::new();
        for n in from..from + frames {
            let t0 = u64::from(n) * 20;
            b.insert(
                Duration::from_micros((t0 + arrive_ms) * 1000 + jitter(n) * 1000),
                n as u16,
                n * 960,
                &[0x48, 1, 2],
                None,
            );
            let _ = b.pop_at(ms(t0 + tick_ms));
            targets.push(b.target_frames());
        }
        targets
    }

    #[test]
    fn clean_path_target_reaches_minimum_quickly() {
        // The default starts at 2 frames and holds them for START_HOLD_PACKETS; on a clean path the target is at its
        // minimum right after.
        let mut b = jb();
        assert_eq!(b.target_frames(), 2);
        let t = run_phase(&mut b, 0, 200, 5, 20, |_| 0);
        let first = t.iter().position(|&t| t == 1).unwrap();
        let hold = START_HOLD_PACKETS as usize;
        assert!(
            (hold - 1..hold + 2).contains(&first),
            "target 1 after {first} packets"
        );
        assert!(t[first..].iter().all(|&t| t == 1), "{t:?}");
        // Configured to start at 1 frame, it stays there.
        let mut one = JitterBuffer::new(JitterConfig {
            initial_delay_frames: 1,
            ..JitterConfig::default()
        })
        .unwrap();
        assert!(
            run_phase(&mut one, 0, 50, 5, 20, |_| 0)
                .iter()
                .all(|&t| t == 1)
        );
        // Without tick times (pop) the estimate is the same on a jitter-free path.
        let mut c = jb();
        for n in 0..200u32 {
            c.insert(
                ms(u64::from(n) * 20 + 5),
                n as u16,
                n * 960,
                &[0x48, 1],
                None,
            );
            let _ = c.pop();
        }
        assert_eq!(c.target_frames(), 1);
    }

    #[test]
    fn target_accounts_for_the_tick_phase() {
        // 0–4 ms of jitter, packets due 12 ms before their tick: always in time at 1 frame.
        let wobble = |n: u32| u64::from(n * 7 % 5);
        let mut b = jb();
        let t = run_phase(&mut b, 0, 200, 5, 17, wobble);
        assert_eq!(t.last(), Some(&1));
        // The same jitter with ticks 1 ms after the earliest arrival: many packets would miss, 2 frames.
        let mut c = jb();
        let t = run_phase(&mut c, 0, 200, 5, 6, wobble);
        assert_eq!(t.last(), Some(&2));
        // Without tick times, the worst phase is assumed.
        let mut d = jb();
        for n in 0..200u32 {
            d.insert(
                ms(u64::from(n) * 20 + 5 + wobble(n)),
                n as u16,
                n * 960,
                &[0x48, 1],
                None,
            );
            let _ = d.pop();
        }
        assert_eq!(d.target_frames(), 2);
    }

    #[test]
    fn target_rises_promptly_when_jitter_appears() {
        let mut b = jb();
        let t = run_phase(&mut b, 0, 250, 5, 20, |_| 0);
        assert_eq!(t.last(), Some(&1));
        // From 5 s on, every other packet is 50 ms late: the target covers it within 0.5 s.
        let t = run_phase(&mut b, 250, 100, 5, 20, |n| if n % 2 == 0 { 50 } else { 0 });
        let up = t.iter().position(|&t| t >= 3).unwrap();
        assert!(up <= 25, "target 3 after {up} packets: {t:?}");
    }

    #[test]
    fn spare_frame_without_quiet_frames_goes_at_the_least_energetic_one() {
        let mut b = JitterBuffer::new(JitterConfig {
            initial_delay_frames: 2,
            ..JitterConfig::default()
        })
        .unwrap();
        // Two frames buffered, target 1 once the statistics are in; the "decoded" frames are never quiet.
        let mut dropped_at = None;
        let mut n = 0u32;
        let ins = |b: &mut JitterBuffer, n: u32| {
            b.insert(
                ms(u64::from(n) * 20 + 5),
                n as u16,
                n * 960,
                &[0x48, 1, 2],
                None,
            );
        };
        ins(&mut b, n);
        n += 1;
        for tick in 0..200u64 {
            ins(&mut b, n);
            n += 1;
            if matches!(b.pop_at(ms(tick * 20 + 40)), Playout::Packet { .. }) {
                // A level contour with a minimum (-30 dBov) every 17 frames, otherwise -20 .. -25 dBov.
                let level = if tick % 17 == 0 {
                    -30.0
                } else {
                    -20.0 - (tick % 5) as f32
                };
                if b.accelerate_with_level(false, level).is_some() {
                    assert!(dropped_at.is_none(), "one drop only");
                    dropped_at = Some((tick, level));
                }
            }
        }
        let (tick, level) = dropped_at.expect("the spare frame was dropped");
        assert_eq!(level, -30.0, "at the least energetic frame");
        assert!(
            (START_HOLD_PACKETS.into()..u64::from(START_HOLD_PACKETS) + 60).contains(&tick),
            "within about a second of the start hold: tick {tick}"
        );
        assert_eq!(b.stats().accelerated, 1);
        assert_eq!(b.stats().current_delay_ms, 20, "1 frame at the tick");
    }

    #[test]
    fn a_packet_overtaken_while_held_is_lost_and_raises_a_floor() {
        let mut b = JitterBuffer::new(JitterConfig {
            initial_delay_frames: 1,
            ..JitterConfig::default()
        })
        .unwrap();
        let mut dropped_at = None;
        // Packet 100 is 30 ms late; all others arrive 5 ms after their boundary; ticks at 20 ms.
        let arrival = |n: u32| u64::from(n) * 20 + 5 + if n == 100 { 30 } else { 0 };
        let mut next = 0u32;
        let mut pending_late = None;
        for tick in 0..600u32 {
            let now = u64::from(tick) * 20 + 20;
            while next <= tick {
                if arrival(next) <= now {
                    b.insert(
                        ms(arrival(next)),
                        next as u16,
                        next * 960,
                        &[0x48, 1, 2],
                        None,
                    );
                } else {
                    pending_late = Some(next);
                }
                next += 1;
            }
            if let Some(n) = pending_late
                && arrival(n) <= now
            {
                b.insert(ms(arrival(n)), n as u16, n * 960, &[0x48, 1, 2], None);
                pending_late = None;
            }
            if matches!(b.pop_at(ms(now)), Playout::Packet { .. }) && b.accelerate(true).is_some() {
                dropped_at.get_or_insert(tick);
            }
            if tick == 101 {
                assert_eq!(b.stats().underruns, 1);
                assert_eq!(b.target_frames(), 2, "floor after the underrun");
            }
        }
        // Packet 101 overtook the held packet 100: 100 counts as lost (the concealment played in its place), arrives
        // late and is dropped, so the timeline never moved and there is no spare frame to drop later.
        assert_eq!(dropped_at, None);
        let s = b.stats();
        assert_eq!(
            (s.underruns, s.concealed, s.accelerated, s.late, s.lost),
            (1, 1, 0, 1, 1),
            "{s:?}"
        );
        assert_eq!(b.target_frames(), 1);
    }

    #[test]
    fn config_validation() {
        assert!(
            JitterBuffer::new(JitterConfig {
                min_delay_frames: 0,
                ..JitterConfig::default()
            })
            .is_err()
        );
        assert!(
            JitterBuffer::new(JitterConfig {
                max_delay_frames: 200,
                ..JitterConfig::default()
            })
            .is_err()
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_packets_never_panic(ops in proptest::collection::vec(
            (0u64..100_000, proptest::num::u16::ANY, proptest::num::u32::ANY, 0usize..1400, proptest::bool::ANY), 0..300)) {
            let mut b = jb();
            let buf = [0x48u8; 1400];
            for (t, seq, ts, len, pop) in ops {
                b.insert(Duration::from_millis(t), seq, ts, &buf[..len], None);
                if pop {
                    let _ = b.pop();
                    let _ = b.accelerate(true);
                }
                proptest::prop_assert!(b.level_frames() <= JITTER_CAPACITY_FRAMES as i64 * 5);
            }
        }
    }
}
