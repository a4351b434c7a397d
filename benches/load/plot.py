#!/usr/bin/env python3
"""Pictures from `mediaproc load` reports, as SVG (no plotting library needed).

    python3 benches/load/plot.py --out docs/img REPORT.json...

Each input is recognised by its keys:
- a load report (`mediaproc load --json`): its echo round-trip samples go into `latency.svg` (one CDF per report);
- a capacity report (`mediaproc load --find-capacity --json`): `capacity.svg`, the daemon's CPU share against the
  number of calls for each bot mode, runs with a late tick marked, and the `--max-cpu` limit;
- a peers report (`benches/peers/run.py --json`): `peers.svg`, streams per core of mediaproc, GStreamer and ffmpeg
  for each job.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

W, H, M = 640, 360, 56  # size and margin
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf", "#7f7f7f"]


def esc(text) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class Svg:
    def __init__(self, title: str, xlabel: str, ylabel: str, xmax: float, ymax: float, xticks: bool = True):
        self.xmax, self.ymax = max(xmax, 1e-9), max(ymax, 1e-9)
        self.parts = [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" '
            f'font-size="12"><rect width="{W}" height="{H}" fill="white"/>',
            f'<text x="{W / 2}" y="20" text-anchor="middle" font-size="14">{esc(title)}</text>',
            f'<text x="{W / 2}" y="{H - 8}" text-anchor="middle">{esc(xlabel)}</text>',
            f'<text x="14" y="{H / 2}" text-anchor="middle" transform="rotate(-90 14 {H / 2})">{esc(ylabel)}</text>',
            f'<line x1="{M}" y1="{H - M}" x2="{W - M / 2}" y2="{H - M}" stroke="black"/>',
            f'<line x1="{M}" y1="{M / 2}" x2="{M}" y2="{H - M}" stroke="black"/>',
        ]
        for i in range(6):
            x, y = self.xmax * i / 5, self.ymax * i / 5
            px, py = self.px(x), self.py(y)
            if xticks:
                self.parts.append(f'<text x="{px}" y="{H - M + 16}" text-anchor="middle">{x:.4g}</text>')
            self.parts.append(f'<text x="{M - 6}" y="{py + 4}" text-anchor="end">{y:.4g}</text>')
            self.parts.append(f'<line x1="{M}" y1="{py}" x2="{W - M / 2}" y2="{py}" stroke="#ddd"/>')
        self.legend = 0

    def px(self, x: float) -> float:
        return M + (W - 1.5 * M) * min(x, self.xmax) / self.xmax

    def py(self, y: float) -> float:
        return H - M - (H - 1.5 * M) * min(y, self.ymax) / self.ymax

    def line(self, points, color: str, label: str, dash: str = ""):
        if not points:
            return
        d = " ".join(f"{self.px(x):.1f},{self.py(y):.1f}" for x, y in points)
        self.parts.append(f'<polyline points="{d}" fill="none" stroke="{color}" stroke-width="2" '
                          f'stroke-dasharray="{dash}"/>')
        self.label(color, label)

    def dots(self, points, color: str, hollow: bool = False):
        for x, y in points:
            fill = "white" if hollow else color
            self.parts.append(f'<circle cx="{self.px(x):.1f}" cy="{self.py(y):.1f}" r="4" fill="{fill}" '
                              f'stroke="{color}"/>')

    def bar(self, x0: float, width: float, y: float, color: str):
        top = self.py(y)
        self.parts.append(f'<rect x="{self.px(x0):.1f}" y="{top:.1f}" width="{self.px(x0 + width) - self.px(x0):.1f}" '
                          f'height="{H - M - top:.1f}" fill="{color}"/>')

    def text(self, x: float, y: float, text: str, anchor: str = "middle"):
        self.parts.append(f'<text x="{self.px(x):.1f}" y="{self.py(y) - 4:.1f}" text-anchor="{anchor}">{esc(text)}</text>')

    def label(self, color: str, label: str):
        y = M / 2 + 14 * self.legend + 10
        self.parts.append(f'<rect x="{W - 230}" y="{y - 9}" width="10" height="10" fill="{color}"/>'
                          f'<text x="{W - 215}" y="{y}">{esc(label)}</text>')
        self.legend += 1

    def save(self, path: str):
        with open(path, "w") as f:
            f.write("\n".join(self.parts + ["</svg>"]) + "\n")
        print(f"wrote {path}")


def latency(reports, out: str):
    series = [(r, sorted(r.get("latency_ms", {}).get("echo_rtt_samples_ms") or [])) for r in reports]
    series = [(r, s) for r, s in series if s]
    if not series:
        return
    xmax = max(s[int(0.99 * (len(s) - 1))] for _, s in series) * 1.2
    svg = Svg("Echo round trip (tone-burst probes, onset to onset)", "ms", "share of probes ≤ x", xmax, 1.0)
    for i, (r, s) in enumerate(series):
        pts = [(v, (k + 1) / len(s)) for k, v in enumerate(s)]
        label = f"{r.get('peer', 'mediaproc')} {r['edge']} {r['bot']} ×{r['calls']}"
        svg.line(pts, COLORS[i % len(COLORS)], label)
    svg.save(os.path.join(out, "latency.svg"))


def capacity(report, out: str):
    runs = report["runs"]
    xmax = max(r["calls"] for r in runs) * 1.1
    ymax = max(max(r["cpu_share"] for r in runs), report["max_cpu"]) * 110
    svg = Svg(f"Daemon CPU against calls ({report['edge']} edge, {report['cores']} cores)", "calls",
              "daemon CPU, % of the cores", xmax, ymax)
    svg.line([(0, report["max_cpu"] * 100), (xmax, report["max_cpu"] * 100)], "#999", "limit", "6,4")
    for i, bot in enumerate(report["calls_per_core"]):
        pts = sorted((r["calls"], r["cpu_share"] * 100) for r in runs if r["bot"] == bot)
        color = COLORS[i % len(COLORS)]
        svg.line(pts, color, f"{bot}: {report['calls_per_core'][bot]} calls per core")
        svg.dots([(r["calls"], r["cpu_share"] * 100) for r in runs if r["bot"] == bot and r["ok"]], color)
        svg.dots([(r["calls"], r["cpu_share"] * 100) for r in runs if r["bot"] == bot and not r["ok"]], color, True)
    svg.save(os.path.join(out, "capacity.svg"))


def peers(report, out: str):
    rows = [r for r in report["rows"] if "error" not in r and r.get("streams_per_core")]
    if not rows:
        return
    jobs = sorted({r["bot"] for r in rows})
    names = ["mediaproc", "gstreamer", "ffmpeg"]
    ymax = max(r["streams_per_core"] for r in rows) * 1.2
    svg = Svg(f"Streams per core at the same job ({report['calls']} streams at once)", "job", "streams per core",
              len(jobs), ymax, xticks=False)
    for j, job in enumerate(jobs):
        for k, name in enumerate(names):
            r = next((r for r in rows if r["bot"] == job and r["peer"] == name), None)
            if r:
                x = j + 0.15 + 0.23 * k
                svg.bar(x, 0.2, r["streams_per_core"], COLORS[k])
                svg.text(x + 0.1, r["streams_per_core"], f"{r['streams_per_core']:.0f}")
        svg.parts.append(f'<text x="{svg.px(j + 0.5):.1f}" y="{H - M + 16}" text-anchor="middle">{esc(job)}</text>')
    for k, name in enumerate(names):
        svg.label(COLORS[k], name)
    svg.save(os.path.join(out, "peers.svg"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=".")
    ap.add_argument("reports", nargs="+")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    loads = []
    for path in args.reports:
        doc = json.load(open(path))
        if "calls_per_core" in doc:
            capacity(doc, args.out)
        elif "rows" in doc:
            peers(doc, args.out)
        elif "latency_ms" in doc:
            loads.append(doc)
        else:
            print(f"{path}: not a load, capacity or peers report", file=sys.stderr)
            return 2
    latency(loads, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
