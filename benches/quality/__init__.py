"""mediaproc audio-quality harness (issue 13): real RTP peers through mediaproc and a GStreamer echo, scored.

Modules: `relay` (seeded UDP loss/jitter relay), `score` (PESQ-WB, STOI, windowed correlation, lag steps, silent
frames), `peers` (GStreamer/ffmpeg senders, receiver, GStreamer echo, the mediaproc daemon), `rtt` (echo round trip
with tone bursts, Opus via libopus/ctypes), `run` (the one command), `selftest` (relay and scorer without mediaproc).
"""
