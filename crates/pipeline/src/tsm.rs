//! Time-scale modification of decoded PCM: remove or insert one pitch period, and merge concealment into decoded
//! audio (the WebRTC NetEQ operations Accelerate, PreemptiveExpand and Merge, written from their description).
//!
//! All operations work in place on a slice of future samples (the playout sync buffer) and allocate nothing.
//!
//! * **Pitch**: the best lag `P` in [[`MIN_PITCH_MS`], [`MAX_PITCH_MS`]] maximises the normalised correlation of
//!   `x[0..P]` with `x[P..2P]` — exactly the two stretches a removal or insertion cross-fades, so the figure says how
//!   well the splice will match. The search runs on every `stride`-th lag and sample (about 8 kHz), then refines
//!   around the best lag at full resolution.
//! * **Remove** ([`remove_period`]): `x[0..P]` becomes a raised-cosine cross-fade from `x[0..P]` into `x[P..2P]`;
//!   the rest moves down by `P`. On a periodic signal the result is the same waveform, one period shorter.
//! * **Insert** ([`insert_period`]): after `x[0..P]` comes a cross-fade from `x[P..2P]` back into `x[0..P]`, then
//!   `x[P..]` again: one period longer.
//! * **Merge** ([`merge`]): after concealment, the history (the concealment just played) is continued periodically
//!   at its own pitch; the new decoded audio is searched for the offset (within one period) where it matches that
//!   continuation best, and the continuation is cross-faded into it there — dropping the new audio before that
//!   offset, or, when that would be more than half a period, playing the rest of the period from the continuation
//!   instead (the same alignment), so a merge moves the timeline by half a period at most.
//!
//! A caller applies removal or insertion only where the correlation is high ([`VOICED_CORRELATION`]) or the signal
//! is quiet (then any splice is inaudible).

/// Shortest pitch period considered (400 Hz).
pub const MIN_PITCH_MS: f32 = 2.5;
/// Longest pitch period considered (≈ 67 Hz).
pub const MAX_PITCH_MS: f32 = 15.0;
/// Correlation above which a segment counts as periodic enough to splice at its pitch period.
pub const VOICED_CORRELATION: f32 = 0.9;
/// Cross-fade length of a merge, at most (5 ms; shorter if the period is).
pub const MERGE_FADE_MS: f32 = 5.0;

/// The lag range at one sample rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PitchLags {
    /// Shortest lag (samples).
    pub min: usize,
    /// Longest lag (samples).
    pub max: usize,
    /// Step of the coarse search (lags and samples).
    pub stride: usize,
}

impl PitchLags {
    /// The lag range for `hz` samples per second.
    pub fn for_rate(hz: u32) -> Self {
        let ms = |v: f32| ((hz as f32) * v / 1000.0) as usize;
        Self {
            min: ms(MIN_PITCH_MS).max(2),
            max: ms(MAX_PITCH_MS).max(4),
            stride: (hz / 8000).max(1) as usize,
        }
    }
}

/// A lag and the normalised correlation of the two periods it joins.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Period {
    /// Lag in samples.
    pub lag: usize,
    /// Normalised correlation in [-1, 1].
    pub correlation: f32,
}

/// Normalised correlation of `a` and `b` (equal length) over every `stride`-th sample.
pub fn correlation(a: &[i16], b: &[i16], stride: usize) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    // Integer sums (exact, and the plain loop vectorises); i64 cannot overflow for any frame length used here.
    let (mut xy, mut xx, mut yy) = (0i64, 0i64, 0i64);
    if stride <= 1 {
        for (&x, &y) in a.iter().zip(b) {
            let (x, y) = (i64::from(x), i64::from(y));
            xy += x * y;
            xx += x * x;
            yy += y * y;
        }
    } else {
        let mut i = 0;
        while i < n {
            let (x, y) = (i64::from(a[i]), i64::from(b[i]));
            xy += x * y;
            xx += x * x;
            yy += y * y;
            i += stride;
        }
    }
    if xx <= 0 || yy <= 0 {
        0.0
    } else {
        (xy as f64 / ((xx as f64) * (yy as f64)).sqrt()) as f32
    }
}

/// The best period of `x` with a lag in `[lags.min, max_lag]` (and `2 × lag ≤ x.len()`), or `None` if no lag fits.
pub fn best_period(x: &[i16], lags: PitchLags, max_lag: usize) -> Option<Period> {
    let hi = max_lag.min(lags.max).min(x.len() / 2);
    if hi < lags.min {
        return None;
    }
    let at = |lag: usize, stride: usize| correlation(&x[..lag], &x[lag..2 * lag], stride);
    let mut best = Period {
        lag: lags.min,
        correlation: f32::MIN,
    };
    let mut lag = lags.min;
    while lag <= hi {
        let c = at(lag, lags.stride);
        if c > best.correlation {
            best = Period {
                lag,
                correlation: c,
            };
        }
        lag += lags.stride;
    }
    let centre = best.lag;
    best.correlation = f32::MIN;
    for lag in centre.saturating_sub(lags.stride).max(lags.min)..=(centre + lags.stride).min(hi) {
        let c = at(lag, 1);
        if c > best.correlation {
            best = Period {
                lag,
                correlation: c,
            };
        }
    }
    Some(best)
}

/// Raised-cosine weight of the incoming signal at step `i` of an `n`-sample cross-fade.
fn fade_in(i: usize, n: usize) -> f32 {
    0.5 - 0.5 * (std::f32::consts::PI * (i as f32 + 0.5) / n as f32).cos()
}

fn mix(out: f32, inc: f32, w: f32) -> i16 {
    (out * (1.0 - w) + inc * w).round().clamp(-32768.0, 32767.0) as i16
}

/// Removes `lag` samples from the start of `x[..len]` (see the module docs). Returns the new length; `len` unchanged
/// if `2 × lag > len`.
pub fn remove_period(x: &mut [i16], len: usize, lag: usize) -> usize {
    let len = len.min(x.len());
    if lag == 0 || 2 * lag > len {
        return len;
    }
    for i in 0..lag {
        x[i] = mix(f32::from(x[i]), f32::from(x[lag + i]), fade_in(i, lag));
    }
    x.copy_within(2 * lag..len, lag);
    len - lag
}

/// Inserts `lag` samples after `x[..lag]` (see the module docs). Returns the new length; `len` unchanged if
/// `2 × lag > len` or the slice has no room.
pub fn insert_period(x: &mut [i16], len: usize, lag: usize) -> usize {
    let len = len.min(x.len());
    if lag == 0 || 2 * lag > len || len + lag > x.len() {
        return len;
    }
    x.copy_within(lag..len, 2 * lag);
    // x[2lag..3lag] now holds the old x[lag..2lag]: fade it back into x[0..lag].
    for i in 0..lag {
        x[lag + i] = mix(f32::from(x[2 * lag + i]), f32::from(x[i]), fade_in(i, lag));
    }
    len + lag
}

/// Merges concealment into decoded audio: `history` ends with the last samples played (the concealment), `new[..len]`
/// is the first decoded audio after it. Continues the history at its pitch, finds the offset `s < P` of `new` that
/// matches the continuation best, and joins the two at that phase with the smaller change of the timeline: for
/// `s ≤ P/2` it cross-fades the continuation into `new[s..]` and drops `new[..s]`; otherwise (and if `new` has room)
/// it plays `P − s` more samples of the continuation and cross-fades them into `new[0..]` — the same alignment, so a
/// merge never moves the timeline by more than half a period. Returns the new length and the timeline change
/// (samples dropped, positive, or inserted, negative), or `None` (nothing changed) if the history is too short or not
/// periodic.
pub fn merge(
    history: &[i16],
    new: &mut [i16],
    len: usize,
    lags: PitchLags,
    sample_rate_hz: u32,
) -> Option<(usize, isize)> {
    let len = len.min(new.len());
    let period = best_period(
        &history[history.len().saturating_sub(2 * lags.max)..],
        lags,
        lags.max,
    )?;
    if period.correlation < 0.5 || history.len() < period.lag {
        return None;
    }
    let p = period.lag;
    let fade = ((sample_rate_hz as f32 * MERGE_FADE_MS / 1000.0) as usize)
        .min(p)
        .max(1);
    if len < p + fade {
        return None;
    }
    // The continuation: the last period of the history, repeated.
    let tail = &history[history.len() - p..];
    // fade <= p, so the continuation over the cross-fade is the period itself.
    let cont = |i: usize| tail[i];
    let mut best = (0usize, f32::MIN);
    for s in 0..p {
        let c = correlation(&tail[..fade], &new[s..s + fade], lags.stride);
        // Prefer small changes of the timeline (dropping s or inserting p - s samples).
        let c = c - 0.05 * s.min(p - s) as f32 / p as f32;
        if c > best.1 {
            best = (s, c);
        }
    }
    let s = best.0;
    let e = p - s;
    if s > p / 2 && len + e <= new.len() {
        // new[j] pairs with the continuation at j + e (≡ j − s): play e more samples of it, then fade into new.
        new.copy_within(0..len, e);
        for i in 0..e {
            new[i] = tail[i % p];
        }
        for i in 0..fade {
            new[e + i] = mix(
                f32::from(tail[(e + i) % p]),
                f32::from(new[e + i]),
                fade_in(i, fade),
            );
        }
        return Some((len + e, -(e as isize)));
    }
    for i in 0..fade {
        new[s + i] = mix(f32::from(cont(i)), f32::from(new[s + i]), fade_in(i, fade));
    }
    new.copy_within(s..len, 0);
    Some((len - s, s as isize))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(n: usize, period: f32) -> Vec<i16> {
        (0..n)
            .map(|i| {
                let ph = std::f32::consts::TAU * i as f32 / period;
                ((ph.sin() + 0.5 * (2.0 * ph).sin()) * 8000.0) as i16
            })
            .collect()
    }

    #[test]
    fn finds_the_pitch_period() {
        let lags = PitchLags::for_rate(16_000);
        assert_eq!((lags.min, lags.max, lags.stride), (40, 240, 2));
        let x = tone(640, 100.0);
        let p = best_period(&x, lags, 240).unwrap();
        assert!(p.lag == 100 || p.lag == 200, "{p:?}");
        assert!(p.correlation > 0.99);
        let p = best_period(&x, lags, 150).unwrap();
        assert_eq!(p.lag, 100);
        assert!(best_period(&x[..60], lags, 240).is_none());
    }

    #[test]
    fn remove_and_insert_keep_the_waveform() {
        let x = tone(640, 100.0);
        let mut y = x.clone();
        let len = remove_period(&mut y, 640, 100);
        assert_eq!(len, 540);
        for i in 0..len {
            assert!((i32::from(y[i]) - i32::from(x[i + 100])).abs() < 200, "{i}");
        }
        let mut z = x.clone();
        z.resize(800, 0);
        let len = insert_period(&mut z, 640, 100);
        assert_eq!(len, 740);
        for i in 0..len {
            let expect = x[i % 100];
            assert!((i32::from(z[i]) - i32::from(expect)).abs() < 200, "{i}");
        }
        // No room, or too short: unchanged.
        let mut short = tone(150, 100.0);
        assert_eq!(remove_period(&mut short, 150, 100), 150);
        assert_eq!(insert_period(&mut short, 150, 40), 150);
    }

    #[test]
    fn merge_aligns_to_the_continuation() {
        let lags = PitchLags::for_rate(16_000);
        let x = tone(2000, 100.0);
        let history = &x[..500];
        // The new audio starts 30 samples into a period relative to the history's continuation.
        // Dropping 70 samples or playing 30 more of the continuation align alike: the smaller change wins.
        let mut new = x[530..1000].to_vec();
        new.resize(600, 0);
        let (len, shift) = merge(history, &mut new, 470, lags, 16_000).unwrap();
        assert_eq!(shift, -30);
        assert_eq!(len, 500);
        for i in 0..len {
            assert!(
                (i32::from(new[i]) - i32::from(x[500 + i])).abs() < 200,
                "{i}"
            );
        }
        // 80 samples into a period: the next period starts 20 samples in, which are dropped.
        let mut new = x[580..1000].to_vec();
        new.resize(600, 0);
        let (len, shift) = merge(history, &mut new, 420, lags, 16_000).unwrap();
        assert_eq!((len, shift), (400, 20));
        assert!((i32::from(new[200]) - i32::from(x[800])).abs() < 200);
        // No room to insert: dropped instead.
        let mut new = x[530..1000].to_vec();
        let (len, shift) = merge(history, &mut new, 470, lags, 16_000).unwrap();
        assert_eq!((len, shift), (400, 70));
        // Noise has no period: no merge.
        let mut seed = 1u32;
        let noise: Vec<i16> = (0..500)
            .map(|_| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (seed >> 16) as i16
            })
            .collect();
        assert!(merge(&noise, &mut new, 400, lags, 16_000).is_none());
    }
}
