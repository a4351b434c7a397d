#!/usr/bin/env python3
"""A WHIP client on aiortc (an independent WebRTC stack) for tests/webrtc.rs.

Sends a 16 kHz mono s16 raw file as the microphone to a mediaproc session's WHIP endpoint and records what comes
back. Writes the received audio (16 kHz mono s16 raw, time-aligned with the send: sample 0 is when the first
frame was sent) to --out, and prints a JSON summary.
"""

import argparse
import array
import asyncio
import fractions
import json
import time
import urllib.request

from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from av import AudioFrame

RATE = 48000
FRAME = 960  # 20 ms at 48 kHz


class FileTrack(MediaStreamTrack):
    """20 ms frames of the source (upsampled to 48 kHz by repetition), then silence, paced in real time."""

    kind = "audio"

    def __init__(self, samples16k):
        super().__init__()
        self.samples = array.array("h", (s for s in samples16k for _ in range(3)))
        self.pts = 0
        self.start = None

    async def recv(self):
        if self.start is None:
            self.start = time.monotonic()
        due = self.start + self.pts / RATE
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        chunk = self.samples[self.pts : self.pts + FRAME]
        if len(chunk) < FRAME:
            chunk.extend([0] * (FRAME - len(chunk)))
        frame = AudioFrame(format="s16", layout="mono", samples=FRAME)
        frame.planes[0].update(chunk.tobytes())
        frame.sample_rate = RATE
        frame.pts = self.pts
        frame.time_base = fractions.Fraction(1, RATE)
        self.pts += FRAME
        return frame


def post(url, token, method, body=None, content_type=None):
    request = urllib.request.Request(url, data=body, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    if content_type:
        request.add_header("Content-Type", content_type)
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.headers.get("Location"), response.read().decode()


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True, help="http://host:port of the control API")
    parser.add_argument("--session", required=True)
    parser.add_argument("--token", required=True, help="the session's edgeToken")
    parser.add_argument("--source", required=True, help="16 kHz mono s16 raw")
    parser.add_argument("--out", required=True)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()

    source = array.array("h")
    with open(args.source, "rb") as f:
        source.frombytes(f.read())
    track = FileTrack(source)
    pc = RTCPeerConnection()
    pc.addTransceiver(track, direction="sendrecv")
    received = array.array("h")
    first_received = []

    @pc.on("track")
    def on_track(remote):
        async def record():
            while True:
                try:
                    frame = await remote.recv()
                except Exception:
                    return
                if not first_received:
                    first_received.append(time.monotonic())
                pcm = array.array("h", bytes(frame.planes[0])[: frame.samples * 2 * len(frame.layout.channels)])
                step = len(frame.layout.channels) * (frame.sample_rate // 16000)
                received.extend(pcm[::step])

        asyncio.ensure_future(record())

    await pc.setLocalDescription(await pc.createOffer())  # aiortc gathers candidates before it returns
    base = args.base.rstrip("/")
    status, location, answer = await asyncio.to_thread(
        post, f"{base}/v1/sessions/{args.session}/webrtc", args.token, "POST",
        pc.localDescription.sdp.encode(), "application/sdp")
    assert status == 201, status
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    for _ in range(200):
        if pc.connectionState == "connected":
            break
        await asyncio.sleep(0.05)
    connected = pc.connectionState
    await asyncio.sleep(args.seconds)
    # Align: sample 0 of the output is the first frame sent.
    pad = 0
    if first_received and track.start is not None:
        pad = int((first_received[0] - track.start) * 16000)
    if pad >= 0:
        out = array.array("h", [0] * pad) + received
    else:
        out = received[-pad:]
    with open(args.out, "wb") as f:
        f.write(out.tobytes())
    delete_status, _, _ = await asyncio.to_thread(post, f"{base}{location}", args.token, "DELETE")
    await pc.close()
    print(json.dumps({"connected": connected, "location": location, "received": len(received),
                      "deleteStatus": delete_status}))


asyncio.run(main())
