//! Tick-phase alignment: moving a session's ticks to just after its peer's packets arrive.
//!
//! A session's ticks start on a phase of the period spread over the worker's sessions (see the engine); a peer's
//! packets arrive on a phase of their own, so a frame waits for its tick anywhere from 0 to 20 ms — time no playout
//! action takes off (they move the timeline, not the ticks). The jitter buffer knows how long after its latest
//! arrivals (the held on-time envelope plus its safety margin) the tick comes (`MediaSession::tick_slack_us`); every
//! [`INTERVAL`] the worker moves the ticks earlier by that slack less [`KEEP_US`], in whole phase slots, at most half
//! a frame at a time, into a slot that is not crowded. Only earlier: the envelope then still arrives in time, so
//! the move never costs the playout a frame; when arrivals drift later the envelope rises, the playout adds delay
//! as it would anyway, and the next decision takes the new slack off.

use std::time::Duration;

use mediaproc_pipeline::FRAME_DURATION;

/// Distinct tick phases of the 20 ms period (2 ms apart) the engine starts sessions on, by golden-ratio steps.
/// Sessions on one phase are served in one worker wake-up, and their packets in one wake-up of the network thread;
/// with a phase per session every tick was a wake-up of its own for both. A session waits for the others of its
/// slot on its worker — at 100 echo calls on 2 workers, about 5 × 150 µs.
pub const TICK_PHASE_SLOTS: u64 = 10;
pub const TICK_PHASE_STEP_US: u64 = 20_000 / TICK_PHASE_SLOTS;
/// The step of a move: one phase slot, so sessions stay on the grid and keep sharing wake-ups.
pub const STEP_US: i64 = TICK_PHASE_STEP_US as i64;

/// Slack left before the tick after a move (on top of the jitter buffer's own 3 ms margin).
pub const KEEP_US: i64 = 1_000;
/// A move must take off at least this much (a shorter one is not worth an outgoing packet sent early).
pub const MIN_GAIN_US: i64 = 4_000;
/// How often a session's slack is looked at (arrivals drift against the ticks, ≈ 10 ms a minute at 150 ppm).
pub const INTERVAL: Duration = Duration::from_secs(5);
/// How soon a session without a trusted slack yet (no stream, or its first seconds) is looked at again.
pub const RETRY: Duration = Duration::from_millis(500);

/// The move of the ticks (µs, negative: earlier; a multiple of [`STEP_US`], at most half a frame) that takes
/// `slack_us` of the wait off but [`KEEP_US`], the largest whose target slot is not `crowded` (the argument is the
/// move); `None` when it would gain less than [`MIN_GAIN_US`].
pub fn earlier_shift_us(slack_us: i64, crowded: impl Fn(i64) -> bool) -> Option<i64> {
    let half = FRAME_DURATION.as_micros() as i64 / 2;
    let most = (slack_us - KEEP_US).min(half) / STEP_US;
    (1..=most)
        .rev()
        .map(|steps| -steps * STEP_US)
        .find(|&shift| -shift >= MIN_GAIN_US && !crowded(shift))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slack_goes_but_a_millisecond_in_whole_slots() {
        assert_eq!(
            earlier_shift_us(14_500, |_| false),
            Some(-10_000),
            "half a frame at most"
        );
        assert_eq!(earlier_shift_us(9_500, |_| false), Some(-8_000));
        assert_eq!(earlier_shift_us(5_000, |_| false), Some(-4_000));
        assert_eq!(
            earlier_shift_us(4_900, |_| false),
            None,
            "less than 4 ms to gain"
        );
        assert_eq!(earlier_shift_us(0, |_| false), None);
    }

    #[test]
    fn a_crowded_slot_is_passed_over_for_a_smaller_move() {
        assert_eq!(earlier_shift_us(14_500, |s| s == -10_000), Some(-8_000));
        assert_eq!(earlier_shift_us(6_000, |_| true), None);
    }
}
