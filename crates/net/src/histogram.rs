//! Latency histograms: fixed buckets (µs), one atomic histogram many threads add to without a lock or an
//! allocation, and a plain one a single thread owns. The daemon uses them for tick lateness and the hand-offs
//! (packet → worker, tick → bot); the network shell records the last hand-off here (a worker's enqueue of a packet
//! → the packet handed to the socket), in each session's [`SessionStats`](crate::SessionStats).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Upper bounds (µs) of the latency histograms' buckets (tick lateness, hand-offs); a last bucket takes everything
/// above. Roughly three per decade from 50 µs to 1 s: fine where a healthy worker is, coarse where it hurts.
pub const LATENESS_BUCKETS_US: [u64; 14] = [
    50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000,
    1_000_000,
];
/// Buckets of a latency histogram: one per bound and one above.
pub const BUCKETS: usize = LATENESS_BUCKETS_US.len() + 1;

fn bucket_of(us: u64) -> usize {
    LATENESS_BUCKETS_US.partition_point(|&bound| bound < us)
}

/// A latency histogram many threads add to: relaxed atomic adds, no lock, no allocation.
#[derive(Debug)]
pub struct LatenessHistogram {
    counts: [AtomicU64; BUCKETS],
    max_us: AtomicU64,
    sum_us: AtomicU64,
}

impl Default for LatenessHistogram {
    fn default() -> Self {
        Self {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            max_us: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }
}

impl LatenessHistogram {
    /// Counts one value of `us` µs.
    pub fn record(&self, us: u64) {
        self.counts[bucket_of(us)].fetch_add(1, Relaxed);
        self.max_us.fetch_max(us, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }

    /// Adds a whole local histogram (a session's values since its last publish).
    pub fn merge(&self, local: &LocalHistogram) {
        for (count, add) in self.counts.iter().zip(&local.counts) {
            if *add > 0 {
                count.fetch_add(*add, Relaxed);
            }
        }
        self.max_us.fetch_max(local.max_us, Relaxed);
        self.sum_us.fetch_add(local.sum_us, Relaxed);
    }

    /// Adds this histogram's counts to `into` (one per bucket, the last for everything above) and returns its
    /// maximum and sum (µs).
    pub fn add_to(&self, into: &mut [u64; BUCKETS]) -> (u64, u64) {
        for (sum, count) in into.iter_mut().zip(&self.counts) {
            *sum += count.load(Relaxed);
        }
        (self.max_us.load(Relaxed), self.sum_us.load(Relaxed))
    }

    /// A copy of the counts, the maximum and the sum.
    pub fn snapshot(&self) -> LocalHistogram {
        let mut local = LocalHistogram::default();
        let (max, sum) = self.add_to(&mut local.counts);
        local.max_us = max;
        local.sum_us = sum;
        local
    }
}

/// A latency histogram one thread owns (a session's, in its worker): plain adds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LocalHistogram {
    /// Values per bucket of [`LATENESS_BUCKETS_US`], the last for everything above.
    pub counts: [u64; BUCKETS],
    /// Largest value, µs.
    pub max_us: u64,
    /// Sum of the values, µs.
    pub sum_us: u64,
}

impl LocalHistogram {
    /// Counts one value of `us` µs.
    pub fn record(&mut self, us: u64) {
        self.counts[bucket_of(us)] += 1;
        self.max_us = self.max_us.max(us);
        self.sum_us += us;
    }

    /// Adds `other`'s values (a second ring's histogram of the same session).
    pub fn add(&mut self, other: &LocalHistogram) {
        for (count, more) in self.counts.iter_mut().zip(&other.counts) {
            *count += more;
        }
        self.max_us = self.max_us.max(other.max_us);
        self.sum_us += other.sum_us;
    }

    /// The values counted since `earlier`, a copy of this histogram taken before (the maximum stays this one's).
    pub fn since(&self, earlier: &LocalHistogram) -> LocalHistogram {
        let mut delta = *self;
        for (count, before) in delta.counts.iter_mut().zip(&earlier.counts) {
            *count = count.saturating_sub(*before);
        }
        delta.sum_us = self.sum_us.saturating_sub(earlier.sum_us);
        delta
    }

    /// The bucket bound (µs) below which a share `q` (0..=1) of the values lies; `None` when empty.
    pub fn quantile_us(&self, q: f64) -> Option<u64> {
        lateness_quantile_us(&self.counts, self.max_us, q)
    }
}

/// The bucket bound (µs) below which a share `q` (0..=1) of the counted values lies; `None` when nothing was
/// counted. Never above `max_us` (the last bucket reports it).
pub fn lateness_quantile_us(counts: &[u64; BUCKETS], max_us: u64, q: f64) -> Option<u64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (i, count) in counts.iter().enumerate() {
        seen += count;
        if seen >= rank {
            return Some(
                LATENESS_BUCKETS_US
                    .get(i)
                    .map_or(max_us, |&b| b.min(max_us)),
            );
        }
    }
    Some(max_us)
}
