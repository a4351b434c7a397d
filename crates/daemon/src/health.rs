//! Load and health: media workers publish how much of each 20 ms tick they spend working; `/healthz` turns that
//! into the closed platform's three states.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use serde::Serialize;

/// The closed platform's `MediaPlatformHealthStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum HealthStatus {
    /// Room for more sessions.
    Normal,
    /// Busy; new sessions still accepted.
    HeavilyLoaded,
    /// New sessions are refused with 503.
    Overloaded,
}

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
        self.counts[bucket_of(us)].fetch_add(1, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Adds a whole local histogram (a session's values since its last publish).
    pub fn merge(&self, local: &LocalHistogram) {
        for (count, add) in self.counts.iter().zip(&local.counts) {
            if *add > 0 {
                count.fetch_add(*add, Ordering::Relaxed);
            }
        }
        self.max_us.fetch_max(local.max_us, Ordering::Relaxed);
        self.sum_us.fetch_add(local.sum_us, Ordering::Relaxed);
    }

    /// Adds this histogram's counts to `into` (one per bucket, the last for everything above) and returns its
    /// maximum and sum (µs).
    pub fn add_to(&self, into: &mut [u64; BUCKETS]) -> (u64, u64) {
        for (sum, count) in into.iter_mut().zip(&self.counts) {
            *sum += count.load(Ordering::Relaxed);
        }
        (
            self.max_us.load(Ordering::Relaxed),
            self.sum_us.load(Ordering::Relaxed),
        )
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

/// Worker load, published by the workers without locks (one atomic per worker, written once a second).
#[derive(Debug)]
pub struct LoadMonitor {
    /// Per worker: busy share of the last second, in parts per million.
    busy_ppm: Vec<AtomicU32>,
    /// Per worker: ticks that ran more than one frame late, in total.
    late_ticks: Vec<AtomicU64>,
    /// Per worker: how late every session tick ran.
    lateness: Vec<LatenessHistogram>,
    /// Every session: a packet's arrival at the socket → the worker took it from the receive ring.
    pub packet_to_worker: LatenessHistogram,
    /// Every session: a tick's deadline → its frame in the bot's inbound ring (decode, mix).
    pub tick_to_bot: LatenessHistogram,
    heavily_loaded_at: f64,
    overloaded_at: f64,
}

impl LoadMonitor {
    /// A monitor for `workers` workers with the two thresholds (shares of the tick).
    pub fn new(workers: usize, heavily_loaded_at: f64, overloaded_at: f64) -> Self {
        LoadMonitor {
            busy_ppm: (0..workers).map(|_| AtomicU32::new(0)).collect(),
            late_ticks: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            lateness: (0..workers).map(|_| LatenessHistogram::default()).collect(),
            packet_to_worker: LatenessHistogram::default(),
            tick_to_bot: LatenessHistogram::default(),
            heavily_loaded_at,
            overloaded_at,
        }
    }

    /// Worker `index` publishes its busy share (0.0..=1.0) of the last measurement window.
    pub fn publish(&self, index: usize, busy: f64, late_ticks_total: u64) {
        if let (Some(slot), Some(late)) = (self.busy_ppm.get(index), self.late_ticks.get(index)) {
            slot.store((busy.clamp(0.0, 1.0) * 1e6) as u32, Ordering::Relaxed);
            late.store(late_ticks_total, Ordering::Relaxed);
        }
    }

    /// Busy share of each worker.
    pub fn loads(&self) -> Vec<f64> {
        self.busy_ppm
            .iter()
            .map(|slot| f64::from(slot.load(Ordering::Relaxed)) / 1e6)
            .collect()
    }

    /// Late ticks of each worker, in total.
    pub fn late_ticks(&self) -> Vec<u64> {
        self.late_ticks
            .iter()
            .map(|slot| slot.load(Ordering::Relaxed))
            .collect()
    }

    /// Worker `index` counts a session tick that started `us` µs after its deadline.
    pub fn record_lateness(&self, index: usize, us: u64) {
        if let Some(histogram) = self.lateness.get(index) {
            histogram.record(us);
        }
    }

    /// Tick lateness of all workers: counts per bucket of [`LATENESS_BUCKETS_US`] (and one above), the maximum
    /// and the sum (µs).
    pub fn lateness(&self) -> ([u64; BUCKETS], u64, u64) {
        let mut counts = [0; BUCKETS];
        let (mut max, mut sum) = (0, 0);
        for histogram in &self.lateness {
            let (m, s) = histogram.add_to(&mut counts);
            max = max.max(m);
            sum += s;
        }
        (counts, max, sum)
    }

    /// The state from the busiest worker (a session lands on one worker, so the worst one decides).
    pub fn status(&self) -> HealthStatus {
        let worst = self.loads().into_iter().fold(0.0, f64::max);
        if worst >= self.overloaded_at {
            HealthStatus::Overloaded
        } else if worst >= self.heavily_loaded_at {
            HealthStatus::HeavilyLoaded
        } else {
            HealthStatus::Normal
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busiest_worker_decides() {
        let monitor = LoadMonitor::new(2, 0.7, 0.9);
        assert_eq!(monitor.status(), HealthStatus::Normal);
        monitor.publish(1, 0.75, 0);
        assert_eq!(monitor.status(), HealthStatus::HeavilyLoaded);
        monitor.publish(0, 0.95, 3);
        assert_eq!(monitor.status(), HealthStatus::Overloaded);
        assert_eq!(monitor.late_ticks(), vec![3, 0]);
        monitor.publish(0, 0.1, 3);
        monitor.publish(1, 0.1, 0);
        assert_eq!(monitor.status(), HealthStatus::Normal);
        // Out-of-range workers are ignored rather than panicking.
        monitor.publish(9, 1.0, 0);
        assert_eq!(monitor.status(), HealthStatus::Normal);
    }

    #[test]
    fn lateness_quantiles_come_from_the_buckets_of_all_workers() {
        let monitor = LoadMonitor::new(2, 0.7, 0.9);
        assert_eq!(monitor.lateness().1, 0);
        let (counts, max, _) = monitor.lateness();
        assert_eq!(lateness_quantile_us(&counts, max, 0.5), None);
        // 98 prompt ticks on worker 0, one 3 ms late and one 2 s late on worker 1.
        for _ in 0..98 {
            monitor.record_lateness(0, 30);
        }
        monitor.record_lateness(1, 3_000);
        monitor.record_lateness(1, 2_000_000);
        monitor.record_lateness(7, 1); // no such worker: ignored
        let (counts, max, sum) = monitor.lateness();
        assert_eq!(counts.iter().sum::<u64>(), 100);
        assert_eq!(max, 2_000_000);
        assert_eq!(sum, 98 * 30 + 3_000 + 2_000_000);
        assert_eq!(lateness_quantile_us(&counts, max, 0.5), Some(50));
        assert_eq!(lateness_quantile_us(&counts, max, 0.99), Some(5_000));
        assert_eq!(lateness_quantile_us(&counts, max, 1.0), Some(2_000_000));
        // A bound never exceeds the largest value seen.
        let mut one = [0; BUCKETS];
        one[3] = 1;
        assert_eq!(lateness_quantile_us(&one, 300, 0.5), Some(300));
    }

    #[test]
    fn a_local_histogram_merges_into_the_shared_one() {
        let mut local = LocalHistogram::default();
        assert_eq!(local.quantile_us(0.5), None);
        for us in [10, 60, 60, 4_000] {
            local.record(us);
        }
        assert_eq!(local.quantile_us(0.5), Some(100));
        assert_eq!(local.quantile_us(1.0), Some(4_000));
        let shared = LatenessHistogram::default();
        shared.merge(&local);
        shared.merge(&local);
        let both = shared.snapshot();
        assert_eq!(both.counts.iter().sum::<u64>(), 8);
        assert_eq!((both.max_us, both.sum_us), (4_000, 2 * 4_130));
        // What came after a copy: only the new values (the maximum is the whole histogram's).
        let earlier = local;
        local.record(30);
        let delta = local.since(&earlier);
        assert_eq!(delta.counts.iter().sum::<u64>(), 1);
        assert_eq!(delta.quantile_us(1.0), Some(50));
        assert_eq!(delta.sum_us, 30);
    }
}
