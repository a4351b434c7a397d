"""A neighbour's garbage flood (issue 9): random datagrams at one session's RTP/UDP port and at the QUIC media port,
at a fixed rate for a fixed time, while the harness measures a healthy session on the same daemon.

    python3 -m benches.quality.flood --api 127.0.0.1:8080 --token T --quic 4433 --seconds 12 --rate 5000

It creates its own victim session (an echo with an RTP/UDP edge) on the daemon, floods, deletes the session and
prints what it sent and what the victim counted, as JSON. Traffic goes to 127.0.0.1 only; it stops by itself.
"""

import argparse
import json
import os
import socket
import sys
import time
import urllib.request


def api(base: str, token: str, method: str, path: str, body=None):
    req = urllib.request.Request(f"http://{base}{path}", method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        text = r.read()
        return json.loads(text) if text else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--api", required=True, help="the daemon's API address, IP:PORT")
    ap.add_argument("--token", default=os.environ.get("MEDIAPROC_API_TOKEN", ""))
    ap.add_argument("--quic", type=int, required=True, help="the daemon's QUIC media port (on 127.0.0.1)")
    ap.add_argument("--seconds", type=float, default=12.0)
    ap.add_argument("--rate", type=int, default=5000, help="datagrams per second in all (half at each target)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    victim = api(args.api, args.token, "POST", "/v1/sessions", {"bot": "echo", "rtp": {}})
    rtp_port = int(victim["rtp"]["local"].rsplit(":", 1)[1])
    targets = [("127.0.0.1", rtp_port), ("127.0.0.1", args.quic)]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rnd = __import__("random").Random(args.seed)
    sent = 0
    start = time.monotonic()
    total = int(args.rate * args.seconds)
    # Absolute deadlines in batches of 50: the rate holds without a syscall per sleep.
    while sent < total:
        due = start + sent / args.rate
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        for _ in range(min(50, total - sent)):
            size = rnd.randrange(1, 1200)
            payload = rnd.randbytes(size)
            sock.sendto(payload, targets[sent % 2])
            sent += 1
    elapsed = time.monotonic() - start
    time.sleep(1.5)  # one stats publish
    stats = api(args.api, args.token, "GET", f"/v1/sessions/{victim['sessionId']}")
    api(args.api, args.token, "DELETE", f"/v1/sessions/{victim['sessionId']}")
    rtp = stats.get("stats", {}).get("rtpUdp", {})
    print(json.dumps({"sent": sent, "seconds": round(elapsed, 2), "victimRtpPort": rtp_port,
                      "victimRxMalformed": rtp.get("rxMalformed"), "victimRxUnexpected": rtp.get("rxUnexpected"),
                      "victimRxWrongSource": rtp.get("rxWrongSource")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
