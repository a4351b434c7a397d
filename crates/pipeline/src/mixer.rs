//! Mixing and speaker tracking.
//!
//! * [`mix_into`] sums frames with saturation (a loud sum clips at ±32767 instead of wrapping).
//! * [`SpeakerTracker`] keeps a smoothed level per media source id (fast attack, slow release), lists the active
//!   speakers loudest first, and elects a dominant speaker with hysteresis: a challenger must be louder than the
//!   current dominant speaker by [`SpeakerConfig::switch_margin_db`] for [`SpeakerConfig::switch_hold_frames`]
//!   consecutive frames, so a cough or a door slam does not flip it.
//!
//! Levels come from the RFC 6464 audio-level header extension when the packet carries one (0 = 0 dBov,
//! 127 = silence), else from the decoded frame's energy.

/// Speaker tracking settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpeakerConfig {
    /// Smoothed level above which a source counts as an active speaker (dBov).
    pub active_threshold_dbov: f32,
    /// How much louder a challenger must be than the dominant speaker (dB).
    pub switch_margin_db: f32,
    /// Consecutive frames the challenger must stay louder (default 25 = 500 ms).
    pub switch_hold_frames: u32,
}

impl Default for SpeakerConfig {
    fn default() -> Self {
        Self {
            active_threshold_dbov: -50.0,
            switch_margin_db: 3.0,
            switch_hold_frames: 25,
        }
    }
}

/// Level from an RFC 6464 value (-dBov, 0..=127; values above 127 are treated as silence).
pub fn level_from_rfc6464(value: u8) -> f32 {
    -f32::from(value.min(127))
}

/// Adds `frame` into the 32-bit accumulator.
pub fn accumulate(acc: &mut [i32], frame: &[i16]) {
    for (a, &s) in acc.iter_mut().zip(frame) {
        *a += i32::from(s);
    }
}

/// Writes the saturated accumulator to `out`.
pub fn saturate(acc: &[i32], out: &mut [i16]) {
    for (o, &a) in out.iter_mut().zip(acc) {
        *o = a.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16;
    }
}

/// Mixes `frames` into `out` with saturation; `acc` is scratch space at least `out.len()` long.
pub fn mix_into(frames: &[&[i16]], acc: &mut [i32], out: &mut [i16]) {
    let n = out.len();
    let acc = &mut acc[..n];
    acc.fill(0);
    for f in frames {
        accumulate(acc, f);
    }
    saturate(acc, out);
}

/// Maximum number of sources the tracker follows.
pub const MAX_TRACKED_SPEAKERS: usize = 16;

/// Dominant speaker change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DominantChange {
    /// The previous dominant speaker.
    pub previous: Option<u32>,
    /// The new one.
    pub current: Option<u32>,
}

/// Tracks speaker levels and the dominant speaker. Fixed-size, no allocation.
#[derive(Debug, Clone)]
pub struct SpeakerTracker {
    cfg: SpeakerConfig,
    ids: [u32; MAX_TRACKED_SPEAKERS],
    levels: [f32; MAX_TRACKED_SPEAKERS],
    seen: [bool; MAX_TRACKED_SPEAKERS],
    count: usize,
    dominant: Option<u32>,
    challenger: Option<u32>,
    challenge_frames: u32,
    active: [u32; MAX_TRACKED_SPEAKERS],
    active_count: usize,
}

impl SpeakerTracker {
    /// A tracker with `cfg`.
    pub fn new(cfg: SpeakerConfig) -> Self {
        Self {
            cfg,
            ids: [0; MAX_TRACKED_SPEAKERS],
            levels: [-127.0; MAX_TRACKED_SPEAKERS],
            seen: [false; MAX_TRACKED_SPEAKERS],
            count: 0,
            dominant: None,
            challenger: None,
            challenge_frames: 0,
            active: [0; MAX_TRACKED_SPEAKERS],
            active_count: 0,
        }
    }

    /// Records this frame's level of `source_id` (call for each source that produced audio this tick).
    pub fn observe(&mut self, source_id: u32, level_dbov: f32) {
        let i = match self.ids[..self.count]
            .iter()
            .position(|&id| id == source_id)
        {
            Some(i) => i,
            None if self.count < MAX_TRACKED_SPEAKERS => {
                self.count += 1;
                self.ids[self.count - 1] = source_id;
                self.levels[self.count - 1] = -127.0;
                self.count - 1
            }
            None => return,
        };
        let l = &mut self.levels[i];
        // Fast attack, slow release (about 200 ms).
        *l = if level_dbov > *l {
            *l + (level_dbov - *l) * 0.5
        } else {
            *l + (level_dbov - *l) * 0.1
        };
        self.seen[i] = true;
    }

    /// Forgets a source (it left the call).
    pub fn remove(&mut self, source_id: u32) {
        if let Some(i) = self.ids[..self.count]
            .iter()
            .position(|&id| id == source_id)
        {
            self.count -= 1;
            self.ids[i] = self.ids[self.count];
            self.levels[i] = self.levels[self.count];
            self.seen[i] = self.seen[self.count];
        }
    }

    /// Smoothed level of a source.
    pub fn level(&self, source_id: u32) -> Option<f32> {
        self.ids[..self.count]
            .iter()
            .position(|&id| id == source_id)
            .map(|i| self.levels[i])
    }

    /// Ends the frame: sources not observed decay towards silence; recomputes the active list and the dominant
    /// speaker. Returns a change of dominant speaker, if any.
    pub fn end_frame(&mut self) -> Option<DominantChange> {
        for i in 0..self.count {
            if !self.seen[i] {
                self.levels[i] += (-127.0 - self.levels[i]) * 0.1;
            }
            self.seen[i] = false;
        }
        // Active list, loudest first (insertion sort over at most 16 entries).
        self.active_count = 0;
        for i in 0..self.count {
            if self.levels[i] < self.cfg.active_threshold_dbov {
                continue;
            }
            let mut j = self.active_count;
            while j > 0 && self.level(self.active[j - 1]).unwrap_or(-127.0) < self.levels[i] {
                self.active[j] = self.active[j - 1];
                j -= 1;
            }
            self.active[j] = self.ids[i];
            self.active_count += 1;
        }
        let loudest = self.active_speakers().first().copied();
        let previous = self.dominant;
        let Some(candidate) = loudest else {
            self.challenger = None;
            self.challenge_frames = 0;
            return None; // silence keeps the last dominant speaker, like the closed platform
        };
        if Some(candidate) == self.dominant {
            self.challenger = None;
            self.challenge_frames = 0;
            return None;
        }
        let dominant_level = self.dominant.and_then(|d| self.level(d)).unwrap_or(-127.0);
        let cand_level = self.level(candidate).unwrap_or(-127.0);
        if cand_level < dominant_level + self.cfg.switch_margin_db {
            self.challenge_frames = 0;
            return None;
        }
        if self.challenger == Some(candidate) {
            self.challenge_frames += 1;
        } else {
            self.challenger = Some(candidate);
            self.challenge_frames = 1;
        }
        if self.challenge_frames >= self.cfg.switch_hold_frames {
            self.dominant = Some(candidate);
            self.challenger = None;
            self.challenge_frames = 0;
            return Some(DominantChange {
                previous,
                current: Some(candidate),
            });
        }
        None
    }

    /// Active speakers, loudest first.
    pub fn active_speakers(&self) -> &[u32] {
        &self.active[..self.active_count]
    }

    /// The dominant speaker.
    pub fn dominant(&self) -> Option<u32> {
        self.dominant
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saturating_mix() {
        let a = [30_000i16, -30_000, 5];
        let b = [10_000i16, -10_000, 6];
        let mut out = [0i16; 3];
        mix_into(&[&a, &b], &mut [0i32; 3], &mut out);
        assert_eq!(out, [i16::MAX, i16::MIN, 11]);
    }

    #[test]
    fn dominant_speaker_hysteresis() {
        let mut t = SpeakerTracker::new(SpeakerConfig::default());
        let mut changes = Vec::new();
        let mut run = |t: &mut SpeakerTracker, frames: usize, levels: &[(u32, f32)]| {
            for _ in 0..frames {
                for &(id, l) in levels {
                    t.observe(id, l);
                }
                if let Some(c) = t.end_frame() {
                    changes.push(c);
                }
            }
        };
        // Speaker 1 talks: becomes dominant after the hold time.
        run(&mut t, 30, &[(1, -20.0), (2, -90.0)]);
        assert_eq!(t.dominant(), Some(1));
        // Speaker 2 coughs (louder) for 100 ms: no flap.
        run(&mut t, 5, &[(1, -20.0), (2, -10.0)]);
        assert_eq!(t.dominant(), Some(1));
        assert_eq!(t.active_speakers(), &[2, 1]);
        // Speaker 1 stops, 2 talks on: switch after the hold time, exactly once.
        run(&mut t, 60, &[(1, -127.0), (2, -20.0)]);
        assert_eq!(t.dominant(), Some(2));
        // Silence keeps the last dominant speaker.
        run(&mut t, 100, &[(1, -127.0), (2, -127.0)]);
        assert_eq!(t.dominant(), Some(2));
        assert!(t.active_speakers().is_empty());
        assert_eq!(
            changes,
            vec![
                DominantChange {
                    previous: None,
                    current: Some(1)
                },
                DominantChange {
                    previous: Some(1),
                    current: Some(2)
                }
            ]
        );
        assert_eq!(level_from_rfc6464(30), -30.0);
        assert_eq!(level_from_rfc6464(200), -127.0);
    }
}
