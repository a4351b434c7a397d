//! Zero allocations per frame in steady state: decode, jitter buffer (incl. loss, FEC, concealment, reordering),
//! mixing of several speakers, both rings, encode, pacing and events — counted by a global allocator.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::Ordering;
use std::time::Duration;

use mediaproc_pipeline::{
    EncoderSettings, MAX_PAYLOAD, MediaSession, OpusEncoder, ReceivedAudio, RtpPacketInfo,
    SampleRate, SessionConfig,
};

mod counting;

use counting::{ALLOCS, COUNTING, Counting};

#[global_allocator]
static GLOBAL: Counting = Counting;

fn run(rate: SampleRate) {
    let cfg = SessionConfig {
        rate,
        tick_phase: Duration::from_millis(3),
        ..SessionConfig::default()
    };
    let (mut s, mut bot) = MediaSession::new(cfg, Duration::ZERO).unwrap();
    // Three remote speakers, pre-encoded (the sender is not part of the measured pipeline).
    let mut enc = OpusEncoder::new(SampleRate::HZ_48000, EncoderSettings::default()).unwrap();
    let mut buf = [0u8; MAX_PAYLOAD];
    let packets: Vec<Vec<u8>> = (0..50)
        .map(|n| {
            let pcm: Vec<i16> = (0..960)
                .map(|i| {
                    (((n * 960 + i) as f32 * 0.05).sin() * 4000.0 * ((n % 10) as f32 / 10.0)) as i16
                })
                .collect();
            let len = enc.encode(&pcm, &mut buf).unwrap();
            buf[..len].to_vec()
        })
        .collect();
    let spf = rate.samples_per_frame();
    let bot_frame: Vec<i16> = (0..spf)
        .map(|i| ((i as f32 * 0.1).sin() * 3000.0) as i16)
        .collect();
    let mut out = ReceivedAudio::new(rate);
    let mut tick = |n: u64, s: &mut MediaSession| {
        let now = Duration::from_millis(n * 20);
        for msi in 0..3u32 {
            // Loss, reordering and a duplicate now and then, so FEC, concealment and the late path run too.
            let k = n.wrapping_sub(u64::from(msi % 2)) as usize;
            if (n + u64::from(msi)) % 17 == 0 {
                continue;
            }
            let rtp = RtpPacketInfo {
                ssrc: 10 + msi,
                sequence: k as u16,
                timestamp: (k as u32).wrapping_mul(960),
                marker: false,
                payload_type: 111,
                audio_level: if msi == 2 { Some(30) } else { None },
                source_id: Some(100 + msi),
            };
            s.handle_packet(
                now + Duration::from_millis(1),
                &rtp,
                &packets[k % packets.len()],
            );
            if n % 29 == 0 {
                s.handle_packet(
                    now + Duration::from_millis(1),
                    &rtp,
                    &packets[k % packets.len()],
                );
            }
        }
        if n % 2 == 0 {
            let _ = bot.outbound.push(&bot_frame);
            let _ = bot.outbound.push(&bot_frame);
        }
        if n % 50 == 0 {
            bot.outbound.mark("chunk").unwrap();
        }
        if n % 200 == 100 {
            bot.outbound.clear();
        }
        while s.handle_tick(now + Duration::from_millis(3)) {
            while s.poll_output().is_some() {}
        }
        while bot.inbound.pop(&mut out) {}
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
    let st = s.stream_stats(100).unwrap();
    assert!(
        st.concealed + st.fec_recovered > 10 && st.duplicate > 5,
        "loss paths exercised: {st:?}"
    );
    assert!(
        s.stats().pacer.encoded > 200,
        "encoder exercised: {:?}",
        s.stats()
    );
    assert_eq!(
        allocs,
        0,
        "allocations in 500 steady-state ticks at {} Hz",
        rate.hz()
    );
}

#[test]
fn zero_allocations_per_frame_in_steady_state() {
    // Both in one test: the counter is global and tests run on parallel threads.
    run(SampleRate::HZ_16000);
    run(SampleRate::new(44_100).unwrap());
}
