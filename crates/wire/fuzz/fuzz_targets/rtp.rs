#![no_main]
//! Any bytes: RTP parse never panics; what parses re-serializes and re-parses to the same value; extension
//! elements, audio level and telephone events parse without panicking.
use libfuzzer_sys::fuzz_target;
use mediaproc_wire::rtp::{AudioLevel, TelephoneEvent};
use mediaproc_wire::RtpPacket;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = RtpPacket::parse(data) {
        let mut buf = vec![0u8; p.encoded_len()];
        let n = p.write(&mut buf).expect("a parsed packet serializes");
        assert_eq!(RtpPacket::parse(&buf[..n]).expect("re-parse"), p);
        if let Some(ext) = p.extension {
            for e in ext.elements().flatten() {
                let _ = AudioLevel::parse(e.data);
            }
        }
        let _ = TelephoneEvent::parse(p.payload);
    }
});
