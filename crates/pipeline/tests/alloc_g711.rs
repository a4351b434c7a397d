//! Zero allocations per frame for G.711 sessions: G.711 decode (8 → 16 kHz), concealment of lost packets, the
//! playout engine, encode (16 → 8 kHz) and pacing — and run-time switches of the receive payload table, of a remote
//! stream's codec (PCMU → PCMA → Opus) and of the send codec — counted by a global allocator.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::Ordering;
use std::time::Duration;

use mediaproc_pipeline::{
    Codec, MAX_PAYLOAD, MediaSession, Output, ReceivedAudio, RtpPacketInfo, SampleRate,
    SessionConfig,
};

mod counting;

use counting::{ALLOCS, COUNTING, Counting};

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A packet in flight (fixed storage: the network must not allocate either).
#[derive(Clone, Copy)]
struct InFlight {
    at: Duration,
    rtp: RtpPacketInfo,
    len: usize,
    data: [u8; MAX_PAYLOAD],
}

fn run(rate: SampleRate) {
    let cfg = SessionConfig {
        rate,
        codec: Codec::Pcmu,
        payload_type: 0,
        tick_phase: Duration::from_millis(3),
        ..SessionConfig::default()
    };
    let (mut s, mut bot) = MediaSession::new(cfg, Duration::ZERO).unwrap();
    let spf = rate.samples_per_frame();
    let bot_frame: Vec<i16> = (0..spf)
        .map(|i| ((i as f32 * 0.1).sin() * 3000.0) as i16)
        .collect();
    let mut out = ReceivedAudio::new(rate);
    // A loopback network of 8 packets, 30 ms.
    let mut net = [InFlight {
        at: Duration::ZERO,
        rtp: RtpPacketInfo::default(),
        len: 0,
        data: [0; MAX_PAYLOAD],
    }; 8];
    let (mut head, mut tail) = (0usize, 0usize);
    let mut sent = 0u64;
    let mut tick = |n: u64, s: &mut MediaSession| {
        match n {
            300 => {
                s.set_receive_payload_type(8, Codec::Pcma).unwrap();
                s.set_send_codec(Codec::Pcma, 8).unwrap();
            }
            450 => {
                s.set_receive_payload_type(111, Codec::Opus).unwrap();
                s.set_send_codec(Codec::Opus, 111).unwrap();
            }
            550 => s.set_send_codec(Codec::Pcmu, 0).unwrap(),
            _ => {}
        }
        for ms in 0..20 {
            let now = Duration::from_millis(n * 20 + ms);
            while head != tail && net[head % 8].at <= now {
                let p = &net[head % 8];
                s.handle_packet(p.at, &p.rtp, &p.data[..p.len]);
                head += 1;
            }
            if n % 2 == 0 && ms == 0 {
                let _ = bot.outbound.push(&bot_frame);
                let _ = bot.outbound.push(&bot_frame);
            }
            while s.handle_tick(now) {
                while let Some(o) = s.poll_output() {
                    if let Output::Transmit(p) = o {
                        sent += 1;
                        // 1 packet in 13 lost, so concealment and merge run.
                        if sent % 13 != 0 && tail - head < 8 {
                            let slot = &mut net[tail % 8];
                            slot.at = now + Duration::from_millis(30);
                            slot.rtp = RtpPacketInfo {
                                ssrc: p.ssrc,
                                sequence: p.sequence,
                                timestamp: p.timestamp,
                                marker: p.marker,
                                payload_type: p.payload_type,
                                audio_level: None,
                                source_id: Some(7),
                            };
                            slot.len = p.payload.len();
                            slot.data[..p.payload.len()].copy_from_slice(p.payload);
                            tail += 1;
                        }
                    }
                }
            }
            while bot.inbound.pop(&mut out) {}
        }
    };
    for n in 0..200 {
        tick(n, &mut s);
    }
    COUNTING.store(true, Ordering::SeqCst);
    for n in 200..700 {
        tick(n, &mut s);
    }
    COUNTING.store(false, Ordering::SeqCst);
    let allocs = ALLOCS.swap(0, Ordering::SeqCst);
    let st = s.stream_stats(7).unwrap();
    assert!(
        st.lost > 10 && st.concealed_ms > 100,
        "loss paths exercised: {st:?}"
    );
    assert!(st.resyncs >= 3, "codec switches exercised: {st:?}");
    assert_eq!(s.stream_codec(7), Some(Codec::Pcmu));
    assert!(s.stats().pacer.encoded > 400, "{:?}", s.stats());
    assert_eq!(s.stats().unknown_payload_type, 0, "{:?}", s.stats());
    assert_eq!(
        allocs,
        0,
        "allocations in 500 G.711 ticks at {} Hz",
        rate.hz()
    );
}

#[test]
fn zero_allocations_per_frame_with_g711() {
    // Both in one test: the counter is global and tests run on parallel threads.
    run(SampleRate::HZ_16000);
    run(SampleRate::new(44_100).unwrap());
}
