//! Load and health: media workers publish how much of each 20 ms tick they spend working; `/healthz` turns that
//! into the closed platform's three states.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use serde::Serialize;

// The histograms live in the network crate, which records the send half of the hand-offs.
pub use mediaproc_net::histogram::{
    BUCKETS, LATENESS_BUCKETS_US, LatenessHistogram, LocalHistogram, lateness_quantile_us,
};

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
    /// Every session: a packet queued at its tick (the bot's frame taken, encoded) → handed to the socket.
    pub bot_to_sent: LatenessHistogram,
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
            bot_to_sent: LatenessHistogram::default(),
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
