#![no_main]
//! Any bytes: RoQ datagram parsing never panics and round-trips what it accepts (in shortest varint form).
use libfuzzer_sys::fuzz_target;
use mediaproc_wire::RoqDatagram;

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = RoqDatagram::parse(data) {
        let mut buf = vec![0u8; d.encoded_len()];
        let n = d.write(&mut buf).expect("serializes");
        assert_eq!(RoqDatagram::parse(&buf[..n]).expect("re-parse"), d);
    }
});
