"""The real peers: GStreamer and ffmpeg senders, the GStreamer receiver, the GStreamer echo reference and the
mediaproc daemon (one per run) with its echo sessions over the RTP/UDP edge.

Codec settings are in one place (`Codec`) so the reference echo encodes as mediaproc's encoder does
(`crates/pipeline/src/codec.rs` `EncoderSettings::default()`: 32 kbit/s, complexity 5, VoIP, in-band FEC with 5 %
expected loss, no DTX).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

RTP_CAPS = ("application/x-rtp,media=(string)audio,clock-rate=(int)48000,"
            "encoding-name=(string)OPUS,payload=(int)96")


@dataclass(frozen=True)
class Codec:
    bitrate: int = 32000
    complexity: int = 5
    fec: bool = True
    loss_pct: int = 5
    dtx: bool = False

    def opusenc(self) -> str:
        return (f"opusenc bitrate={self.bitrate} complexity={self.complexity} audio-type=voice frame-size=20 "
                f"inband-fec={'true' if self.fec else 'false'} packet-loss-percentage={self.loss_pct if self.fec else 0} "
                f"dtx={'true' if self.dtx else 'false'}")


MEDIAPROC_ENCODER = Codec()
# Senders use in-band FEC (libopus spends bits on it only with a non-zero expected loss).
SENDER_CODEC = Codec(bitrate=32000, complexity=10, fec=True, loss_pct=5)


class ToolMissing(RuntimeError):
    pass


def require_tools(names):
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        raise ToolMissing(
            "missing tools: " + ", ".join(missing)
            + " (Debian: apt-get install gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good "
              "ffmpeg espeak-ng sox)")
    for mod in ("numpy", "scipy", "pesq", "pystoi"):
        try:
            __import__(mod)
        except ImportError as e:
            raise ToolMissing(f"missing Python module {mod}: pip install numpy scipy pesq pystoi ({e})")


def free_udp_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def free_tcp_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Proc:
    """A child process with its stderr kept in a log file; stopped with SIGINT (GStreamer `-e` finalises)."""

    def __init__(self, name: str, argv: list[str], logdir: str, env=None):
        self.name = name
        self.argv = argv
        self.log_path = os.path.join(logdir, f"{name}.log")
        self.log = open(self.log_path, "wb")
        self.p = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  env=env)

    def wait(self, timeout: float) -> int:
        try:
            return self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(f"{self.name} did not finish within {timeout:.0f} s; log: {self.log_path}")

    def stop(self, timeout: float = 5.0) -> int | None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGINT)
            try:
                self.p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()
        return self.p.returncode

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()

    def tail(self, n: int = 15) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return b"\n".join(f.read().splitlines()[-n:]).decode(errors="replace")
        except OSError:
            return ""


def gst(args: str) -> list[str]:
    return ["gst-launch-1.0", "-q", "-e"] + args.split()


# ---- senders ---------------------------------------------------------------------------------------------------

def gst_sender(wav: str, port: int, logdir: str, codec: Codec = SENDER_CODEC) -> Proc:
    pipe = (f"filesrc location={wav} ! wavparse ! audioconvert ! audioresample "
            f"! audio/x-raw,format=S16LE,rate=48000,channels=1 ! {codec.opusenc()} "
            f"! rtpopuspay pt=96 ! udpsink host=127.0.0.1 port={port}")
    return Proc("sender-gstreamer", gst(pipe), logdir)


def ffmpeg_sender(wav: str, port: int, logdir: str, codec: Codec = SENDER_CODEC) -> Proc:
    argv = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-i", wav,
            "-c:a", "libopus", "-b:a", str(codec.bitrate), "-application", "voip", "-frame_duration", "20",
            "-compression_level", str(codec.complexity), "-ar", "48000", "-ac", "1"]
    if codec.fec:
        # `:a`: the RTP muxer has an unrelated `fec` option of its own.
        argv += ["-fec:a", "1", "-packet_loss:a", str(codec.loss_pct)]
    argv += ["-payload_type", "96", "-f", "rtp", f"rtp://127.0.0.1:{port}"]
    return Proc("sender-ffmpeg", argv, logdir)


SENDERS = {"gstreamer": gst_sender, "ffmpeg": ffmpeg_sender}


# ---- receiver --------------------------------------------------------------------------------------------------

# rtpjitterbuffer `mode` of the GStreamer echo and the receiver (run.py --jb-mode). The default `slave` derives
# each packet's time from smoothed arrival times; against ffmpeg's paired packets plus loss it then gives lost
# packets durations of 0-27 ms instead of 20, so opusdec conceals the wrong amount and the reference itself
# jumps in lag (STOI 0.2-0.75 measured). `synced` times packets by their RTP timestamps, valid here since every
# peer runs on this machine's clock, and keeps the reference at its best.
JB_MODE = "synced"


def jitterbuffer(latency_ms: int) -> str:
    mode = "" if JB_MODE == "slave" else f" mode={JB_MODE}"
    return f"rtpjitterbuffer latency={latency_ms} do-lost=true{mode}"


def gst_receiver(port: int, out_wav: str, logdir: str, latency_ms: int) -> Proc:
    pipe = (f"udpsrc address=127.0.0.1 port={port} caps={RTP_CAPS} ! {jitterbuffer(latency_ms)} "
            f"! rtpopusdepay ! opusdec plc=true use-inband-fec=true ! audioconvert ! audioresample "
            f"! audio/x-raw,format=S16LE,rate=16000,channels=1 ! wavenc ! filesink location={out_wav}")
    return Proc("receiver", gst(pipe), logdir)


# ---- echoes ----------------------------------------------------------------------------------------------------

class GstEcho:
    """The reference: jitter buffer, Opus decode with PLC and FEC, 16 kHz mono (mediaproc's internal format),
    Opus encode at mediaproc's encoder settings, RTP out to `reply_port`."""

    name = "gstreamer"

    def __init__(self, logdir: str, latency_ms: int, codec: Codec = MEDIAPROC_ENCODER):
        self.logdir, self.latency_ms, self.codec = logdir, latency_ms, codec
        self.proc = None

    def start(self, reply_port: int) -> tuple[str, int]:
        port = free_udp_port()
        pipe = (f"udpsrc address=127.0.0.1 port={port} caps={RTP_CAPS} ! {jitterbuffer(self.latency_ms)} "
                f"! rtpopusdepay ! opusdec plc=true use-inband-fec=true ! audioconvert ! audioresample "
                f"! audio/x-raw,format=S16LE,rate=16000,channels=1 ! {self.codec.opusenc()} "
                f"! rtpopuspay pt=96 ! udpsink host=127.0.0.1 port={reply_port}")
        self.proc = Proc("echo-gstreamer", gst(pipe), self.logdir)
        time.sleep(0.5)  # let udpsrc bind before the first packet
        if self.proc.p.poll() is not None:
            raise RuntimeError(f"GStreamer echo exited: {self.proc.tail()}")
        return ("127.0.0.1", port)

    def poll_stats(self):
        pass

    def stop(self) -> dict:
        if self.proc:
            self.proc.stop()
            self.proc = None
        return {"jitterBufferDelayMs": self.latency_ms, "jitterBufferSource": "rtpjitterbuffer latency"}


class Daemon:
    """One `mediaproc serve` for the whole run, on free loopback ports, with a known API token."""

    TOKEN = "quality-harness-token"

    @classmethod
    def external(cls, api: str, token: str, media_port: int | None) -> "Daemon":
        """A daemon someone else runs (e.g. a hostile test flooding it meanwhile); not stopped by the harness."""
        d = cls.__new__(cls)
        d.api_port = int(api.rsplit(":", 1)[1])
        d.media_port = media_port
        d.TOKEN = token
        d.proc = None
        d.request("GET", "/healthz", auth=False)
        return d

    def __init__(self, binary: str, logdir: str, decoder_complexity: int | None = None):
        self.api_port = free_tcp_port()
        self.media_port = free_udp_port()
        env = dict(os.environ, MEDIAPROC_API_TOKEN=self.TOKEN, RUST_LOG=os.environ.get("RUST_LOG", "warn"))
        rec = os.path.join(logdir, "recordings")
        argv = [binary, "serve", "--api", f"127.0.0.1:{self.api_port}", "--media", f"127.0.0.1:{self.media_port}",
                "--workers", "1", "--recordings", rec]
        if decoder_complexity is not None:
            # The daemon's `decoder_complexity` (its default otherwise), through a config file.
            path = os.path.join(logdir, "mediaproc.toml")
            with open(path, "w") as f:
                f.write(f"decoder_complexity = {int(decoder_complexity)}\n")
            argv += ["--config", path]
        self.proc = Proc("mediaproc", argv, logdir, env=env)
        deadline = time.monotonic() + 15
        while True:
            try:
                self.request("GET", "/healthz", auth=False)
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if self.proc.p.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mediaproc did not start: {self.proc.tail()}")
                time.sleep(0.1)

    def request(self, method: str, path: str, body=None, auth: bool = True):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.api_port}{path}", data=data, method=method)
        if auth:
            req.add_header("Authorization", f"Bearer {self.TOKEN}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=5) as r:
            raw = r.read()
            return json.loads(raw) if raw else None

    def stop(self):
        if self.proc is not None:
            self.proc.stop(timeout=10)


def find_key(obj, key):
    """Every value of `key` anywhere inside a JSON value."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == key:
                yield v
            yield from find_key(v, key)
    elif isinstance(obj, list):
        for v in obj:
            yield from find_key(v, key)


class MediaprocEcho:
    """An `echo` session on mediaproc's RTP/UDP edge, replying to a fixed remote (the relay's echo socket)."""

    name = "mediaproc"

    def __init__(self, daemon: Daemon, extra: dict | None = None):
        self.daemon = daemon
        self.extra = extra or {}
        self.sid = None
        self.samples = []  # (t, stats)

    def start(self, reply_port: int) -> tuple[str, int]:
        body = {"bot": "echo", "rtp": {"remote": f"127.0.0.1:{reply_port}", "payloadType": 96}}
        body.update(self.extra)
        resp = self.daemon.request("POST", "/v1/sessions", body)
        self.sid = resp["sessionId"]
        host, port = resp["rtp"]["local"].rsplit(":", 1)
        return (host, int(port))

    def poll_stats(self):
        try:
            d = self.daemon.request("GET", f"/v1/sessions/{self.sid}")
            self.samples.append((time.monotonic(), d.get("stats", {})))
        except Exception:
            pass

    def stop(self) -> dict:
        if self.sid is None:
            return {}
        self.poll_stats()
        try:
            self.daemon.request("DELETE", f"/v1/sessions/{self.sid}")
        except Exception:
            pass
        last = self.samples[-1][1] if self.samples else {}

        def series(key):
            return [float(v) for _, st in self.samples for v in find_key(st, key) if isinstance(v, (int, float))]

        # The jitter-buffer delay comparable with rtpjitterbuffer's latency: how long after the latest arrivals the
        # audio plays (`envelopeDelayMs`). The buffer level (`jitterBufferDelayMs`: frames from the playout point to
        # the newest packet) also counts packets a bursty sender sent early, which is no delay; it is kept as
        # `bufferLevelMs`. Builds without `envelopeDelayMs` report the level.
        levels = series("jitterBufferDelayMs")
        delays = series("envelopeDelayMs") or levels
        targets = [float(v) for _, st in self.samples for v in find_key(st, "targetDelayMs")
                   if isinstance(v, (int, float))]
        out = {"sessionId": self.sid, "stats": last}
        # The session's figures per 1 s sample, for finding when something happened (tick lateness, underruns,
        # time-scaling): seconds since the first sample, then the counters.
        t0 = self.samples[0][0] if self.samples else 0.0
        keys = ("lateTicks", "skippedTicks", "underruns", "concealedMs", "acceleratedMs", "deceleratedMs", "late",
                "envelopeDelayMs", "targetDelayMs", "jitterBufferDelayMs", "resyncs", "tickPhaseShifts")
        out["series"] = [{"t": round(t - t0, 2), **{k: next(iter(find_key(st, k)), None) for k in keys}}
                         for t, st in self.samples]
        self.sid = None
        if delays:
            out["jitterBufferDelayMs"] = sum(delays) / len(delays)
            out["jitterBufferDelayMaxMs"] = max(delays)
            out["jitterBufferSource"] = ("GET /v1/sessions/{id} stats envelopeDelayMs (mean of 1 s samples)"
                                         if series("envelopeDelayMs") else
                                         "GET /v1/sessions/{id} stats jitterBufferDelayMs (mean of 1 s samples)")
            if levels:
                out["bufferLevelMs"] = sum(levels) / len(levels)
        else:
            out["jitterBufferDelayMs"] = None
            out["jitterBufferSource"] = "not reported by this build for the RTP/UDP edge (stats.streams empty)"
        if targets:
            out["targetDelayMs"] = sum(targets) / len(targets)
        return out


class MediaprocQuicEcho(MediaprocEcho):
    """An `echo` session reached over the QUIC edge through `quic_edge.py` (aioquic), which bridges the relay's
    RTP/UDP to the session's render/source flows declared with payload type `pt`."""

    def __init__(self, daemon: Daemon, logdir: str, pt: int = 111, name: str = "quic"):
        super().__init__(daemon)
        self.logdir, self.pt, self.name = logdir, pt, name
        self.bridge = None
        self.bridge_out = []

    def start(self, reply_port: int) -> tuple[str, int]:
        import sys
        import threading

        resp = self.daemon.request("POST", "/v1/sessions", {"bot": "echo"})
        self.sid = resp["sessionId"]
        sj = os.path.join(self.logdir, f"session-{self.sid}.json")
        with open(sj, "w") as f:
            json.dump(resp, f)
        repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        self.bridge = subprocess.Popen(
            [sys.executable, "-m", "benches.quality.quic_edge", "--mp", f"127.0.0.1:{self.daemon.media_port}",
             "--session-json", sj, "--reply", f"127.0.0.1:{reply_port}", "--pt", str(self.pt)],
            cwd=repo, stdout=subprocess.PIPE, stderr=open(os.path.join(self.logdir, "quic-edge.log"), "wb"),
            text=True)
        lines = []

        def reader():
            for line in self.bridge.stdout:
                lines.append(line.strip())

        threading.Thread(target=reader, daemon=True).start()
        self.bridge_out = lines
        deadline = time.monotonic() + 10
        port = None
        while time.monotonic() < deadline:
            for ln in lines:
                if ln.startswith("udp "):
                    port = int(ln.split()[1])
                if ln.startswith("{"):
                    raise RuntimeError(f"QUIC edge failed: {ln}")
            if port and "attached" in lines:
                return ("127.0.0.1", port)
            if self.bridge.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"QUIC edge did not attach: {lines}")

    def stop(self) -> dict:
        counts = {}
        if self.bridge is not None:
            if self.bridge.poll() is None:
                self.bridge.send_signal(signal.SIGINT)
                try:
                    self.bridge.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.bridge.kill()
            time.sleep(0.1)
            for ln in self.bridge_out:
                if ln.startswith("{"):
                    counts = json.loads(ln)
            self.bridge = None
        out = super().stop()
        if counts:
            out["quicEdge"] = counts
        return out
