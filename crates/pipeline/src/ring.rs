//! Bounded single-producer/single-consumer frame rings between the media worker and bot logic.
//!
//! * **Inbound** (call → bot, [`inbound`]): the call never waits for the bot. When the ring is full the oldest
//!   frames are dropped and counted ([`InboundConsumer::dropped`]). A lock-free SPSC producer cannot pop, so the
//!   producer parks the newest frames in a small staging FIFO ([`INBOUND_STAGING_FRAMES`]) and asks the consumer to
//!   skip as many of the oldest frames as overflowed; staged frames move into the ring as soon as it has room.
//!   After a long stall every stale frame in the ring is skipped; the staged (newest) frames reach the bot with the
//!   producer's next push, i.e. within one tick. In a race with a consumer that is popping at that very instant one
//!   extra old frame may be skipped.
//! * **Outbound** (bot → call, [`outbound`]): text-to-speech arrives faster than real time, so the ring holds
//!   seconds ([`DEFAULT_OUTBOUND_CAPACITY_FRAMES`] = 10 s) and applies backpressure: [`OutboundProducer::push`]
//!   returns [`Error::OutboundFull`] and the bot retries later. [`OutboundProducer::clear`] (barge-in) discards every
//!   frame queued before it within the next tick; [`OutboundProducer::mark`] places a named mark between frames,
//!   reported by the session when the frame before it has been sent (or, flagged `cleared`, when a clear discarded
//!   it) — the Twilio/Vonage convention.
//!
//! Both directions are built on `ringbuf` (`HeapRb<i16>` for samples plus a metadata ring). Everything is
//! allocated when the ring is created; push and pop copy samples and never allocate.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ringbuf::traits::{Consumer, Observer, Producer, Split};
use ringbuf::{HeapCons, HeapProd, HeapRb};

use crate::error::{Error, Result};
use crate::frame::{FrameInfo, MAX_FRAME_SAMPLES, SampleRate};

/// Default inbound capacity: 50 frames = 1 s of audio waiting for the bot.
pub const DEFAULT_INBOUND_CAPACITY_FRAMES: usize = 50;
/// Frames the inbound producer can park while the ring is full (newest kept, oldest of them dropped).
pub const INBOUND_STAGING_FRAMES: usize = 4;
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

#[derive(Debug, Default)]
struct InboundShared {
    skip_requests: AtomicU64,
    dropped: AtomicU64,
    delivered: AtomicU64,
}

/// Worker side of the inbound ring.
pub struct InboundProducer {
    samples: HeapProd<i16>,
    meta: HeapProd<InboundMeta>,
    shared: Arc<InboundShared>,
    staging: Box<[ReceivedAudio]>,
    staging_head: usize,
    staging_len: usize,
    samples_per_frame: usize,
    max_unmixed: usize,
}

/// Bot side of the inbound ring.
pub struct InboundConsumer {
    samples: HeapCons<i16>,
    meta: HeapCons<InboundMeta>,
    shared: Arc<InboundShared>,
    samples_per_frame: usize,
}

impl std::fmt::Debug for InboundProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundProducer")
            .field("queued", &self.meta.occupied_len())
            .field("staged", &self.staging_len)
            .finish()
    }
}
impl std::fmt::Debug for InboundConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundConsumer")
            .field("queued", &self.meta.occupied_len())
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
    let (sp, sc) = HeapRb::<i16>::new(capacity_frames * spf * (1 + max_unmixed)).split();
    let (mp, mc) = HeapRb::<InboundMeta>::new(capacity_frames).split();
    let shared = Arc::new(InboundShared::default());
    let staging = (0..INBOUND_STAGING_FRAMES)
        .map(|_| ReceivedAudio::new(rate))
        .collect();
    Ok((
        InboundProducer {
            samples: sp,
            meta: mp,
            shared: Arc::clone(&shared),
            staging,
            staging_head: 0,
            staging_len: 0,
            samples_per_frame: spf,
            max_unmixed,
        },
        InboundConsumer {
            samples: sc,
            meta: mc,
            shared,
            samples_per_frame: spf,
        },
    ))
}

impl InboundProducer {
    fn write(
        samples: &mut HeapProd<i16>,
        meta_ring: &mut HeapProd<InboundMeta>,
        n: usize,
        max_unmixed: usize,
        frame: &ReceivedAudio,
    ) {
        samples.push_slice(&frame.mixed[..n]);
        let unmixed_count = frame.unmixed_count.min(max_unmixed);
        for i in 0..unmixed_count {
            samples.push_slice(&frame.unmixed[i][..n]);
        }
        let meta = InboundMeta {
            info: frame.info,
            active: frame.active,
            active_count: frame.active_count as u8,
            unmixed_ids: frame.unmixed_ids,
            unmixed_count: unmixed_count as u8,
        };
        // Capacity was checked by the caller; a failure here would only mean a frame is lost, never a panic.
        let _ = meta_ring.try_push(meta);
    }

    fn has_room(&self) -> bool {
        self.meta.vacant_len() > 0
            && self.samples.vacant_len() >= self.samples_per_frame * (1 + self.max_unmixed)
    }

    fn flush_staging(&mut self) {
        while self.staging_len > 0 && self.has_room() {
            let idx = self.staging_head;
            Self::write(
                &mut self.samples,
                &mut self.meta,
                self.samples_per_frame,
                self.max_unmixed,
                &self.staging[idx],
            );
            self.staging_head = (self.staging_head + 1) % INBOUND_STAGING_FRAMES;
            self.staging_len -= 1;
        }
    }

    /// Queues a frame for the bot. Never blocks and never fails: if the bot is behind, the oldest frames go.
    /// Unmixed streams beyond the ring's `max_unmixed` are not forwarded.
    pub fn push(&mut self, frame: &ReceivedAudio) {
        self.flush_staging();
        if self.staging_len == 0 && self.has_room() {
            Self::write(
                &mut self.samples,
                &mut self.meta,
                self.samples_per_frame,
                self.max_unmixed,
                frame,
            );
            return;
        }
        // Full: park the frame and ask the consumer to skip one of the oldest frames. If the staging area is full
        // too (the bot is stalled), its oldest frame goes: the bot resumes with the newest audio.
        if self.staging_len == INBOUND_STAGING_FRAMES {
            self.staging_head = (self.staging_head + 1) % INBOUND_STAGING_FRAMES;
            self.staging_len -= 1;
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        }
        self.shared.skip_requests.fetch_add(1, Ordering::AcqRel);
        let tail = (self.staging_head + self.staging_len) % INBOUND_STAGING_FRAMES;
        self.staging[tail].clone_from(frame);
        self.staging_len += 1;
    }

    /// Moves staged frames into the ring as far as it has room (done by every push as well).
    pub fn flush(&mut self) {
        self.flush_staging();
    }

    /// Frames waiting in the ring and the staging area.
    pub fn queued(&self) -> usize {
        self.meta.occupied_len() + self.staging_len
    }

    /// Frames dropped so far because the bot fell behind.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

impl InboundConsumer {
    fn skip_one(&mut self) -> bool {
        match self.meta.try_pop() {
            Some(m) => {
                self.samples
                    .skip(self.samples_per_frame * (1 + usize::from(m.unmixed_count)));
                true
            }
            None => false,
        }
    }

    /// Takes the oldest frame into `out`; false if none is queued.
    pub fn pop(&mut self, out: &mut ReceivedAudio) -> bool {
        let skips = self.shared.skip_requests.swap(0, Ordering::AcqRel);
        let mut skipped = 0;
        while skipped < skips && self.skip_one() {
            skipped += 1;
        }
        if skipped > 0 {
            self.shared.dropped.fetch_add(skipped, Ordering::Relaxed);
        }
        let Some(m) = self.meta.try_pop() else {
            return false;
        };
        let n = self.samples_per_frame;
        out.samples_per_frame = n;
        out.info = m.info;
        out.active = m.active;
        out.active_count = usize::from(m.active_count);
        out.unmixed_ids = m.unmixed_ids;
        out.unmixed_count = usize::from(m.unmixed_count);
        self.samples.pop_slice(&mut out.mixed[..n]);
        for i in 0..out.unmixed_count {
            self.samples.pop_slice(&mut out.unmixed[i][..n]);
        }
        self.shared.delivered.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Frames dropped so far because the bot fell behind (oldest first).
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Frames waiting in the ring (staged frames not included).
    pub fn queued(&self) -> usize {
        self.meta.occupied_len()
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
        // The bot stalls while 12 frames arrive: 5 fit, 4 are staged, 3 middle ones go.
        for seq in 0..12 {
            p.push(&frame(rate, seq));
        }
        let mut out = ReceivedAudio::new(rate);
        // The stale ring content is skipped; the staged frames arrive with the next push (next tick).
        assert!(!c.pop(&mut out));
        p.push(&frame(rate, 12));
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
