//! NetEQ-style playout on decoded PCM: the sync buffer between the decoder and the 20 ms frame output, and the
//! per-tick decision between normal playout, accelerate, preemptive expand, expand (concealment), merge and
//! comfort noise.
//!
//! The engine works on decoded PCM from any [`FrameDecoder`] (Opus, G.711), so the operations below are the same
//! for every codec.
//!
//! ## Sync buffer
//! Decoded audio goes into a preallocated buffer: some already played samples (the history, for merge) followed by
//! future samples not yet played. Each tick takes one frame (`spf` samples at the decoder's rate) from the future;
//! before that the engine pulls packets from the [`JitterBuffer`] and decodes them until there is a frame's worth.
//! After an accelerate some audio is left over and the next tick may need no packet; after an expand, one more.
//!
//! ## Offset and decision
//! The engine steers the **playout offset**: how long after its media time a sample is played, i.e. the tick time
//! minus the media time of the next sample to play ([`JitterBuffer::offset_us`] plus the decoded audio waiting,
//! less underrun concealment for a frame still awaited). It is exact and stays constant from tick to tick; only
//! time-scaling, concealment of an underrun and comfort noise move it. Packets need it above their transit
//! (arrival minus media time): the jitter buffer's **on-time envelope** is the largest transit of its window, and
//! [`JitterBuffer::required_offset_us`] the smallest offset at which a packet on the envelope is there when its
//! tick pulls it (the tick phase taken into account). Early packets (a sender that reads its input in chunks sends
//! most of each chunk early; pairs every 40 ms) have smaller transits: they only make the buffer fuller and count
//! neither as delay nor as surplus. Two figures steer: the offset to come down to, from the envelope's peak held
//! for [`crate::jitter::ENVELOPE_HOLD_US`] (5 s), and the offset to stay above, from the current envelope; the gap
//! between them is the hysteresis that keeps a wobbling envelope from making the playout accelerate and expand in
//! turn. Margins on top: the configured initial target while the stream's first packets are in, and one frame for
//! [`LOSS_MARGIN_TICKS`] after a loss (so the next lost frame finds the following packet there and is rebuilt from
//! its in-band FEC instead of being held as an underrun). An operation starts when the excess reaches half a frame
//! ([`START_FRACTION`]), or on any deficit, and goes on each tick until it is below [`QUIET_MIN_MS`].
//!
//! A stream with a **late allowance** ([`crate::JitterConfig::late_allowance_packets`], a WebRTC peer's) has an
//! envelope that leaves its latest arrivals out, so a late packet is an underrun by design: a frame the jitter
//! buffer gives up while it was held ([`JitterBuffer::given_up`]) takes no loss margin, and the excess the
//! shortfall concealment leaves is taken out of speech from half a frame on, not only at the next pause.
//!
//! **In speech** (audio that is not quiet) the decision is stricter, because every period removed from or inserted
//! into a vowel is a step of the timeline: an accelerate needs an excess of [`VOICED_ACCELERATE_FRAMES`], a
//! preemptive expand a deficit of [`VOICED_EXPAND_FRACTION`], and both wait [`VOICED_GAP_TICKS`] after any other
//! change of the timeline (time-scaling, concealment, merge), so a jittery or lossy path moves speech by one period
//! at a time and never right after a concealment; quiet audio (pauses, unvoiced stretches) takes the rest.
//!
//! * **Normal**: play decoded audio as it is.
//! * **Accelerate**: remove one pitch period (up to the excess) from the future samples where the correlation of
//!   two periods is above [`VOICED_CORRELATION`] — or, where the audio is quiet (below the session's
//!   [`QUIET_DBOV`] or [`QUIET_BELOW_AVERAGE_DB`] under the stream's average), any length down to [`QUIET_MIN_MS`],
//!   so the offset comes to rest within a millisecond of the envelope's on a clean path. Up to two frames are decoded
//!   first so long periods fit.
//! * **Preemptive expand**: insert one period under the same conditions.
//! * **Expand**: the frame is missing (loss, or an underrun): the decoder's concealment ([`FrameDecoder::conceal`]:
//!   libopus PLC, or G.711 pitch repetition) continues the signal. For a loss
//!   it fills the lost frame's 20 ms; for an underrun only what the tick lacks (rounded up to libopus's 2.5 ms
//!   steps), so the late packet still plays and the timeline moves by no more than the shortfall. If the awaited
//!   frame turns out lost (the jitter buffer moves past it when a later one arrives first — at a level of a frame
//!   or two most losses look like an underrun at their tick), the shortfall concealment stood in for a whole frame:
//!   the engine fills the rest of it from the next packet's in-band FEC (the frame's unplayed end; concealment if
//!   more than a frame is missing) before that packet, so the timeline does not jump back within speech. If the burst
//!   goes on (the next frame is lost too, so the jitter buffer hands out FEC or concealment rather than a packet),
//!   the rest is concealed before it: dropping it moved the timeline forward by up to a frame at each such burst.
//! * **Merge**: the first decoded audio after concealment is aligned to a periodic continuation of the concealment
//!   and cross-faded into it ([`tsm::merge`]).
//! * **Comfort noise**: DTX gaps, pauses and re-buffering play [`ComfortNoise`] at the last background level.
//!
//! Whole frames are never dropped or repeated while audio plays: all changes of the timeline are pitch periods (or
//! short quiet splices), concealment of lost frames, or underrun shortfalls.
//!
//! ## Statistics
//! Added to the jitter buffer's [`JitterStats`]: accelerated/decelerated/concealed/comfort-noise ms, merges and the
//! playout delay. The older frame counters `accelerated` and `stretched` count the time-scaled audio in whole frames
//! (rounded), so they keep their meaning of "frames of delay removed / added".

use std::time::Duration;

use crate::codec::FrameDecoder;
use crate::comfort::ComfortNoise;
use crate::error::Result;
use crate::frame::level_dbov;
use crate::jitter::{JitterBuffer, JitterStats, Playout};
use crate::session::{QUIET_BELOW_AVERAGE_DB, QUIET_DBOV};
use crate::tsm::{self, PitchLags, VOICED_CORRELATION};

/// An accelerate or preemptive expand starts when the excess or deficit reaches this fraction of a frame.
pub const START_FRACTION: f32 = 0.5;
/// Shortest splice at a quiet point, and the excess or deficit below which an operation stops (1 ms).
pub const QUIET_MIN_MS: f32 = 1.0;
/// In speech (audio that is not quiet) an accelerate starts only when the excess reaches this many frames: the
/// envelope of a jittery path wanders, and every period removed from a vowel is a step of
/// the timeline the listener may hear. Quiet audio takes the [`START_FRACTION`] threshold.
pub const VOICED_ACCELERATE_FRAMES: f32 = 1.0;
/// In speech a preemptive expand starts only when the deficit reaches this fraction of a frame (quiet audio: any
/// deficit).
pub const VOICED_EXPAND_FRACTION: f32 = 0.5;
/// Ticks after any change of the timeline (time-scaling, concealment, merge) before a period may be removed from or
/// inserted into speech (100 ms): one period at a time, never two periods or a period right after a merge within
/// the span a listener (or a lag tracker) hears as one jump.
pub const VOICED_GAP_TICKS: u32 = 5;
/// Frames above the jitter buffer's target level beyond which the buffer is surplus whatever the envelope says.
pub const LEVEL_SURPLUS_FRAMES: i64 = 3;
/// Ticks after a loss during which the playout keeps a frame of margin above the on-time envelope (5 s).
pub const LOSS_MARGIN_TICKS: u32 = 250;
/// One frame (µs).
const FRAME_US: i64 = 20_000;
/// libopus conceals in steps of 2.5 ms.
const CONCEAL_STEP_MS: u32 = 5; // in half milliseconds

/// Conceals `n` samples (rounded up to libopus's 2.5 ms steps; nothing if `n` is 0) at the start of `dst`, a frame
/// at a time; returns the samples written.
fn conceal_run<D: FrameDecoder + ?Sized>(
    dec: &mut D,
    dst: &mut [i16],
    n: usize,
    spf: usize,
    hz: u32,
) -> (usize, Result<()>) {
    let step = ((hz * CONCEAL_STEP_MS / 2000) as usize).max(1);
    let total = (n.div_ceil(step) * step).min(dst.len());
    let mut done = 0;
    while done < total {
        let k = (total - done).min(spf);
        if let Err(e) = dec.conceal(&mut dst[done..done + k]) {
            return (done, Err(e));
        }
        done += k;
    }
    (done, Ok(()))
}

/// What the engine did at a tick (the last operation, for tests and benches).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Operation {
    /// The stream has not started: no frame.
    Idle,
    /// Decoded audio played as it is.
    Normal,
    /// A pitch period (or a quiet splice) removed.
    Accelerate,
    /// A pitch period (or a quiet splice) inserted.
    PreemptiveExpand,
    /// Concealment (loss or underrun).
    Expand,
    /// Concealment cross-faded into decoded audio.
    Merge,
    /// Comfort noise.
    ComfortNoise,
}

/// What a tick produced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TickOutcome {
    /// A frame was written.
    pub produced: bool,
    /// The RFC 6464 level of the last packet decoded in this tick, if it carried one.
    pub audio_level: Option<u8>,
    /// Packets that failed to decode (concealed instead).
    pub decode_errors: u64,
    /// The operations of this tick, most significant last (see [`Operation`]).
    pub operation: Operation,
}

/// The playout engine of one stream. See the module docs.
pub struct PlayoutEngine {
    spf: usize,
    hz: u32,
    lags: PitchLags,
    quiet_min: usize,
    buf: Box<[i16]>,
    /// History samples kept before the play position.
    hist: usize,
    /// First future sample.
    play: usize,
    /// End of valid samples.
    len: usize,
    accelerating: bool,
    expanding: bool,
    /// Ticks since the timeline last changed (time-scaling, concealment or merge).
    since_change: u32,
    /// Samples of underrun concealment played while the jitter buffer holds the missing frame, and its loss
    /// count then: if the frame turns out lost, the concealment stood in for whole frames (see [`Self::pull`]).
    held: usize,
    held_lost: u64,
    /// The jitter buffer's loss count at the last tick, and the ticks the loss margin still applies.
    seen_lost: u64,
    loss_ticks: u32,
    /// The audio at the end of the buffer is concealment: merge the next decoded audio into it.
    concealed_tail: bool,
    cng: ComfortNoise,
    avg_db: f32,
    /// Level of the last decoded frame (dBov).
    last_db: f32,
    last_level: i64,
    /// The playout offset above the on-time envelope at the last tick (µs).
    envelope_delay_us: i64,
    /// Ticks already overdue after the one about to run (the driver stalled and catches up): their packets are in
    /// the buffer and are no surplus.
    overdue_ticks: u32,
    accelerated: u64,
    decelerated: u64,
    merges: u64,
    concealed: u64,
    comfort: u64,
}

impl std::fmt::Debug for PlayoutEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlayoutEngine")
            .field("future", &(self.len - self.play))
            .field("accelerated", &self.accelerated)
            .field("decelerated", &self.decelerated)
            .finish()
    }
}

impl PlayoutEngine {
    /// An engine for frames of `samples_per_frame` at `sample_rate_hz` (the decoder's); all memory is allocated here.
    pub fn new(sample_rate_hz: u32, samples_per_frame: usize) -> Result<Self> {
        let lags = PitchLags::for_rate(sample_rate_hz);
        let hist = 2 * lags.max;
        let cap = hist + 5 * samples_per_frame + 2 * lags.max;
        Ok(Self {
            spf: samples_per_frame,
            hz: sample_rate_hz,
            lags,
            quiet_min: ((sample_rate_hz as f32 * QUIET_MIN_MS / 1000.0) as usize).max(1),
            buf: vec![0; cap].into_boxed_slice(),
            hist,
            play: hist,
            len: hist,
            accelerating: false,
            expanding: false,
            since_change: 0,
            held: 0,
            held_lost: 0,
            seen_lost: 0,
            loss_ticks: 0,
            concealed_tail: false,
            cng: ComfortNoise::new(sample_rate_hz),
            avg_db: f32::NAN,
            last_db: 0.0,
            last_level: 0,
            envelope_delay_us: 0,
            overdue_ticks: 0,
            accelerated: 0,
            decelerated: 0,
            merges: 0,
            concealed: 0,
            comfort: 0,
        })
    }

    /// Forgets the audio and counters (the stream is reused for another source).
    pub fn restart(&mut self) {
        self.buf.fill(0);
        self.play = self.hist;
        self.len = self.hist;
        self.accelerating = false;
        self.expanding = false;
        self.since_change = 0;
        self.held = 0;
        self.held_lost = 0;
        self.seen_lost = 0;
        self.loss_ticks = 0;
        self.concealed_tail = false;
        self.cng.reset();
        self.avg_db = f32::NAN;
        self.last_db = 0.0;
        self.last_level = 0;
        self.envelope_delay_us = 0;
        self.overdue_ticks = 0;
        self.accelerated = 0;
        self.decelerated = 0;
        self.merges = 0;
        self.concealed = 0;
        self.comfort = 0;
    }

    fn future(&self) -> usize {
        self.len - self.play
    }

    fn ms(&self, samples: u64) -> u64 {
        samples * 1000 / u64::from(self.hz)
    }

    fn frames(&self, samples: u64) -> u64 {
        (samples + self.spf as u64 / 2) / self.spf as u64
    }

    /// The jitter buffer's statistics with the playout's added.
    pub fn stats(&self, jitter: &JitterBuffer) -> JitterStats {
        let mut s = jitter.stats();
        s.accelerated = self.frames(self.accelerated);
        s.stretched = self.frames(self.decelerated);
        s.accelerated_ms = self.ms(self.accelerated);
        s.decelerated_ms = self.ms(self.decelerated);
        s.merges = self.merges;
        s.concealed_ms = self.ms(self.concealed);
        s.comfort_noise_ms = self.ms(self.comfort);
        s.playout_delay_ms = self.ms(self.last_level.max(0) as u64) as u32;
        s.envelope_delay_ms = (self.envelope_delay_us / 1000) as u32;
        s
    }

    /// Tells the engine how many ticks after the next one are already overdue (a driver catching up after a stall;
    /// 0 normally): the packets they will play are in the buffer, so they do not count as surplus.
    pub fn set_overdue_ticks(&mut self, ticks: u32) {
        self.overdue_ticks = ticks;
    }

    /// Playout delay at the last tick (packets buffered plus decoded audio waiting), in samples.
    pub fn level_samples(&self) -> i64 {
        self.last_level
    }

    /// Margin above the envelope: the configured initial target while the stream's statistics rest on few packets,
    /// and a frame for [`LOSS_MARGIN_TICKS`] after a loss, so the next loss finds the following packet there and is
    /// rebuilt from its in-band FEC (at the envelope itself a lost packet is only known as lost when the next one
    /// arrives, a tick too late: concealment then).
    fn margin_us(&self, jb: &JitterBuffer) -> i64 {
        let start = if jb.starting() {
            jb.initial_margin_us()
        } else {
            0
        };
        let loss = if self.loss_ticks > 0 { FRAME_US } else { 0 };
        start.max(loss)
    }

    fn is_quiet(&self, x: &[i16]) -> bool {
        let db = level_dbov(x);
        db < QUIET_DBOV || db < self.avg_db - QUIET_BELOW_AVERAGE_DB
    }

    /// Room for `n` more samples at the end (compacting the history first).
    fn reserve(&mut self, n: usize) -> bool {
        if self.len + n > self.buf.len() && self.play > self.hist {
            let shift = self.play - self.hist;
            self.buf.copy_within(shift..self.len, 0);
            self.play -= shift;
            self.len -= shift;
        }
        self.len + n <= self.buf.len()
    }

    /// Pulls one frame from the jitter buffer into the sync buffer; `need` is what the tick still lacks. Returns the
    /// operation, or `None` if there was nothing (the stream has not started).
    fn pull<D: FrameDecoder + ?Sized>(
        &mut self,
        jb: &mut JitterBuffer,
        dec: &mut D,
        now: Duration,
        need: usize,
        out: &mut TickOutcome,
    ) -> Option<Operation> {
        let spf = self.spf;
        // A held underrun that the jitter buffer has since declared lost (a later frame arrived first): the
        // concealment played so far stood in for the lost frames. Fill what it lacks of them before the next
        // packet, so the timeline does not jump back by the unplayed part of a frame in the middle of speech.
        let mut complete = 0usize;
        if self.held > 0 && !jb.holding() {
            let lost = jb.stats().lost;
            if lost > self.held_lost {
                let frames = (lost - self.held_lost).min(2) as usize;
                complete = (frames * spf).saturating_sub(self.held);
            }
        }
        if !self.reserve(3 * spf) {
            complete = 0;
            if !self.reserve(spf) {
                return None;
            }
        }
        let start = self.len;
        let hz = self.hz;
        let (op, r, n) = match jb.pop_at(now) {
            Playout::Idle => return None,
            Playout::Packet {
                payload,
                audio_level,
            } => {
                out.audio_level = audio_level;
                self.held = 0;
                let mut pre = 0;
                if complete > 0 {
                    // The last lost frame from the packet's in-band FEC (concealment if it has none), of which
                    // only the unplayed end is kept; more concealment first if over a frame is missing.
                    let conceal_part = complete.saturating_sub(spf);
                    let mut ok = true;
                    if conceal_part > 0 {
                        let step = (hz * CONCEAL_STEP_MS / 2000) as usize;
                        let c = conceal_part.div_ceil(step) * step;
                        ok = dec.conceal(&mut self.buf[start..start + c]).is_ok();
                        pre = c;
                    }
                    let fec = &mut self.buf[start + pre..start + pre + spf];
                    if ok && dec.decode_fec(payload, fec).is_ok() {
                        let keep = complete - conceal_part;
                        let from = start + pre + spf - keep;
                        self.buf.copy_within(from..from + keep, start + pre);
                        pre += keep;
                    }
                    self.concealed += pre as u64;
                }
                let dst = &mut self.buf[start + pre..start + pre + spf];
                let dtx = dec.is_dtx(payload);
                let r = dec.decode(payload, dst);
                if r.is_ok() {
                    self.cng.observe(dst, dtx);
                }
                if pre > 0 && r.is_ok() {
                    // Merge into the completion, then play the packet after it.
                    (Operation::Normal, r, pre + spf)
                } else {
                    if pre > 0 {
                        self.buf.copy_within(start + pre..start + pre + spf, start);
                    }
                    (Operation::Normal, r, spf)
                }
            }
            Playout::Fec { next_payload } => {
                // The burst goes on: the held frame's unplayed part is concealed before this frame's FEC (dropping
                // it would move the timeline forward by up to a frame in the middle of speech).
                self.held = 0;
                let (pre, ok) = conceal_run(dec, &mut self.buf[start..], complete, spf, hz);
                self.concealed += pre as u64;
                let dst = &mut self.buf[start + pre..start + pre + spf];
                let r = if ok.is_ok() {
                    dec.decode_fec(next_payload, dst)
                } else {
                    ok
                };
                (Operation::Normal, r, pre + spf)
            }
            Playout::Conceal => {
                let dst = &mut self.buf[start..start + spf];
                if jb.holding() && self.last_db < QUIET_DBOV {
                    // Nothing arrived after quiet audio: most likely the sender went into DTX without telling
                    // (its first comfort packets are not sent): background noise, not a concealed vowel.
                    self.held = 0;
                    self.cng.fill(dst);
                    (Operation::ComfortNoise, Ok(()), spf)
                } else {
                    // An underrun conceals only the shortfall (the frame is still awaited); a loss, the whole
                    // frame.
                    let n = if jb.holding() {
                        let step = (hz * CONCEAL_STEP_MS / 2000) as usize;
                        need.div_ceil(step).max(1) * step
                    } else {
                        spf
                    }
                    .min(spf);
                    if jb.holding() {
                        if self.held == 0 {
                            self.held_lost = jb.stats().lost;
                        }
                        self.held += n;
                    } else {
                        self.held = 0;
                    }
                    // A held frame that turned out lost, with the burst going on: its unplayed part first.
                    let (pre, ok) = conceal_run(dec, &mut self.buf[start..], complete, spf, hz);
                    let dst = &mut self.buf[start + pre..start + pre + n];
                    let r = if ok.is_ok() { dec.conceal(dst) } else { ok };
                    (Operation::Expand, r, pre + n)
                }
            }
            Playout::Silence => {
                self.held = 0;
                let dst = &mut self.buf[start..start + spf];
                self.cng.fill(dst);
                (Operation::ComfortNoise, Ok(()), spf)
            }
        };
        let mut op = op;
        if r.is_err() {
            out.decode_errors += 1;
            if conceal_run(dec, &mut self.buf[start..], n, spf, hz)
                .1
                .is_err()
            {
                self.buf[start..start + n].fill(0);
            }
            op = Operation::Expand;
        }
        let mut n = n;
        match op {
            Operation::Expand => {
                self.concealed += n as u64;
                self.concealed_tail = true;
            }
            Operation::ComfortNoise => {
                self.comfort += n as u64;
                self.concealed_tail = false;
            }
            _ => {
                let fresh = &self.buf[start..start + n];
                let db = level_dbov(fresh);
                self.last_db = db;
                self.avg_db = if self.avg_db.is_nan() {
                    db
                } else {
                    self.avg_db + (db - self.avg_db) * 0.02
                };
                if self.concealed_tail {
                    self.concealed_tail = false;
                    let (hist, new) = self.buf.split_at_mut(start);
                    if let Some((len, shift)) = tsm::merge(hist, new, n, self.lags, self.hz) {
                        n = len;
                        self.merges += 1;
                        if shift >= 0 {
                            self.accelerated += shift as u64;
                        } else {
                            self.decelerated += shift.unsigned_abs() as u64;
                        }
                        op = Operation::Merge;
                    }
                }
            }
        }
        self.len = start + n;
        Some(op)
    }

    /// Produces this tick's frame (due at `now`) into `out[..spf]`: pulls and decodes packets from `jb` as needed
    /// and applies the operation the playout offset calls for.
    pub fn tick<D: FrameDecoder + ?Sized>(
        &mut self,
        jb: &mut JitterBuffer,
        dec: &mut D,
        now: Duration,
        out: &mut [i16],
    ) -> TickOutcome {
        let spf = self.spf;
        let mut res = TickOutcome {
            produced: false,
            audio_level: None,
            decode_errors: 0,
            operation: Operation::Idle,
        };
        let level = jb.level_frames() * spf as i64 + self.future() as i64;
        let playing = jb.is_active();
        // With a late allowance a held frame given up for a later one is the allowance at work, not a network loss:
        // it takes no FEC margin (a frame of delay for 5 s, the very delay the allowance is there to save).
        let lost = if jb.late_allowance() > 0 {
            jb.stats().lost.saturating_sub(jb.given_up())
        } else {
            jb.stats().lost
        };
        if lost > self.seen_lost {
            self.loss_ticks = LOSS_MARGIN_TICKS;
        } else {
            self.loss_ticks = self.loss_ticks.saturating_sub(1);
        }
        self.seen_lost = lost;
        let mut want_accel = 0i64;
        let mut want_expand = 0i64;
        let mut voiced_excess = 0i64;
        let mut voiced_deficit = 0i64;
        if playing
            && let (Some(offset), Some(keep), Some(need)) = (
                jb.offset_us(now),
                jb.required_offset_us(true, 0),
                jb.required_offset_us(false, 0),
            )
        {
            // The playout offset (how long after its media time a sample plays) against the offset the on-time
            // envelope needs: exact between operations, whatever the arrival pattern (bursts leave it alone).
            // Concealment played for a frame the jitter buffer still awaits is not delay yet: if the frame turns out
            // lost, that concealment stands in for it and the offset is unchanged.
            let held = if jb.holding() { self.held } else { 0 };
            let offset =
                offset + (self.future() as i64 - held as i64) * 1_000_000 / i64::from(self.hz);
            self.envelope_delay_us = jb.envelope_us().map_or(0, |e| (offset - e).max(0));
            let to_samples = |us: i64| us * i64::from(self.hz) / 1_000_000;
            let start = (spf as f32 * START_FRACTION) as i64;
            let stop = self.quiet_min as i64;
            // The margins (a multiple of the frame, so they keep the tick phase) come and go with the stream's start
            // and its losses: they are taken or given back in quiet audio only. Speech is time-scaled only for an
            // excess beyond the largest margin, or for a deficit against the envelope itself (packets would miss
            // their tick).
            let margin = self.margin_us(jb);
            // A buffer far above the jitter buffer's own target level is surplus even while the envelope's window
            // and hold still remember later arrivals (a sender running fast, a sender's catch-up after a stall) —
            // but not the frames of ticks this driver is late for (its own stall): they play in the next ticks.
            let surplus = level
                - (i64::from(jb.target_frames())
                    + LEVEL_SURPLUS_FRAMES
                    + i64::from(self.overdue_ticks))
                    * spf as i64;
            let excess = to_samples(offset - keep - margin).max(surplus);
            // A stream with a late allowance conceals the shortfall of its late packets, which lifts the offset by
            // up to a frame each time: that excess is taken out of speech too (a period at a time, as NetEQ does)
            // from half a frame on, not left until the next pause.
            let voiced_margin = if jb.late_allowance() > 0 {
                -FRAME_US / 2
            } else {
                FRAME_US
            };
            voiced_excess = to_samples(offset - keep - voiced_margin).max(surplus);
            self.accelerating = excess >= stop && (self.accelerating || excess >= start);
            // Any deficit counts: an offset short of the envelope's by a single sample makes the latest packets
            // miss their tick.
            let deficit = to_samples(need + margin - offset);
            voiced_deficit = to_samples(need - offset);
            self.expanding = deficit > 0;
            if self.accelerating {
                want_accel = excess;
            } else if self.expanding {
                want_expand = deficit;
            }
        }
        self.last_level = level;
        // Decode what this tick needs; an accelerate wants two frames so long periods fit.
        let mut fresh_audio = false;
        let mut changed = false;
        let mut last_op = Operation::Idle;
        loop {
            let want = if want_accel > 0 && jb.next_ready() {
                2 * spf
            } else {
                spf
            };
            if self.future() >= want {
                break;
            }
            let need = spf.saturating_sub(self.future());
            match self.pull(jb, dec, now, need, &mut res) {
                None => break,
                Some(op) => {
                    fresh_audio |= matches!(op, Operation::Normal | Operation::Merge);
                    changed |= matches!(op, Operation::Expand | Operation::Merge);
                    last_op = op;
                    if matches!(op, Operation::ComfortNoise) {
                        // A gap: the next talkspurt starts afresh.
                        self.accelerating = false;
                        self.expanding = false;
                        want_accel = 0;
                        want_expand = 0;
                    }
                }
            }
            if self.future() >= spf && want_accel <= 0 {
                break;
            }
        }
        // In speech: one period at a time, well apart from other changes of the timeline, and only for a clear
        // excess or deficit; quiet audio takes any (the splice is inaudible there).
        let quiet = self.is_quiet(&self.buf[self.play..self.len]);
        let voiced_ok = !changed && self.since_change >= VOICED_GAP_TICKS;
        let accel_ok =
            quiet || (voiced_ok && voiced_excess as f32 >= VOICED_ACCELERATE_FRAMES * spf as f32);
        let expand_ok =
            quiet || (voiced_ok && voiced_deficit as f32 >= VOICED_EXPAND_FRACTION * spf as f32);
        if fresh_audio && !self.concealed_tail {
            if want_accel >= self.quiet_min as i64 && !accel_ok {
                // Wait for a quiet stretch or a clear excess.
            } else if want_accel >= self.quiet_min as i64 {
                let removed = self.accelerate(want_accel as usize);
                if removed > 0 {
                    last_op = Operation::Accelerate;
                    // Refill if the removal left less than a frame.
                    while self.future() < spf {
                        let need = spf - self.future();
                        if self.pull(jb, dec, now, need, &mut res).is_none() {
                            break;
                        }
                    }
                }
            } else if want_expand > 0 && expand_ok && self.expand(want_expand as usize) > 0 {
                last_op = Operation::PreemptiveExpand;
            }
        }
        changed |= matches!(
            last_op,
            Operation::Accelerate | Operation::PreemptiveExpand | Operation::Merge
        );
        self.since_change = if changed {
            0
        } else {
            self.since_change.saturating_add(1)
        };
        let avail = self.future().min(spf);
        if avail == 0 {
            res.operation = Operation::Idle;
            return res;
        }
        let dst = &mut out[..spf];
        dst[..avail].copy_from_slice(&self.buf[self.play..self.play + avail]);
        if avail < spf {
            // Only when the stream has nothing more at all (cannot happen while a stream plays: concealment fills).
            self.cng.fill(&mut dst[avail..]);
        }
        self.play += avail;
        // Keep `hist` samples of history; drop what is older.
        if self.play > self.hist {
            let shift = self.play - self.hist;
            self.buf.copy_within(shift..self.len, 0);
            self.play -= shift;
            self.len -= shift;
        }
        res.produced = true;
        res.operation = last_op;
        res
    }

    /// Removes up to `limit` samples from the future audio; returns how many.
    fn accelerate(&mut self, limit: usize) -> usize {
        let quiet = self.is_quiet(&self.buf[self.play..self.len]);
        let future = &mut self.buf[self.play..self.len];
        let flen = future.len();
        let lag = match tsm::best_period(future, self.lags, limit) {
            Some(p) if p.correlation >= VOICED_CORRELATION => p.lag,
            _ if quiet => limit.min(flen / 2).min(self.lags.max),
            _ => return 0,
        };
        if lag < self.quiet_min {
            return 0;
        }
        let new_len = tsm::remove_period(future, flen, lag);
        let removed = flen - new_len;
        self.len -= removed;
        self.accelerated += removed as u64;
        removed
    }

    /// Inserts a period (about `deficit` samples at most, one period at least) into the future audio; returns how many.
    fn expand(&mut self, deficit: usize) -> usize {
        let quiet = self.is_quiet(&self.buf[self.play..self.len]);
        if !self.reserve(self.lags.max) {
            return 0;
        }
        let flen = self.len - self.play;
        let room = self.buf.len() - self.play;
        let future = &mut self.buf[self.play..self.play + room];
        let lag = match tsm::best_period(&future[..flen], self.lags, self.lags.max) {
            Some(p) if p.correlation >= VOICED_CORRELATION => p.lag,
            _ if quiet => deficit.max(self.quiet_min).min(flen / 2).min(self.lags.max),
            _ => return 0,
        };
        let new_len = tsm::insert_period(future, flen, lag);
        let added = new_len - flen;
        self.len += added;
        self.decelerated += added as u64;
        added
    }
}
