//! Frames, formats and media time.

use std::time::Duration;

use crate::error::{Error, Result};

/// Duration of one frame (and of one Opus packet we send or expect).
pub const FRAME_DURATION: Duration = Duration::from_millis(20);
/// Frames per second.
pub const FRAMES_PER_SECOND: u32 = 50;
/// Largest frame: 20 ms at 48 kHz.
pub const MAX_FRAME_SAMPLES: usize = 960;
/// RTP clock rate of Opus (RFC 7587): always 48 kHz whatever the coded bandwidth.
pub const OPUS_RTP_CLOCK_HZ: u32 = 48_000;
/// RTP timestamp increment of one 20 ms Opus packet.
pub const RTP_TICKS_PER_FRAME: u32 = 960;
/// 100 ns ticks in one frame (the Microsoft media platform's timestamp unit).
pub const TICKS_100NS_PER_FRAME: u64 = 200_000;

/// A PCM sample rate: any multiple of 50 Hz between 8 and 48 kHz, so a frame is a whole number of samples.
///
/// Opus decodes and encodes natively at 8, 12, 16, 24 and 48 kHz; other rates go through the resampler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SampleRate(u32);

impl SampleRate {
    /// 8 kHz (`Pcm8K`... narrowband).
    pub const HZ_8000: Self = Self(8_000);
    /// 12 kHz.
    pub const HZ_12000: Self = Self(12_000);
    /// 16 kHz, the default (`Pcm16K`: 320 samples = 640 bytes per frame).
    pub const HZ_16000: Self = Self(16_000);
    /// 24 kHz.
    pub const HZ_24000: Self = Self(24_000);
    /// 48 kHz.
    pub const HZ_48000: Self = Self(48_000);

    /// Validates a rate.
    pub fn new(hz: u32) -> Result<Self> {
        if (8_000..=48_000).contains(&hz) && hz % FRAMES_PER_SECOND == 0 {
            Ok(Self(hz))
        } else {
            Err(Error::UnsupportedSampleRate {
                hz,
                context: "SampleRate::new",
            })
        }
    }

    /// The rate in Hz.
    pub const fn hz(self) -> u32 {
        self.0
    }

    /// Samples in one 20 ms mono frame.
    pub const fn samples_per_frame(self) -> usize {
        (self.0 / FRAMES_PER_SECOND) as usize
    }

    /// The libopus rate if Opus handles this rate natively.
    pub fn opus_native(self) -> Option<opusic_c::SampleRate> {
        match self.0 {
            8_000 => Some(opusic_c::SampleRate::Hz8000),
            12_000 => Some(opusic_c::SampleRate::Hz12000),
            16_000 => Some(opusic_c::SampleRate::Hz16000),
            24_000 => Some(opusic_c::SampleRate::Hz24000),
            48_000 => Some(opusic_c::SampleRate::Hz48000),
            _ => None,
        }
    }
}

impl Default for SampleRate {
    fn default() -> Self {
        Self::HZ_16000
    }
}

/// Metadata of a frame handed to or taken from the bot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrameInfo {
    /// Media time of the frame's first sample in 100 ns ticks since the session's origin.
    pub timestamp: u64,
    /// Frame counter of the stream (0, 1, 2, ...); a gap means frames were dropped.
    pub sequence: u64,
    /// True when the frame carries no audible signal (silence, comfort noise, nothing received).
    pub is_silence: bool,
}

/// Converts a session-relative instant to 100 ns ticks.
pub fn ticks_100ns(now: Duration) -> u64 {
    u64::try_from(now.as_nanos() / 100).unwrap_or(u64::MAX)
}

/// Mean square energy of a frame, normalised so that a full-scale square wave is 1.0.
pub fn energy(samples: &[i16]) -> f32 {
    if samples.is_empty() {
        return 0.0;
    }
    let mut acc = 0i64;
    for &s in samples {
        acc += i64::from(s) * i64::from(s);
    }
    (acc as f64 / samples.len() as f64 / (32768.0 * 32768.0)) as f32
}

/// Level in dBov (0 = full scale, negative below), floored at -127 like RFC 6464.
pub fn level_dbov(samples: &[i16]) -> f32 {
    let e = energy(samples);
    if e <= 1e-13 {
        -127.0
    } else {
        (10.0 * e.log10()).max(-127.0)
    }
}

/// Level below which a frame is treated as silence (dBov).
pub const SILENCE_DBOV: f32 = -60.0;

/// True if every sample is zero (digital silence: the encoder can be skipped).
pub fn is_digital_silence(samples: &[i16]) -> bool {
    samples.iter().all(|&s| s == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(SampleRate::HZ_16000.samples_per_frame(), 320);
        assert_eq!(
            SampleRate::new(44_100).map(|r| r.samples_per_frame()).ok(),
            Some(882)
        );
        assert!(SampleRate::new(44_101).is_err());
        assert!(SampleRate::new(96_000).is_err());
        assert!(SampleRate::new(22_050).unwrap().opus_native().is_none());
        assert!(SampleRate::HZ_24000.opus_native().is_some());
    }

    #[test]
    fn levels() {
        assert_eq!(level_dbov(&[0; 320]), -127.0);
        let full = [i16::MAX; 320];
        assert!(level_dbov(&full) > -0.01);
        let quiet = [33i16; 320];
        assert!((level_dbov(&quiet) + 60.0).abs() < 0.1);
        assert_eq!(
            ticks_100ns(Duration::from_millis(20)),
            TICKS_100NS_PER_FRAME
        );
    }
}
