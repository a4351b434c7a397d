"""A seeded UDP relay that impairs RTP the way a real network does: loss (none, random or Gilbert-Elliott bursts)
and per-packet delay jitter, in both directions.

    sender --> [in_sock] --leg "in"--> echo        echo --> [echo_sock] --leg "out"--> receiver

The echo sees `echo_sock` as its peer (symmetric RTP replies there; a fixed `rtp.remote` points there).

Delay model: each packet gets `delay = base_ms + U(0, jitter_ms)` (so `jitter_ms` is the peak-to-peak spread).
Order: a packet may overtake the one sent before it only when its delay is shorter by more than `reorder_gap_ms`
(default 20 ms, one media frame); otherwise it is delivered right behind its predecessor (a FIFO link). Packets
sent back to back (ffmpeg sends pairs) therefore keep their order unless the delay difference exceeds a frame;
15 ms of jitter never reorders, 30 ms reorders about 4-5 % of packets by one position.

Determinism: decisions come from `random.Random` seeded with a string (seed, scenario, sender, leg). On the inbound
leg they are drawn per packet in arrival order, so the same sender's packets meet the same fate on both echo
paths. On the outbound leg they are drawn per 20 ms time slot since the first inbound packet, so both echoes'
output (which starts at different times and counts) is hit at the same moments of the call.
"""

from __future__ import annotations

import heapq
import random
import select
import socket
import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Impairment:
    """One direction's network: `loss` is "none", "random" (probability `loss_pct`) or "ge" (Gilbert-Elliott
    with mean loss `loss_pct` and mean burst length `burst_len` packets; every packet in the Bad state is lost)."""

    loss: str = "none"
    loss_pct: float = 0.0
    burst_len: float = 2.5
    jitter_ms: float = 0.0
    base_ms: float = 0.0
    reorder_gap_ms: float = 20.0

    def describe(self) -> str:
        parts = []
        if self.loss == "random":
            parts.append(f"{self.loss_pct:g}% random loss")
        elif self.loss == "ge":
            parts.append(f"{self.loss_pct:g}% bursty loss (GE, mean burst {self.burst_len:g})")
        if self.jitter_ms:
            parts.append(f"{self.jitter_ms:g} ms jitter")
        return ", ".join(parts) or "clean"


CLEAN = Impairment()


def is_rtp(data: bytes) -> bool:
    """An RTP packet (version 2, a full fixed header), not RTCP (payload types 200-204 as RTCP's packet types)."""
    return len(data) >= 12 and data[0] >> 6 == 2 and not 200 <= data[1] <= 204


class LossModel:
    """Seeded loss and delay decisions, one per packet (or slot)."""

    def __init__(self, imp: Impairment, seed: str):
        self.imp = imp
        self.rng = random.Random(seed)
        self.bad = False
        # Gilbert-Elliott: P(G->B) = p, P(B->G) = r; stationary loss = p / (p + r); mean burst = 1 / r.
        self.r = 1.0 / max(imp.burst_len, 1.0)
        pl = min(max(imp.loss_pct / 100.0, 0.0), 0.99)
        self.p = pl * self.r / (1.0 - pl) if pl > 0 else 0.0

    def next(self) -> tuple[bool, float]:
        """(lost, delay in seconds) for the next packet. Always draws the same number of randoms."""
        u_loss, u_state, u_delay = self.rng.random(), self.rng.random(), self.rng.random()
        imp = self.imp
        if imp.loss == "random":
            lost = u_loss < imp.loss_pct / 100.0
        elif imp.loss == "ge":
            if self.bad:
                self.bad = u_state >= self.r
            else:
                self.bad = u_state < self.p
            lost = self.bad
        else:
            lost = False
        delay = (imp.base_ms + u_delay * imp.jitter_ms) / 1000.0
        return lost, delay


@dataclass
class LegStats:
    received: int = 0
    forwarded: int = 0
    lost: int = 0
    reordered: int = 0
    max_delay_ms: float = 0.0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class _Leg:
    def __init__(self, imp: Impairment, seed: str, per_slot: bool):
        self.model = LossModel(imp, seed)
        self.imp = imp
        self.per_slot = per_slot
        self.slot_cache: dict[int, tuple[bool, float]] = {}
        self.slots_drawn = 0
        self.prev_send = None  # (send time, delay, delivery time) of the previous packet
        self.stats = LegStats()

    def decide(self, now: float, t0: float | None) -> tuple[bool, float]:
        if not self.per_slot:
            return self.model.next()
        if t0 is None:
            # An echo that sends before the sender started (mediaproc's session plays comfort noise from its
            # creation): pass it on untouched and draw nothing, so the slot stream stays aligned with the sender's
            # start on every path (drawing here shifted mediaproc's return-leg losses by ~0.5 s against the
            # GStreamer echo's, onto other speech).
            return False, 0.0
        slot = max(0, int((now - t0) / 0.020))
        while self.slots_drawn <= slot:
            self.slot_cache[self.slots_drawn] = self.model.next()
            self.slots_drawn += 1
        lost, delay = self.slot_cache[slot]
        return lost, delay

    def schedule(self, now: float, delay: float) -> float:
        due = now + delay
        if self.prev_send is not None:
            p_send, p_delay, p_due = self.prev_send
            if due < p_due:
                if p_delay - delay > self.imp.reorder_gap_ms / 1000.0:
                    self.stats.reordered += 1
                else:
                    due = p_due  # FIFO: right behind its predecessor
        self.prev_send = (now, delay, due)
        self.stats.max_delay_ms = max(self.stats.max_delay_ms, (due - now) * 1000.0)
        return due


class Relay:
    """Forwards sender -> echo (leg "in") and echo -> receiver (leg "out") with impairments.

    `in_port` is where the sender sends; `echo_port` is the relay's socket the echo must send to. Call
    `set_targets(echo_addr, receiver_addr)` before packets flow (packets without a target are counted and dropped).
    """

    def __init__(self, imp_in: Impairment, imp_out: Impairment, seed: str, host: str = "127.0.0.1",
                 rr_interval: float = 0.0):
        self.in_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.in_sock.bind((host, 0))
        self.echo_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.echo_sock.bind((host, 0))
        for s in (self.in_sock, self.echo_sock):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.in_port = self.in_sock.getsockname()[1]
        self.echo_port = self.echo_sock.getsockname()[1]
        self.leg_in = _Leg(imp_in, f"{seed}/in", per_slot=False)
        self.leg_out = _Leg(imp_out, f"{seed}/out", per_slot=True)
        self.echo_addr = None
        self.receiver_addr = None
        self.no_target = 0
        self.t0 = None  # first inbound packet
        # (leg, time forwarded, first 12 bytes) of every packet the relay passed on (lost ones are missing), for
        # diagnostics (`write_arrivals`): on leg "in" what the echo received and when.
        self.in_log: list[tuple[str, float, bytes]] = []
        # (time received, RTP timestamp) of every inbound RTP packet, and how late each forward left against its
        # schedule (s, per leg): whether the sender or the relay itself was starved during this path's run (a loaded
        # machine delays the way in before any echo sees it; see `stats()["starvation"]`).
        self.rx_in: list[tuple[float, int]] = []
        # RTP timestamp of every inbound RTP packet the relay dropped (`inbound_lost_frames`).
        self.in_lost_ts: list[int] = []
        self.tx_late = {"in": 0.0, "out": 0.0}
        self._heap: list = []
        self._seq = 0
        self._cv = threading.Condition()
        self._stop = False
        # RTCP receiver reports to the echo, as the far end's receiver would send them (RFC 3550 §6.4.2): the loss
        # of the echo's stream on leg "out" since the last report. 0 = none (a plain GStreamer receiver sends none).
        self.rr_interval = rr_interval
        self.rr_sent = 0
        self._rr = {"ssrc": None, "received": 0, "lost": 0, "highest": 0, "cum_lost": 0, "last": None}
        self._threads = [
            threading.Thread(target=self._rx_loop, daemon=True, name="relay-rx"),
            threading.Thread(target=self._tx_loop, daemon=True, name="relay-tx"),
        ]

    def set_targets(self, echo_addr, receiver_addr):
        self.echo_addr = echo_addr
        self.receiver_addr = receiver_addr

    def start(self) -> "Relay":
        for t in self._threads:
            t.start()
        return self

    def stop(self):
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        for t in self._threads:
            t.join(timeout=2)
        self.in_sock.close()
        self.echo_sock.close()

    def stats(self) -> dict:
        return {
            "in": self.leg_in.stats.as_dict(),
            "out": self.leg_out.stats.as_dict(),
            "noTarget": self.no_target,
            "rtcpReceiverReports": self.rr_sent,
            "starvation": self.starvation(),
        }

    def starvation(self) -> dict:
        """How much the way in was delayed before any echo saw it: `senderSpikeMs`, the largest on-time envelope of a
        0.5 s window of the inbound arrivals (arrival minus RTP time, the window's latest packet) above the median of
        those windows (a sender that sends in chunks, as ffmpeg does, has a steady envelope too); `relayLateMs`, the
        largest lateness of a forward against its schedule, per leg. On an idle machine both stay within a few ms;
        tens of ms mean the sender or the relay was starved of CPU during this run, which delays that path's packets
        only (the paths run one after another)."""
        out = {"relayLateMs": {k: round(v * 1000, 1) for k, v in self.tx_late.items()}, "senderSpikeMs": None}
        if len(self.rx_in) < 50:
            return out
        t0, ts0 = self.rx_in[0]
        unwrapped, last, base = [], ts0, 0
        for _, ts in self.rx_in:
            d = (ts - last) & 0xFFFFFFFF
            base += d - (1 << 32) if d >= 1 << 31 else d
            last = ts
            unwrapped.append(base)
        transit = [(t - t0) * 1000 - u / 48 for (t, _), u in zip(self.rx_in, unwrapped)]
        windows = [max(transit[i:i + 25]) for i in range(0, len(transit) - 24, 25)]
        if windows:
            med = sorted(windows)[len(windows) // 2]
            out["senderSpikeMs"] = round(max(windows) - med, 1)
        return out

    def _rx_loop(self):
        socks = [self.in_sock, self.echo_sock]
        while not self._stop:
            try:
                ready, _, _ = select.select(socks, [], [], 0.1)
            except (OSError, ValueError):
                return
            for s in ready:
                try:
                    data, _addr = s.recvfrom(65536)
                except OSError:
                    continue
                now = time.monotonic()
                if s is self.in_sock:
                    if self.t0 is None:
                        self.t0 = now
                    if is_rtp(data):
                        self.rx_in.append((now, int.from_bytes(data[4:8], "big")))
                    leg, out_sock, dest = self.leg_in, self.echo_sock, self.echo_addr
                else:
                    leg, out_sock, dest = self.leg_out, self.in_sock, self.receiver_addr
                leg.stats.received += 1
                if dest is None:
                    self.no_target += 1
                    continue
                lost, delay = leg.decide(now, self.t0)
                if leg is self.leg_out and self.rr_interval > 0:
                    self._account_rr(data, lost, now, _addr)
                if lost:
                    leg.stats.lost += 1
                    if leg is self.leg_in and is_rtp(data):
                        self.in_lost_ts.append(int.from_bytes(data[4:8], "big"))
                    continue
                due = leg.schedule(now, delay)
                with self._cv:
                    heapq.heappush(self._heap, (due, self._seq, out_sock, dest, data, leg))
                    self._seq += 1
                    self._cv.notify()

    def inbound_lost_frames(self, clock: int = 48000, frame_s: float = 0.020) -> set[int]:
        """The source's 20 ms frames (index from the first inbound packet, by RTP timestamp) whose packet the way in
        dropped: the speech no echo received. Both senders start at the file's first sample and send one frame per
        packet."""
        if not self.rx_in:
            return set()
        ts0 = self.rx_in[0][1]
        per = clock * frame_s
        since = ((ts - ts0) & 0xFFFFFFFF for ts in self.in_lost_ts)
        return {int(round(d / per)) for d in since if d < 0x80000000}  # 2^31 or more: from before the first packet

    def write_arrivals(self, path: str):
        """Writes the relay's log of forwarded packets as CSV: leg, time forwarded (s since the first inbound packet),
        RTP sequence number and timestamp (RTCP and short datagrams are skipped; lost packets are missing)."""
        t0 = self.t0 or 0.0
        with open(path, "w") as f:
            f.write("leg,arrival_s,seq,timestamp\n")
            for leg, at, head in self.in_log:
                if not is_rtp(head):
                    continue
                seq = int.from_bytes(head[2:4], "big")
                ts = int.from_bytes(head[4:8], "big")
                f.write(f"{leg},{at - t0:.6f},{seq},{ts}\n")

    def _account_rr(self, data: bytes, lost: bool, now: float, echo_from):
        if not is_rtp(data):
            return  # not RTP (RTCP from the echo)
        rr = self._rr
        rr["ssrc"] = int.from_bytes(data[8:12], "big")
        rr["highest"] = max(rr["highest"], int.from_bytes(data[2:4], "big"))
        rr["lost" if lost else "received"] += 1
        if rr["last"] is None:
            rr["last"] = now
        if now - rr["last"] < self.rr_interval:
            return
        expected = rr["received"] + rr["lost"]
        fraction = min(255, (rr["lost"] * 256) // expected) if expected else 0
        rr["cum_lost"] += rr["lost"]
        # RR: V=2 RC=1 PT=201 length=7; reporter SSRC; one block (SSRC, fraction, cumulative, highest, jitter 0,
        # LSR 0, DLSR 0).
        pkt = bytes([0x81, 201, 0, 7]) + (0x52454C59).to_bytes(4, "big") + rr["ssrc"].to_bytes(4, "big")
        pkt += bytes([fraction]) + (rr["cum_lost"] & 0xFFFFFF).to_bytes(3, "big")
        pkt += rr["highest"].to_bytes(4, "big") + bytes(12)
        try:
            self.echo_sock.sendto(pkt, echo_from)
            self.rr_sent += 1
        except OSError:
            pass
        rr["received"] = rr["lost"] = 0
        rr["last"] = now

    def _tx_loop(self):
        while True:
            with self._cv:
                while not self._stop:
                    if self._heap:
                        wait = self._heap[0][0] - time.monotonic()
                        if wait <= 0:
                            break
                        self._cv.wait(min(wait, 0.05))
                    else:
                        self._cv.wait(0.1)
                if self._stop:
                    return
                _due, _s, sock, dest, data, leg = heapq.heappop(self._heap)
            try:
                sock.sendto(data, dest)
                leg.stats.forwarded += 1
                sent = time.monotonic()
                name = "in" if leg is self.leg_in else "out"
                self.tx_late[name] = max(self.tx_late[name], sent - _due)
                self.in_log.append((name, sent, data[:12]))
            except OSError:
                pass
