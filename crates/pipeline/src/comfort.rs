//! Comfort noise for gaps with nothing to decode (the sender's DTX pauses between its sparse comfort packets, a
//! paused stream, re-buffering at the start of a talkspurt): soft noise at the stream's last background level
//! instead of digital zeros, so the line does not sound dead and the next talkspurt does not start out of a hole.
//!
//! The background level is the level of the last DTX frames libopus decoded (its own comfort noise carries the
//! sender's background), else a noise-floor tracker over the decoded audio: it follows drops at once and rises at
//! about 3 dB/s, so speech does not count as background. The level is capped at [`MAX_COMFORT_DBOV`]; below
//! [`MIN_COMFORT_DBOV`] the output is digital silence. The noise is a seeded xorshift through a one-pole low-pass
//! (a gently falling spectrum, like room noise), faded in over 5 ms. Sans-IO and allocation-free.

use crate::frame::level_dbov;

/// Comfort noise is never louder than this (dBov): anything louder is not background.
pub const MAX_COMFORT_DBOV: f32 = -45.0;
/// A background quieter than this (dBov) plays as digital silence.
pub const MIN_COMFORT_DBOV: f32 = -75.0;
/// Rise of the noise-floor tracker per frame, in dB (≈ 3 dB/s at 50 frames/s).
const FLOOR_RISE_DB_PER_FRAME: f32 = 0.06;
/// Low-pass coefficient of the noise.
const LOWPASS: f32 = 0.6;

/// The comfort-noise generator of one stream.
#[derive(Debug, Clone)]
pub struct ComfortNoise {
    seed: u32,
    lp: f32,
    /// Noise floor of the decoded audio (dBov).
    floor_db: f32,
    /// Level of the last DTX frames (dBov), if any since the last speech.
    dtx_db: Option<f32>,
    /// Samples generated since the gap began (for the fade-in).
    run: usize,
    fade: usize,
}

impl ComfortNoise {
    /// A generator for `sample_rate_hz`.
    pub fn new(sample_rate_hz: u32) -> Self {
        Self {
            seed: 0x2545_f491,
            lp: 0.0,
            floor_db: -127.0,
            dtx_db: None,
            run: 0,
            fade: (sample_rate_hz / 200).max(1) as usize,
        }
    }

    /// Forgets the background (stream reused).
    pub fn reset(&mut self) {
        self.floor_db = -127.0;
        self.dtx_db = None;
        self.run = 0;
        self.lp = 0.0;
    }

    /// Observes a decoded frame; `dtx` if it came from a DTX (comfort) packet.
    pub fn observe(&mut self, frame: &[i16], dtx: bool) {
        let db = level_dbov(frame);
        if dtx {
            self.dtx_db = Some(db);
        } else {
            self.dtx_db = None;
            if db < self.floor_db || self.floor_db <= -127.0 {
                self.floor_db = db;
            } else {
                self.floor_db = (self.floor_db + FLOOR_RISE_DB_PER_FRAME).min(db);
            }
        }
        self.run = 0;
    }

    /// The level comfort noise plays at now (dBov), or `None` for digital silence.
    pub fn level_dbov(&self) -> Option<f32> {
        let db = self.dtx_db.unwrap_or(self.floor_db).min(MAX_COMFORT_DBOV);
        (db >= MIN_COMFORT_DBOV).then_some(db)
    }

    /// Fills `out` with comfort noise (or zeros).
    pub fn fill(&mut self, out: &mut [i16]) {
        let Some(db) = self.level_dbov() else {
            out.fill(0);
            self.run += out.len();
            return;
        };
        // Target RMS in sample units; the low-pass scales white noise's variance by (1 - a) / (1 + a).
        let rms = 32768.0 * 10f32.powf(db / 20.0);
        let white_rms = rms * ((1.0 + LOWPASS) / (1.0 - LOWPASS)).sqrt();
        // Uniform in [-1, 1) has RMS 1/√3.
        let gain = white_rms * 3f32.sqrt();
        for o in out.iter_mut() {
            self.seed ^= self.seed << 13;
            self.seed ^= self.seed >> 17;
            self.seed ^= self.seed << 5;
            let white = (self.seed as f32 / u32::MAX as f32) * 2.0 - 1.0;
            self.lp = LOWPASS * self.lp + (1.0 - LOWPASS) * white * gain;
            let ramp = (self.run as f32 / self.fade as f32).min(1.0);
            self.run += 1;
            *o = (self.lp * ramp).round().clamp(-32768.0, 32767.0) as i16;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plays_at_the_background_level() {
        let mut c = ComfortNoise::new(16_000);
        let mut out = [0i16; 320];
        // Nothing observed: silence.
        c.fill(&mut out);
        assert!(out.iter().all(|&s| s == 0));
        // A DTX frame at about -55 dBov sets the level.
        let dtx: Vec<i16> = (0..320)
            .map(|i| if i % 2 == 0 { 58 } else { -58 })
            .collect();
        c.observe(&dtx, true);
        for _ in 0..3 {
            c.fill(&mut out);
        }
        let db = level_dbov(&out);
        assert!((db - level_dbov(&dtx)).abs() < 2.0, "{db}");
        // Loud speech only: capped.
        let loud = [8000i16; 320];
        c.observe(&loud, false);
        assert_eq!(c.level_dbov(), Some(MAX_COMFORT_DBOV));
        // The floor follows a drop at once.
        c.observe(&[0i16; 320], false);
        assert_eq!(c.level_dbov(), None);
    }
}
