//! Adaptive in-band FEC and the encoder overrides of a session.
//!
//! Opus in-band FEC (LBRR) lets the receiver rebuild a lost packet from the next one, but it takes bits from the
//! primary encoding: on a clean path it only costs quality. So the session's encoder starts with FEC off and
//! [`FecController`] follows the loss the far end reports (RTCP receiver reports' "fraction lost", fed through
//! `MediaSession::set_remote_loss`): the reports are smoothed, FEC comes on at [`FEC_ON_PERCENT`] and goes off below
//! [`FEC_OFF_PERCENT`] (hysteresis, so a loss rate near one threshold does not toggle it), and the expected-loss
//! setting follows the smoothed loss, clamped to [`FEC_MIN_EXPECTED_PERCENT`]..=[`FEC_MAX_EXPECTED_PERCENT`] and
//! changed only when it moves by [`FEC_EXPECTED_STEP_PERCENT`] or more.
//!
//! Until the first report arrives (the first RTCP receiver report comes a second or more into the call, and a far
//! end may send none at all) the loss of the session's own inbound streams stands in for it
//! ([`FecController::observe_local_loss`], once per [`LOCAL_LOSS_WINDOW_TICKS`]): a path that loses packets one way
//! usually loses them the other way too, and the first bursts of a lossy call otherwise reach the far end without
//! FEC. On a clean path the inbound loss is zero and FEC stays off; the first report replaces the stand-in.
//!
//! **Time-shifted duplicates** ([`crate::pacer`]) cover what FEC cannot, a burst of lost packets, at twice the
//! bandwidth. [`DuplicateMode::Auto`] follows the session's *inbound* loss, smoothed over one-second windows: on at
//! [`DUPLICATE_ON_PERCENT`], off below [`DUPLICATE_OFF_PERCENT`]. Not the far end's report: an RFC 3550 receiver
//! counts a duplicate as received, so with duplicates on its "fraction lost" falls to zero whatever the path loses
//! (it would turn them off again, and FEC with them). For the same reason, while duplicates are on, FEC follows the
//! larger of the report and the inbound loss. A session without inbound audio never turns them on by itself.
//!
//! [`EncoderOverrides`] (bitrate, complexity, FEC `auto|on|off`, duplicates `auto|on|off`, DTX) apply at session
//! start and at run time;
//! `FecMode::On` keeps FEC on with at least [`FEC_MIN_EXPECTED_PERCENT`] expected loss (more if the far end reports
//! more), `FecMode::Off` keeps it off whatever is reported. Nothing here allocates.

use crate::codec::EncoderSettings;

/// Smoothed remote loss at or above which FEC comes on (percent).
pub const FEC_ON_PERCENT: f32 = 2.0;
/// Smoothed remote loss below which FEC goes off again (percent).
pub const FEC_OFF_PERCENT: f32 = 1.0;
/// The expected-loss setting while FEC is on is at least this (percent).
pub const FEC_MIN_EXPECTED_PERCENT: u8 = 2;
/// ... and at most this (percent; more buys little and costs much).
pub const FEC_MAX_EXPECTED_PERCENT: u8 = 30;
/// The expected-loss setting changes only by at least this much (percent).
pub const FEC_EXPECTED_STEP_PERCENT: u8 = 2;
/// Ticks (20 ms) between two looks at the inbound loss while no report has come (1 s, like RTCP's reports).
pub const LOCAL_LOSS_WINDOW_TICKS: u32 = 50;
/// Smoothed inbound loss at or above which time-shifted duplicates come on (percent).
pub const DUPLICATE_ON_PERCENT: f32 = 3.0;
/// Smoothed inbound loss below which they go off again (percent).
pub const DUPLICATE_OFF_PERCENT: f32 = 1.0;
/// Weight of a new report in the smoothed loss.
const REPORT_WEIGHT: f32 = 0.5;

/// How the encoder's in-band FEC is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FecMode {
    /// Follows the loss the far end reports (default): off on a clean path.
    #[default]
    Auto,
    /// Always on.
    On,
    /// Always off.
    Off,
}

/// How the time-shifted duplicates are chosen: `Auto` (default) follows the inbound loss, `On`/`Off` force them. The
/// same three choices as [`FecMode`].
pub type DuplicateMode = FecMode;

/// Encoder settings to change; `None` keeps the current value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EncoderOverrides {
    /// Target bitrate in bit/s (6000..=510000).
    pub bitrate_bps: Option<i32>,
    /// 0..=10.
    pub complexity: Option<u8>,
    /// In-band FEC mode.
    pub fec: Option<FecMode>,
    /// Time-shifted duplicates.
    pub duplicate: Option<DuplicateMode>,
    /// Opus DTX.
    pub dtx: Option<bool>,
}

/// Chooses the encoder's FEC settings from the mode and the far end's reported loss. See the module docs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FecController {
    mode: FecMode,
    /// Smoothed reported loss (percent), if any report came.
    loss: Option<f32>,
    /// The inbound loss (percent, smoothed like the reports) standing in while no report came, and the counters
    /// (lost, received) at the last look.
    local: Option<f32>,
    local_seen: (u64, u64),
    on: bool,
    expected: u8,
    /// The inbound loss (percent, smoothed like the reports), kept after the first report too: it drives the
    /// duplicates.
    inbound: Option<f32>,
    duplicate_mode: DuplicateMode,
    duplicate: bool,
}

impl FecController {
    /// A controller in `mode` with no report yet.
    pub fn new(mode: FecMode) -> Self {
        let mut c = Self {
            mode,
            loss: None,
            local: None,
            local_seen: (0, 0),
            on: false,
            expected: 0,
            inbound: None,
            duplicate_mode: DuplicateMode::Auto,
            duplicate: false,
        };
        c.update();
        c
    }

    /// The mode.
    pub fn mode(&self) -> FecMode {
        self.mode
    }

    /// Changes the mode.
    pub fn set_mode(&mut self, mode: FecMode) {
        self.mode = mode;
        self.update();
    }

    /// The duplicates' mode.
    pub fn duplicate_mode(&self) -> DuplicateMode {
        self.duplicate_mode
    }

    /// Changes the duplicates' mode.
    pub fn set_duplicate_mode(&mut self, mode: DuplicateMode) {
        self.duplicate_mode = mode;
        self.update();
    }

    /// Whether time-shifted duplicates are to be sent.
    pub fn duplicate(&self) -> bool {
        self.duplicate
    }

    /// The smoothed inbound loss in percent, once a window had packets.
    pub fn inbound_loss_percent(&self) -> Option<f32> {
        self.inbound
    }

    /// The smoothed remote loss in percent, if any report came.
    pub fn remote_loss_percent(&self) -> Option<f32> {
        self.loss
    }

    /// A receiver report's "fraction lost" (0..=255 = 0..100 %).
    pub fn report_fraction_lost(&mut self, fraction_lost: u8) {
        let pct = f32::from(fraction_lost) * 100.0 / 256.0;
        self.loss = Some(match self.loss {
            None => pct,
            Some(old) => old + (pct - old) * REPORT_WEIGHT,
        });
        self.update();
    }

    /// The session's inbound streams' cumulative `lost` and `received` counts (call once per
    /// [`LOCAL_LOSS_WINDOW_TICKS`]): their loss since the last call stands in for the far end's report until one
    /// arrives, and it drives the duplicates. Returns true if the settings may have changed.
    pub fn observe_local_loss(&mut self, lost: u64, received: u64) -> bool {
        let (l0, r0) = self.local_seen;
        self.local_seen = (lost, received);
        let (dl, dr) = (lost.saturating_sub(l0), received.saturating_sub(r0));
        if dl + dr == 0 {
            return false;
        }
        let pct = dl as f32 * 100.0 / (dl + dr) as f32;
        let smooth = |v: Option<f32>| {
            Some(match v {
                None => pct,
                Some(old) => old + (pct - old) * REPORT_WEIGHT,
            })
        };
        self.inbound = smooth(self.inbound);
        let stand_in = self.loss.is_none();
        if stand_in {
            self.local = smooth(self.local);
        }
        self.update();
        stand_in || self.duplicate_mode == DuplicateMode::Auto
    }

    fn update(&mut self) {
        let inbound = self.inbound.unwrap_or(0.0);
        self.duplicate = match self.duplicate_mode {
            FecMode::Off => false,
            FecMode::On => true,
            FecMode::Auto if self.duplicate => inbound >= DUPLICATE_OFF_PERCENT,
            FecMode::Auto => inbound >= DUPLICATE_ON_PERCENT,
        };
        let mut loss = self.loss.or(self.local).unwrap_or(0.0);
        if self.duplicate {
            // The far end's report no longer shows the path's loss (see the module docs).
            loss = loss.max(inbound);
        }
        let target = (loss.round() as i32).clamp(
            i32::from(FEC_MIN_EXPECTED_PERCENT),
            i32::from(FEC_MAX_EXPECTED_PERCENT),
        ) as u8;
        let on = match self.mode {
            FecMode::Off => false,
            FecMode::On => true,
            FecMode::Auto => {
                if self.on {
                    loss >= FEC_OFF_PERCENT
                } else {
                    loss >= FEC_ON_PERCENT
                }
            }
        };
        if !on {
            self.expected = 0;
        } else if !self.on || self.expected.abs_diff(target) >= FEC_EXPECTED_STEP_PERCENT {
            self.expected = target;
        }
        self.on = on;
    }

    /// `base` with this controller's FEC settings.
    pub fn apply(&self, base: EncoderSettings) -> EncoderSettings {
        EncoderSettings {
            inband_fec: self.on,
            expected_loss_percent: self.expected,
            ..base
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pct(p: f32) -> u8 {
        (p * 256.0 / 100.0).round() as u8
    }

    #[test]
    fn duplicates_follow_the_inbound_loss_not_the_report() {
        let base = EncoderSettings::default();
        let mut c = FecController::new(FecMode::Auto);
        assert!(!c.duplicate(), "off until the inbound loss is seen");
        c.observe_local_loss(0, 50);
        assert!(!c.duplicate());
        // 10 % inbound loss: on, FEC with it.
        c.observe_local_loss(5, 95);
        assert!(c.duplicate());
        // A receiver counting the duplicates as received reports no loss: duplicates and FEC stay on.
        for _ in 0..5 {
            c.report_fraction_lost(0);
        }
        assert!(c.duplicate());
        assert!(c.apply(base).inband_fec, "FEC follows the inbound loss too");
        // The inbound loss stays above the off threshold (2 % here): still on; then a clean stretch turns it off.
        let (mut lost, mut received) = (5, 95);
        for (l, r) in [(1, 49), (1, 49)] {
            lost += l;
            received += r;
            c.observe_local_loss(lost, received);
            assert!(c.duplicate(), "{:?}", c.inbound_loss_percent());
        }
        for _ in 0..4 {
            received += 50;
            c.observe_local_loss(lost, received);
        }
        assert!(!c.duplicate(), "{:?}", c.inbound_loss_percent());
        assert!(!c.apply(base).inband_fec, "the clean report counts again");
        // Forced either way.
        c.set_duplicate_mode(FecMode::On);
        assert!(c.duplicate());
        c.set_duplicate_mode(FecMode::Off);
        lost += 10;
        received += 40;
        c.observe_local_loss(lost, received);
        assert!(!c.duplicate());
    }

    #[test]
    fn inbound_loss_stands_in_until_the_first_report() {
        let base = EncoderSettings::default();
        let mut c = FecController::new(FecMode::Auto);
        // FEC alone (with duplicates on, FEC follows the inbound loss as well: see the test above).
        c.set_duplicate_mode(FecMode::Off);
        // A clean inbound second: off.
        assert!(c.observe_local_loss(0, 50));
        assert!(!c.apply(base).inband_fec);
        // 5 of 50 lost in the next second: on at about that loss.
        c.observe_local_loss(5, 95);
        let s = c.apply(base);
        assert!(
            s.inband_fec && (4..=6).contains(&s.expected_loss_percent),
            "{s:?}"
        );
        // The far end reports a clean path: the report wins, and later inbound loss no longer counts.
        c.report_fraction_lost(0);
        c.report_fraction_lost(0);
        assert!(!c.apply(base).inband_fec);
        assert!(!c.observe_local_loss(50, 100));
        assert!(!c.apply(base).inband_fec);
        // Forced off stays off whatever comes in.
        let mut off = FecController::new(FecMode::Off);
        off.observe_local_loss(10, 40);
        assert!(!off.apply(base).inband_fec);
    }

    #[test]
    fn follows_reported_loss_with_hysteresis() {
        let base = EncoderSettings::default();
        let mut c = FecController::new(FecMode::Auto);
        assert!(!c.apply(base).inband_fec, "off on a clean path");
        c.report_fraction_lost(0);
        assert!(!c.apply(base).inband_fec);
        // 5 % reported: on, expected loss follows the smoothed figure.
        for _ in 0..4 {
            c.report_fraction_lost(pct(5.0));
        }
        let s = c.apply(base);
        assert!(
            s.inband_fec && (4..=5).contains(&s.expected_loss_percent),
            "{s:?}"
        );
        // 1.5 %: between the thresholds, stays on.
        for _ in 0..6 {
            c.report_fraction_lost(pct(1.5));
        }
        assert!(c.apply(base).inband_fec);
        // The setting followed the loss down (within its step).
        assert!(
            c.apply(base).expected_loss_percent
                <= FEC_MIN_EXPECTED_PERCENT + FEC_EXPECTED_STEP_PERCENT
        );
        // Clean again: off.
        for _ in 0..4 {
            c.report_fraction_lost(0);
        }
        let s = c.apply(base);
        assert_eq!((s.inband_fec, s.expected_loss_percent), (false, 0));
        // Small changes of the loss do not touch the setting.
        for _ in 0..6 {
            c.report_fraction_lost(pct(10.0));
        }
        let at10 = c.apply(base).expected_loss_percent;
        c.report_fraction_lost(pct(11.0));
        assert_eq!(c.apply(base).expected_loss_percent, at10);
        // Forced modes.
        c.set_mode(FecMode::Off);
        assert!(!c.apply(base).inband_fec);
        let mut on = FecController::new(FecMode::On);
        let s = on.apply(base);
        assert!(s.inband_fec && s.expected_loss_percent >= FEC_MIN_EXPECTED_PERCENT);
        on.report_fraction_lost(255);
        assert_eq!(
            on.apply(base).expected_loss_percent,
            FEC_MAX_EXPECTED_PERCENT
        );
    }
}
