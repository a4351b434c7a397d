//! RTCP bookkeeping of one RTP stream pair (RFC 3550 §6.4), sans-IO and shared by both edges: the QUIC
//! endpoint keeps one [`StreamRtcp`] per flow, the RTP/UDP endpoint one for its port. Time is passed in
//! (nanoseconds since the endpoint's clock origin, and the NTP time of that instant); nothing here reads a
//! clock or touches a socket.
//!
//! Arithmetic is overflow-free for any uptime: conversions from nanoseconds to RTP clock units and to
//! 1/65536 s go through `u128`, and the results are taken modulo 2^32 where the wire format wraps (RTP
//! timestamps, arrival times for the jitter estimate) or saturated where it does not (DLSR).

use std::sync::atomic::Ordering::Relaxed;

use mediaproc_wire::RtpPacket;
use mediaproc_wire::rtcp::{self, ReportBlock, RtcpPacket};
use mediaproc_wire::stats::ReceiveStats;

use crate::stats::SessionStats;

/// SDES CNAME the MP uses in its RTCP.
pub const CNAME: &[u8] = b"mediaproc";

/// `ns` nanoseconds in units of a `rate` Hz clock, modulo 2^64 (exact; no intermediate overflow).
pub fn ns_to_units(ns: u64, rate: u64) -> u64 {
    (u128::from(ns) * u128::from(rate) / 1_000_000_000) as u64
}

/// `ns` nanoseconds in 1/65536 s (the unit of DLSR and RTT), saturated to `u32::MAX` (18.2 hours).
pub fn ns_to_q16(ns: u64) -> u32 {
    u32::try_from(ns_to_units(ns, 65_536)).unwrap_or(u32::MAX)
}

/// What we sent on a stream, for our sender reports.
#[derive(Debug, Clone, Copy)]
struct Sent {
    ssrc: u32,
    packets: u32,
    octets: u32,
    rtp_timestamp: u32,
    at_ns: u64,
}

/// RTCP state of one stream pair: reception statistics of what the peer sends, the peer's last SR, and what
/// we sent.
#[derive(Debug, Clone)]
pub struct StreamRtcp {
    clock_rate: u64,
    rx: ReceiveStats,
    /// SSRC of the peer's stream (last seen).
    remote_ssrc: u32,
    /// Middle 32 bits of the peer's last SR NTP time, and when it arrived (ns since origin).
    last_sr: Option<(u32, u64)>,
    sent: Option<Sent>,
}

/// What a received RTCP compound told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtcpInput {
    /// Every packet of the compound parsed.
    pub ok: bool,
    /// Round-trip time in microseconds from a report block about our stream, if one carried an LSR.
    pub rtt_us: Option<u64>,
    /// Fraction of our packets lost (1/256) from the last report block about our stream, if one came.
    pub fraction_lost: Option<u8>,
}

impl StreamRtcp {
    /// A stream with an RTP clock of `clock_rate` Hz.
    pub fn new(clock_rate: u64) -> Self {
        Self {
            clock_rate,
            rx: ReceiveStats::default(),
            remote_ssrc: 0,
            last_sr: None,
            sent: None,
        }
    }

    /// SSRC of the peer's stream (last seen; 0 before any).
    pub fn remote_ssrc(&self) -> u32 {
        self.remote_ssrc
    }

    /// Reception statistics so far.
    pub fn receive_stats(&self) -> &ReceiveStats {
        &self.rx
    }

    /// Accounts a received RTP packet and publishes loss and jitter into `stats`.
    pub fn on_received(&mut self, p: &RtpPacket<'_>, now_ns: u64, stats: &SessionStats) {
        // Truncation to 32 bits is the RTP clock's own wrap; the jitter estimate is wrap-safe.
        let arrival = ns_to_units(now_ns, self.clock_rate) as u32;
        self.rx.on_packet(p.sequence, p.timestamp, arrival);
        self.remote_ssrc = p.ssrc;
        stats.lost.store(self.rx.lost().max(0) as u64, Relaxed);
        stats.jitter_us.store(
            u64::from(self.rx.jitter()) * 1_000_000 / self.clock_rate.max(1),
            Relaxed,
        );
    }

    /// Accounts an RTP packet we sent.
    pub fn on_sent(&mut self, p: &RtpPacket<'_>, now_ns: u64) {
        let prev = self.sent.filter(|s| s.ssrc == p.ssrc);
        self.sent = Some(Sent {
            ssrc: p.ssrc,
            packets: prev.map_or(0, |s| s.packets).wrapping_add(1),
            octets: prev
                .map_or(0, |s| s.octets)
                .wrapping_add(p.payload.len() as u32),
            rtp_timestamp: p.timestamp,
            at_ns: now_ns,
        });
    }

    /// Handles a received RTCP compound packet at `now_ns` (NTP time `ntp_now`).
    pub fn on_rtcp(&mut self, pkt: &[u8], now_ns: u64, ntp_now: u64) -> RtcpInput {
        let now_mid = rtcp::ntp_middle32(ntp_now);
        let ours = self.sent.map(|s| s.ssrc);
        let mut input = RtcpInput {
            ok: true,
            rtt_us: None,
            fraction_lost: None,
        };
        for p in rtcp::parse_compound(pkt) {
            let blocks = match p {
                Ok(RtcpPacket::SenderReport(sr)) => {
                    self.last_sr = Some((rtcp::ntp_middle32(sr.info.ntp_timestamp), now_ns));
                    Some(sr.reports)
                }
                Ok(RtcpPacket::ReceiverReport(rr)) => Some(rr.reports),
                Ok(_) => None,
                Err(_) => {
                    input.ok = false;
                    None
                }
            };
            for b in blocks.iter().flat_map(|b| b.iter()) {
                if Some(b.ssrc) != ours {
                    continue;
                }
                input.fraction_lost = Some(b.fraction_lost);
                if let Some(rtt) = rtcp::round_trip_time(&b, now_mid) {
                    input.rtt_us = Some((u64::from(rtt) * 1_000_000 / 65_536).max(1));
                }
            }
        }
        input
    }

    /// Writes our report into `buf`: an SR when we sent (with a reception block when we also received), an
    /// RR when we only received (as `rr_ssrc`), each followed by SDES CNAME; `None` when there is nothing to
    /// report.
    pub fn write_report(
        &mut self,
        now_ns: u64,
        ntp_now: u64,
        rr_ssrc: u32,
        buf: &mut [u8],
    ) -> Option<usize> {
        let block = (self.rx.received() > 0).then(|| {
            let (lsr, dlsr) = self.last_sr.map_or((0, 0), |(mid, at)| {
                (mid, ns_to_q16(now_ns.saturating_sub(at)))
            });
            self.rx.report_block(self.remote_ssrc, lsr, dlsr)
        });
        let blocks: &[ReportBlock] = match &block {
            Some(b) => std::slice::from_ref(b),
            None => &[],
        };
        let (ssrc, n) = match self.sent {
            Some(s) => {
                let since = ns_to_units(now_ns.saturating_sub(s.at_ns), self.clock_rate);
                let info = rtcp::SenderInfo {
                    ntp_timestamp: ntp_now,
                    // Modulo 2^32, as RTP timestamps are.
                    rtp_timestamp: s.rtp_timestamp.wrapping_add(since as u32),
                    packet_count: s.packets,
                    octet_count: s.octets,
                };
                (
                    s.ssrc,
                    rtcp::write_sender_report(s.ssrc, &info, blocks, buf).ok()?,
                )
            }
            None if block.is_some() => (
                rr_ssrc,
                rtcp::write_receiver_report(rr_ssrc, blocks, buf).ok()?,
            ),
            None => return None,
        };
        let m = rtcp::write_sdes_cname(ssrc, CNAME, buf.get_mut(n..)?).ok()?;
        Some(n + m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_do_not_overflow_after_years() {
        let ten_years = 10 * 365 * 86_400 * 1_000_000_000u64;
        assert_eq!(ns_to_units(ten_years, 48_000), 10 * 365 * 86_400 * 48_000);
        assert_eq!(ns_to_units(1_500_000_000, 8_000), 12_000);
        assert_eq!(ns_to_q16(1_000_000_000), 65_536);
        assert_eq!(ns_to_q16(ten_years), u32::MAX);
        assert_eq!(
            ns_to_units(u64::MAX, 65_536),
            (u128::from(u64::MAX) * 65_536 / 1_000_000_000) as u64
        );
    }

    #[test]
    fn report_after_days_of_uptime_is_consistent() {
        let stats = SessionStats::default();
        let mut s = StreamRtcp::new(48_000);
        // Five days after the origin (the old `elapsed × 48000` overflowed u64 after 4.4 days).
        let t0 = 5 * 86_400 * 1_000_000_000u64;
        for i in 0..50u16 {
            let now = t0 + u64::from(i) * 20_000_000;
            let ts = (ns_to_units(now, 48_000) as u32).wrapping_add(12_345);
            let mut b = [0u8; 64];
            let n = mediaproc_wire::rtp::RtpPacket::new(96, i, ts, 7, &[0u8; 20])
                .write(&mut b)
                .unwrap_or(0);
            let p = RtpPacket::parse(&b[..n]).ok();
            if let Some(p) = p {
                s.on_received(&p, now, &stats);
                s.on_sent(&p, now);
            }
        }
        assert_eq!(s.receive_stats().received(), 50);
        assert_eq!(s.receive_stats().jitter(), 0);
        let mut buf = [0u8; 256];
        let n = s.write_report(t0 + 2_000_000_000, 1 << 40, 1, &mut buf);
        assert!(n.is_some_and(|n| n > 28));
    }

    proptest::proptest! {
        /// A stream with constant network delay has zero jitter and a sane report whenever it starts: after
        /// any uptime (the old `elapsed × rate` overflowed after 4.4 days at 48 kHz) and from any RTP
        /// timestamp (crossing the 32-bit wrap mid-stream).
        #[test]
        fn constant_delay_stream_has_no_jitter_at_any_uptime(
            uptime_s in 0u64..(20 * 365 * 86_400),
            ts0 in proptest::prelude::any::<u32>(),
            seq0 in proptest::prelude::any::<u16>(),
            g711 in proptest::prelude::any::<bool>(),
        ) {
            let rate = if g711 { 8_000 } else { 48_000 };
            let step = rate / 50; // 20 ms
            let stats = SessionStats::default();
            let mut s = StreamRtcp::new(rate);
            let t0 = uptime_s * 1_000_000_000;
            let mut b = [0u8; 64];
            for i in 0..100u64 {
                let ts = ts0.wrapping_add((i * step) as u32);
                let n = mediaproc_wire::rtp::RtpPacket::new(96, seq0.wrapping_add(i as u16), ts, 7, &[0u8; 20])
                    .write(&mut b)
                    .unwrap_or(0);
                let p = RtpPacket::parse(&b[..n]);
                proptest::prop_assert!(p.is_ok());
                if let Ok(p) = p {
                    s.on_received(&p, t0 + i * 20_000_000, &stats);
                }
            }
            // Arrival times are whole RTP units apart only up to rounding: at most 1 unit of jitter.
            proptest::prop_assert!(s.receive_stats().jitter() <= 1, "jitter {}", s.receive_stats().jitter());
            proptest::prop_assert_eq!(s.receive_stats().lost(), 0);
            let mut buf = [0u8; 256];
            proptest::prop_assert!(s.write_report(t0 + 3_000_000_000, 1 << 40, 1, &mut buf).is_some());
        }
    }
}
