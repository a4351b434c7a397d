"""The quality harness: one command.

    python3 benches/quality/run.py [--quick] [--scenarios clean,loss5,burst10] [--senders gstreamer,ffmpeg]
                                   [--seed N | --seeds 1,2,3] [--json FILE] [--mediaproc PATH]

For every scenario and sender, the same 12 s of espeak-ng speech goes sender -> seeded relay -> echo -> relay ->
GStreamer receiver (16 kHz WAV), once through mediaproc's `echo` session on its RTP/UDP edge and once through a
GStreamer echo with the same codec settings; every received file is scored (see score.py). Then the echo round
trip is measured with tone bursts (rtt.py). Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    __package__ = "benches.quality"

from . import peers as P  # noqa: E402
from . import relay as R  # noqa: E402
from . import score as S  # noqa: E402
from .speech import espeak_wav  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Scenario -> (inbound impairment, outbound impairment). The outbound leg carries the same network as the inbound
# one unless --impair in.
SCENARIOS = {
    "clean": R.CLEAN,
    "loss5": R.Impairment(loss="random", loss_pct=5, jitter_ms=15),
    "burst10": R.Impairment(loss="ge", loss_pct=10, burst_len=2.5, jitter_ms=30),
}


# A way-in envelope this far above its median (ms) marks a run whose sender or relay was starved (see
# relay.Relay.starvation): on an idle machine it stays within about 10 ms (GStreamer sender) / 20 ms (ffmpeg).
STARVED_SPIKE_MS = 30


def log(msg: str):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def find_mediaproc(path: str | None) -> str:
    if path:
        if not os.access(path, os.X_OK):
            raise P.ToolMissing(f"--mediaproc {path}: not an executable")
        return path
    default = os.path.join(REPO, "target", "release", "mediaproc")
    if not os.access(default, os.X_OK):
        log(f"{default} missing: cargo build --release -p mediaproc (a few minutes)")
        subprocess.run(["cargo", "build", "--release", "-p", "mediaproc"], cwd=REPO, check=True)
    return default


def one_path(args, scenario: str, sender: str, echo, src_wav: str, workdir: str, rep: int = 0,
             seed: int | None = None) -> dict:
    seed = args.seed if seed is None else seed
    imp = SCENARIOS[scenario]
    imp_out = imp if args.impair == "both" else R.CLEAN
    tag = f"{scenario}-{sender}-{echo.name}" + (f"-s{seed}" if seed != args.seed else "") + (f"-{rep}" if rep else "")
    logdir = os.path.join(workdir, tag)
    os.makedirs(logdir, exist_ok=True)
    out_wav = os.path.join(logdir, "received.wav")
    # Same seed for both echo paths: the same sender's packets meet the same fate.
    # mediaproc's echo gets RTCP receiver reports from the far end on both edges (its adaptive FEC follows them;
    # the QUIC edge forwards them on the source flow, SPEC section 4.5); the GStreamer echo has no RTCP session and
    # keeps its fixed FEC setting.
    rr = args.rtcp_rr_ms / 1000 if echo.name in ("mediaproc", "quic") else 0.0
    relay = R.Relay(imp, imp_out, seed=f"{seed}/{scenario}/{sender}", rr_interval=rr).start()
    procs = []
    try:
        echo_addr = echo.start(relay.echo_port)
        rx_port = P.free_udp_port()
        receiver = P.gst_receiver(rx_port, out_wav, logdir, args.jitter_ms)
        procs.append(receiver)
        relay.set_targets(echo_addr, ("127.0.0.1", rx_port))
        time.sleep(0.5)
        snd = P.SENDERS[sender](src_wav, relay.in_port, logdir)
        procs.append(snd)
        t0 = time.monotonic()
        while snd.p.poll() is None:
            if time.monotonic() - t0 > args.seconds + 20:
                raise RuntimeError(f"{sender} sender did not finish; log {snd.log_path}")
            echo.poll_stats()
            time.sleep(1.0)
        if snd.p.returncode != 0:
            raise RuntimeError(f"{sender} sender failed ({snd.p.returncode}): {snd.tail()}")
        time.sleep(1.0)  # drain: echo delay + receiver jitter buffer
        echo_info = echo.stop()
        receiver.stop()
    finally:
        for p in procs:
            p.kill()
        try:
            echo.stop()  # no-op when already stopped
        except Exception:
            pass
        relay.stop()
        relay.write_arrivals(os.path.join(logdir, "arrivals.csv"))
    res = S.score_files(src_wav, out_wav, lost_inbound=relay.inbound_lost_frames())
    res.update({"scenario": scenario, "sender": sender, "path": echo.name, "repeat": rep, "seed": seed,
                "network": imp.describe(),
                "relay": relay.stats(), "echo": echo_info,
                "jitterBufferDelayMs": echo_info.get("jitterBufferDelayMs"), "receivedWav": out_wav})
    return res


def reference_codec(scenario: str, args) -> "P.Codec":
    """The GStreamer echo's encoder: mediaproc's bitrate and complexity; in-band FEC as a fixed setup would choose
    it for the scenario (off on a clean path, on at the scenario's loss rate otherwise), because opusenc cannot follow
    RTCP reports as mediaproc's adaptive FEC does. `--reference-fec 5` forces FEC at 5 % everywhere (the old rows)."""
    base = P.MEDIAPROC_ENCODER
    if args.reference_fec is not None:
        pct = args.reference_fec
    else:
        pct = int(round(SCENARIOS[scenario].loss_pct))
    return P.Codec(bitrate=base.bitrate, complexity=base.complexity, fec=pct > 0, loss_pct=pct, dtx=base.dtx)


def make_echo(path: str, daemon, workdir: str, args, scenario: str = "clean"):
    if path == "mediaproc":
        return P.MediaprocEcho(daemon)
    if path == "gstreamer":
        return P.GstEcho(workdir, args.jitter_ms, codec=reference_codec(scenario, args))
    if path == "quic":
        return P.MediaprocQuicEcho(daemon, workdir, pt=args.quic_pt, name="quic")
    if path == "quic-pt96":
        return P.MediaprocQuicEcho(daemon, workdir, pt=96, name="quic-pt96")
    raise ValueError(f"unknown path {path!r}")


def fmt(v, spec):
    return "n/a" if v is None else format(v, spec)


NUMERIC = ("pesqWb", "stoi", "corr", "lagSteps", "silentFrames", "silentFramesLostInbound", "jitterBufferDelayMs",
           "lagStepsInPauses")


def merged(results: list[dict]) -> list[dict]:
    """One row per (scenario, sender, path): the mean over seeds (`--seeds`) and repeats (`--repeat`), with `repeats`
    (runs in the mean) and `pesqAll`."""
    groups: dict = {}
    for r in results:
        groups.setdefault((r["scenario"], r["sender"], r["path"]), []).append(r)
    out = []
    for (sc, snd, path), rs in groups.items():
        m = {"scenario": sc, "sender": snd, "path": path, "repeats": len(rs),
             "pesqAll": [r.get("pesqWb") for r in rs]}
        for k in NUMERIC:
            vals = [r[k] for r in rs if isinstance(r.get(k), (int, float))]
            m[k] = (sum(vals) / len(vals)) if vals else None
        if any(r.get("error") for r in rs):
            m["error"] = "; ".join(r["error"] for r in rs if r.get("error"))
        out.append(m)
    return out


def num(v, _spec=None):
    """A count, or the mean of counts over repeats."""
    if v is None:
        return "n/a"
    return str(int(v)) if float(v).is_integer() else f"{v:.1f}"


def silent(r: dict) -> str:
    """Silent frames, and in brackets those where the way in had dropped the speech (`silentFramesLostInbound`)."""
    out = num(r.get("silentFrames"))
    if r.get("silentFrames") and r.get("silentFramesLostInbound") is not None:
        out += f" ({num(r['silentFramesLostInbound'])})"
    return out


def table(results: list[dict]) -> str:
    results = merged(results)
    head = ("| scenario | sender | path | PESQ-WB | STOI | corr | lag steps | silent frames (lost on the way in) | jitter buffer ms |\n"
            "|---|---|---|---|---|---|---|---|---|")
    rows = []
    for r in results:
        rows.append(f"| {r['scenario']} | {r['sender']} | {r['path']} | {fmt(r.get('pesqWb'), '.2f')} | "
                    f"{fmt(r.get('stoi'), '.3f')} | {fmt(r.get('corr'), '.3f')} | {num(r.get('lagSteps'), '.1f')} | "
                    f"{silent(r)} | {fmt(r.get('jitterBufferDelayMs'), '.0f')} |")
    return "\n".join([head] + rows)


def acceptance_table(results: list[dict]) -> str:
    """mediaproc (each edge) against the GStreamer echo, per scenario and sender, with issue 13's targets."""
    by = {(r["scenario"], r["sender"], r["path"]): r for r in merged(results)}
    head = ("| scenario | sender | edge | PESQ-WB mediaproc - GStreamer | target | met | silent frames (lost on the way in) | lag steps |\n"
            "|---|---|---|---|---|---|---|---|")
    rows = []
    for (sc, snd, path), r in by.items():
        ref = by.get((sc, snd, "gstreamer"))
        if path == "gstreamer" or ref is None or r.get("pesqWb") is None or ref.get("pesqWb") is None:
            continue
        d = r["pesqWb"] - ref["pesqWb"]
        target = -0.05 if sc == "clean" else 0.1
        ok = d >= target and r.get("silentFrames") == 0
        rows.append(f"| {sc} | {snd} | {path} | {d:+.2f} | {target:+.2f} | {'yes' if ok else 'no'} | "
                    f"{silent(r)} | {num(r.get('lagSteps'), '.1f')} |")
    return "\n".join([head] + rows)


def rtt_table(rtt: list[dict]) -> str:
    head = "| echo | bursts | p50 ms | p90 ms |\n|---|---|---|---|"
    rows = [f"| {r['path']} | {r['bursts']} | {fmt(r.get('p50Ms'), '.1f')} | {fmt(r.get('p90Ms'), '.1f')} |"
            for r in rtt]
    return "\n".join([head] + rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma list of " + ", ".join(SCENARIOS))
    ap.add_argument("--senders", default="gstreamer,ffmpeg", help="comma list of gstreamer, ffmpeg")
    ap.add_argument("--paths", default="mediaproc,gstreamer,quic",
                    help="echo paths: mediaproc (RTP/UDP edge), gstreamer (reference), quic (mediaproc's QUIC edge "
                         "through quic_edge.py, flows declared with --quic-pt)")
    ap.add_argument("--quic-pt", type=int, default=111,
                    help="payload type the QUIC edge declares for its flows (111: the reference edge's)")
    ap.add_argument("--no-pt-check", action="store_true",
                    help="skip the QUIC payload-type check (a short clean run with flows declared as pt 96)")
    ap.add_argument("--seed", type=int, default=1, help="the relay's seed: one loss and jitter pattern, the same for "
                                                       "every path")
    ap.add_argument("--seeds", help="comma list of seeds, each run for every path (overrides --seed): the reference "
                                    "is deterministic for a seed, so a row's mean over several seeds compares both "
                                    "sides over several loss patterns, not one")
    ap.add_argument("--repeat", type=int, default=1, help="run every path N times; the table shows the means")
    ap.add_argument("--seconds", type=float, default=12.0, help="speech length")
    ap.add_argument("--jitter-ms", type=int, default=60,
                    help="rtpjitterbuffer latency of the GStreamer echo and of the receiver (both paths)")
    ap.add_argument("--jb-mode", default="synced", choices=["synced", "slave", "none"],
                    help="rtpjitterbuffer mode of the GStreamer echo and the receiver (see peers.JB_MODE)")
    ap.add_argument("--impair", choices=["both", "in"], default="both",
                    help="impair both legs (sender->echo and echo->receiver) or only the way in")
    ap.add_argument("--quick", action="store_true", help="smoke run: one 4 s clean scenario, GStreamer sender")
    ap.add_argument("--no-rtt", action="store_true", help="skip the echo round-trip measurement")
    ap.add_argument("--reference-fec", type=int, default=None,
                    help="the GStreamer echo's FEC expected loss in percent for every scenario (default: 0 on clean, "
                         "the scenario's loss rate otherwise)")
    ap.add_argument("--rtcp-rr-ms", type=int, default=1000,
                    help="interval of the RTCP receiver reports the far end sends mediaproc's RTP/UDP echo about the "
                         "return leg's loss (drives its adaptive FEC); 0 = none")
    ap.add_argument("--decoder-complexity", type=int, default=None, metavar="N",
                    help="the daemon's Opus decoder complexity (its `decoder_complexity`, 0..10; default: the "
                         "daemon's default)")
    ap.add_argument("--nice", type=int, default=0,
                    help="run the harness and everything it starts (peers, relay, echoes, the daemon) at this nice "
                         "increment, e.g. -5 on a machine shared with other work (negative needs CAP_SYS_NICE): "
                         "the paths run one after another, so load from outside hits whichever path is running")
    ap.add_argument("--json", help="write all results to this JSON file")
    ap.add_argument("--mediaproc", help="mediaproc binary (default: target/release/mediaproc, built if missing)")
    ap.add_argument("--daemon-api", help="use a running daemon (IP:PORT of its API) instead of starting one")
    ap.add_argument("--daemon-token", default=os.environ.get("MEDIAPROC_API_TOKEN"),
                    help="API token of --daemon-api (default: $MEDIAPROC_API_TOKEN)")
    ap.add_argument("--daemon-media", type=int, help="QUIC media port of --daemon-api (for the quic path)")
    ap.add_argument("--keep", help="keep the work files (WAVs, logs) in this directory")
    args = ap.parse_args(argv)
    P.JB_MODE = args.jb_mode
    if args.nice:
        try:
            os.nice(args.nice)
        except OSError as e:
            print(f"error: --nice {args.nice}: {e}", file=sys.stderr)
            return 2
    if args.quick:
        args.scenarios, args.senders, args.seconds = "clean", "gstreamer", 4.0
    scenarios = [s for s in args.scenarios.split(",") if s]
    senders = [s for s in args.senders.split(",") if s]
    paths = [p for p in args.paths.split(",") if p]
    try:
        seeds = [int(x) for x in args.seeds.split(",") if x.strip()] if args.seeds else [args.seed]
    except ValueError:
        ap.error(f"--seeds {args.seeds!r}: a comma list of integers")
    if not seeds:
        ap.error("--seeds: at least one seed")
    for s in scenarios:
        if s not in SCENARIOS:
            ap.error(f"unknown scenario {s!r}; known: {', '.join(SCENARIOS)}")
    for p in paths:
        if p not in ("mediaproc", "gstreamer", "quic", "quic-pt96"):
            ap.error(f"unknown path {p!r}; known: mediaproc, gstreamer, quic, quic-pt96")
    for s in senders:
        if s not in P.SENDERS:
            ap.error(f"unknown sender {s!r}; known: {', '.join(P.SENDERS)}")

    tools = ["gst-launch-1.0", "espeak-ng", "sox"] + (["ffmpeg"] if "ffmpeg" in senders else [])
    try:
        P.require_tools(tools)
        if "quic" in paths or "quic-pt96" in paths:
            import importlib.util

            if importlib.util.find_spec("aioquic") is None:
                raise P.ToolMissing("the quic path needs aioquic: pip install aioquic (or --paths mediaproc,gstreamer)")
        needs_daemon = bool(set(paths) - {"gstreamer"})
        binary = find_mediaproc(args.mediaproc) if needs_daemon and not args.daemon_api else None
    except (P.ToolMissing, subprocess.CalledProcessError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    workdir = args.keep or tempfile.mkdtemp(prefix="mediaproc-quality-")
    os.makedirs(workdir, exist_ok=True)
    src_wav = espeak_wav(os.path.join(workdir, "source.wav"), args.seconds)
    log(f"speech: {src_wav} ({args.seconds:g} s, espeak-ng en-us); work dir {workdir}")
    daemon = None
    results, rtt = [], []
    t_start = time.monotonic()
    try:
        if args.daemon_api:
            daemon = P.Daemon.external(args.daemon_api, args.daemon_token or "", args.daemon_media)
            log(f"using the running daemon at {args.daemon_api}")
        elif binary:
            daemon = P.Daemon(binary, workdir, args.decoder_complexity)
            cx = "" if args.decoder_complexity is None else f", decoder complexity {args.decoder_complexity}"
            log(f"mediaproc {binary}: API 127.0.0.1:{daemon.api_port}{cx}")
        total = len(scenarios) * len(seeds) * len(senders) * len(paths) * args.repeat
        k = 0
        for scenario, seed, rep in [(s, d, i) for s in scenarios for d in seeds for i in range(args.repeat)]:
            for sender in senders:
                for path in paths:
                    k += 1
                    echo = make_echo(path, daemon, workdir, args, scenario)
                    log(f"[{k}/{total}] {scenario} ({SCENARIOS[scenario].describe()}), {sender} sender, {path} echo"
                        + (f", seed {seed}" if len(seeds) > 1 else ""))
                    try:
                        r = one_path(args, scenario, sender, echo, src_wav, workdir, rep, seed)
                    except Exception as e:  # keep going: one broken path must not hide the others
                        r = {"scenario": scenario, "sender": sender, "path": path, "seed": seed, "error": str(e)}
                    results.append(r)
                    starved = r.get("relay", {}).get("starvation", {})
                    log(f"      PESQ-WB {fmt(r.get('pesqWb'), '.2f')}  STOI {fmt(r.get('stoi'), '.3f')}  "
                        f"corr {fmt(r.get('corr'), '.3f')}  lag steps {r.get('lagSteps', 'n/a')}  "
                        f"silent {silent(r)}  jb {fmt(r.get('jitterBufferDelayMs'), '.0f')} ms  "
                        f"way-in spike {fmt(starved.get('senderSpikeMs'), '.0f')} ms"
                        + (f"  ERROR {r['error']}" if r.get("error") else ""))
        if "quic" in paths and not args.no_pt_check and args.quic_pt != 96 and not args.quick:
            log("QUIC payload-type check: clean, gstreamer sender, flows declared with payload type 96 (SPEC §3/§4.1)")
            try:
                r = one_path(args, "clean", "gstreamer", make_echo("quic-pt96", daemon, workdir, args), src_wav,
                             workdir)
            except Exception as e:
                r = {"scenario": "clean", "sender": "gstreamer", "path": "quic-pt96", "error": str(e)}
            results.append(r)
            qe = r.get("echo", {}).get("quicEdge", {})
            log(f"      PESQ-WB {fmt(r.get('pesqWb'), '.2f')}  silent {r.get('silentFrames', 'n/a')}  "
                f"payload types sent {qe.get('ptOut')} received {qe.get('ptIn')}  "
                f"mediaproc packetsIgnored {r.get('echo', {}).get('stats', {}).get('packetsIgnored')}")
        if not args.no_rtt and not args.quick:
            from . import rtt as T
            for path in paths:
                log(f"echo round trip (tone bursts over plain RTP), {path} echo")
                try:
                    echo = make_echo(path, daemon, workdir, args)
                    rtt.append(T.measure(echo, path))
                except Exception as e:
                    rtt.append({"path": path, "bursts": 0, "error": str(e)})
                log(f"      p50 {fmt(rtt[-1].get('p50Ms'), '.1f')} ms  p90 {fmt(rtt[-1].get('p90Ms'), '.1f')} ms"
                    + (f"  ERROR {rtt[-1]['error']}" if rtt[-1].get("error") else ""))
    finally:
        if daemon:
            daemon.stop()
    print(table(results))
    print()
    starved = [r for r in results if (r.get("relay", {}).get("starvation", {}).get("senderSpikeMs") or 0)
               > STARVED_SPIKE_MS]
    if starved:
        print(f"Runs whose way in was delayed by more than {STARVED_SPIKE_MS} ms before the echo (sender or relay "
              "starved of CPU; that path alone met the extra jitter): "
              + ", ".join(f"{r['scenario']}/{r['sender']}/{r['path']} seed {r.get('seed')} run {r.get('repeat', 0) + 1} "
                          f"(+{r['relay']['starvation']['senderSpikeMs']:.0f} ms)" for r in starved))
        print()
    print(acceptance_table(results))
    if rtt:
        print()
        print(rtt_table(rtt))
    meta = {"seed": seeds[0], "seeds": seeds, "decoderComplexity": args.decoder_complexity, "seconds": args.seconds, "jitterBufferMs": args.jitter_ms, "jitterBufferMode": args.jb_mode, "impair": args.impair,
            "mediaproc": binary, "codec": P.MEDIAPROC_ENCODER.__dict__, "senderCodec": P.SENDER_CODEC.__dict__,
            "scenarios": {s: SCENARIOS[s].__dict__ for s in scenarios}, "workdir": workdir,
            "elapsedSeconds": round(time.monotonic() - t_start, 1)}
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": results, "rtt": rtt}, f, indent=2, default=str)
        log(f"wrote {args.json}")
    log(f"done in {meta['elapsedSeconds']} s")
    return 1 if any(r.get("error") for r in results + rtt) else 0


def retable(json_path: str):
    """Print the tables again from a JSON file: python3 -c 'from benches.quality.run import retable; retable(F)'."""
    d = json.load(open(json_path))
    print(table(d["results"]))
    print()
    print(acceptance_table(d["results"]))
    if d.get("rtt"):
        print()
        print(rtt_table(d["rtt"]))


if __name__ == "__main__":
    sys.exit(main())
