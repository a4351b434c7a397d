#![no_main]
//! Any bytes: control frame decoding never panics; every decoded message re-encodes and decodes to itself.
use libfuzzer_sys::fuzz_target;
use mediaproc_wire::control::{decode_frame, Decoded};

fuzz_target!(|data: &[u8]| {
    if let Ok(Decoded::Message(msg, _)) = decode_frame(data) {
        let mut buf = vec![0u8; 9000];
        let n = msg.encode(&mut buf).expect("a decoded message encodes");
        assert_eq!(decode_frame(&buf[..n]).expect("re-decode"), Decoded::Message(msg, n));
    }
});
