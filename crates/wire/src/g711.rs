//! G.711 µ-law (PCMU, payload type 0) and A-law (PCMA, payload type 8) sample codecs, 8 kHz.

/// RTP payload type of PCMU.
pub const PT_PCMU: u8 = 0;
/// RTP payload type of PCMA.
pub const PT_PCMA: u8 = 8;

const BIAS: i32 = 0x84;
const CLIP: i32 = 32635;

/// Encodes one 16-bit sample as µ-law.
pub fn ulaw_encode(sample: i16) -> u8 {
    let mut s = i32::from(sample);
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    s = s.min(CLIP) + BIAS;
    let exponent = (31 - (s as u32).leading_zeros() as i32 - 7).clamp(0, 7);
    let mantissa = (s >> (exponent + 3)) & 0x0F;
    !(sign | (exponent << 4) as u8 | mantissa as u8)
}

/// Decodes one µ-law byte.
pub fn ulaw_decode(byte: u8) -> i16 {
    let b = !byte;
    let sign = b & 0x80;
    let exponent = i32::from((b >> 4) & 0x07);
    let mantissa = i32::from(b & 0x0F);
    let magnitude = (((mantissa << 3) + BIAS) << exponent) - BIAS;
    (if sign != 0 { -magnitude } else { magnitude }) as i16
}

/// Encodes one 16-bit sample as A-law.
pub fn alaw_encode(sample: i16) -> u8 {
    let s = i32::from(sample);
    let (sign, mag) = if s >= 0 {
        (0x80, s)
    } else {
        (0x00, (-s - 1).max(0))
    };
    let mag = mag.min(0x7FFF) >> 3; // 13-bit magnitude
    let out = if mag < 32 {
        (mag >> 1) as u8
    } else {
        let exponent = 31 - (mag as u32).leading_zeros() as i32 - 4; // 1..=7
        let mantissa = (mag >> exponent) & 0x0F;
        ((exponent << 4) as u8) | mantissa as u8
    };
    (out | sign) ^ 0x55
}

/// Decodes one A-law byte.
pub fn alaw_decode(byte: u8) -> i16 {
    let b = byte ^ 0x55;
    let exponent = i32::from((b >> 4) & 0x07);
    let mantissa = i32::from(b & 0x0F);
    let magnitude = if exponent == 0 {
        (mantissa << 4) + 8
    } else {
        ((mantissa << 4) + 0x108) << (exponent - 1)
    };
    (if b & 0x80 != 0 { magnitude } else { -magnitude }) as i16
}

/// Encodes samples as µ-law into `out` (which must be at least as long); returns the count written.
pub fn ulaw_encode_slice(pcm: &[i16], out: &mut [u8]) -> usize {
    let n = pcm.len().min(out.len());
    for (o, s) in out[..n].iter_mut().zip(pcm) {
        *o = ulaw_encode(*s);
    }
    n
}

/// Decodes µ-law bytes into `out`; returns the count written.
pub fn ulaw_decode_slice(bytes: &[u8], out: &mut [i16]) -> usize {
    let n = bytes.len().min(out.len());
    for (o, b) in out[..n].iter_mut().zip(bytes) {
        *o = ulaw_decode(*b);
    }
    n
}

/// Encodes samples as A-law into `out`; returns the count written.
pub fn alaw_encode_slice(pcm: &[i16], out: &mut [u8]) -> usize {
    let n = pcm.len().min(out.len());
    for (o, s) in out[..n].iter_mut().zip(pcm) {
        *o = alaw_encode(*s);
    }
    n
}

/// Decodes A-law bytes into `out`; returns the count written.
pub fn alaw_decode_slice(bytes: &[u8], out: &mut [i16]) -> usize {
    let n = bytes.len().min(out.len());
    for (o, b) in out[..n].iter_mut().zip(bytes) {
        *o = alaw_decode(*b);
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_and_silence_codes() {
        for b in 0..=255u8 {
            // 0x7f is µ-law's negative zero, which decodes to 0 and comes back as positive zero (0xff).
            if b != 0x7f {
                assert_eq!(ulaw_encode(ulaw_decode(b)), b, "µ-law {b:#04x}");
            }
            assert_eq!(alaw_encode(alaw_decode(b)), b, "A-law {b:#04x}");
        }
        // Digital silence as sent on the wire.
        assert_eq!(ulaw_encode(0), 0xff);
        assert_eq!(alaw_encode(0), 0xd5);
        // Full scale stays full scale with the right sign.
        assert_eq!(ulaw_decode(ulaw_encode(i16::MAX)), 32124);
        assert_eq!(ulaw_decode(ulaw_encode(i16::MIN)), -32124);
        assert_eq!(alaw_decode(alaw_encode(i16::MAX)), 32256);
        assert_eq!(alaw_decode(alaw_encode(i16::MIN)), -32256);
    }

    #[test]
    fn quantisation_error_is_logarithmic() {
        // The error of a round trip is at most half a step of the segment, about 1/32 of the magnitude (+ small).
        for s in (-32000i32..32000).step_by(7) {
            let s = s as i16;
            let u = i32::from(ulaw_decode(ulaw_encode(s)));
            let a = i32::from(alaw_decode(alaw_encode(s)));
            let bound = i32::from(s).abs() / 16 + 16;
            assert!((u - i32::from(s)).abs() <= bound, "µ-law {s} -> {u}");
            assert!((a - i32::from(s)).abs() <= bound, "A-law {s} -> {a}");
        }
        let pcm = [0i16, 1000, -1000, 20000];
        let mut bytes = [0u8; 4];
        let mut back = [0i16; 4];
        assert_eq!(ulaw_encode_slice(&pcm, &mut bytes), 4);
        assert_eq!(ulaw_decode_slice(&bytes, &mut back), 4);
        assert_eq!(alaw_encode_slice(&pcm, &mut bytes[..2]), 2);
        assert_eq!(alaw_decode_slice(&bytes[..2], &mut back), 2);
    }
}
