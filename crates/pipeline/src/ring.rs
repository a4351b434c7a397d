//! Bounded single-producer/single-consumer frame rings between the media worker and bot logic.
//!
//! * **Inbound** (call → bot, [`inbound`]): the call never waits for the bot. When the ring is full the oldest
//!   frame is dropped and counted ([`InboundConsumer::dropped`]); a bot that fell a whole ring behind resumes with
//!   the newest [`INBOUND_RESUME_FRAMES`] frames, the stale rest skipped and counted. This is the project's one drop-oldest ring design, shared with `mediaproc-net`'s
//!   packet rings: a [`crossbeam_queue::ArrayQueue`] filled with [`ArrayQueue::force_push`], which swaps the oldest
//!   entry out atomically when full and hands it back, so the producer counts the drop exactly, on the spot. A
//!   frame is large (up to 9 streams of 20 ms, ~17 KB as a `ReceivedAudio`), so instead of storing frames inline
//!   the queue carries pre-allocated slots sized for the ring's rate and `max_unmixed`, recycled through a second
//!   `ArrayQueue` (the free list): the producer takes a free slot, fills it, `force_push`es it and returns a
//!   displaced slot to the free list; the consumer pops a slot, copies it out and returns it. The pool is sized so
//!   that the producer always finds a free slot (see [`inbound`]).
//! * **Outbound** (bot → call, [`outbound`]): text-to-speech arrives faster than real time, so the ring holds
//!   seconds ([`DEFAULT_OUTBOUND_CAPACITY_FRAMES`] = 10 s) and applies backpressure: [`OutboundProducer::push`]
//!   returns [`Error::OutboundFull`] and the bot retries later. [`OutboundProducer::clear`] (barge-in) discards every
//!   frame queued before it within the next tick; [`OutboundProducer::mark`] places a named mark between frames,
//!   reported by the session when the frame before it has been sent (or, flagged `cleared`, when a clear discarded
//!   it) — the Twilio/Vonage convention. It is built on `ringbuf` (`HeapRb<i16>` for samples plus a mark ring):
//!   backpressure needs a producer that sees the free room, not one that displaces.
//!
//! Everything is allocated when a ring is created; push and pop copy samples and never allocate or lock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_queue::ArrayQueue;
use ringbuf::traits::{Consumer, Observer, Producer, Split};
use ringbuf::{HeapCons, HeapProd, HeapRb};

use crate::error::{Error, Result};
use crate::frame::{FrameInfo, MAX_FRAME_SAMPLES, SampleRate};

/// Default inbound capacity: 50 frames = 1 s of audio waiting for the bot.
pub const DEFAULT_INBOUND_CAPACITY_FRAMES: usize = 50;
/// Default outbound capacity: 500 frames = 10 s of bot audio.
pub const DEFAULT_OUTBOUND_CAPACITY_FRAMES: usize = 500;
/// Upper bound of unmixed speaker streams carried with each inbound frame.
pub const MAX_UNMIXED: usize = 8;
/// Longest mark name in bytes.
pub const MAX_MARK_NAME_LEN: usize = 64;
/// Marks that may be pending at once.
pub const MARKS_CAPACITY: usize = 64;

/// A mark name stored inline (no allocation): at most [`MAX_MARK_NAME_LEN`] bytes of UTF-8.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct MarkName {
    bytes: [u8; MAX_MARK_NAME_LEN],
    len: u8,
}

impl MarkName {
    /// Copies a name; fails if it is longer than [`MAX_MARK_NAME_LEN`] bytes.
    pub fn new(name: &str) -> Result<Self> {
        let len = name.len();
        if len > MAX_MARK_NAME_LEN {
            return Err(Error::MarkNameTooLong {
                len,
                max: MAX_MARK_NAME_LEN,
            });
        }
        let mut bytes = [0u8; MAX_MARK_NAME_LEN];
        bytes[..len].copy_from_slice(name.as_bytes());
        Ok(Self {
            bytes,
            len: len as u8,
        })
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        // Only ever built from a &str, so this cannot fail; fall back to "" rather than panic.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }
}

impl std::fmt::Debug for MarkName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// One frame for the bot: the mixed audio, the active speakers, and unmixed streams of the loudest speakers.
#[derive(Clone, Debug)]
pub struct ReceivedAudio {
    /// Timestamp, sequence, silence flag.
    pub info: FrameInfo,
    samples_per_frame: usize,
    mixed: [i16; MAX_FRAME_SAMPLES],
    active: [u32; MAX_UNMIXED],
    active_count: usize,
    unmixed_ids: [u32; MAX_UNMIXED],
    unmixed: [[i16; MAX_FRAME_SAMPLES]; MAX_UNMIXED],
    unmixed_count: usize,
}

impl ReceivedAudio {
    /// An empty (silent) frame at `rate`.
    pub fn new(rate: SampleRate) -> Self {
        Self {
            info: FrameInfo::default(),
            samples_per_frame: rate.samples_per_frame(),
            mixed: [0; MAX_FRAME_SAMPLES],
            active: [0; MAX_UNMIXED],
            active_count: 0,
            unmixed_ids: [0; MAX_UNMIXED],
            unmixed: [[0; MAX_FRAME_SAMPLES]; MAX_UNMIXED],
            unmixed_count: 0,
        }
    }

    /// Samples per frame at this frame's rate.
    pub fn samples_per_frame(&self) -> usize {
        self.samples_per_frame
    }
    /// The mixed audio of all speakers.
    pub fn mixed(&self) -> &[i16] {
        &self.mixed[..self.samples_per_frame]
    }
    /// Mutable mixed audio (for the session and tests).
    pub fn mixed_mut(&mut self) -> &mut [i16] {
        &mut self.mixed[..self.samples_per_frame]
    }
    /// Media source ids of the active speakers, loudest first.
    pub fn active_speakers(&self) -> &[u32] {
        &self.active[..self.active_count]
    }
    /// Number of unmixed streams in this frame.
    pub fn unmixed_len(&self) -> usize {
        self.unmixed_count
    }
    /// The `i`-th unmixed stream: (media source id, samples).
    pub fn unmixed(&self, i: usize) -> Option<(u32, &[i16])> {
        (i < self.unmixed_count).then(|| {
            (
                self.unmixed_ids[i],
                &self.unmixed[i][..self.samples_per_frame],
            )
        })
    }
    /// Replaces the speaker metadata and clears the unmixed list.
    pub fn set_active_speakers(&mut self, ids: &[u32]) {
        let n = ids.len().min(MAX_UNMIXED);
        self.active[..n].copy_from_slice(&ids[..n]);
        self.active_count = n;
    }
    /// Removes all unmixed streams.
    pub fn clear_unmixed(&mut self) {
        self.unmixed_count = 0;
    }
    /// Appends an unmixed stream; returns its buffer to fill, or `None` when [`MAX_UNMIXED`] are present.
    pub fn push_unmixed(&mut self, source_id: u32) -> Option<&mut [i16]> {
        if self.unmixed_count >= MAX_UNMIXED {
            return None;
        }
        let i = self.unmixed_count;
        self.unmixed_count += 1;
        self.unmixed_ids[i] = source_id;
        Some(&mut self.unmixed[i][..self.samples_per_frame])
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct InboundMeta {
    info: FrameInfo,
    active: [u32; MAX_UNMIXED],
    active_count: u8,
    unmixed_ids: [u32; MAX_UNMIXED],
    unmixed_count: u8,
}

/// One frame in the inbound ring: its metadata and the samples of the mixed stream followed by the unmixed ones,
/// in a buffer sized once for the ring's rate and `max_unmixed`. Slots are recycled, never allocated per frame.
#[derive(Debug)]
struct FrameSlot {
    meta: InboundMeta,
    samples: Box<[i16]>,
}

#[derive(Debug)]
struct InboundShared {
    /// Frames for the bot, oldest first; `force_push` displaces the oldest when full.
    ready: ArrayQueue<FrameSlot>,
    /// Empty slots. Its capacity is the whole pool, so returning a slot never fails.
    free: ArrayQueue<FrameSlot>,
    dropped: AtomicU64,
}

/// Worker side of the inbound ring.
pub struct InboundProducer {
    shared: Arc<InboundShared>,
    samples_per_frame: usize,
    max_unmixed: usize,
}

/// Bot side of the inbound ring.
pub struct InboundConsumer {
    shared: Arc<InboundShared>,
    samples_per_frame: usize,
    /// Drops seen at the last pop: more since means the bot fell a whole ring behind.
    seen_dropped: u64,
}

/// Frames a bot that fell a whole ring behind resumes with (100 ms): the newest audio, not a second of stale
/// backlog; the frames before them are skipped and counted as dropped.
pub const INBOUND_RESUME_FRAMES: usize = 5;

impl std::fmt::Debug for InboundProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundProducer")
            .field("queued", &self.queued())
            .field("dropped", &self.dropped())
            .finish()
    }
}
impl std::fmt::Debug for InboundConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundConsumer")
            .field("queued", &self.queued())
            .field("dropped", &self.dropped())
            .finish()
    }
}

/// Creates the inbound (call → bot) ring holding `capacity_frames` frames at `rate`, each with up to
/// `max_unmixed` unmixed speaker streams (at most [`MAX_UNMIXED`]).
pub fn inbound(
    capacity_frames: usize,
    rate: SampleRate,
    max_unmixed: usize,
) -> Result<(InboundProducer, InboundConsumer)> {
    if capacity_frames == 0 {
        return Err(Error::Config {
            field: "inbound capacity",
            problem: "must be at least one frame",
        });
    }
    if max_unmixed > MAX_UNMIXED {
        return Err(Error::Config {
            field: "max_unmixed",
            problem: "must be at most MAX_UNMIXED (8)",
        });
    }
    let spf = rate.samples_per_frame();
    // Pool = ready capacity + 2. At any instant a slot is in `ready` (at most `capacity_frames`), held by the
    // consumer while it copies a frame out (at most one), held by the producer while it fills one (at most one:
    // `force_push` takes the new slot and hands back the displaced one in a single step), or in `free`. So when the
    // producer goes to take a slot (holding none) at least one is free: it never has to drop the new frame.
    let pool = capacity_frames + 2;
    let free = ArrayQueue::new(pool);
    for _ in 0..pool {
        let slot = FrameSlot {
            meta: InboundMeta::default(),
            samples: vec![0; spf * (1 + max_unmixed)].into_boxed_slice(),
        };
        // The queue has room for the whole pool.
        let _ = free.push(slot);
    }
    let shared = Arc::new(InboundShared {
        ready: ArrayQueue::new(capacity_frames),
        free,
        dropped: AtomicU64::new(0),
    });
    Ok((
        InboundProducer {
            shared: Arc::clone(&shared),
            samples_per_frame: spf,
            max_unmixed,
        },
        InboundConsumer {
            shared,
            samples_per_frame: spf,
            seen_dropped: 0,
        },
    ))
}

impl InboundProducer {
    /// Queues a frame for the bot. Never blocks and never fails: if the bot is behind, the oldest frame goes (and
    /// is counted). Unmixed streams beyond the ring's `max_unmixed` are not forwarded.
    pub fn push(&mut self, frame: &ReceivedAudio) {
        let Some(mut slot) = self.shared.free.pop() else {
            // Unreachable by the pool's sizing (see `inbound`); if it ever happened the frame is lost, and counted.
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let n = self.samples_per_frame;
        let unmixed_count = frame.unmixed_count.min(self.max_unmixed);
        let streams = std::iter::once(&frame.mixed).chain(&frame.unmixed[..unmixed_count]);
        for (dst, src) in slot.samples.chunks_exact_mut(n).zip(streams) {
            dst.copy_from_slice(&src[..n]);
        }
        slot.meta = InboundMeta {
            info: frame.info,
            active: frame.active,
            active_count: frame.active_count as u8,
            unmixed_ids: frame.unmixed_ids,
            unmixed_count: unmixed_count as u8,
        };
        if let Some(old) = self.shared.ready.force_push(slot) {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            // `free` has room for every slot of the pool, so this cannot fail.
            let _ = self.shared.free.push(old);
        }
    }

    /// Frames waiting for the bot (a snapshot while the bot runs).
    pub fn queued(&self) -> usize {
        self.shared.ready.len()
    }

    /// Frames dropped so far because the bot fell behind.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

impl InboundConsumer {
    /// Takes the oldest frame into `out`; false if none is queued. After the ring overflowed (frames were dropped
    /// since the last pop) the bot skips to the newest [`INBOUND_RESUME_FRAMES`] frames.
    pub fn pop(&mut self, out: &mut ReceivedAudio) -> bool {
        let dropped = self.shared.dropped.load(Ordering::Acquire);
        if dropped != self.seen_dropped {
            let mut skipped = 0;
            while self.shared.ready.len() > INBOUND_RESUME_FRAMES {
                let Some(stale) = self.shared.ready.pop() else {
                    break;
                };
                // `free` has room for every slot of the pool, so this cannot fail.
                let _ = self.shared.free.push(stale);
                skipped += 1;
            }
            self.seen_dropped = self.shared.dropped.fetch_add(skipped, Ordering::AcqRel) + skipped;
        }
        let Some(slot) = self.shared.ready.pop() else {
            return false;
        };
        let n = self.samples_per_frame;
        let m = slot.meta;
        out.samples_per_frame = n;
        out.info = m.info;
        out.active = m.active;
        out.active_count = usize::from(m.active_count);
        out.unmixed_ids = m.unmixed_ids;
        out.unmixed_count = usize::from(m.unmixed_count);
        let mut chunks = slot.samples.chunks_exact(n);
        if let Some(mixed) = chunks.next() {
            out.mixed[..n].copy_from_slice(mixed);
        }
        for (dst, src) in out.unmixed[..out.unmixed_count].iter_mut().zip(chunks) {
            dst[..n].copy_from_slice(src);
        }
        // `free` has room for every slot of the pool, so this cannot fail.
        let _ = self.shared.free.push(slot);
        true
    }

    /// Frames dropped so far because the bot fell behind (oldest first).
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Frames waiting for the bot.
    pub fn queued(&self) -> usize {
        self.shared.ready.len()
    }
}

#[derive(Debug, Default)]
struct OutboundShared {
    pushed_frames: AtomicU64,
    placed_marks: AtomicU64,
    clear_frames: AtomicU64,
    clear_marks: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
struct PendingMark {
    seq: u64,
    at_frame: u64,
    name: MarkName,
}

/// Bot side of the outbound ring: push frames, clear, mark.
pub struct OutboundProducer {
    samples: HeapProd<i16>,
    marks: HeapProd<PendingMark>,
    shared: Arc<OutboundShared>,
    samples_per_frame: usize,
    rate_hz: u32,
    capacity_frames: usize,
    pushed: u64,
    marks_placed: u64,
}

/// Worker side of the outbound ring.
pub struct OutboundConsumer {
    samples: HeapCons<i16>,
    marks: HeapCons<PendingMark>,
    shared: Arc<OutboundShared>,
    samples_per_frame: usize,
    popped: u64,
    cleared_frames: u64,
}

impl std::fmt::Debug for OutboundProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundProducer")
            .field("pushed", &self.pushed)
            .finish()
    }
}
impl std::fmt::Debug for OutboundConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundConsumer")
            .field("popped", &self.popped)
            .finish()
    }
}

/// Creates the outbound (bot → call) ring holding `capacity_frames` frames at `rate`.
pub fn outbound(
    capacity_frames: usize,
    rate: SampleRate,
) -> Result<(OutboundProducer, OutboundConsumer)> {
    if capacity_frames == 0 {
        return Err(Error::Config {
            field: "outbound capacity",
            problem: "must be at least one frame",
        });
    }
    let spf = rate.samples_per_frame();
    let (sp, sc) = HeapRb::<i16>::new(capacity_frames * spf).split();
    let (mp, mc) = HeapRb::<PendingMark>::new(MARKS_CAPACITY).split();
    let shared = Arc::new(OutboundShared::default());
    Ok((
        OutboundProducer {
            samples: sp,
            marks: mp,
            shared: Arc::clone(&shared),
            samples_per_frame: spf,
            rate_hz: rate.hz(),
            capacity_frames,
            pushed: 0,
            marks_placed: 0,
        },
        OutboundConsumer {
            samples: sc,
            marks: mc,
            shared,
            samples_per_frame: spf,
            popped: 0,
            cleared_frames: 0,
        },
    ))
}

impl OutboundProducer {
    /// Queues one 20 ms frame. Returns [`Error::OutboundFull`] (backpressure) when the queue is full and
    /// [`Error::FrameLength`] when the frame is not 20 ms at the session's rate.
    pub fn push(&mut self, frame: &[i16]) -> Result<()> {
        if frame.len() != self.samples_per_frame {
            return Err(Error::FrameLength {
                got: frame.len(),
                expected: self.samples_per_frame,
                rate_hz: self.rate_hz,
                context: "OutboundProducer::push",
            });
        }
        if self.samples.vacant_len() < self.samples_per_frame {
            return Err(Error::OutboundFull {
                capacity_frames: self.capacity_frames,
            });
        }
        self.samples.push_slice(frame);
        self.pushed += 1;
        self.shared
            .pushed_frames
            .store(self.pushed, Ordering::Release);
        Ok(())
    }

    /// Barge-in: everything queued so far (and the marks placed so far) is discarded at the next tick.
    pub fn clear(&mut self) {
        self.shared
            .clear_marks
            .store(self.marks_placed, Ordering::Release);
        self.shared
            .clear_frames
            .store(self.pushed, Ordering::Release);
    }

    /// Places a mark after the last frame pushed; the session reports it once that frame has been sent.
    pub fn mark(&mut self, name: &str) -> Result<()> {
        let name = MarkName::new(name)?;
        let mark = PendingMark {
            seq: self.marks_placed,
            at_frame: self.pushed,
            name,
        };
        if self.marks.try_push(mark).is_err() {
            return Err(Error::MarksFull {
                max: MARKS_CAPACITY,
            });
        }
        self.marks_placed += 1;
        self.shared
            .placed_marks
            .store(self.marks_placed, Ordering::Release);
        Ok(())
    }

    /// Frames queued and not yet taken by the session (approximate while the session runs).
    pub fn queued_frames(&self) -> usize {
        self.samples.occupied_len() / self.samples_per_frame
    }

    /// Free room in frames.
    pub fn vacant_frames(&self) -> usize {
        self.samples.vacant_len() / self.samples_per_frame
    }
}

/// A mark that became due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DueMark {
    /// The bot's name for it.
    pub name: MarkName,
    /// True if a `clear` discarded the audio before it (it was not played).
    pub cleared: bool,
}

impl OutboundConsumer {
    /// Applies a pending `clear`: discards the frames queued before it. Returns the frames discarded.
    pub fn apply_clear(&mut self) -> u64 {
        let upto = self.shared.clear_frames.load(Ordering::Acquire);
        if upto <= self.popped {
            return 0;
        }
        let frames = upto - self.popped;
        let avail = (self.samples.occupied_len() / self.samples_per_frame) as u64;
        let n = frames.min(avail);
        self.samples.skip(n as usize * self.samples_per_frame);
        self.popped += n;
        self.cleared_frames += n;
        n
    }

    /// Takes the next frame into `out` (which must be one frame long); false if the bot has nothing queued.
    pub fn pop(&mut self, out: &mut [i16]) -> bool {
        self.apply_clear();
        let n = self.samples_per_frame;
        if out.len() < n || self.samples.occupied_len() < n {
            return false;
        }
        self.samples.pop_slice(&mut out[..n]);
        self.popped += 1;
        true
    }

    /// Call after the packet of the last popped frame was emitted: returns the next mark that is due.
    pub fn next_due_mark(&mut self) -> Option<DueMark> {
        let clear_marks = self.shared.clear_marks.load(Ordering::Acquire);
        let m = self.marks.try_peek()?;
        let cleared = m.seq < clear_marks;
        if cleared || m.at_frame <= self.popped {
            let m = self.marks.try_pop()?;
            return Some(DueMark {
                name: m.name,
                cleared,
            });
        }
        None
    }

    /// Frames queued by the bot.
    pub fn queued_frames(&self) -> usize {
        self.samples.occupied_len() / self.samples_per_frame
    }

    /// Frames taken so far (sent or cleared).
    pub fn popped_frames(&self) -> u64 {
        self.popped
    }

    /// Frames discarded by `clear` so far.
    pub fn cleared_frames(&self) -> u64 {
        self.cleared_frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(rate: SampleRate, seq: u64) -> ReceivedAudio {
        let mut f = ReceivedAudio::new(rate);
        f.info.sequence = seq;
        f.mixed_mut().fill(seq as i16);
        f
    }

    #[test]
    fn inbound_overflow_drops_oldest() {
        let rate = SampleRate::HZ_16000;
        let (mut p, mut c) = inbound(5, rate, 0).unwrap();
        // The bot stalls while 13 frames arrive: the newest 5 are kept, the 8 oldest go, counted as they go.
        for seq in 0..13 {
            p.push(&frame(rate, seq));
        }
        assert_eq!((p.queued(), c.queued()), (5, 5));
        assert_eq!(p.dropped(), 8);
        let mut out = ReceivedAudio::new(rate);
        let mut got = Vec::new();
        while c.pop(&mut out) {
            assert!(out.mixed().iter().all(|&s| s == out.info.sequence as i16));
            got.push(out.info.sequence);
        }
        assert_eq!(got, vec![8, 9, 10, 11, 12]);
        assert_eq!(c.dropped(), 8);
        // A bot that is merely slow (pops one frame every other push) loses the oldest frames, never the newest.
        let (mut p, mut c) = inbound(3, rate, 0).unwrap();
        let mut last = 0;
        for seq in 0..200 {
            p.push(&frame(rate, seq));
            if seq % 2 == 0 && c.pop(&mut out) {
                assert!(out.info.sequence >= last);
                last = out.info.sequence;
            }
        }
        assert!(last >= 190, "bot keeps up with recent audio: {last}");
        assert!(c.dropped() >= 90);
    }

    #[test]
    fn inbound_no_drop_when_bot_keeps_up() {
        let rate = SampleRate::HZ_8000;
        let (mut p, mut c) = inbound(2, rate, 2).unwrap();
        let mut out = ReceivedAudio::new(rate);
        for seq in 0..100 {
            let mut f = frame(rate, seq);
            f.set_active_speakers(&[7, 9]);
            f.push_unmixed(7).unwrap().fill(-3);
            p.push(&f);
            assert!(c.pop(&mut out));
            assert_eq!(out.info.sequence, seq);
            assert_eq!(out.active_speakers(), &[7, 9]);
            assert_eq!(out.unmixed(0).map(|(id, s)| (id, s[0])), Some((7, -3)));
        }
        assert_eq!(c.dropped(), 0);
    }

    #[test]
    fn inbound_threads_get_whole_frames_in_order() {
        // A producer on another thread laps a consumer that polls as fast as it can: every frame it gets is whole
        // (mixed and unmixed samples and metadata from the same push), in order, and every frame is either
        // delivered or counted as dropped. A slot shortage would show as a frame missing from both.
        let rate = SampleRate::HZ_8000;
        let (mut p, mut c) = inbound(3, rate, 2).unwrap();
        let n = 50_000u64;
        let t = std::thread::spawn(move || {
            let mut f = ReceivedAudio::new(rate);
            for seq in 0..n {
                f.info.sequence = seq;
                f.mixed_mut().fill(seq as i16);
                f.set_active_speakers(&[seq as u32]);
                f.clear_unmixed();
                f.push_unmixed(seq as u32).unwrap().fill(!(seq as i16));
                f.push_unmixed(1).unwrap().fill(seq as i16 ^ 0x55);
                p.push(&f);
            }
            p
        });
        let mut out = ReceivedAudio::new(rate);
        let mut last = None;
        let mut got = 0u64;
        loop {
            if c.pop(&mut out) {
                let seq = out.info.sequence;
                assert!(last.is_none_or(|l| seq > l), "out of order");
                assert!(out.mixed().iter().all(|&s| s == seq as i16), "torn {seq}");
                assert_eq!(out.active_speakers(), &[seq as u32]);
                let (id, s0) = out.unmixed(0).unwrap();
                assert_eq!(id, seq as u32);
                assert!(s0.iter().all(|&s| s == !(seq as i16)));
                assert!(
                    out.unmixed(1)
                        .unwrap()
                        .1
                        .iter()
                        .all(|&s| s == seq as i16 ^ 0x55)
                );
                last = Some(seq);
                got += 1;
            } else if t.is_finished() && c.queued() == 0 {
                break;
            }
        }
        let p = t.join().unwrap();
        assert_eq!(last, Some(n - 1));
        assert_eq!(got + c.dropped(), n);
        assert_eq!(p.dropped(), c.dropped());
    }

    #[test]
    fn outbound_backpressure_clear_and_marks() {
        let rate = SampleRate::HZ_16000;
        let (mut p, mut c) = outbound(3, rate).unwrap();
        let f = [1i16; 320];
        assert!(matches!(p.push(&f[..319]), Err(Error::FrameLength { .. })));
        p.push(&f).unwrap();
        p.mark("one").unwrap();
        p.push(&f).unwrap();
        p.push(&f).unwrap();
        assert!(matches!(
            p.push(&f),
            Err(Error::OutboundFull { capacity_frames: 3 })
        ));
        p.mark("three").unwrap();
        let mut out = [0i16; 320];
        assert_eq!(c.next_due_mark(), None, "nothing sent yet");
        assert!(c.pop(&mut out));
        assert_eq!(
            c.next_due_mark()
                .map(|m| (m.name.as_str().to_owned(), m.cleared)),
            Some(("one".into(), false))
        );
        assert_eq!(c.next_due_mark(), None);
        // Barge-in: the two remaining frames and the mark behind them go; a frame pushed after clear stays.
        p.clear();
        p.push(&[2i16; 320]).unwrap();
        p.mark("after").unwrap();
        assert!(c.pop(&mut out));
        assert_eq!(out[0], 2);
        assert_eq!(c.cleared_frames(), 2);
        let m = c.next_due_mark().unwrap();
        assert_eq!((m.name.as_str(), m.cleared), ("three", true));
        let m = c.next_due_mark().unwrap();
        assert_eq!((m.name.as_str(), m.cleared), ("after", false));
        assert!(!c.pop(&mut out));
        assert!(MarkName::new(&"x".repeat(65)).is_err());
    }
}
