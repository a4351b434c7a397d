//! The machine's own stalls, measured in the same run: a thread of this (load) process that sleeps to absolute
//! 20 ms deadlines, as a media worker does, and counts the wake-ups that came more than 5 ms late. A virtual
//! machine stalls its guest now and then (on the 2-core VM of `docs/performance.md` such a thread, alone on an idle
//! machine, misses by more than 5 ms about twice in 10 s); a daemon tick late at the same moment is the machine's,
//! not the load's. `--find-capacity` uses it to tell the two apart.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The probe's period: a media worker's tick.
const PERIOD: Duration = Duration::from_millis(20);
/// A wake-up later than this is a stall (the load report's late-tick bound).
const LATE: Duration = Duration::from_millis(5);

#[derive(Default)]
struct Counters {
    wakeups: AtomicU64,
    late: AtomicU64,
    max_us: AtomicU64,
}

/// What the probe saw in a window.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Stalls {
    pub wakeups: u64,
    /// Wake-ups more than 5 ms late.
    pub late: u64,
    pub max_ms: f64,
}

/// A running probe; [`StallProbe::mark`] starts the measured window, [`StallProbe::stop`] ends it.
pub struct StallProbe {
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    at_mark: (u64, u64),
}

impl StallProbe {
    pub fn start() -> Self {
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (counters.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("stall-probe".into())
            .spawn(move || {
                let mut deadline = Instant::now() + PERIOD;
                while !s.load(Ordering::Relaxed) {
                    let now = Instant::now();
                    if deadline > now {
                        std::thread::sleep(deadline - now);
                    }
                    let late = Instant::now().saturating_duration_since(deadline);
                    c.wakeups.fetch_add(1, Ordering::Relaxed);
                    if late > LATE {
                        c.late.fetch_add(1, Ordering::Relaxed);
                    }
                    c.max_us
                        .fetch_max(late.as_micros() as u64, Ordering::Relaxed);
                    deadline += PERIOD;
                    // After a stall longer than a period, the next deadline is the next one still ahead.
                    while deadline <= Instant::now() {
                        deadline += PERIOD;
                    }
                }
            })
            .ok();
        Self {
            counters,
            stop,
            thread,
            at_mark: (0, 0),
        }
    }

    /// Starts the measured window (the maximum is reset too).
    pub fn mark(&mut self) {
        self.at_mark = (
            self.counters.wakeups.load(Ordering::Relaxed),
            self.counters.late.load(Ordering::Relaxed),
        );
        self.counters.max_us.store(0, Ordering::Relaxed);
    }

    /// Ends the window; `None` if the probe thread could not be started.
    pub fn stop(mut self) -> Option<Stalls> {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take()?;
        let _ = thread.join();
        Some(Stalls {
            wakeups: self.counters.wakeups.load(Ordering::Relaxed) - self.at_mark.0,
            late: self.counters.late.load(Ordering::Relaxed) - self.at_mark.1,
            max_ms: self.counters.max_us.load(Ordering::Relaxed) as f64 / 1000.0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_its_wakeups() {
        let mut probe = StallProbe::start();
        probe.mark();
        // Wait on a condition (wake-ups counted), not a fixed time.
        while probe.counters.wakeups.load(Ordering::Relaxed) < 3 {
            std::thread::yield_now();
        }
        let stalls = probe.stop().expect("the probe thread runs");
        assert!(stalls.wakeups >= 3, "{stalls:?}");
        assert!(stalls.late <= stalls.wakeups);
    }
}
