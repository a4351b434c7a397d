#!/usr/bin/env python3
"""A mediaproc bot in Python: create a session, print the blob, echo the call's audio, answer DTMF.

Needs only the `websockets` package (pip install websockets). Usage:

    MEDIAPROC_API_TOKEN=... python3 echo_bot.py --api http://127.0.0.1:8080 [--rtp-remote 127.0.0.1:5004] [--seconds 30]
    python3 echo_bot.py --media-url 'ws://127.0.0.1:PORT/v1/sessions/ID/media?token=...'   # join a given session

The bot asks `mediaproc serve` for a session (POST /v1/sessions), prints the blob and the mediaConfig to paste
into a Graph create-call request, connects to the session's WebSocket and sends every 20 ms frame it hears straight
back (the Vonage convention: binary messages are raw 16-bit little-endian PCM). When a DTMF digit arrives it answers
with a short beep, placing a mark after it and reporting when the beep has been played.
"""

import argparse
import asyncio
import json
import math
import os
import struct
import sys
import urllib.request

import websockets


def create_session(api, token, rtp_remote, rtp_source=""):
    body = {"bot": "websocket"}
    if rtp_remote:
        body["rtp"] = {"local": "127.0.0.1:0", "remote": rtp_remote, "payloadType": 96}
        if rtp_source:
            # Strict RTP: with a fixed remote only packets from it (or from `source`) are taken.
            body["rtp"]["source"] = rtp_source
    request = urllib.request.Request(
        f"{api}/v1/sessions",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def beep(frame_bytes, frames=10, hz=880.0, rate=16000):
    """`frames` 20 ms frames of a sine beep, as binary messages."""
    samples = frame_bytes // 2
    out = []
    for f in range(frames):
        pcm = [int(6000 * math.sin(2 * math.pi * hz * (f * samples + i) / rate)) for i in range(samples)]
        out.append(struct.pack(f"<{samples}h", *pcm))
    return out


async def run(args):
    if args.media_url:
        # A session someone else created (e.g. `mediaproc demo --bot websocket` prints this URL).
        session, url = {}, args.media_url
    else:
        token = os.environ.get("MEDIAPROC_API_TOKEN") or args.token
        session = create_session(args.api, token, args.rtp_remote, args.rtp_source)
        print("session   ", session["sessionId"])
        print("blob      ", session["blob"])
        print("mediaConfig", json.dumps(session["mediaConfig"]))
        if "rtp" in session:
            print("rtp local ", session["rtp"]["local"], flush=True)
        url = f"{session['mediaUrl']}?token={session['botToken']}"
    echoed = dtmf = marks = 0
    async with websockets.connect(url) as ws:
        start = json.loads(await ws.recv())
        assert start["event"] == "start", start
        frame_bytes = start["format"]["frameBytes"]
        print("start     ", json.dumps(start["format"]), flush=True)
        if args.ready_file:
            with open(args.ready_file, "w") as ready:
                ready.write(session.get("rtp", {}).get("local", "") + "\n")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + args.seconds
        while loop.time() < deadline:
            try:
                message = await asyncio.wait_for(ws.recv(), timeout=deadline - loop.time())
            except asyncio.TimeoutError:
                break
            if isinstance(message, bytes):
                if len(message) == frame_bytes:  # mixed audio (unmixed messages start with b"UMX1")
                    await ws.send(message)
                    echoed += 1
                continue
            event = json.loads(message)
            if event["event"] == "dtmf":
                dtmf += 1
                print("dtmf      ", event["digit"], flush=True)
                await ws.send(json.dumps({"action": "clear"}))
                for frame in beep(frame_bytes):
                    await ws.send(frame)
                await ws.send(json.dumps({"action": "mark", "name": f"beep-{event['digit']}"}))
            elif event["event"] == "mark":
                marks += 1
                print("mark      ", event["name"], "cleared" if event["cleared"] else "played", flush=True)
            elif event["event"] == "stop":
                break
            elif event["event"] == "error":
                print("error     ", event["code"], event["message"], file=sys.stderr, flush=True)
    print(f"echoed {echoed} frames, {dtmf} DTMF digits, {marks} marks", flush=True)
    return 0 if echoed >= args.min_frames else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", default="http://127.0.0.1:8080", help="mediaproc serve control API")
    parser.add_argument("--token", default="", help="API token (default: $MEDIAPROC_API_TOKEN)")
    parser.add_argument("--rtp-remote", default="", help="also send the session's audio as RTP to HOST:PORT")
    parser.add_argument("--rtp-source", default="",
                        help="the HOST:PORT the far end sends its RTP from, when not --rtp-remote (strict RTP)")
    parser.add_argument("--media-url", default="", help="join an existing session's WebSocket (URL with ?token=)")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long to run")
    parser.add_argument("--min-frames", type=int, default=1, help="exit 1 unless at least this many frames were echoed")
    parser.add_argument("--ready-file", default="", help="write the session's RTP address here once connected")
    sys.exit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
