//! G.711 (PCMU / PCMA) at the pipeline's frame rate: 20 ms = 160 bytes at 8 kHz ⇄ 20 ms of PCM at the session's
//! decode rate (the bot's 16 kHz by default).
//!
//! The sample laws are the wire crate's ([`mediaproc_wire::g711`]); this module adds the rate conversion and the
//! concealment the playout engine needs:
//! * **Decode**: 160 law bytes → 160 samples at 8 kHz → [`FrameResampler`] (rubato's sinc interpolator) → one
//!   frame at the output rate. 8 kHz output needs no resampler.
//! * **Encode**: one frame at the input rate → [`FrameResampler`] down to 8 kHz (its sinc filter's cut-off follows
//!   the lower Nyquist, so it is the anti-aliasing low-pass) → 160 law bytes. Frames of silence still run through
//!   the filter, so the end of a talkspurt is not cut.
//! * **Concealment** (ITU-T G.711 Appendix I, kept small): on the first lost sample the pitch period of the last
//!   output (2.5–15 ms, [`tsm::best_period`]) is taken as a template and repeated; after
//!   [`CONCEAL_FULL_MS`] the repetition fades linearly to silence at [`CONCEAL_FADE_END_MS`]. The playout engine
//!   merges the next decoded frame into it ([`tsm::merge`]), so the decoder does no overlap-add of its own. The
//!   resampler sees only received audio, so its delay stays constant.
//!
//! Payloads must be 20 ms (160 bytes: SDP `a=ptime:20`); others are decode errors and concealed. All buffers are
//! allocated at construction.

use mediaproc_wire::g711 as law;

use crate::codec::{Codec, FrameDecoder};
use crate::error::{Error, Result};
use crate::frame::{MAX_FRAME_SAMPLES, SampleRate};
use crate::resample::FrameResampler;
use crate::tsm::{self, PitchLags};

/// RTP clock (and sample rate) of G.711.
pub const G711_RTP_CLOCK_HZ: u32 = 8_000;
/// Bytes (= samples) in one 20 ms G.711 payload.
pub const G711_FRAME_BYTES: usize = 160;
/// Concealment repeats the last pitch period at full level for this long…
pub const CONCEAL_FULL_MS: u32 = 10;
/// …then fades out linearly to silence here (G.711 Appendix I: 20 % per 10 ms).
pub const CONCEAL_FADE_END_MS: u32 = 60;

const ZEROS: [i16; MAX_FRAME_SAMPLES] = [0; MAX_FRAME_SAMPLES];

fn check_codec(codec: Codec) -> Result<()> {
    if codec.is_g711() {
        Ok(())
    } else {
        Err(Error::Config {
            field: "G.711 codec",
            problem: "must be Pcmu or Pcma",
        })
    }
}

fn rate_8k() -> SampleRate {
    SampleRate::HZ_8000
}

/// Decodes 20 ms G.711 payloads into frames at an output rate, with pitch-repeat concealment.
pub struct G711Decoder {
    codec: Codec,
    spf: usize,
    hz: u32,
    pcm8: [i16; G711_FRAME_BYTES],
    resampler: Option<FrameResampler>,
    lags: PitchLags,
    /// The last output samples (2 × the longest pitch period), oldest first.
    hist: Box<[i16]>,
    /// The period repeated during concealment (its first `lag` samples).
    period: Box<[i16]>,
    /// Current concealment's period (0: not concealing).
    lag: usize,
    /// Samples concealed since the last decoded frame.
    concealed: usize,
}

impl std::fmt::Debug for G711Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("G711Decoder")
            .field("codec", &self.codec)
            .field("hz", &self.hz)
            .finish()
    }
}

impl G711Decoder {
    /// A decoder for `codec` (PCMU or PCMA) producing frames at `rate`; all memory is allocated here.
    pub fn new(codec: Codec, rate: SampleRate) -> Result<Self> {
        check_codec(codec)?;
        let resampler = if rate == rate_8k() {
            None
        } else {
            Some(FrameResampler::new(rate_8k(), rate)?)
        };
        let lags = PitchLags::for_rate(rate.hz());
        Ok(Self {
            codec,
            spf: rate.samples_per_frame(),
            hz: rate.hz(),
            pcm8: [0; G711_FRAME_BYTES],
            resampler,
            lags,
            hist: vec![0; 2 * lags.max].into_boxed_slice(),
            period: vec![0; lags.max].into_boxed_slice(),
            lag: 0,
            concealed: 0,
        })
    }

    /// The law decoded (PCMU or PCMA).
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Switches the law (PCMU ⇄ PCMA) and forgets the signal (a new stream).
    pub fn set_codec(&mut self, codec: Codec) -> Result<()> {
        check_codec(codec)?;
        self.codec = codec;
        self.reset();
        Ok(())
    }

    /// Forgets the signal (history, concealment, resampler state).
    pub fn reset(&mut self) {
        if let Some(r) = &mut self.resampler {
            r.reset();
        }
        self.hist.fill(0);
        self.lag = 0;
        self.concealed = 0;
    }

    /// Delay of the 8 kHz → output-rate conversion, in output samples.
    pub fn delay_samples(&self) -> usize {
        self.resampler
            .as_ref()
            .map_or(0, FrameResampler::delay_samples)
    }

    fn remember(&mut self, out: &[i16]) {
        let h = self.hist.len();
        if out.len() >= h {
            self.hist.copy_from_slice(&out[out.len() - h..]);
        } else {
            self.hist.copy_within(out.len().., 0);
            self.hist[h - out.len()..].copy_from_slice(out);
        }
    }

    fn frame_len_err(&self, got: usize, context: &'static str) -> Error {
        Error::FrameLength {
            got,
            expected: self.spf,
            rate_hz: self.hz,
            context,
        }
    }
}

impl FrameDecoder for G711Decoder {
    fn samples_per_frame(&self) -> usize {
        self.spf
    }

    fn decode(&mut self, packet: &[u8], out: &mut [i16]) -> Result<()> {
        if packet.len() != G711_FRAME_BYTES {
            return Err(Error::FrameLength {
                got: packet.len(),
                expected: G711_FRAME_BYTES,
                rate_hz: G711_RTP_CLOCK_HZ,
                context: "G.711 payload (ptime 20 ms)",
            });
        }
        let len = out.len();
        let spf = self.spf;
        let Some(out) = out.get_mut(..spf) else {
            return Err(self.frame_len_err(len, "G.711 decoder output buffer"));
        };
        match self.codec {
            Codec::Pcma => law::alaw_decode_slice(packet, &mut self.pcm8),
            _ => law::ulaw_decode_slice(packet, &mut self.pcm8),
        };
        match &mut self.resampler {
            Some(r) => {
                // A dry FIFO (cannot happen at a fixed 1:2 ratio) yields silence; the frame still counts.
                r.process(&self.pcm8, out)?;
            }
            None => out.copy_from_slice(&self.pcm8),
        }
        self.remember(out);
        self.lag = 0;
        self.concealed = 0;
        Ok(())
    }

    fn conceal(&mut self, out: &mut [i16]) -> Result<()> {
        if out.is_empty() || out.len() > self.spf {
            return Err(self.frame_len_err(out.len(), "G.711 concealment buffer"));
        }
        if self.lag == 0 {
            let h = self.hist.len();
            let lag = tsm::best_period(&self.hist, self.lags, self.lags.max)
                .map_or(self.lags.max, |p| p.lag);
            self.period[..lag].copy_from_slice(&self.hist[h - lag..]);
            self.lag = lag;
        }
        let full = (self.hz * CONCEAL_FULL_MS / 1000) as usize;
        let end = (self.hz * CONCEAL_FADE_END_MS / 1000) as usize;
        let lag = self.lag;
        for o in out.iter_mut() {
            let k = self.concealed;
            let gain = if k < full {
                1.0
            } else if k < end {
                (end - k) as f32 / (end - full) as f32
            } else {
                0.0
            };
            *o = (f32::from(self.period[k % lag]) * gain) as i16;
            self.concealed += 1;
        }
        self.remember(out);
        Ok(())
    }

    fn decode_fec(&mut self, _next_packet: &[u8], out: &mut [i16]) -> Result<()> {
        // G.711 has no in-band FEC.
        let n = out.len().min(self.spf);
        self.conceal(&mut out[..n])
    }

    fn is_dtx(&self, _packet: &[u8]) -> bool {
        false
    }
}

/// Encodes frames at an input rate into 20 ms G.711 payloads.
pub struct G711Encoder {
    codec: Codec,
    in_spf: usize,
    hz: u32,
    pcm8: [i16; G711_FRAME_BYTES],
    resampler: Option<FrameResampler>,
}

impl std::fmt::Debug for G711Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("G711Encoder")
            .field("codec", &self.codec)
            .field("hz", &self.hz)
            .finish()
    }
}

impl G711Encoder {
    /// An encoder for `codec` (PCMU or PCMA) taking frames at `rate`; all memory is allocated here.
    pub fn new(codec: Codec, rate: SampleRate) -> Result<Self> {
        check_codec(codec)?;
        let resampler = if rate == rate_8k() {
            None
        } else {
            Some(FrameResampler::new(rate, rate_8k())?)
        };
        Ok(Self {
            codec,
            in_spf: rate.samples_per_frame(),
            hz: rate.hz(),
            pcm8: [0; G711_FRAME_BYTES],
            resampler,
        })
    }

    /// The law encoded.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Switches the law and forgets the filter state.
    pub fn set_codec(&mut self, codec: Codec) -> Result<()> {
        check_codec(codec)?;
        self.codec = codec;
        self.reset();
        Ok(())
    }

    /// Forgets the filter state.
    pub fn reset(&mut self) {
        if let Some(r) = &mut self.resampler {
            r.reset();
        }
    }

    /// Delay of the input-rate → 8 kHz conversion, in 8 kHz samples.
    pub fn delay_samples(&self) -> usize {
        self.resampler
            .as_ref()
            .map_or(0, FrameResampler::delay_samples)
    }

    /// Encodes one frame (`None`: silence, which still flushes the filter) into `out[..160]`; returns 160.
    pub fn encode(&mut self, pcm: Option<&[i16]>, out: &mut [u8]) -> Result<usize> {
        let input = pcm.unwrap_or(&ZEROS[..self.in_spf]);
        if input.len() != self.in_spf {
            return Err(Error::FrameLength {
                got: input.len(),
                expected: self.in_spf,
                rate_hz: self.hz,
                context: "G.711 encoder input",
            });
        }
        let len = out.len();
        let Some(out) = out.get_mut(..G711_FRAME_BYTES) else {
            return Err(Error::FrameLength {
                got: len,
                expected: G711_FRAME_BYTES,
                rate_hz: G711_RTP_CLOCK_HZ,
                context: "G.711 encoder output buffer",
            });
        };
        match &mut self.resampler {
            Some(r) => {
                r.process(input, &mut self.pcm8)?;
            }
            None => self.pcm8.copy_from_slice(input),
        }
        match self.codec {
            Codec::Pcma => law::alaw_encode_slice(&self.pcm8, out),
            _ => law::ulaw_encode_slice(&self.pcm8, out),
        };
        Ok(G711_FRAME_BYTES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(n: usize, hz: f64, rate: f64, amp: f64) -> Vec<i16> {
        (0..n)
            .map(|i| ((i as f64 * std::f64::consts::TAU * hz / rate).sin() * amp) as i16)
            .collect()
    }

    /// Best normalised correlation of `b` against `a` over lags 0..max_lag (b delayed).
    fn best_corr(a: &[i16], b: &[i16], max_lag: usize) -> (f64, usize) {
        (0..max_lag)
            .map(|d| {
                let n = a.len().min(b.len() - d);
                let (mut xy, mut xx, mut yy) = (0.0, 0.0, 0.0);
                for i in 0..n {
                    let (x, y) = (f64::from(a[i]), f64::from(b[i + d]));
                    xy += x * y;
                    xx += x * x;
                    yy += y * y;
                }
                (xy / (xx * yy).sqrt().max(1.0), d)
            })
            .fold((f64::MIN, 0), |a, b| if b.0 > a.0 { b } else { a })
    }

    #[test]
    fn round_trip_at_16k_both_laws() {
        for codec in [Codec::Pcmu, Codec::Pcma] {
            let rate = SampleRate::HZ_16000;
            let mut enc = G711Encoder::new(codec, rate).unwrap();
            let mut dec = G711Decoder::new(codec, rate).unwrap();
            let src = tone(320 * 50, 440.0, 16_000.0, 8000.0);
            let mut got = Vec::new();
            let mut pkt = [0u8; 200];
            let mut frame = [0i16; 320];
            for f in src.chunks(320) {
                assert_eq!(enc.encode(Some(f), &mut pkt).unwrap(), 160);
                dec.decode(&pkt[..160], &mut frame).unwrap();
                got.extend_from_slice(&frame);
            }
            let (c, d) = best_corr(&src[..12_000], &got[..], 200);
            assert!(c > 0.99, "{codec:?}: correlation {c} at lag {d}");
            // A tone above 4 kHz is filtered out, not aliased.
            let hi = tone(320 * 20, 6000.0, 16_000.0, 8000.0);
            let mut energy = 0.0;
            for f in hi.chunks(320) {
                enc.encode(Some(f), &mut pkt).unwrap();
                dec.decode(&pkt[..160], &mut frame).unwrap();
                energy += crate::frame::energy(&frame);
            }
            assert!(energy / 20.0 < 1e-3, "{codec:?}: 6 kHz leaks: {energy}");
        }
    }

    #[test]
    fn concealment_repeats_the_period_then_fades_and_bad_input_is_an_error() {
        let rate = SampleRate::HZ_16000;
        let mut dec = G711Decoder::new(Codec::Pcmu, rate).unwrap();
        let mut enc = G711Encoder::new(Codec::Pcmu, rate).unwrap();
        let src = tone(320 * 10, 200.0, 16_000.0, 8000.0);
        let mut pkt = [0u8; 160];
        let mut frame = [0i16; 320];
        for f in src.chunks(320) {
            enc.encode(Some(f), &mut pkt).unwrap();
            dec.decode(&pkt, &mut frame).unwrap();
        }
        let last = frame;
        let mut c1 = [0i16; 320];
        dec.conceal(&mut c1[..80]).unwrap();
        dec.conceal(&mut c1[80..]).unwrap();
        // A 200 Hz tone continues at its period (80 samples at 16 kHz).
        let cont: Vec<i16> = last.iter().chain(&c1[..160]).copied().collect();
        let (c, _) = best_corr(&cont[..320], &cont[80..], 1);
        assert!(c > 0.95, "periodic continuation: {c}");
        let mut c2 = [0i16; 320];
        for _ in 0..3 {
            dec.conceal(&mut c2).unwrap();
        }
        assert!(c2.iter().all(|&s| s == 0), "silent after 60 ms");
        assert!(dec.decode(&[0xff; 80], &mut frame).is_err());
        assert!(dec.decode(&pkt, &mut [0i16; 10]).is_err());
        assert!(dec.conceal(&mut [0i16; 400]).is_err());
        assert!(enc.encode(Some(&[0; 100]), &mut pkt).is_err());
        assert!(G711Decoder::new(Codec::Opus, rate).is_err());
        // 8 kHz: no resampler, the bytes are the samples.
        let mut d8 = G711Decoder::new(Codec::Pcma, SampleRate::HZ_8000).unwrap();
        let mut e8 = G711Encoder::new(Codec::Pcma, SampleRate::HZ_8000).unwrap();
        let t8 = tone(160, 300.0, 8000.0, 5000.0);
        e8.encode(Some(&t8), &mut pkt).unwrap();
        let mut f8 = [0i16; 160];
        d8.decode(&pkt, &mut f8).unwrap();
        assert!(t8.iter().zip(&f8).all(|(a, b)| (a - b).abs() < 200));
        assert_eq!(d8.delay_samples(), 0);
    }
}
