"""Test speech: espeak-ng (a synthetic voice nobody here recorded) rendered to 16 kHz mono 16-bit, exactly
`seconds` long, peak-normalised to -3 dBFS, 0.3 s of lead-in silence. Also a tool-free speech-like signal for the
self-test (harmonics with a moving pitch and a syllable envelope)."""

from __future__ import annotations

import os
import subprocess

import numpy as np

TEXT = (
    "The quick brown fox jumps over the lazy dog. "
    "Please call Stella and ask her to bring these things with her from the store: "
    "six spoons of fresh snow peas, five thick slabs of blue cheese, and maybe a snack for her brother Bob. "
    "We also need a small plastic snake and a big toy frog for the kids. "
    "She can scoop these things into three red bags, and we will go meet her on Wednesday at the train station."
)


def espeak_wav(path: str, seconds: float = 12.0, voice: str = "en-us", speed: int = 165) -> str:
    raw = path + ".raw.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", raw, TEXT], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    subprocess.run(["sox", raw, "-r", "16000", "-c", "1", "-b", "16", path, "norm", "-3",
                    "pad", "0.3", str(seconds), "trim", "0", str(seconds)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    os.unlink(raw)
    return path


def synthetic_speech(seconds: float = 6.0, rate: int = 16000, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t) + 15 * np.sin(2 * np.pi * 2.3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    x = sum((0.6 / k) * np.sin(k * phase + rng.uniform(0, 6.28)) for k in range(1, 20))
    # Syllables ~ 4 Hz with pauses every ~1.5 s.
    env = 0.55 + 0.45 * np.sin(2 * np.pi * 3 * t)
    env *= (np.sin(2 * np.pi * t / 1.5) > -0.6)
    x = x * env
    x += 0.002 * rng.standard_normal(n)
    return 0.7 * x / np.max(np.abs(x))
