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

/// Worker load, published by the workers without locks (one atomic per worker, written once a second).
#[derive(Debug)]
pub struct LoadMonitor {
    /// Per worker: busy share of the last second, in parts per million.
    busy_ppm: Vec<AtomicU32>,
    /// Per worker: ticks that ran more than one frame late, in total.
    late_ticks: Vec<AtomicU64>,
    heavily_loaded_at: f64,
    overloaded_at: f64,
}

impl LoadMonitor {
    /// A monitor for `workers` workers with the two thresholds (shares of the tick).
    pub fn new(workers: usize, heavily_loaded_at: f64, overloaded_at: f64) -> Self {
        LoadMonitor {
            busy_ppm: (0..workers).map(|_| AtomicU32::new(0)).collect(),
            late_ticks: (0..workers).map(|_| AtomicU64::new(0)).collect(),
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
}
