#!/usr/bin/env python3
"""How long the daemon holds a WebRTC peer's audio, measured on the wire with tcpdump (no daemon figure trusted).

The echo bot answers each talk spurt of the browser's microphone. SRTP encrypts the payload but not the RTP
header, and Opus packets are small in silence and large in speech, so a talk spurt's first packet is visible in
both directions: the browser's (arrival at the daemon's port) and the echo's (sent from it). The time between the
two onsets is the daemon's hold (jitter buffer, tick, decode, bot, encode) as the network sees it; the echo's
audio is 6.5 ms later still inside the packet (the Opus encoder's look-ahead).

    tcpdump -i lo -n -s 96 udp -w /tmp/echo.pcap &      # while the WebRTC echo test (or a person) talks
    python3 benches/webrtc/wire.py /tmp/echo.pcap --port 59126

`--port` is the daemon's side of the peer (`webrtc.local` in `GET /v1/sessions/{id}`, or the test's trace). Also
printed: the inbound packets' transit (arrival minus RTP time) above the fastest, which is what the playout's
on-time envelope covers, and how regularly the echo's packets leave. `--selftest` checks the parser.
"""

import argparse
import struct
import sys

FRAME_TICKS = 960  # 20 ms at Opus's 48 kHz RTP clock
OPUS_PT = 111


def read_pcap(path):
    """(time s, src port, dst port, UDP payload) of each UDP/IPv4 or IPv6 packet of a classic pcap file."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        raise SystemExit(f"{path}: not a pcap file (too short)")
    magic = struct.unpack("<I", data[:4])[0]
    if magic not in (0xA1B2C3D4, 0xA1B23C4D):
        raise SystemExit(f"{path}: not a little-endian classic pcap file (magic {magic:#x}); write it with tcpdump -w")
    scale = 1e-9 if magic == 0xA1B23C4D else 1e-6
    link = struct.unpack("<I", data[20:24])[0]
    header = {1: 14, 113: 16, 101: 0, 0: 4}.get(link)
    if header is None:
        raise SystemExit(f"{path}: link type {link} not handled (capture on lo or an Ethernet device)")
    out, at = [], 24
    while at + 16 <= len(data):
        sec, frac, incl, _ = struct.unpack("<IIII", data[at:at + 16])
        frame = data[at + 16:at + 16 + incl]
        at += 16 + incl
        ip = frame[header:]
        if not ip:
            continue
        if ip[0] >> 4 == 4:
            proto, l4 = ip[9], ip[(ip[0] & 15) * 4:]
        elif ip[0] >> 4 == 6:
            proto, l4 = ip[6], ip[40:]
        else:
            continue
        if proto != 17 or len(l4) < 8:
            continue
        sport, dport, length = struct.unpack(">HHH", l4[:6])
        out.append((sec + frac * scale, sport, dport, length - 8, l4[8:]))
    return out


def opus_rtp(packets, want):
    """(time, UDP payload size, RTP timestamp) of the Opus RTP packets the predicate `want(src, dst)` selects."""
    res = []
    for t, sport, dport, size, payload in packets:
        if not want(sport, dport) or len(payload) < 12 or payload[0] >> 6 != 2:
            continue
        if payload[1] & 0x7F != OPUS_PT:
            continue  # RTCP (200-206 with the marker bit's place) and anything else
        res.append((t, size, struct.unpack(">I", payload[4:8])[0]))
    return res


def onsets(stream):
    """Times of talk-spurt starts: three packets clearly above the silence size after five packets at it (a lone
    larger packet, e.g. one of a stalled sender's catch-up, is not speech); or, after a DTX pause (the timestamps
    skip more than two frames: the sender sent nothing meanwhile), its first packet larger than a DTX one."""
    if not stream:
        return []
    sizes = sorted(s for _, s, _ in stream)
    silence, dtx = sizes[len(sizes) // 10], sizes[0] + 1
    speech = [size >= silence + 8 for _, size, _ in stream]
    quiet, res, last_ts, after_pause = 0, [], None, False
    for i, (t, size, ts) in enumerate(stream):
        if last_ts is not None and 2 * FRAME_TICKS < (ts - last_ts) & 0xFFFF_FFFF < 1 << 31:
            after_pause = True
        last_ts = ts
        if after_pause and size > dtx:
            res.append(t)
            after_pause, quiet = False, 0
            continue
        if quiet >= 5 and all(speech[i:i + 3]) and len(speech[i:i + 3]) == 3:
            res.append(t)
        quiet = quiet + 1 if size <= silence + 3 else 0
    return res


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(p / 100 * len(v)))]


def above_min(stream, rate=48_000):
    """Each packet's time minus its RTP time, ms above the smallest (RTP timestamps unwrapped)."""
    last, wraps, rel = None, 0, []
    for t, _, ts in stream:
        if last is not None and ts < last and last - ts > 1 << 31:
            wraps += 1
        last = ts
        media = (ts + (wraps << 32)) / rate
        rel.append(t - media)
    base = min(rel, default=0.0)
    return [(r - base) * 1000 for r in rel]


def analyse(packets, port, skip_s):
    inbound = opus_rtp(packets, lambda s, d: d == port)
    outbound = opus_rtp(packets, lambda s, d: s == port)
    if not inbound or not outbound:
        raise SystemExit(f"no Opus RTP (payload type {OPUS_PT}) to and from port {port} in the capture")
    start = inbound[0][0] + skip_s
    outs = onsets(outbound)
    holds, unanswered = [], 0
    for t in onsets(inbound):
        if t < start:
            continue
        answer = next((o for o in outs if o >= t - 0.002), None)
        if answer is not None and answer - t < 0.15:
            holds.append((answer - t) * 1000)
        else:
            unanswered += 1
    transit = above_min([p for p in inbound if p[0] >= start])
    sends = above_min([p for p in outbound if p[0] >= start])

    def spread(values):
        return {p: round(pct(values, p), 1) for p in (50, 95, 99, 100)} if values else None

    return {
        "inboundPackets": len(inbound),
        "outboundPackets": len(outbound),
        "onsets": len(holds),
        "onsetsWithoutEchoWithin150Ms": unanswered,
        "holdMsP50": round(pct(holds, 50), 1) if holds else None,
        "holdMsMean": round(sum(holds) / len(holds), 1) if holds else None,
        "holdMsMax": round(max(holds), 1) if holds else None,
        "inboundTransitAboveFastestMs": spread(transit),
        "outboundSendAboveEarliestMs": spread(sends),
    }


def selftest():
    import os
    import tempfile

    def udp(sport, dport, payload):
        l4 = struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload
        ip = bytes([0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17]) + bytes(10)
        return bytes(14) + ip + l4

    def analysed(frames):
        with tempfile.NamedTemporaryFile(delete=False, suffix=".pcap") as f:
            f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
            for t, frame in frames:
                f.write(struct.pack("<IIII", int(t), int(round((t % 1) * 1e6)), len(frame), len(frame)) + frame)
            path = f.name
        try:
            return analyse(read_pcap(path), 6000, 0.0)
        finally:
            os.unlink(path)

    def spurts(dtx):
        """A browser talking in spurts (silence 30 bytes, speech 120), the daemon answering 8 ms later; with `dtx`,
        the daemon sends only the first packet of each pause, with one byte of Opus."""
        frames = []
        for i in range(500):
            speech = (i // 25) % 2 == 1
            size = 120 if speech else 30
            ts = (0xFFFF_FF00 + i * 960) & 0xFFFF_FFFF  # wraps
            header = bytes([0x80, OPUS_PT]) + struct.pack(">HII", i, ts, 1)
            frames.append((1.0 + i * 0.02 + 0.025, udp(5000, 6000, header + bytes(size - 12))))
            if not dtx or speech:
                frames.append((1.0 + i * 0.02 + 0.033, udp(6000, 5000, header + bytes(size - 12))))
            elif i % 25 == 0:
                frames.append((1.0 + i * 0.02 + 0.033, udp(6000, 5000, header + bytes(1))))
        return frames

    r = analysed(spurts(dtx=False))
    assert r["onsets"] == 10 and r["holdMsP50"] == 8.0, r
    assert r["inboundTransitAboveFastestMs"][100] < 0.01, r
    d = analysed(spurts(dtx=True))
    assert d["outboundPackets"] == 260, d
    assert d["onsets"] == 10 and d["holdMsP50"] == 8.0, d
    print("wire.py selftest: ok", r, d)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("pcap", nargs="?")
    ap.add_argument("--port", type=int, help="the daemon's UDP port of the WebRTC peer")
    ap.add_argument("--skip", type=float, default=4.0,
                    help="seconds of the stream left out at its start (the start hold; default 4)")
    ap.add_argument("--selftest", action="store_true")
    args = ap.parse_args()
    if args.selftest:
        selftest()
        return
    if not args.pcap:
        ap.error("a pcap file is needed")
    import json
    packets = read_pcap(args.pcap)
    if not args.port:
        # Say which ports exchange Opus both ways, busiest first, so the user can pick the daemon's.
        counts = {}
        for _, sport, dport, _, payload in packets:
            if len(payload) >= 12 and payload[0] >> 6 == 2 and payload[1] & 0x7F == OPUS_PT:
                counts[(sport, dport)] = counts.get((sport, dport), 0) + 1
        pairs = sorted(((n, a, b, counts.get((b, a), 0)) for (a, b), n in counts.items() if a < b and (b, a) in counts),
                       reverse=True)
        print("--port is needed: the daemon's side of one of these Opus flows (packets each way):", file=sys.stderr)
        for n, a, b, back in pairs[:5]:
            print(f"  {a} <-> {b}: {n} / {back}", file=sys.stderr)
        return 2
    print(json.dumps(analyse(packets, args.port, args.skip)))


if __name__ == "__main__":
    sys.exit(main())
