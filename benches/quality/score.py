"""Scores a received 16 kHz file against its source: PESQ-WB, STOI, time-warp-aware windowed correlation, lag
steps and silent frames where the source speaks.

Usable from other tests (issue 9's hostile suite): `python3 -m benches.quality.score SOURCE.wav RECEIVED.wav`
prints one JSON object; `score_files(src, rec)` returns the same dict.

Definitions (all at 16 kHz, 20 ms frames of 320 samples):
- global lag: the lag `L` maximising the cross-correlation of the whole files (`received[n + L] ~ source[n]`);
  the received file is cut at `L` and to the source's length (zero-padded) before PESQ, STOI and `corrGlobal`.
- active frame: a source frame above -35 dBFS (RMS).
- lag track: for every active frame, the normalised correlation of a 100 ms source window centred on the frame
  against the received file at lags within +-60 ms of the global lag; a Viterbi path through those (1 ms grid,
  a penalty per change of more than 1 ms within a talkspurt) so the pitch-period ambiguity of single windows does not read as a step.
- `corr`: mean over active frames of that peak normalised correlation (insensitive to slow time-warping).
- talkspurt: active frames less than 200 ms apart (the gaps between words and inside them belong to the speech).
- `lagSteps`: changes of the tracked lag inside a talkspurt whose net size over the next 3 tracked frames is
  >= 10 ms; `lagStepsInPauses` counts those across longer pauses (legitimate adaptation, reported apart) (a whole frame
  dropped or inserted in speech shows as a 20 ms step; smooth time-stretching does not).
- `silentFrames`: active source frames whose received frame (at the tracked lag) is below -50 dBFS.
- `silentFramesLostInbound` (only when the way in's losses are given, as the harness does): those of the silent
  frames whose own packet, or that of the frame before or after it (the codec's look-ahead and the lag track's
  tolerance), the way in dropped: speech that never reached the echo. When such a burst starts at a word's onset
  the decoder has nothing to extrapolate and conceals silence; the reference echo shows the same frames. A
  diagnostic of where silence comes from; the acceptance still counts every silent frame.
"""

from __future__ import annotations

import json
import sys
import warnings
import wave

import numpy as np
from scipy.signal import fftconvolve, resample_poly

RATE = 16000
FRAME = 320
ACTIVE_DBFS = -35.0
SILENT_DBFS = -50.0
WIN = 1600  # 100 ms analysis window for the lag track
SEARCH = 960  # +-60 ms around the global lag
STEP_SAMPLES = 160  # 10 ms


def load_wav(path: str) -> np.ndarray:
    """Mono float64 in [-1, 1] at 16 kHz (channels averaged, resampled if needed)."""
    with wave.open(path, "rb") as w:
        n, ch, sw, rate = w.getnframes(), w.getnchannels(), w.getsampwidth(), w.getframerate()
        raw = w.readframes(n)
    if sw != 2:
        raise ValueError(f"{path}: only 16-bit PCM WAV is supported (got {8 * sw} bit)")
    x = np.frombuffer(raw, dtype="<i2").astype(np.float64) / 32768.0
    if ch > 1:
        x = x[: len(x) // ch * ch].reshape(-1, ch).mean(axis=1)
    if rate != RATE:
        g = np.gcd(rate, RATE)
        x = resample_poly(x, RATE // g, rate // g)
    return x


def write_wav(path: str, x: np.ndarray, rate: int = RATE):
    pcm = np.clip(np.round(x * 32767.0), -32768, 32767).astype("<i2")
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def frame_dbfs(x: np.ndarray) -> np.ndarray:
    n = len(x) // FRAME
    fr = x[: n * FRAME].reshape(n, FRAME)
    rms = np.sqrt(np.mean(fr * fr, axis=1) + 1e-20)
    return 20.0 * np.log10(rms * np.sqrt(2.0))  # full-scale sine = 0 dBFS


def global_lag(src: np.ndarray, rec: np.ndarray, max_lag_s: float = 4.0, min_lag_s: float = -0.5) -> int:
    c = fftconvolve(rec, src[::-1], mode="full")  # index k -> lag k - (len(src) - 1)
    lags = np.arange(len(c)) - (len(src) - 1)
    ok = (lags >= int(min_lag_s * RATE)) & (lags <= int(max_lag_s * RATE))
    return int(lags[ok][np.argmax(c[ok])])


def shifted(rec: np.ndarray, lag: int, n: int) -> np.ndarray:
    """rec[lag : lag + n], zero-padded where out of range."""
    out = np.zeros(n)
    lo, hi = max(lag, 0), min(lag + n, len(rec))
    if hi > lo:
        out[lo - lag : hi - lag] = rec[lo:hi]
    return out


BIN = 16  # lag candidates on a 1 ms grid for the tracker
TALKSPURT_GAP = 10  # active frames at most 10 frames apart (gap < 200 ms) belong to one talkspurt
JUMP_PENALTY = 0.25  # in normalised-correlation units: a step must pay for itself over a few frames


def lag_curves(src: np.ndarray, rec: np.ndarray, glag: int, active: np.ndarray) -> np.ndarray:
    """Normalised correlation per active frame over lags glag-SEARCH..glag+SEARCH (NaN rows elsewhere)."""
    n = len(active)
    curves = np.full((n, 2 * SEARCH + 1), np.nan)
    pad = SEARCH + WIN + max(0, -glag)
    recp = np.concatenate([np.zeros(pad), rec, np.zeros(pad + len(src) + max(0, glag))])
    for i in np.nonzero(active)[0]:
        c = i * FRAME + FRAME // 2
        a = max(0, c - WIN // 2)
        seg = src[a : a + WIN]
        if len(seg) < WIN // 2:
            continue
        start = a + glag - SEARCH + pad
        r = recp[start : start + len(seg) + 2 * SEARCH]
        num = fftconvolve(r, seg[::-1], mode="valid")
        e = np.concatenate([[0.0], np.cumsum(r * r)])
        er = e[len(seg) :] - e[: -len(seg)]
        den = np.sqrt(np.sum(seg * seg) * np.maximum(er[: len(num)], 1e-12))
        curves[i] = num / den
    return curves


def lag_track(src: np.ndarray, rec: np.ndarray, glag: int, active: np.ndarray):
    """(lag in samples, normalised correlation at it) per frame, NaN where not active.

    Viterbi over a 1 ms lag grid: the path maximises the summed correlation minus JUMP_PENALTY per change of more
    than 1 ms between consecutive active frames (free across pauses). Single windows of periodic speech often
    correlate about as well one pitch period off; the penalty keeps such ties from reading as steps, while a real
    dropped frame makes the old lag correlate badly for many frames and the path moves."""
    curves = lag_curves(src, rec, glag, active)
    n, m = curves.shape
    nb = m // BIN
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: frames that are not active
        pooled = np.nanmax(curves[:, : nb * BIN].reshape(n, nb, BIN), axis=2)
    lags = np.full(n, np.nan)
    peaks = np.full(n, np.nan)
    idx = [i for i in np.nonzero(active)[0] if not np.isnan(curves[i]).all()]
    if not idx:
        return lags, peaks
    grid = np.arange(nb)
    near = np.abs(grid[:, None] - grid[None, :]) <= 1  # [prev, cur]
    score = pooled[idx[0]].copy()
    back = []
    for prev, i in zip(idx[:-1], idx[1:]):
        if i - prev <= TALKSPURT_GAP:
            trans = score[:, None] - np.where(near, 0.0, JUMP_PENALTY)
            arg = np.argmax(trans, axis=0)
            best = trans[arg, grid]
        else:
            arg = np.full(nb, int(np.argmax(score)))
            best = np.full(nb, score.max())
        back.append(arg)
        score = best + pooled[i]
    path = [int(np.argmax(score))]
    for arg in reversed(back):
        path.append(int(arg[path[-1]]))
    path.reverse()
    for i, b in zip(idx, path):
        seg = curves[i, b * BIN : (b + 1) * BIN]
        k = b * BIN + int(np.argmax(seg))
        lags[i] = glag - SEARCH + k
        peaks[i] = curves[i, k]
    return lags, peaks


def score_arrays(src: np.ndarray, rec: np.ndarray, with_pesq: bool = True,
                 lost_inbound: set[int] | None = None) -> dict:
    n = len(src)
    glag = global_lag(src, rec)
    deg = shifted(rec, glag, n)
    sdb = frame_dbfs(src)
    active = sdb > ACTIVE_DBFS
    lags, peaks = lag_track(src, rec, glag, active)

    filt = lags
    idx = np.nonzero(active & ~np.isnan(lags))[0]
    steps = 0
    step_at = []
    # A step is a change of the tracked lag whose net size over the next 3 tracked frames is >= 10 ms, so a
    # 20 ms jump the tracker takes in two moves counts once and an excursion that returns counts not at all.
    # Inside a talkspurt (gaps < 200 ms between active frames, e.g. between words) it is a lag step; across a
    # longer pause it is counted apart (`lagStepsInPauses`): adapting there is legitimate.
    steps_pause = 0
    if len(idx):
        j = 1
        while j < len(idx):
            a, b = idx[j - 1], idx[j]
            if abs(filt[b] - filt[a]) > BIN:
                end = j
                while end < min(j + 2, len(idx) - 1) and idx[end + 1] - idx[end] <= TALKSPURT_GAP:
                    end += 1
                net = filt[idx[end]] - filt[a]
                if abs(net) >= STEP_SAMPLES:
                    if b - a <= TALKSPURT_GAP:
                        steps += 1
                        step_at.append(round(float(b * FRAME / RATE), 2))
                    else:
                        steps_pause += 1
                    j = end + 1
                    continue
            j += 1

    silent = 0
    silent_at = []
    silent_lost_in = 0
    for i in idx:
        lag = int(filt[i]) if not np.isnan(filt[i]) else glag
        fr = shifted(rec, i * FRAME + lag, FRAME)
        db = 20 * np.log10(np.sqrt(np.mean(fr * fr) + 1e-20) * np.sqrt(2.0))
        if db < SILENT_DBFS:
            silent += 1
            silent_at.append(round(float(i * FRAME / RATE), 2))
            if lost_inbound is not None and any(int(i) + d in lost_inbound for d in (-1, 0, 1)):
                silent_lost_in += 1

    corr_global = float(np.dot(src, deg) / (np.linalg.norm(src) * np.linalg.norm(deg) + 1e-12))
    out = {
        "pesqWb": None,
        "stoi": None,
        "corr": float(np.nanmean(peaks[idx])) if len(idx) else None,
        "corrGlobal": corr_global,
        "lagSteps": steps,
        "lagStepsAt": step_at[:20],
        "lagStepsInPauses": steps_pause,
        "silentFrames": silent,
        "silentFramesLostInbound": silent_lost_in if lost_inbound is not None else None,
        "silentAt": silent_at[:20],
        "activeFrames": int(active.sum()),
        "globalLagMs": glag * 1000.0 / RATE,
        "receivedSeconds": len(rec) / RATE,
    }
    if with_pesq:
        from pesq import pesq
        from pystoi import stoi

        try:
            out["pesqWb"] = float(pesq(RATE, src, deg, "wb"))
        except Exception as e:  # the reference code refuses e.g. an all-silent file
            out["pesqError"] = str(e)
        out["stoi"] = float(stoi(src, deg, RATE, extended=False))
    return out


def score_files(src_path: str, rec_path: str, lost_inbound: set[int] | None = None) -> dict:
    """Scores a received file; a missing, unreadable or (nearly) empty one scores as silence (every active frame
    silent, PESQ refused), so a path that delivered nothing still gets a row that says so."""
    src = load_wav(src_path)
    note = None
    try:
        rec = load_wav(rec_path)
    except (OSError, EOFError, ValueError, Exception) as e:  # wave raises wave.Error for a header-only file
        rec, note = np.zeros(0), f"received file unreadable ({e})"
    if len(rec) < RATE // 2:
        note = note or f"received only {len(rec)} samples"
        rec = np.concatenate([rec, np.zeros(len(src))])
        out = score_arrays(src, rec, with_pesq=False, lost_inbound=lost_inbound)
        out.update({"note": note, "receivedSeconds": 0.0, "globalLagMs": None, "corr": None})
        return out
    return score_arrays(src, rec, lost_inbound=lost_inbound)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python3 -m benches.quality.score SOURCE.wav RECEIVED.wav", file=sys.stderr)
        return 2
    print(json.dumps(score_files(argv[0], argv[1]), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
