"""Self-test of the relay and the scorer; needs no mediaproc, GStreamer or ffmpeg.

    python3 -m benches.quality.selftest
"""

from __future__ import annotations

import socket
import sys
import threading
import time

import numpy as np

from . import relay as R
from . import score as S
from .speech import synthetic_speech


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    return bool(cond)


def test_scorer() -> bool:
    ok = True
    src = synthetic_speech(8.0)
    n = len(src)
    rng = np.random.default_rng(3)
    lead = np.zeros(int(0.137 * S.RATE))

    # Clean copy with a constant lag and a little noise: no steps, no silent frames, high scores.
    rec = np.concatenate([lead, src + 0.001 * rng.standard_normal(n)])
    r = S.score_arrays(src, rec)
    ok &= check(abs(r["globalLagMs"] - 137.0) < 0.1, f"global lag 137 ms found ({r['globalLagMs']:.2f})")
    ok &= check(r["lagSteps"] == 0 and r["silentFrames"] == 0, f"clean copy: 0 steps, 0 silent ({r['lagSteps']}, {r['silentFrames']})")
    ok &= check(r["corr"] > 0.98 and r["pesqWb"] > 4.0 and r["stoi"] > 0.97,
                f"clean copy scores high (corr {r['corr']:.3f}, PESQ {r['pesqWb']:.2f}, STOI {r['stoi']:.3f})")

    # Drop one whole 20 ms frame inside speech at 2.0 s and insert one at 5.0 s: two steps.
    active = S.frame_dbfs(src) > S.ACTIVE_DBFS
    f1 = next(i for i in range(100, len(active)) if active[i - 10:i + 10].all())
    f2 = next(i for i in range(250, len(active)) if active[i - 10:i + 10].all())
    a, b = f1 * S.FRAME, f2 * S.FRAME
    warped = np.concatenate([src[:a], src[a + 320 : b], src[b - 320 : b], src[b:]])
    r = S.score_arrays(src, np.concatenate([lead, warped]))
    ok &= check(r["lagSteps"] == 2, f"one frame dropped + one repeated in speech: 2 lag steps ({r['lagSteps']} at {r['lagStepsAt']})")

    # Between words: a 100 ms gap of digital silence shortened by one frame is a step; in a 600 ms pause it is not.
    gapped = src.copy()
    gapped[a : a + 1600] = 0.0
    gapped[b : b + 9600] = 0.0
    short = np.concatenate([gapped[: a + 800], gapped[a + 1120 : b + 4800], gapped[b + 5120 :]])
    r = S.score_arrays(gapped, np.concatenate([lead, short]))
    ok &= check(r["lagSteps"] == 1 and r["lagStepsInPauses"] == 1,
                f"frame dropped in a 100 ms word gap: 1 step; in a 600 ms pause: counted apart "
                f"({r['lagSteps']}, {r['lagStepsInPauses']})")

    # A 60 ms hole of digital silence in speech: silent frames counted (3 frames, +-1 for the lag track).
    holed = src.copy()
    holed[a : a + 960] = 0.0
    r = S.score_arrays(src, np.concatenate([lead, holed]))
    ok &= check(2 <= r["silentFrames"] <= 4, f"60 ms hole: ~3 silent frames ({r['silentFrames']} at {r['silentAt']})")
    # The same hole, told that the way in dropped those frames' packets: every silent frame is one of them; told of
    # a loss elsewhere, none is.
    hole = set(range(f1, f1 + 3))
    r = S.score_arrays(src, np.concatenate([lead, holed]), with_pesq=False, lost_inbound=hole)
    ok &= check(r["silentFramesLostInbound"] == r["silentFrames"],
                f"60 ms hole lost on the way in: all silent frames attributed ({r['silentFramesLostInbound']})")
    r = S.score_arrays(src, np.concatenate([lead, holed]), with_pesq=False, lost_inbound={f2})
    ok &= check(r["silentFramesLostInbound"] == 0, f"a loss elsewhere: none attributed ({r['silentFramesLostInbound']})")

    # Smooth time-stretch (0.5 % slower playout): no lag steps.
    idx = np.arange(int(n * 1.005)) / 1.005
    stretched = np.interp(idx, np.arange(n), src)
    r = S.score_arrays(src, np.concatenate([lead, stretched]))
    ok &= check(r["lagSteps"] == 0, f"0.5 % smooth stretch: 0 lag steps ({r['lagSteps']} at {r['lagStepsAt']})")
    return ok


def test_relay() -> bool:
    ok = True
    # Loss model statistics and determinism.
    imp = R.Impairment(loss="ge", loss_pct=10, burst_len=2.5, jitter_ms=30)
    m1, m2 = R.LossModel(imp, "s"), R.LossModel(imp, "s")
    d1 = [m1.next() for _ in range(20000)]
    d2 = [m2.next() for _ in range(20000)]
    ok &= check(d1 == d2, "same seed, same decisions")
    lost = [x[0] for x in d1]
    rate = sum(lost) / len(lost)
    bursts = sum(1 for i in range(1, len(lost)) if lost[i] and not lost[i - 1])
    ok &= check(0.085 < rate < 0.115, f"GE loss rate ~10 % ({100 * rate:.1f} %)")
    ok &= check(2.0 < sum(lost) / max(bursts, 1) < 3.0, f"GE mean burst ~2.5 ({sum(lost) / max(bursts, 1):.2f})")
    rnd = R.LossModel(R.Impairment(loss="random", loss_pct=5), "x")
    rate = sum(rnd.next()[0] for _ in range(20000)) / 20000
    ok &= check(0.04 < rate < 0.06, f"random loss ~5 % ({100 * rate:.1f} %)")

    # Live relay: 100 packets in pairs, 15 ms jitter -> order kept, delays within base + jitter (+ scheduling).
    rel = R.Relay(R.Impairment(jitter_ms=15), R.CLEAN, "t").start()
    echo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    echo.bind(("127.0.0.1", 0))
    echo.settimeout(2)
    rel.set_targets(echo.getsockname(), ("127.0.0.1", 9))
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sent = {}
    got = []

    def rx():
        try:
            while len(got) < 100:
                d = echo.recv(100)
                got.append((int.from_bytes(d, "big"), time.monotonic()))
        except socket.timeout:
            pass

    th = threading.Thread(target=rx)
    th.start()
    for i in range(100):
        sent[i] = time.monotonic()
        tx.sendto(i.to_bytes(2, "big"), ("127.0.0.1", rel.in_port))
        if i % 2:
            time.sleep(0.04)
    th.join()
    rel.stop()
    order = [g[0] for g in got]
    ok &= check(order == list(range(100)), f"15 ms jitter on pairs keeps the order ({len(order)} packets)")
    delays = [(t - sent[i]) * 1000 for i, t in got]
    ok &= check(max(delays) < 15 + 40 and np.mean(delays) > 3, f"delays {min(delays):.1f}..{max(delays):.1f} ms")

    # Live relay, every inbound packet dropped: the frames lost on the way in, by RTP timestamp (48 kHz, 960 per
    # frame) from the first inbound packet, across the timestamp's wrap.
    rel = R.Relay(R.Impairment(loss="random", loss_pct=100), R.CLEAN, "t").start()
    rel.set_targets(echo.getsockname(), ("127.0.0.1", 9))
    ts0 = 0xFFFFFFFF - 960 * 2 + 1
    for k in (0, 1, 2, 3, 7):
        hdr = bytes([0x80, 96]) + k.to_bytes(2, "big") + ((ts0 + 960 * k) & 0xFFFFFFFF).to_bytes(4, "big")
        tx.sendto(hdr + b"ssrc" + b"x" * 40, ("127.0.0.1", rel.in_port))
        time.sleep(0.005)
    deadline = time.monotonic() + 2
    while rel.leg_in.stats.lost < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    rel.stop()
    lost = rel.inbound_lost_frames()
    ok &= check(lost == {0, 1, 2, 3, 7}, f"frames lost on the way in, across the timestamp wrap ({sorted(lost)})")
    return ok


def main() -> int:
    ok = test_relay() & test_scorer()
    print("selftest: " + ("all passed" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
