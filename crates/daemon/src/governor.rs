//! The decoder-quality governor of a media worker: libopus 1.6's neural decoder stages (NoLACE at decoder
//! complexity 7, LACE at 6) cost up to 4.5 × the classic decoder per frame, so a worker that gets busy sheds them
//! before its ticks run late, and takes them back when the CPU is there again.
//!
//! Sans-IO: the worker feeds it its busy share of each publish window ([`Governor::observe`]) and applies what it
//! returns to its sessions. Levels, from the configured `decoder_complexity` down: 7 (deep PLC + NoLACE), 6 (deep
//! PLC + LACE), 5 (deep PLC alone: it costs only on lost packets). A step down happens when the share passes
//! [`SHED_AT`]; a step up only when the share the higher level is expected to cost (scaled by the levels' relative
//! cost, [`relative_cost`]) stays below [`RESTORE_BELOW`] for [`RESTORE_WINDOWS`] windows in a row, so the two do
//! not flap.

/// A worker busier than this share of its time (over one publish window) sheds a level.
pub const SHED_AT: f64 = 0.5;
/// A level comes back when its expected share stays below this.
pub const RESTORE_BELOW: f64 = 0.4;
/// Windows in a row the expected share must stay below [`RESTORE_BELOW`] before a level comes back.
pub const RESTORE_WINDOWS: u32 = 5;
/// The lowest level the governor sheds to: deep PLC, which costs nothing on a clean path.
pub const FLOOR: u8 = 5;

/// Cost of a duplex call's codec work at decoder complexity `c`, relative to complexity 5 (measured on the
/// 2-core VM of `docs/performance.md`: encode 131 µs, decode 26 / 50 / 120 µs at 5 / 6 / 7).
pub fn relative_cost(c: u8) -> f64 {
    match c {
        0..=5 => 1.0,
        6 => 1.15,
        _ => 1.6,
    }
}

/// One worker's governor.
#[derive(Debug, Clone)]
pub struct Governor {
    max: u8,
    level: u8,
    calm_windows: u32,
    shed: u64,
}

impl Governor {
    /// A governor that runs at `max` (the configured decoder complexity) while the worker has room.
    pub fn new(max: u8) -> Self {
        Self {
            max,
            level: max,
            calm_windows: 0,
            shed: 0,
        }
    }

    /// The decoder complexity the worker's sessions should run at.
    pub fn level(&self) -> u8 {
        self.level
    }

    /// Times a level was shed since start.
    pub fn shed_count(&self) -> u64 {
        self.shed
    }

    /// Feeds the worker's busy share of the last window; returns the new level when it changes.
    pub fn observe(&mut self, busy_share: f64) -> Option<u8> {
        if busy_share > SHED_AT && self.level > FLOOR.min(self.max) {
            self.level = if self.level > 7 { 7 } else { self.level - 1 };
            self.calm_windows = 0;
            self.shed += 1;
            return Some(self.level);
        }
        if self.level >= self.max {
            return None;
        }
        let up = self.level + 1;
        let expected = busy_share * relative_cost(up) / relative_cost(self.level);
        if expected < RESTORE_BELOW {
            self.calm_windows += 1;
            if self.calm_windows >= RESTORE_WINDOWS {
                self.calm_windows = 0;
                self.level = if up >= 7 { self.max } else { up };
                return Some(self.level);
            }
        } else {
            self.calm_windows = 0;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sheds_under_load_and_restores_without_flapping() {
        let mut g = Governor::new(7);
        assert_eq!(g.observe(0.3), None);
        assert_eq!(g.observe(0.6), Some(6));
        assert_eq!(g.observe(0.55), Some(5));
        // The floor: deep PLC stays.
        assert_eq!(g.observe(0.9), None);
        assert_eq!(g.level(), 5);
        // 0.36 at level 5 would be 0.41 at level 6: too close to come back.
        for _ in 0..20 {
            assert_eq!(g.observe(0.36), None);
        }
        // Calm for RESTORE_WINDOWS windows: one level back, then the next.
        for _ in 1..RESTORE_WINDOWS {
            assert_eq!(g.observe(0.2), None);
        }
        assert_eq!(g.observe(0.2), Some(6));
        for _ in 1..RESTORE_WINDOWS {
            assert_eq!(g.observe(0.2), None);
        }
        assert_eq!(g.observe(0.2), Some(7));
        assert_eq!(g.observe(0.2), None);
        assert_eq!(g.shed_count(), 2);
    }

    #[test]
    fn a_configured_level_is_never_exceeded_nor_shed_below_itself() {
        let mut classic = Governor::new(0);
        assert_eq!(classic.observe(0.95), None);
        assert_eq!(classic.observe(0.05), None);
        assert_eq!(classic.level(), 0);
        let mut ten = Governor::new(10);
        assert_eq!(ten.observe(0.7), Some(7));
        for _ in 0..RESTORE_WINDOWS {
            ten.observe(0.1);
        }
        assert_eq!(ten.level(), 10);
    }
}
