//! Resampling of 20 ms frames with rubato's asynchronous sinc resampler.
//!
//! Used for bot rates Opus does not produce (e.g. 22.05 or 44.1 kHz: decode at 48 kHz, then resample) and for
//! clock-drift correction (the ratio can be nudged by a few hundred ppm while running). The resampler has a fixed
//! *output* size of one frame, so every call yields exactly one frame; the variable input is taken from a small
//! FIFO primed with [`RESAMPLER_PRIME_SAMPLES`] of silence. The total delay is reported by
//! [`FrameResampler::delay_samples`] so timestamps can be corrected.

use rubato::audioadapter_buffers::number_to_float::InterleavedNumbers;
use rubato::{
    Adjustable, Async, FixedAsync, Resampler, SincInterpolationParameters, SincInterpolationType,
    WindowFunction,
};

use crate::error::{Error, Result};
use crate::frame::{MAX_FRAME_SAMPLES, SampleRate};

/// Silence the input FIFO starts with, so that a frame in always yields a frame out (in input samples: 2 ms at 48 kHz).
pub const RESAMPLER_PRIME_SAMPLES: usize = 96;
/// Largest drift correction accepted, in ppm.
pub const MAX_DRIFT_PPM: f64 = 2_000.0;
const FIFO_CAPACITY: usize = 4 * MAX_FRAME_SAMPLES;

/// Converts 20 ms frames from one rate to another, one frame in, one frame out.
pub struct FrameResampler {
    inner: Async<f32>,
    fifo: Box<[i16]>,
    fifo_len: usize,
    in_spf: usize,
    out_spf: usize,
    ratio: f64,
    prime: usize,
}

impl std::fmt::Debug for FrameResampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameResampler")
            .field("in_spf", &self.in_spf)
            .field("out_spf", &self.out_spf)
            .field("fifo_len", &self.fifo_len)
            .finish()
    }
}

fn rs_err(operation: &'static str) -> impl FnOnce(String) -> Error {
    move |message| Error::Resampler { operation, message }
}

impl FrameResampler {
    /// A resampler from `from` to `to`.
    pub fn new(from: SampleRate, to: SampleRate) -> Result<Self> {
        let ratio = f64::from(to.hz()) / f64::from(from.hz());
        let params = SincInterpolationParameters {
            sinc_len: 64,
            f_cutoff: None,
            oversampling_factor: 64,
            interpolation: SincInterpolationType::Linear,
            window: WindowFunction::BlackmanHarris2,
        };
        let out_spf = to.samples_per_frame();
        let inner = Async::<f32>::new_sinc(
            ratio,
            1.0 + MAX_DRIFT_PPM * 1e-6,
            &params,
            out_spf,
            1,
            FixedAsync::Output,
        )
        .map_err(|e| rs_err("creation")(e.to_string()))?;
        let mut s = Self {
            inner,
            fifo: vec![0; FIFO_CAPACITY].into_boxed_slice(),
            fifo_len: 0,
            in_spf: from.samples_per_frame(),
            out_spf,
            ratio,
            prime: RESAMPLER_PRIME_SAMPLES * from.samples_per_frame() / MAX_FRAME_SAMPLES,
        };
        s.reset();
        Ok(s)
    }

    /// Clears history and re-primes the FIFO.
    pub fn reset(&mut self) {
        self.inner.reset();
        self.fifo[..self.prime].fill(0);
        self.fifo_len = self.prime;
    }

    /// Delay added, in output samples (filter delay plus FIFO priming).
    pub fn delay_samples(&self) -> usize {
        self.inner.output_delay() + (self.prime as f64 * self.ratio).round() as usize
    }

    /// Corrects for a sender clock that runs `ppm` parts per million fast (positive: more input samples per second
    /// than nominal, so the ratio shrinks). Clamped to ±[`MAX_DRIFT_PPM`].
    pub fn set_drift_ppm(&mut self, ppm: f64) -> Result<()> {
        let ppm = ppm.clamp(-MAX_DRIFT_PPM, MAX_DRIFT_PPM);
        self.inner
            .set_resample_ratio(self.ratio / (1.0 + ppm * 1e-6), true)
            .map_err(|e| rs_err("set ratio")(e.to_string()))
    }

    /// Resamples one input frame into one output frame. Returns false (and outputs silence) if the FIFO ran dry,
    /// which only happens when the input is persistently slower than the ratio says.
    pub fn process(&mut self, input: &[i16], out: &mut [i16]) -> Result<bool> {
        if input.len() != self.in_spf || out.len() < self.out_spf {
            return Err(Error::FrameLength {
                got: input.len(),
                expected: self.in_spf,
                rate_hz: (self.in_spf * 50) as u32,
                context: "FrameResampler::process",
            });
        }
        if self.fifo_len + input.len() > self.fifo.len() {
            // Input persistently faster than the ratio: drop the oldest samples.
            let excess = self.fifo_len + input.len() - self.fifo.len();
            self.fifo.copy_within(excess..self.fifo_len, 0);
            self.fifo_len -= excess;
        }
        self.fifo[self.fifo_len..self.fifo_len + input.len()].copy_from_slice(input);
        self.fifo_len += input.len();
        let need = self.inner.input_frames_next();
        if self.fifo_len < need {
            out[..self.out_spf].fill(0);
            return Ok(false);
        }
        let (used, produced) = {
            let inp = InterleavedNumbers::<&[i16], f32>::new(&self.fifo[..need], 1, need)
                .map_err(|e| rs_err("input buffer")(e.to_string()))?;
            let mut outp = InterleavedNumbers::<&mut [i16], f32>::new_mut(
                &mut out[..self.out_spf],
                1,
                self.out_spf,
            )
            .map_err(|e| rs_err("output buffer")(e.to_string()))?;
            self.inner
                .process_into_buffer(&inp, &mut outp, None)
                .map_err(|e| rs_err("process")(e.to_string()))?
        };
        self.fifo.copy_within(used..self.fifo_len, 0);
        self.fifo_len -= used;
        Ok(produced == self.out_spf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_frame_in_one_frame_out_and_tone_preserved() {
        let from = SampleRate::HZ_48000;
        let to = SampleRate::new(44_100).unwrap();
        let mut r = FrameResampler::new(from, to).unwrap();
        let mut out = vec![0i16; to.samples_per_frame()];
        let mut all = Vec::new();
        for n in 0..100 {
            let inp: Vec<i16> = (0..960)
                .map(|i| {
                    ((((n * 960 + i) as f64) * 2.0 * std::f64::consts::PI * 1000.0 / 48000.0).sin()
                        * 10000.0) as i16
                })
                .collect();
            assert!(r.process(&inp, &mut out).unwrap(), "frame {n} produced");
            all.extend_from_slice(&out);
        }
        // Compare against an ideal 1 kHz tone at 44.1 kHz after the reported delay.
        let d = r.delay_samples();
        let snr_at = |d: f64| {
            let mut err = 0.0;
            let mut sig = 0.0;
            for (i, &s) in all.iter().enumerate().skip(2000) {
                let ideal = ((i as f64 - d) * 2.0 * std::f64::consts::PI * 1000.0 / 44100.0).sin()
                    * 10000.0;
                err += (f64::from(s) - ideal).powi(2);
                sig += ideal * ideal;
            }
            10.0 * (sig / err).log10()
        };
        // The reported (integer) delay is within one sample of the true, fractional one.
        let best = (-10..=10)
            .map(|k| (snr_at(d as f64 + f64::from(k) / 10.0), k))
            .fold((0.0, 0), |a, b| if b.0 > a.0 { b } else { a });
        assert!(best.0 > 45.0, "best SNR {best:?} near reported delay {d}");
        // A sender 500 ppm slow: the ratio grows, fewer input samples are consumed, the FIFO absorbs the surplus.
        r.set_drift_ppm(-500.0).unwrap();
        let inp = [0i16; 960];
        for _ in 0..300 {
            assert!(r.process(&inp, &mut out).unwrap());
        }
        // A sender 500 ppm fast while we feed nominal input: the FIFO eventually runs dry and says so.
        r.set_drift_ppm(500.0).unwrap();
        assert!((0..1000).any(|_| !r.process(&inp, &mut out).unwrap()));
    }
}

/// Converts a whole recording — interleaved 16-bit PCM with `channels` channels at `from_hz` — to mono at `to`:
/// channels are averaged, and a [`FrameResampler`] converts the rate when it differs (its delay is removed, so the
/// audio starts on time). For prompts and test voices loaded before a call: it allocates, unlike the frame path.
pub fn to_mono_at(
    interleaved: &[i16],
    channels: usize,
    from_hz: u32,
    to: SampleRate,
) -> Result<Vec<i16>> {
    let channels = channels.max(1);
    let mono: Vec<i16> = interleaved
        .chunks(channels)
        .map(|frame| (frame.iter().map(|&s| i32::from(s)).sum::<i32>() / channels as i32) as i16)
        .collect();
    if from_hz == to.hz() {
        return Ok(mono);
    }
    let from = SampleRate::new(from_hz)?;
    let mut resampler = FrameResampler::new(from, to)?;
    let mut out = Vec::with_capacity(
        mono.len() * to.hz() as usize / from_hz as usize + to.samples_per_frame(),
    );
    let mut frame_out = vec![0i16; to.samples_per_frame()];
    let mut frame_in = vec![0i16; from.samples_per_frame()];
    for chunk in mono.chunks(from.samples_per_frame()) {
        frame_in[..chunk.len()].copy_from_slice(chunk);
        frame_in[chunk.len()..].fill(0);
        resampler.process(&frame_in, &mut frame_out)?;
        out.extend_from_slice(&frame_out);
    }
    let delay = resampler.delay_samples().min(out.len());
    out.drain(..delay);
    Ok(out)
}

#[cfg(test)]
mod whole_recording_tests {
    use super::*;

    #[test]
    fn stereo_44k1_becomes_mono_16k_on_time() {
        // A 440 Hz tone starting after 100 ms of silence, stereo at 44.1 kHz.
        let rate = 44_100usize;
        let interleaved: Vec<i16> = (0..rate)
            .flat_map(|i| {
                let s = if i < rate / 10 {
                    0
                } else {
                    ((i as f64 / rate as f64 * 440.0 * std::f64::consts::TAU).sin() * 8000.0) as i16
                };
                [s, s]
            })
            .collect();
        let out = to_mono_at(&interleaved, 2, 44_100, SampleRate::HZ_16000).unwrap();
        assert!(
            (out.len() as i64 - 16_000).abs() <= 320,
            "{} samples",
            out.len()
        );
        let onset = out.iter().position(|s| s.abs() > 1000).unwrap();
        assert!(
            (onset as i64 - 1600).abs() <= 16,
            "onset at sample {onset}, expected ≈ 1600"
        );
        assert_eq!(
            to_mono_at(&[1, 3, 5, 7], 2, 16_000, SampleRate::HZ_16000).unwrap(),
            vec![2, 6]
        );
    }
}
