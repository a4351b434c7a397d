#![no_main]
//! Any bytes: compound RTCP parsing (and SDES chunk/item iteration) never panics.
use libfuzzer_sys::fuzz_target;
use mediaproc_wire::rtcp::{parse_compound, RtcpPacket};

fuzz_target!(|data: &[u8]| {
    for p in parse_compound(data) {
        match p {
            Ok(RtcpPacket::SourceDescription(s)) => {
                for c in s.chunks().flatten() {
                    let _ = c.items().count();
                }
            }
            Ok(RtcpPacket::SenderReport(sr)) => {
                let _ = sr.reports.iter().count();
            }
            Ok(RtcpPacket::ReceiverReport(rr)) => {
                let _ = rr.reports.iter().count();
            }
            Ok(RtcpPacket::Goodbye(b)) => {
                let _ = b.ssrcs().count();
            }
            _ => {}
        }
    }
});
