#!/usr/bin/env python3
"""Peers side by side (issue 10): mediaproc, GStreamer and ffmpeg doing the same job at the same codec settings,
N streams at once on this machine, in one run, driven by the same load edge (`mediaproc load --edge rtp`).

    python3 benches/peers/run.py [--calls 50] [--seconds 20] [--bots echo,record] [--mediaproc PATH] [--json FILE]

For each bot job (`echo`: decode, 16 kHz, Opus encode 32 kbit/s complexity 5; `record`: decode to a 16 kHz WAV)
and each peer, `mediaproc load --peer P --edge rtp --bot B --calls N` runs; its JSON gives CPU per stream-tick
(`/proc` CPU time of the daemon, or of every peer process), bare libopus in the same run, the echo round trip from
tone-burst probes, and memory. Streams per core at 70 % CPU follow from the CPU per stream-tick. A peer whose tool
is missing is skipped with a message (and fails the run when CI=true).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

PEERS = {"mediaproc": None, "gstreamer": "gst-launch-1.0", "ffmpeg": "ffmpeg"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=50)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--bots", default="echo,record")
    ap.add_argument("--peers", default="mediaproc,gstreamer,ffmpeg")
    ap.add_argument("--max-cpu", type=float, default=0.7)
    ap.add_argument("--mediaproc", default=os.path.join(os.path.dirname(__file__), "../../target/release/mediaproc"))
    ap.add_argument("--json")
    args = ap.parse_args()
    if not os.path.exists(args.mediaproc):
        print(f"no mediaproc binary at {args.mediaproc}: cargo build --release -p mediaproc", file=sys.stderr)
        return 2
    ci = os.environ.get("CI") == "true"
    rows, missing = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for bot in args.bots.split(","):
            for peer in args.peers.split(","):
                tool = PEERS[peer]
                if tool and shutil.which(tool) is None:
                    missing.append(tool)
                    print(f"skip {peer}: `{tool}` not found", file=sys.stderr)
                    continue
                out = os.path.join(tmp, f"{peer}-{bot}.json")
                cmd = [args.mediaproc, "load", "--peer", peer, "--edge", "rtp", "--bot", bot,
                       "--calls", str(args.calls), "--seconds", str(args.seconds), "--json", out]
                print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
                run = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                if run.returncode != 0:
                    print(run.stdout, file=sys.stderr)
                    rows.append({"peer": peer, "bot": bot, "error": run.stdout.strip().splitlines()[-1:]})
                    continue
                r = json.load(open(out))
                cpu = r["daemon_cpu_us_per_call_tick"]
                r["streams_per_core"] = args.max_cpu * 20_000 / cpu if cpu else None
                rows.append(r)
    print()
    print(f"| job | peer | CPU µs / stream-tick | bare libopus | ratio | streams per core at {args.max_cpu:.0%} "
          "| echo RTT p50 / p99 ms | memory / stream |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['bot']} | {r['peer']} | failed: {r['error']} | | | | | |")
            continue
        lat = r["latency_ms"]
        rtt = (f"{lat['echo_rtt_p50']:.1f} / {lat['echo_rtt_p99']:.1f}" if lat.get("echo_rtt_p50") else "n/a")
        mem = r.get("memory_per_call_bytes")
        # The conditional covers the memory cell only (it once swallowed the whole row of a peer without a reading).
        memory = f"{mem / 1048576:.2f} MiB" if mem else "n/a"
        print(f"| {r['bot']} | {r['peer']} | {r['daemon_cpu_us_per_call_tick']:.1f} | "
              f"{r['bare_codec_us_per_call_tick']:.1f} | {r['overhead_ratio']:.2f} | {r['streams_per_core']:.0f} | "
              f"{rtt} | {memory} |")
    by = {(r["bot"], r["peer"]): r for r in rows if "error" not in r}
    for bot in args.bots.split(","):
        m, g = by.get((bot, "mediaproc")), by.get((bot, "gstreamer"))
        if m and g:
            print(f"{bot}: mediaproc carries {m['streams_per_core'] / g['streams_per_core']:.2f} x GStreamer's "
                  "streams per core")
    if args.json:
        json.dump({"calls": args.calls, "seconds": args.seconds, "rows": rows}, open(args.json, "w"), indent=2)
        print(f"wrote {args.json}")
    if missing and ci:
        print(f"CI=true and missing: {', '.join(missing)}", file=sys.stderr)
        return 2
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
