"""A media edge written from `proto/SPEC.md` alone, on aioquic (another QUIC stack than mediaproc's): it attaches
to one session with its edgeToken and bridges plain RTP/UDP to the session's flows, so the harness's relay,
senders and receiver work unchanged over the QUIC edge.

    UDP in (from the relay)  -> DATAGRAM flow 0 (render, declared payload type, Opus)
    DATAGRAM flow 1 (source) -> UDP out (to the relay's echo socket)

The UDP side uses payload type `--udp-pt` (96, as the senders and the receiver); the flows are declared with `--pt`
and packets carrying exactly that payload type are rewritten between the two (a translating edge). Anything else is
forwarded unchanged and the bridge counts the payload types it sees each way, so a media processor that does not
honour the declared payload type (SPEC §3, §4.1) shows up in the counts and as silence at the receiver.

Run as a child process by the harness:

    python3 -m benches.quality.quic_edge --mp 127.0.0.1:4433 --session-json S.json --reply 127.0.0.1:PORT [--pt 96]

It prints `udp PORT` once the UDP socket is bound, `attached` after AttachOk, and one JSON line of counters when it
ends (SIGINT/SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import signal
import ssl
import struct
import sys
import uuid

from aioquic.asyncio import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import DatagramFrameReceived, StreamDataReceived, ConnectionTerminated

VERSION = 0x01
ATTACH, ATTACH_OK, DETACH, KEEPALIVE, KEEPALIVE_ACK, ERROR = 0x01, 0x02, 0x03, 0x0A, 0x0B, 0x0C
CODEC_OPUS = 1
MSI_NONE = 0xFFFFFFFF


def varint(v: int) -> bytes:
    if v < 1 << 6:
        return bytes([v])
    if v < 1 << 14:
        return struct.pack("!H", v | 0x4000)
    if v < 1 << 30:
        return struct.pack("!I", v | 0x80000000)
    return struct.pack("!Q", v | 0xC000000000000000)


def read_varint(b: bytes) -> tuple[int, int]:
    if not b:
        raise ValueError("empty")
    n = 1 << (b[0] >> 6)
    if len(b) < n:
        raise ValueError("short varint")
    v = b[0] & 0x3F
    for x in b[1:n]:
        v = (v << 8) | x
    return v, n


def frame(mtype: int, body: bytes) -> bytes:
    return struct.pack("!BBH", VERSION, mtype, len(body)) + body


def flow_decl(flow_id: int, direction: int, context: uuid.UUID, pt: int, codec: int = CODEC_OPUS) -> bytes:
    return varint(flow_id) + bytes([direction, 0]) + context.bytes + struct.pack("!IBB", MSI_NONE, pt, codec)


def attach(session: uuid.UUID, token: bytes, flows: list[bytes]) -> bytes:
    return frame(ATTACH, session.bytes + bytes([len(token)]) + token + bytes([len(flows)]) + b"".join(flows))


class Edge(QuicConnectionProtocol):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.ctrl = None
        self.buf = b""
        self.attached = asyncio.Event()
        self.closed = asyncio.Event()
        self.error = None
        self.udp = None
        self.reply = None
        self.source_flow = 1
        self.pt = 96
        self.udp_pt = 96
        self.counts = {"udpIn": 0, "rtcpOut": 0, "datagramsOut": 0, "datagramsIn": 0, "udpOut": 0, "otherFlow": 0,
                       "ptOut": {}, "ptIn": {}, "errors": []}

    def send_ctrl(self, data: bytes):
        if self.ctrl is None:
            self.ctrl = self._quic.get_next_available_stream_id(is_unidirectional=False)
        self._quic.send_stream_data(self.ctrl, data)
        self.transmit()

    def send_rtp(self, flow: int, pkt: bytes):
        if len(pkt) >= 2:
            pt = str(pkt[1] & 0x7F)
            self.counts["ptOut"][pt] = self.counts["ptOut"].get(pt, 0) + 1
        self._quic.send_datagram_frame(varint(flow) + pkt)
        self.counts["datagramsOut"] += 1
        self.transmit()

    def quic_event_received(self, event):
        if isinstance(event, StreamDataReceived):
            self.buf += event.data
            while len(self.buf) >= 4:
                ver, mtype, length = struct.unpack("!BBH", self.buf[:4])
                if len(self.buf) < 4 + length:
                    break
                body, self.buf = self.buf[4 : 4 + length], self.buf[4 + length :]
                if mtype == ATTACH_OK:
                    self.attached.set()
                elif mtype == ERROR:
                    code = struct.unpack("!H", body[:2])[0]
                    msg = body[19 : 19 + body[18]].decode(errors="replace") if len(body) > 18 else ""
                    self.error = f"Error 0x{code:04x}: {msg}"
                    self.counts["errors"].append(self.error)
                    self.attached.set()
                elif mtype == KEEPALIVE:
                    self.send_ctrl(frame(KEEPALIVE_ACK, body[:8]))
                elif mtype == DETACH:
                    self.counts["errors"].append("Detach")
        elif isinstance(event, DatagramFrameReceived):
            try:
                flow, n = read_varint(event.data)
            except ValueError:
                return
            pkt = event.data[n:]
            self.counts["datagramsIn"] += 1
            if flow != self.source_flow:
                self.counts["otherFlow"] += 1
                return
            if len(pkt) >= 2 and 192 <= pkt[1] <= 223:
                return  # RTCP: not forwarded to the RTP receiver
            pt = str(pkt[1] & 0x7F) if len(pkt) >= 2 else "?"
            self.counts["ptIn"][pt] = self.counts["ptIn"].get(pt, 0) + 1
            if self.udp and self.reply:
                if (pkt[1] & 0x7F) == self.pt and self.pt != self.udp_pt:
                    pkt = pkt[:1] + bytes([(pkt[1] & 0x80) | self.udp_pt]) + pkt[2:]
                self.udp.sendto(pkt, self.reply)
                self.counts["udpOut"] += 1
        elif isinstance(event, ConnectionTerminated):
            self.counts["errors"].append(f"connection closed: {event.error_code} {event.reason_phrase}")
            self.closed.set()


class UdpIn(asyncio.DatagramProtocol):
    def __init__(self, edge_ref):
        self.edge_ref = edge_ref

    def datagram_received(self, data, addr):
        edge = self.edge_ref()
        if edge is not None and edge.attached.is_set():
            edge.counts["udpIn"] += 1
            if len(data) >= 2 and 192 <= data[1] <= 223:
                # The far end's RTCP reports on the MP's stream: SPEC section 4.5 carries them on the source flow.
                edge.counts["rtcpOut"] += 1
                edge._quic.send_datagram_frame(varint(edge.source_flow) + data)
                edge.transmit()
                return
            if len(data) >= 2 and (data[1] & 0x7F) == edge.udp_pt and edge.udp_pt != edge.pt:
                data = data[:1] + bytes([(data[1] & 0x80) | edge.pt]) + data[2:]
            edge.send_rtp(0, data)


async def run(args) -> int:
    sess = json.load(open(args.session_json))
    blob = json.loads(sess["blob"])
    session = uuid.UUID(blob["mpMediaSessionId"])
    token = blob["edgeToken"].encode()
    ctx_r = uuid.UUID(blob["audioRenderContexts"][0])
    ctx_s = uuid.UUID(blob["audioSourceContexts"][0])
    pin = sess.get("certificateSha256", "").replace(":", "").lower()
    host, port = args.mp.rsplit(":", 1)
    rhost, rport = args.reply.rsplit(":", 1)

    cfg = QuicConfiguration(is_client=True, alpn_protocols=["mproq/1"], max_datagram_frame_size=65535,
                            verify_mode=ssl.CERT_NONE, server_name="localhost", idle_timeout=30)
    loop = asyncio.get_running_loop()
    holder = {}
    transport, _ = await loop.create_datagram_endpoint(lambda: UdpIn(lambda: holder.get("edge")),
                                                       local_addr=("127.0.0.1", 0))
    print(f"udp {transport.get_extra_info('sockname')[1]}", flush=True)
    stop = asyncio.Event()
    for s in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(s, stop.set)
    async with connect(host, int(port), configuration=cfg, create_protocol=Edge) as edge:
        # Pin the development certificate (SPEC §2.2): SHA-256 of the DER certificate.
        cert = edge._quic.tls._peer_certificate
        if pin and cert is not None:
            from cryptography.hazmat.primitives.serialization import Encoding
            fp = hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()
            if fp != pin:
                print(json.dumps({"error": f"certificate fingerprint {fp} != pinned {pin}"}), flush=True)
                return 3
        edge.udp = transport
        edge.pt, edge.udp_pt = args.pt, args.udp_pt
        edge.reply = (rhost, int(rport))
        edge.send_ctrl(attach(session, token, [flow_decl(0, 0, ctx_r, args.pt), flow_decl(1, 1, ctx_s, args.pt)]))
        await asyncio.wait_for(edge.attached.wait(), 5)
        if edge.error:
            print(json.dumps({"error": edge.error, **edge.counts}), flush=True)
            return 4
        holder["edge"] = edge
        print("attached", flush=True)
        nonce = 0
        while not stop.is_set() and not edge.closed.is_set():
            try:
                await asyncio.wait_for(stop.wait(), 5)
            except asyncio.TimeoutError:
                nonce += 1
                edge.send_ctrl(frame(KEEPALIVE, struct.pack("!Q", nonce)))
        edge.send_ctrl(frame(DETACH, session.bytes + b"\x00\x00"))
        await asyncio.sleep(0.05)
        print(json.dumps(edge.counts), flush=True)
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mp", required=True)
    ap.add_argument("--session-json", required=True)
    ap.add_argument("--reply", required=True)
    ap.add_argument("--pt", type=int, default=96, help="payload type declared for both flows")
    ap.add_argument("--udp-pt", type=int, default=96, help="payload type on the UDP side (rewritten to/from --pt)")
    args = ap.parse_args()
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
