//! # mediaproc-pipeline — the sans-IO real-time audio core
//!
//! Everything between the network and the bot for one call's audio: frames, rings, the adaptive jitter buffer, the
//! codec stage (Opus; G.711 PCMU/PCMA for SIP gateways), resampling, mixing and speaker tracking, send pacing, and [`MediaSession`], which ties them
//! together. No sockets, no threads, no clocks: the shells (`mediaproc-net`, the daemon's media workers) move bytes
//! and call in; tests drive minutes of simulated calls in seconds.
//!
//! ## Time is an input
//! Every operation that depends on time takes `now: Duration`, an instant on the driver's monotonic clock measured
//! from an origin it chooses (e.g. when the worker started). Nothing here calls `Instant::now()`. The session's media
//! clock runs on absolute deadlines `start + phase + n × 20 ms` ([`MediaSession::poll_timeout`]); a driver calls
//! [`MediaSession::handle_tick`] once the deadline has passed, then drains [`MediaSession::poll_output`] (packets to
//! send, events) — the str0m / quinn-proto shape. A driver that runs bot logic on its own thread (an in-worker bot
//! such as the daemon's echo) can split the tick instead: [`MediaSession::handle_receive`] puts this tick's frame in
//! the inbound ring, the bot answers, and [`MediaSession::handle_send`] sends the answer as this tick's packet — 20 ms
//! sooner than after `handle_tick`, which sends what the bot queued before the tick. The per-session `tick_phase` ([`spread_tick_phase`]) lets one
//! worker thread spread its sessions over the 20 ms period so each session's latency is its own processing time,
//! not the batch's. Audio for the bot does not come out of `poll_output` but goes straight into the inbound ring
//! (the bot side may live on another thread); the bot's audio comes from the outbound ring ([`BotEndpoint`]). A driver
//! that falls behind catches up tick by tick, and beyond [`MAX_CATCH_UP_TICKS`] skips (and counts) missed ticks
//! rather than bursting packets.
//!
//! ## Frames
//! A frame is 20 ms of mono 16-bit PCM at the bot's [`SampleRate`] (default 16 kHz, `Pcm16K`: 320 samples = 640
//! bytes; any multiple of 50 Hz between 8 and 48 kHz). Frames for the bot ([`ReceivedAudio`]) carry a timestamp in
//! 100 ns ticks, a sequence number, `is_silence`, the active speakers (loudest first) and unmixed audio of the
//! loudest speakers, like the closed platform's `AudioMediaBuffer`/`UnmixedAudioBuffers`.
//!
//! ## Rings and their policies ([`ring`])
//! Lock-free SPSC rings connect the session to bot logic on another thread, both bounded with named capacities and
//! allocated up front (inbound: crossbeam's `ArrayQueue` with `force_push`, the project's one drop-oldest ring
//! design; outbound: `ringbuf`):
//! * **inbound** (call → bot, default [`DEFAULT_INBOUND_CAPACITY_FRAMES`] = 1 s): the call never waits for the bot.
//!   When the bot falls behind the **oldest** frames are dropped and counted; after a stall the bot resumes with
//!   the newest frames (at most the ring's capacity).
//! * **outbound** (bot → call, default [`DEFAULT_OUTBOUND_CAPACITY_FRAMES`] = 10 s, for text-to-speech produced faster
//!   than real time): **backpressure** — [`OutboundProducer::push`] returns [`Error::OutboundFull`].
//!   [`OutboundProducer::clear`] (barge-in) discards everything queued within the next tick;
//!   [`OutboundProducer::mark`] names a point between frames, reported as [`Event::Mark`] once the frame before it
//!   has been sent (or with `cleared: true` if a clear discarded it). Mark names live inline (≤ 64 bytes) in a
//!   bounded side queue, so marks allocate nothing.
//!
//! ## Jitter buffer ([`jitter`]) and playout ([`playout`], [`tsm`], [`comfort`])
//! Per inbound stream, keyed by the RTP timestamp on the stream codec's clock (48 kHz for Opus, 960 ticks per frame;
//! 8 kHz for G.711, 160; sequence numbers tell loss from DTX gaps).
//! Reordered packets are slotted in place, duplicates and packets whose playout time has passed are dropped and
//! counted. The **target delay adapts** to the observed relative-delay distribution: each packet's transit time minus
//! the smallest transit of the last 128 packets, less the time such a packet would still have before its tick (the
//! session passes tick times), goes into a histogram of 20 ms bins; the target is one frame plus the 95th
//! percentile, clamped to `[min, max]` (default 1..=25 frames). The buffer starts at 2 frames (configurable); the
//! first packets are averaged with that initial target, exponential forgetting (≈ 4 s) follows; it goes below the
//! initial target only after 3 s of packets. An underrun, or a rise of the target, holds the target for 5 s.
//!
//! Between the jitter buffer and the 20 ms output sits a NetEQ-style **playout engine** ([`PlayoutEngine`]): packets
//! are decoded into a sync buffer of PCM, and each tick chooses normal playout, **accelerate** or **preemptive
//! expand** (remove / insert one pitch period, found by normalised autocorrelation over 2.5–15 ms, only where two
//! periods correlate above 0.9 or the audio is quiet; overlap-add cross-fade; [`tsm`]), **expand** (libopus
//! concealment: a lost frame's 20 ms, or for an underrun only the shortfall), **merge** (the first decoded audio after
//! concealment aligned to a periodic continuation of it and cross-faded) or **comfort noise** at the last background
//! level during DTX gaps and pauses ([`comfort`]). The largest playout level of the last second (packets buffered plus
//! decoded samples waiting) is steered to the target, never removing audio below the emptiest recent tick, so
//! periodic bursts (packets in pairs every 40 ms) give a constant decision; clock drift (±500 ppm) is absorbed a pitch
//! period at a time. No whole frame is dropped or repeated while audio plays. Statistics ([`JitterStats`]) follow
//! WebRTC NetEQ: current/target/playout delay, packet wait, concealed, FEC-recovered, lost, late, duplicate,
//! reordered, accelerated/decelerated/concealed/comfort-noise ms, merges, underruns, DTX, resyncs, malformed.
//!
//! ## Codec, resampling, mixing, pacing
//! * [`OpusDecoder`] decodes straight at the bot's rate when Opus supports it (8/12/16/24/48 kHz), with PLC and
//!   in-band FEC; [`OpusEncoder`] has [`EncoderSettings`] (default 32 kbit/s VoIP, complexity 5, in-band FEC off,
//!   DTX off). The session's FEC follows the loss the far end reports ([`fec`]: on from 2 %, off below 1 %,
//!   expected-loss setting tracking the reports), or is forced on/off; [`EncoderOverrides`] change the encoder at run
//!   time. Other rates decode/encode at 48 kHz through [`FrameResampler`] (rubato's asynchronous sinc
//!   resampler, one frame in, one frame out, delay reported, ratio adjustable for drift).
//! * [`mix_into`] sums with saturation; [`SpeakerTracker`] levels come from RFC 6464 when present, else energy; the
//!   dominant speaker changes only after a challenger has been louder by 3 dB for 500 ms (no flapping on coughs).
//! * **G.711** ([`g711`]): [`Codec`] picks the send codec ([`SessionConfig::codec`], [`MediaSession::set_send_codec`])
//!   and, per received payload type, the decoder ([`ReceiveCodecs`], [`MediaSession::set_receive_payload_type`]).
//!   [`G711Decoder`] turns 160 law bytes into a frame at the decode rate (8 kHz → 16 kHz by rubato) with
//!   pitch-repeat concealment, so the playout engine (any [`FrameDecoder`]) treats G.711 like Opus;
//!   [`G711Encoder`] low-pass filters and resamples the bot's frames to 8 kHz and encodes 160 bytes per 20 ms
//!   (RTP timestamp +160). G.711 silence is sent as encoded silence (no "no audio" packet).
//! * [`SendPacer`] yields exactly one packet per 20 ms of media timeline; when the bot has nothing queued or sends
//!   digital silence the encoder is skipped and a one-byte Opus "no audio" packet is sent; underruns are counted;
//!   the send status becomes active with the bot's first frame.
//!
//! ## Hot path
//! After [`MediaSession::new`] nothing allocates, locks, logs or makes a syscall per frame (a counting-allocator test
//! asserts zero allocations over hundreds of duplex ticks with loss). Untrusted input (RTP fields, payloads, bot
//! frames and mark names) never panics: bad packets are counted and dropped, bad bot input is a typed [`Error`].

#![warn(missing_docs)]

pub mod codec;
pub mod comfort;
pub mod error;
pub mod fec;
pub mod frame;
pub mod g711;
pub mod jitter;
pub mod mixer;
pub mod pacer;
pub mod playout;
pub mod resample;
pub mod ring;
pub mod session;
pub mod tsm;

pub use codec::*;
pub use comfort::ComfortNoise;
pub use error::{Error, Result};
pub use fec::{DuplicateMode, EncoderOverrides, FecController, FecMode};
pub use frame::*;
pub use g711::{G711_FRAME_BYTES, G711_RTP_CLOCK_HZ, G711Decoder, G711Encoder};
pub use jitter::*;
pub use mixer::*;
pub use pacer::*;
pub use playout::{Operation, PlayoutEngine, TickOutcome};
pub use resample::*;
pub use ring::*;
pub use session::*;
