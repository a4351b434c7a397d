//! The media path of a connection: datagrams in → flow → the session's receive ring; the sessions'
//! transmit rings → datagrams out; RTCP in both directions through the sans-IO [`crate::rtcp`] module.
//!
//! Per packet: no allocation (datagram buffers are carved from the connection's arena), no lock, no log
//! line. Every drop is counted: unparsable datagrams in `malformed`, unknown flows in `unknown_flow`,
//! unexpected packets in the session's `rx_unexpected`, unsendable ones in `tx_dropped`.

use bytes::Bytes;
use mediaproc_wire::control::{Direction, MediaKind};
use mediaproc_wire::{RoqDatagram, RtpPacket, roq};

use super::ARENA_LEN;
use super::connection::{Conn, add2, inc2};
use crate::ring::MAX_PACKET_LEN;
use crate::stats::{add, inc};

impl Conn {
    pub(super) fn on_datagram(&mut self, d: &Bytes) {
        let st = [&self.shared.stats, &*self.cstats];
        inc2(st, |s| &s.datagrams_rx);
        add2(st, |s| &s.bytes_rx, d.len() as u64);
        let Ok(dg) = RoqDatagram::parse(d) else {
            inc2(st, |s| &s.malformed);
            return;
        };
        let Some(route) = self.flows.get_mut(&dg.flow_id) else {
            inc2(st, |s| &s.unknown_flow);
            return;
        };
        let Some(sess) = self.sessions.get_mut(route.slot).and_then(Option::as_mut) else {
            inc2(st, |s| &s.unknown_flow);
            return;
        };
        let now_ns = self.shared.now_ns();
        if roq::is_rtcp(dg.packet) {
            let ntp = self.shared.ntp_at(std::time::Duration::from_nanos(now_ns));
            let input = route.rtcp.on_rtcp(dg.packet, now_ns, ntp);
            sess.stats.record_rtcp(&input);
            if input.ok {
                inc(&sess.stats.rx_rtcp);
            } else {
                inc(&sess.stats.rx_malformed);
                inc2(st, |s| &s.malformed);
            }
            return;
        }
        if route.decl.direction != Direction::Render {
            inc(&sess.stats.rx_unexpected);
            return;
        }
        let p = match RtpPacket::parse(dg.packet) {
            Ok(p) => p,
            Err(_) => {
                inc(&sess.stats.rx_malformed);
                inc2(st, |s| &s.malformed);
                return;
            }
        };
        route.rtcp.on_received(&p, now_ns, &sess.stats);
        if route.decl.media != MediaKind::Audio {
            // Reserved kinds are accepted but not processed in version 1.
            inc(&sess.stats.rx_unexpected);
            return;
        }
        inc(&sess.stats.rx_packets);
        add(&sess.stats.rx_bytes, dg.packet.len() as u64);
        // Cannot fail: parse() bounds RTP packets by the datagram, and quinn datagrams fit the slot size.
        if sess.ports.rx.push(dg.flow_id, now_ns, dg.packet).is_err() {
            inc(&sess.stats.rx_unexpected);
        }
    }

    /// Drains every attached session's transmit ring into datagrams.
    pub(super) fn flush_tx(&mut self) {
        let st = [&self.shared.stats, &*self.cstats];
        let now_ns = self.shared.now_ns();
        for (slot, sess) in self.sessions.iter_mut().enumerate() {
            let Some(sess) = sess else { continue };
            while let Some(meta) = sess.ports.tx.pop(&mut self.scratch) {
                let route = match self.flows.get_mut(&meta.flow_id) {
                    Some(r) if r.decl.direction == Direction::Source && r.slot == slot => r,
                    _ => {
                        inc(&sess.stats.tx_dropped);
                        continue;
                    }
                };
                if meta.len > MAX_PACKET_LEN {
                    inc(&sess.stats.tx_dropped);
                    continue;
                }
                if let Ok(p) = RtpPacket::parse(&self.scratch[..meta.len]) {
                    route.rtcp.on_sent(&p, now_ns);
                }
                let total = roq::varint_len(meta.flow_id).unwrap_or(8) + meta.len;
                if self.arena.capacity() - self.arena.len() < total {
                    self.arena.reserve(ARENA_LEN.max(total));
                }
                let start = self.arena.len();
                self.arena.resize(start + total, 0);
                let n = match roq::write_header(meta.flow_id, &mut self.arena[start..]) {
                    Ok(n) => n,
                    Err(_) => {
                        self.arena.truncate(start);
                        inc(&sess.stats.tx_dropped);
                        continue;
                    }
                };
                self.arena[start + n..start + total].copy_from_slice(&self.scratch[..meta.len]);
                let dgram = self.arena.split().freeze();
                match self.conn.send_datagram(dgram) {
                    Ok(()) => {
                        sess.stats.record_tx_wait(meta.time_ns, now_ns);
                        inc(&sess.stats.tx_packets);
                        add(&sess.stats.tx_bytes, meta.len as u64);
                        inc2(st, |s| &s.datagrams_tx);
                        add2(st, |s| &s.bytes_tx, total as u64);
                    }
                    Err(_) => inc(&sess.stats.tx_dropped),
                }
            }
        }
    }

    /// Sends an SR (source flows we sent on) or an RR (render flows we received on), each with an SDES CNAME,
    /// on every flow of the connection (RFC 3550 §6; proto/SPEC.md §4.5).
    pub(super) fn send_rtcp(&mut self) {
        let st = [&self.shared.stats, &*self.cstats];
        let now_ns = self.shared.now_ns();
        let ntp = self.shared.ntp_at(std::time::Duration::from_nanos(now_ns));
        let mut pkt = [0u8; 256];
        for (flow_id, route) in self.flows.iter_mut() {
            let rr_ssrc = 0x4D50_0000 ^ (*flow_id as u32);
            let Some(n) = route.rtcp.write_report(now_ns, ntp, rr_ssrc, &mut pkt) else {
                continue;
            };
            let total = roq::varint_len(*flow_id).unwrap_or(8) + n;
            if self.arena.capacity() - self.arena.len() < total {
                self.arena.reserve(ARENA_LEN.max(total));
            }
            let start = self.arena.len();
            self.arena.resize(start + total, 0);
            let Ok(h) = roq::write_header(*flow_id, &mut self.arena[start..]) else {
                self.arena.truncate(start);
                continue;
            };
            self.arena[start + h..start + total].copy_from_slice(&pkt[..n]);
            if self.conn.send_datagram(self.arena.split().freeze()).is_ok() {
                inc2(st, |s| &s.datagrams_tx);
                add2(st, |s| &s.bytes_tx, total as u64);
            }
        }
    }
}
