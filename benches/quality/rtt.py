"""Echo round trip over plain RTP, measured as a far end does: the harness itself is the far end.

It encodes tone bursts (1 kHz, 80 ms, every 400 ms, -12 dBFS) with libopus (ctypes; the library GStreamer uses),
sends them as RTP (pt 96, 20 ms, paced by the monotonic clock) straight to the echo, decodes what comes back and
timestamps every decoded sample by its packet's arrival. Sample `k` of packet `p` "happens" at
`t(p) - 20 ms + k / 48000` on both sides (when a real-time sender captured it / the earliest a far end could play
it), so the round trip of a burst is the difference of its onset times and the far end's own jitter buffer is not
counted. Onset: the first 2.5 ms block above -30 dBFS after at least 150 ms below it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import socket
import struct
import threading
import time

import numpy as np

RATE = 48000
FRAME = 960


class Opus:
    def __init__(self):
        name = ctypes.util.find_library("opus") or "libopus.so.0"
        try:
            self.lib = ctypes.CDLL(name)
        except OSError as e:
            raise RuntimeError(f"libopus not found ({e}); apt-get install libopus0") from e
        L = self.lib
        L.opus_encoder_create.restype = ctypes.c_void_p
        L.opus_encoder_create.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
        L.opus_encode.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int16), ctypes.c_int,
                                  ctypes.c_char_p, ctypes.c_int32]
        L.opus_decoder_create.restype = ctypes.c_void_p
        L.opus_decoder_create.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
        L.opus_decode.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int32, ctypes.POINTER(ctypes.c_int16),
                                  ctypes.c_int, ctypes.c_int]
        err = ctypes.c_int()
        self.enc = L.opus_encoder_create(RATE, 1, 2048, ctypes.byref(err))  # OPUS_APPLICATION_VOIP
        self.dec = L.opus_decoder_create(RATE, 1, ctypes.byref(err))
        if not self.enc or not self.dec:
            raise RuntimeError("libopus: cannot create encoder/decoder")
        self.buf = ctypes.create_string_buffer(1500)
        self.pcm = (ctypes.c_int16 * (FRAME * 6))()

    def encode(self, frame: np.ndarray) -> bytes:
        arr = (ctypes.c_int16 * FRAME)(*frame.astype(np.int16).tolist())
        n = self.lib.opus_encode(self.enc, arr, FRAME, self.buf, 1500)
        if n < 0:
            raise RuntimeError(f"opus_encode: {n}")
        return self.buf.raw[:n]

    def decode(self, payload: bytes | None) -> np.ndarray:
        if payload is None:
            n = self.lib.opus_decode(self.dec, None, 0, self.pcm, FRAME, 0)
        else:
            n = self.lib.opus_decode(self.dec, payload, len(payload), self.pcm, FRAME * 6, 0)
        if n < 0:
            return np.zeros(FRAME)
        return np.frombuffer(bytes(self.pcm)[: 2 * n], dtype=np.int16).astype(np.float64) / 32768.0


def bursts(seconds: float, period: float = 0.4, length: float = 0.08, lead: float = 0.5):
    n = int(seconds * RATE)
    x = np.zeros(n)
    onsets = []
    t = lead
    while t + length < seconds - 0.3:
        a = int(t * RATE)
        m = int(length * RATE)
        x[a : a + m] = 0.25 * np.sin(2 * np.pi * 1000 * np.arange(m) / RATE)
        onsets.append(a)
        t += period
    return x, onsets


def detect_onsets(times: np.ndarray, x: np.ndarray, thresh_db: float = -30.0, quiet_s: float = 0.15):
    blk = 120  # 2.5 ms
    nb = len(x) // blk
    e = x[: nb * blk].reshape(nb, blk)
    db = 20 * np.log10(np.sqrt(np.mean(e * e, axis=1) + 1e-20) * np.sqrt(2))
    out = []
    quiet = 0
    need = int(quiet_s * RATE / blk)
    for i in range(nb):
        if db[i] > thresh_db:
            if quiet >= need:
                out.append(times[i * blk])
            quiet = 0
        else:
            quiet += 1
    return out


def measure(echo, path: str, seconds: float = 10.0) -> dict:
    opus = Opus()
    sig, onsets = bursts(seconds)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    dest = echo.start(sock.getsockname()[1])
    frames = [sig[i : i + FRAME] * 32767 for i in range(0, len(sig) - FRAME + 1, FRAME)]
    payloads = [opus.encode(f) for f in frames]
    got = []  # (arrival, seq, payload)
    stop = threading.Event()

    def rx():
        while not stop.is_set():
            try:
                d = sock.recv(2048)
            except socket.timeout:
                continue
            except OSError:
                return
            t = time.monotonic()
            if len(d) >= 12:
                cc = d[0] & 0x0F
                got.append((t, struct.unpack("!H", d[2:4])[0], d[12 + 4 * cc :]))

    th = threading.Thread(target=rx, daemon=True)
    th.start()

    # The echo's statistics are sampled from another thread: an HTTP request in the send loop stalled the sender
    # once a second (tens of ms on a loaded machine), a far end no real peer is.
    def poll():
        while not stop.wait(1.0):
            echo.poll_stats()

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    ssrc = 0x5EED1234
    send_t = []
    t0 = time.monotonic() + 0.05
    for i, p in enumerate(payloads):
        due = t0 + i * 0.020
        while True:
            now = time.monotonic()
            if now >= due:
                break
            time.sleep(min(due - now, 0.005))
        hdr = struct.pack("!BBHII", 0x80, 96 | (0x80 if i == 0 else 0), i & 0xFFFF, (i * FRAME) & 0xFFFFFFFF, ssrc)
        sock.sendto(hdr + p, dest)
        send_t.append(time.monotonic())
    time.sleep(1.0)
    stop.set()
    th.join()
    poller.join()
    info = echo.stop()
    sock.close()

    sent_onsets = [send_t[a // FRAME] - 0.020 + (a % FRAME) / RATE for a in onsets]
    # Decode in sequence order (loopback: none lost); each sample timed by its packet's arrival.
    got.sort(key=lambda g: g[1])
    pcm, times = [], []
    for t, _seq, payload in got:
        d = opus.decode(payload)
        pcm.append(d)
        times.append(t - 0.020 + np.arange(len(d)) / RATE)
    if not pcm:
        return {"path": path, "bursts": 0, "error": "nothing came back", "echo": info}
    x = np.concatenate(pcm)
    tt = np.concatenate(times)
    rec_onsets = detect_onsets(tt, x)
    rtts = []
    for s in sent_onsets:
        after = [r - s for r in rec_onsets if 0 < r - s < 0.39]
        if after:
            rtts.append(min(after) * 1000.0)
    out = {"path": path, "bursts": len(rtts), "sent": len(sent_onsets), "packetsBack": len(got), "echo": info}
    if rtts:
        out.update({"p50Ms": float(np.percentile(rtts, 50)), "p90Ms": float(np.percentile(rtts, 90)),
                    "minMs": float(min(rtts)), "maxMs": float(max(rtts))})
    return out
