//! The codec stage: which codec a stream speaks ([`Codec`]), the decoder interface of the playout engine
//! ([`FrameDecoder`]) and Opus (libopus 1.6 through `opusic-c`, built from its bundled source with OSCE and deep
//! PLC); G.711 lives in [`crate::g711`].
//!
//! Opus decoders run straight at the bot's rate when Opus supports it (8/12/16/24/48 kHz), so no resampler sits in
//! that path. Each decoder and encoder owns its buffers; nothing is allocated per frame.

use opusic_c::{Application, Bitrate, Channels, Decoder, Encoder, ErrorCode, InbandFec, Signal};

use crate::error::{Error, Result};
use crate::frame::SampleRate;

/// Largest Opus payload we accept or produce for one 20 ms packet (RFC 6716's limit for one frame).
pub const MAX_PAYLOAD: usize = 1275;

/// A codec of a stream, sent or received. Every codec carries 20 ms per packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Codec {
    /// Opus (RFC 7587): 48 kHz RTP clock, dynamic payload type (the session's default 111).
    #[default]
    Opus,
    /// G.711 µ-law (PCMU, static payload type 0): 8 kHz RTP clock, 160 bytes per 20 ms.
    Pcmu,
    /// G.711 A-law (PCMA, static payload type 8): 8 kHz RTP clock, 160 bytes per 20 ms.
    Pcma,
}

impl Codec {
    /// RTP clock rate (Hz).
    pub const fn rtp_clock_hz(self) -> u32 {
        match self {
            Codec::Opus => crate::frame::OPUS_RTP_CLOCK_HZ,
            Codec::Pcmu | Codec::Pcma => crate::g711::G711_RTP_CLOCK_HZ,
        }
    }

    /// RTP timestamp increment of one 20 ms packet (960 for Opus, 160 for G.711).
    pub const fn rtp_ticks_per_frame(self) -> u32 {
        self.rtp_clock_hz() / crate::frame::FRAMES_PER_SECOND
    }

    /// The static RTP payload type (RFC 3551) if the codec has one.
    pub const fn static_payload_type(self) -> Option<u8> {
        match self {
            Codec::Opus => None,
            Codec::Pcmu => Some(0),
            Codec::Pcma => Some(8),
        }
    }

    /// True for G.711 (PCMU or PCMA).
    pub const fn is_g711(self) -> bool {
        matches!(self, Codec::Pcmu | Codec::Pcma)
    }

    /// Packets of at most this many bytes are DTX / comfort-noise packets (Opus: 2; G.711 has none — its comfort
    /// noise is a separate payload type, RFC 3389).
    pub const fn dtx_packet_max_len(self) -> usize {
        match self {
            Codec::Opus => 2,
            Codec::Pcmu | Codec::Pcma => 0,
        }
    }

    /// True if a lost packet can be rebuilt from the next one's in-band FEC (Opus LBRR).
    pub const fn has_inband_fec(self) -> bool {
        matches!(self, Codec::Opus)
    }

    /// The codec's SDP encoding name.
    pub const fn name(self) -> &'static str {
        match self {
            Codec::Opus => "opus",
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }
}

impl From<Codec> for mediaproc_wire::control::Codec {
    fn from(c: Codec) -> Self {
        match c {
            Codec::Opus => Self::Opus,
            Codec::Pcmu => Self::Pcmu,
            Codec::Pcma => Self::Pcma,
        }
    }
}

impl TryFrom<mediaproc_wire::control::Codec> for Codec {
    type Error = Error;
    /// The codec a QUIC edge's flow declaration names; `Opaque` flows carry no audio the pipeline decodes.
    fn try_from(c: mediaproc_wire::control::Codec) -> Result<Self> {
        match c {
            mediaproc_wire::control::Codec::Opus => Ok(Codec::Opus),
            mediaproc_wire::control::Codec::Pcmu => Ok(Codec::Pcmu),
            mediaproc_wire::control::Codec::Pcma => Ok(Codec::Pcma),
            mediaproc_wire::control::Codec::Opaque => Err(Error::Config {
                field: "codec",
                problem: "is not an audio codec the pipeline decodes (Opus, PCMU, PCMA)",
            }),
        }
    }
}

/// What the playout engine needs from a decoder: 20 ms frames of PCM at one rate, concealment of any length up to a
/// frame, FEC when the codec has it. Implemented by [`OpusDecoder`] and [`crate::g711::G711Decoder`].
pub trait FrameDecoder {
    /// Samples in one output frame (20 ms at the decoder's output rate).
    fn samples_per_frame(&self) -> usize;
    /// Decodes one 20 ms packet into `out[..samples_per_frame]`; a malformed packet is an error (the caller
    /// conceals).
    fn decode(&mut self, packet: &[u8], out: &mut [i16]) -> Result<()>;
    /// Synthesises `out.len()` samples (at most a frame; a multiple of 2.5 ms) continuing the previous signal.
    fn conceal(&mut self, out: &mut [i16]) -> Result<()>;
    /// Rebuilds a lost frame from the next packet's in-band FEC; codecs without FEC conceal.
    fn decode_fec(&mut self, next_packet: &[u8], out: &mut [i16]) -> Result<()>;
    /// True if `packet` is a DTX / comfort-noise packet (the sender's background level, not speech).
    fn is_dtx(&self, packet: &[u8]) -> bool;
}

impl FrameDecoder for OpusDecoder {
    fn samples_per_frame(&self) -> usize {
        OpusDecoder::samples_per_frame(self)
    }
    fn decode(&mut self, packet: &[u8], out: &mut [i16]) -> Result<()> {
        OpusDecoder::decode(self, packet, out)
    }
    fn conceal(&mut self, out: &mut [i16]) -> Result<()> {
        OpusDecoder::conceal(self, out)
    }
    fn decode_fec(&mut self, next_packet: &[u8], out: &mut [i16]) -> Result<()> {
        OpusDecoder::decode_fec(self, next_packet, out)
    }
    fn is_dtx(&self, packet: &[u8]) -> bool {
        packet.len() <= Codec::Opus.dtx_packet_max_len()
    }
}

/// Encoder settings (the encoder always runs libopus's VoIP application with the voice signal hint, as
/// GStreamer's `audio-type=voice`). The defaults suit speech in a call: 32 kbit/s, complexity 5, in-band FEC off (it costs
/// quality on a clean path; the session turns it on when the far end reports loss, see
/// [`crate::fec::FecController`]), DTX off (the pacer already skips the encoder for digital silence).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncoderSettings {
    /// Target bitrate in bit/s (6000..=510000).
    pub bitrate_bps: i32,
    /// 0 (cheapest) ..= 10 (best).
    pub complexity: u8,
    /// Add in-band forward error correction (LBRR) so the receiver can rebuild a lost packet from the next one.
    pub inband_fec: bool,
    /// Expected packet loss in percent (0..=100); libopus only spends bits on FEC when this is above zero.
    pub expected_loss_percent: u8,
    /// Discontinuous transmission inside libopus (near-empty packets during background noise).
    pub dtx: bool,
}

impl Default for EncoderSettings {
    fn default() -> Self {
        Self {
            bitrate_bps: 32_000,
            complexity: 5,
            inband_fec: false,
            expected_loss_percent: 0,
            dtx: false,
        }
    }
}

impl EncoderSettings {
    /// Checks the ranges libopus accepts.
    pub fn validate(&self) -> Result<()> {
        if self.complexity > 10 {
            return Err(Error::Config {
                field: "encoder complexity",
                problem: "must be 0..=10",
            });
        }
        if !(6_000..=510_000).contains(&self.bitrate_bps) {
            return Err(Error::Config {
                field: "encoder bitrate",
                problem: "must be 6000..=510000 bit/s",
            });
        }
        if self.expected_loss_percent > 100 {
            return Err(Error::Config {
                field: "expected loss",
                problem: "must be 0..=100 %",
            });
        }
        Ok(())
    }
}

fn opus_err(operation: &'static str) -> impl FnOnce(ErrorCode) -> Error {
    move |code| Error::Opus {
        operation,
        code: code as i32,
        message: code.message(),
    }
}

/// Views 16-bit PCM as the `u16` slice `opusic-c` passes to libopus (which reads and writes `opus_int16`).
fn as_u16(pcm: &[i16]) -> &[u16] {
    // SAFETY: i16 and u16 have the same size, alignment and validity (every bit pattern is valid); the
    // returned slice borrows `pcm` for its whole life, so no aliasing is introduced.
    unsafe { std::slice::from_raw_parts(pcm.as_ptr().cast::<u16>(), pcm.len()) }
}

/// Mutable counterpart of [`as_u16`].
fn as_u16_mut(pcm: &mut [i16]) -> &mut [u16] {
    // SAFETY: as in `as_u16`; the mutable borrow of `pcm` is moved into the returned slice, so it stays unique.
    unsafe { std::slice::from_raw_parts_mut(pcm.as_mut_ptr().cast::<u16>(), pcm.len()) }
}

/// The decoder complexity every Opus decoder runs at unless told otherwise ([`OpusDecoder::with_complexity`]).
/// libopus 1.5+ uses it to pick its decoder-side enhancements: 5 turns on deep PLC (a neural network
/// continues the speech over a lost packet), 6 adds LACE and 7 NoLACE (OSCE: neural post-filters that remove
/// SILK's coding noise; no added delay). 0 is the classic decoder. See `docs/performance.md` for what each
/// costs and gives.
pub const DEFAULT_DECODER_COMPLEXITY: u8 = 7;
/// The classic decoder (libopus ≤ 1.4's, no neural stage): what a third-party far end decodes with, and the
/// cheapest (a quarter of [`DEFAULT_DECODER_COMPLEXITY`]'s cost per frame).
pub const CLASSIC_DECODER_COMPLEXITY: u8 = 0;

/// libopus accepts decoder complexities 0..=10.
fn check_decoder_complexity(complexity: u8) -> Result<()> {
    if complexity > 10 {
        return Err(Error::Config {
            field: "decoder complexity",
            problem: "must be 0..=10",
        });
    }
    Ok(())
}

/// An Opus decoder producing 20 ms mono frames at a rate Opus supports natively.
///
/// libopus 1.6's decoder state is about 190 KB (its neural stages' history; 1.3's was 18 KB), and a session keeps
/// a decoder per stream slot whether or not a participant uses it. So a decoder made with
/// [`OpusDecoder::deferred`] has no state until [`OpusDecoder::start`] (or its first decode) creates it: once per
/// participant, never per frame.
pub struct OpusDecoder {
    inner: Option<Decoder>,
    rate: opusic_c::SampleRate,
    complexity: u8,
    samples_per_frame: usize,
}

impl std::fmt::Debug for OpusDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusDecoder")
            .field("samples_per_frame", &self.samples_per_frame)
            .field("complexity", &self.complexity)
            .field("started", &self.inner.is_some())
            .finish()
    }
}

impl OpusDecoder {
    /// Creates a decoder at `rate` (must be 8, 12, 16, 24 or 48 kHz) and [`DEFAULT_DECODER_COMPLEXITY`].
    pub fn new(rate: SampleRate) -> Result<Self> {
        Self::with_complexity(rate, DEFAULT_DECODER_COMPLEXITY)
    }

    /// Creates a decoder at `rate` and decoder `complexity` (0..=10, see [`DEFAULT_DECODER_COMPLEXITY`]).
    pub fn with_complexity(rate: SampleRate, complexity: u8) -> Result<Self> {
        let mut dec = Self::deferred(rate, complexity)?;
        dec.start()?;
        Ok(dec)
    }

    /// A decoder whose libopus state is created later, by [`OpusDecoder::start`] or the first decode; checks
    /// `rate` and `complexity` now.
    pub fn deferred(rate: SampleRate, complexity: u8) -> Result<Self> {
        let native = rate.opus_native().ok_or(Error::UnsupportedSampleRate {
            hz: rate.hz(),
            context: "Opus decoder (8/12/16/24/48 kHz)",
        })?;
        check_decoder_complexity(complexity)?;
        Ok(Self {
            inner: None,
            rate: native,
            complexity,
            samples_per_frame: rate.samples_per_frame(),
        })
    }

    /// Readies the decoder for a new source: creates its state (one allocation) or resets the existing one, so
    /// nothing of a previous participant's signal leaks into the next one's first frames.
    pub fn start(&mut self) -> Result<()> {
        match &mut self.inner {
            Some(inner) => inner.reset().map_err(opus_err("decoder reset")),
            None => self.state().map(|_| ()),
        }
    }

    /// The decoder complexity in force (or to be used when the state is made).
    pub fn complexity(&self) -> u8 {
        self.complexity
    }

    /// Changes the decoder complexity (0..=10) from the next frame on: one libopus control call, no allocation.
    pub fn set_complexity(&mut self, complexity: u8) -> Result<()> {
        check_decoder_complexity(complexity)?;
        if let Some(inner) = &mut self.inner {
            inner
                .set_complexity(complexity)
                .map_err(opus_err("set decoder complexity"))?;
        }
        self.complexity = complexity;
        Ok(())
    }

    /// The libopus state, created on first use.
    fn state(&mut self) -> Result<&mut Decoder> {
        if self.inner.is_none() {
            let mut inner =
                Decoder::new(Channels::Mono, self.rate).map_err(opus_err("decoder creation"))?;
            inner
                .set_complexity(self.complexity)
                .map_err(opus_err("set decoder complexity"))?;
            self.inner = Some(inner);
        }
        self.inner.as_mut().ok_or(Error::Opus {
            operation: "decoder creation",
            code: ErrorCode::Internal as i32,
            message: ErrorCode::Internal.message(),
        })
    }

    /// Samples in one output frame.
    pub fn samples_per_frame(&self) -> usize {
        self.samples_per_frame
    }

    fn out<'a>(&self, out: &'a mut [i16]) -> Result<&'a mut [i16]> {
        let n = self.samples_per_frame;
        let len = out.len();
        out.get_mut(..n).ok_or(Error::FrameLength {
            got: len,
            expected: n,
            rate_hz: (n * 50) as u32,
            context: "Opus decoder output buffer",
        })
    }

    /// Decodes one 20 ms packet into `out[..samples_per_frame]`. A malformed packet (or one longer than 20 ms)
    /// is an error; the caller conceals instead.
    pub fn decode(&mut self, packet: &[u8], out: &mut [i16]) -> Result<()> {
        let out = self.out(out)?;
        if packet.is_empty() {
            // libopus reads an empty packet as a loss; here it is a malformed packet.
            return Err(Error::Opus {
                operation: "decode",
                code: ErrorCode::InvalidPacket as i32,
                message: ErrorCode::InvalidPacket.message(),
            });
        }
        let n = self
            .state()?
            .decode_to_slice(packet, as_u16_mut(out), false)
            .map_err(opus_err("decode"))?;
        if n < out.len() {
            out[n..].fill(0);
        }
        Ok(())
    }

    /// Packet-loss concealment: synthesises `out.len()` samples (a multiple of 2.5 ms, at most 20 ms; a longer
    /// buffer gets 20 ms) continuing the previous signal (fading out over a long gap). The playout engine conceals
    /// only an underrun's shortfall this way.
    pub fn conceal(&mut self, out: &mut [i16]) -> Result<()> {
        let spf = self.samples_per_frame;
        let step = spf / 8;
        let n = out.len().min(spf);
        if n == 0 || n % step != 0 {
            return Err(Error::FrameLength {
                got: out.len(),
                expected: spf,
                rate_hz: (spf * 50) as u32,
                context: "Opus concealment buffer (a multiple of 2.5 ms)",
            });
        }
        let out = &mut out[..n];
        self.state()?
            .decode_to_slice(&[], as_u16_mut(out), false)
            .map_err(opus_err("concealment"))?;
        Ok(())
    }

    /// Recovers a lost packet from the in-band FEC data carried in the packet that follows it. Without FEC data in
    /// `next_packet` libopus falls back to concealment.
    pub fn decode_fec(&mut self, next_packet: &[u8], out: &mut [i16]) -> Result<()> {
        let out = self.out(out)?;
        if next_packet.is_empty() {
            return self.conceal(out);
        }
        self.state()?
            .decode_to_slice(next_packet, as_u16_mut(out), true)
            .map_err(opus_err("FEC decode"))?;
        Ok(())
    }
}

/// An Opus encoder for 20 ms mono frames at a rate Opus supports natively.
pub struct OpusEncoder {
    inner: Encoder,
    samples_per_frame: usize,
    settings: EncoderSettings,
    lookahead: u32,
}

impl std::fmt::Debug for OpusEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusEncoder")
            .field("settings", &self.settings)
            .finish()
    }
}

impl OpusEncoder {
    /// Creates a VoIP encoder at `rate` (8, 12, 16, 24 or 48 kHz) with `settings`.
    pub fn new(rate: SampleRate, settings: EncoderSettings) -> Result<Self> {
        let native = rate.opus_native().ok_or(Error::UnsupportedSampleRate {
            hz: rate.hz(),
            context: "Opus encoder (8/12/16/24/48 kHz)",
        })?;
        settings.validate()?;
        let mut inner = Encoder::new(Channels::Mono, native, Application::Voip)
            .map_err(opus_err("encoder creation"))?;
        inner
            .set_signal(Signal::Voice)
            .map_err(opus_err("set signal"))?;
        let lookahead = inner.get_look_ahead().map_err(opus_err("get lookahead"))?;
        let mut enc = Self {
            inner,
            samples_per_frame: rate.samples_per_frame(),
            settings,
            lookahead,
        };
        enc.apply_all(settings)?;
        Ok(enc)
    }

    fn apply_all(&mut self, settings: EncoderSettings) -> Result<()> {
        let inner = &mut self.inner;
        inner
            .set_bitrate(Bitrate::Value(settings.bitrate_bps as u32))
            .map_err(opus_err("set bitrate"))?;
        inner
            .set_complexity(settings.complexity)
            .map_err(opus_err("set complexity"))?;
        inner
            .set_inband_fec(fec_mode(settings.inband_fec))
            .map_err(opus_err("set in-band FEC"))?;
        inner
            .set_packet_loss(settings.expected_loss_percent)
            .map_err(opus_err("set packet loss"))?;
        inner.set_dtx(settings.dtx).map_err(opus_err("set DTX"))?;
        Ok(())
    }

    /// The settings in force.
    pub fn settings(&self) -> EncoderSettings {
        self.settings
    }

    /// Changes the settings of the running encoder (only the controls that differ are set; no allocation).
    pub fn set_settings(&mut self, settings: EncoderSettings) -> Result<()> {
        settings.validate()?;
        let old = self.settings;
        let inner = &mut self.inner;
        if settings.bitrate_bps != old.bitrate_bps {
            inner
                .set_bitrate(Bitrate::Value(settings.bitrate_bps as u32))
                .map_err(opus_err("set bitrate"))?;
        }
        if settings.complexity != old.complexity {
            inner
                .set_complexity(settings.complexity)
                .map_err(opus_err("set complexity"))?;
        }
        if settings.inband_fec != old.inband_fec {
            inner
                .set_inband_fec(fec_mode(settings.inband_fec))
                .map_err(opus_err("set in-band FEC"))?;
        }
        if settings.expected_loss_percent != old.expected_loss_percent {
            inner
                .set_packet_loss(settings.expected_loss_percent)
                .map_err(opus_err("set packet loss"))?;
        }
        if settings.dtx != old.dtx {
            inner.set_dtx(settings.dtx).map_err(opus_err("set DTX"))?;
        }
        self.settings = settings;
        Ok(())
    }

    /// Encoder look-ahead in samples at the encoder's rate (part of the codec delay).
    pub fn lookahead(&self) -> u32 {
        self.lookahead
    }

    /// Encodes one 20 ms frame into `out`, returning the packet length.
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize> {
        if pcm.len() != self.samples_per_frame {
            return Err(Error::FrameLength {
                got: pcm.len(),
                expected: self.samples_per_frame,
                rate_hz: (self.samples_per_frame * 50) as u32,
                context: "Opus encoder input",
            });
        }
        self.inner
            .encode_to_slice(as_u16(pcm), out)
            .map_err(opus_err("encode"))
    }
}

/// libopus's in-band FEC mode for "on" or "off". Mode 1 is libopus 1.3's behaviour (LBRR whenever the expected
/// loss asks for it); mode 2 (1.5+) drops LBRR in frames it judges easy to conceal.
fn fec_mode(on: bool) -> InbandFec {
    if on { InbandFec::Mode1 } else { InbandFec::Off }
}

/// A one-byte Opus packet (TOC only: SILK wideband 20 ms, one frame of zero bytes) meaning "no audio": the
/// receiver runs its concealment/comfort path. Sent instead of encoding digital silence.
pub const OPUS_SILENCE_PACKET: [u8; 1] = [0x48];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_clocks_and_wire_names() {
        use mediaproc_wire::control::Codec as Wire;
        assert_eq!(
            (
                Codec::Opus.rtp_ticks_per_frame(),
                Codec::Pcmu.rtp_ticks_per_frame()
            ),
            (960, 160)
        );
        assert_eq!(Codec::Pcma.rtp_clock_hz(), 8000);
        assert_eq!(Codec::Pcma.static_payload_type(), Some(8));
        for c in [Codec::Opus, Codec::Pcmu, Codec::Pcma] {
            assert_eq!(Codec::try_from(Wire::from(c)).unwrap(), c);
        }
        assert!(Codec::try_from(Wire::Opaque).is_err());
    }

    #[test]
    fn round_trip_plc_fec_and_bad_packets() {
        let rate = SampleRate::HZ_16000;
        let mut enc = OpusEncoder::new(rate, EncoderSettings::default()).unwrap();
        let mut dec = OpusDecoder::new(rate).unwrap();
        let mut pkt = [0u8; MAX_PAYLOAD];
        let mut out = [0i16; 320];
        let mut energy_out = 0.0;
        for n in 0..50 {
            let pcm: Vec<i16> = (0..320)
                .map(|i| {
                    ((((n * 320 + i) as f32) * 2.0 * std::f32::consts::PI * 440.0 / 16000.0).sin()
                        * 8000.0) as i16
                })
                .collect();
            let len = enc.encode(&pcm, &mut pkt).unwrap();
            assert!(len > 2 && len < 400, "{len}");
            dec.decode(&pkt[..len], &mut out).unwrap();
            energy_out = crate::frame::energy(&out);
        }
        assert!(energy_out > 0.01, "decoded tone has energy {energy_out}");
        dec.conceal(&mut out).unwrap();
        let len = enc.encode(&[0; 320], &mut pkt).unwrap();
        dec.decode_fec(&pkt[..len], &mut out).unwrap();
        dec.decode(&OPUS_SILENCE_PACKET, &mut out).unwrap();
        // Garbage never panics.
        assert!(dec.decode(&[0xff, 0xff, 0xff], &mut out).is_err() || out.len() == 320);
        assert!(dec.decode(&[], &mut out).is_err());
        assert!(enc.encode(&[0; 100], &mut pkt).is_err());
        assert!(OpusDecoder::new(SampleRate::new(44_100).unwrap()).is_err());
        assert!(dec.decode(&pkt[..len], &mut [0i16; 10]).is_err());
        // Concealment of part of a frame (an underrun's shortfall), in 2.5 ms steps.
        assert!(dec.conceal(&mut out[..40]).is_ok());
        assert!(dec.conceal(&mut out[..41]).is_err());
    }
}
