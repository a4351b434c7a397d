//! Zero allocations per frame in the playout's time-scale paths and the encoder's run-time control: a sender 25 %
//! fast (accelerate on most ticks), then 20 % slow (preemptive expand and underruns), with loss (concealment and
//! merge), and far-end loss reports switching in-band FEC on and off — counted by a global allocator.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use mediaproc_pipeline::{
    EncoderOverrides, FecMode, MediaSession, ReceivedAudio, RtpPacketInfo, SampleRate,
    SessionConfig,
};

mod counting;

use counting::{ALLOCS, COUNTING, Counting};

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn time_scaling_and_encoder_control_allocate_nothing() {
    let src = common::Source::new(
        SampleRate::HZ_16000,
        4,
        mediaproc_pipeline::EncoderSettings {
            complexity: 0,
            inband_fec: true,
            expected_loss_percent: 5,
            ..Default::default()
        },
    );
    let (mut s, mut bot) = MediaSession::new(SessionConfig::default(), Duration::ZERO).unwrap();
    let mut out = ReceivedAudio::new(SampleRate::HZ_16000);
    let mut sent = 0u64;
    let mut tick = |s: &mut MediaSession, t: u64, per_4_ticks: u64, sent: &mut u64| {
        let now = Duration::from_millis(t * 20);
        while *sent * 4 < (t + 1) * per_4_ticks {
            let n = *sent;
            *sent += 1;
            if n % 23 == 7 || n % 23 == 8 {
                continue; // lost in pairs: FEC for one, concealment and merge for the other
            }
            let rtp = RtpPacketInfo {
                ssrc: 1,
                sequence: n as u16,
                timestamp: (n as u32).wrapping_mul(960),
                marker: false,
                payload_type: 111,
                audio_level: None,
                source_id: Some(1),
            };
            s.handle_packet(now, &rtp, &src.packets[n as usize % src.packets.len()]);
        }
        if t % 50 == 10 {
            s.set_remote_loss(if t % 100 == 10 { 26 } else { 0 });
        }
        if t % 200 == 60 {
            let fec = if t % 400 == 60 {
                FecMode::On
            } else {
                FecMode::Auto
            };
            s.set_encoder_overrides(EncoderOverrides {
                bitrate_bps: Some(24_000 + (t % 3) as i32 * 4000),
                fec: Some(fec),
                ..Default::default()
            })
            .unwrap();
        }
        if t == 400 {
            // A WebRTC peer's late allowance: its envelope is an order statistic of the transit window.
            s.set_late_allowance(6).unwrap();
        }
        let _ = bot.outbound.push(&src.pcm[..320]);
        while s.handle_tick(now + Duration::from_millis(5)) {
            while s.poll_output().is_some() {}
        }
        while bot.inbound.pop(&mut out) {}
    };
    for t in 0..200 {
        tick(&mut s, t, 4, &mut sent);
    }
    COUNTING.store(true, Ordering::SeqCst);
    // Fast (accelerate), steady, slow (preemptive expand, underruns), steady.
    for (from, to, rate) in [(200, 300, 5), (300, 500, 4), (500, 540, 3), (540, 700, 4)] {
        for t in from..to {
            tick(&mut s, t, rate, &mut sent);
        }
    }
    COUNTING.store(false, Ordering::SeqCst);
    let allocs = ALLOCS.swap(0, Ordering::SeqCst);
    let st = s.stream_stats(1).unwrap();
    assert!(
        st.accelerated_ms > 100 && st.decelerated_ms > 0 && st.concealed_ms > 100 && st.merges > 0,
        "paths exercised: {st:?}"
    );
    assert_eq!(
        allocs, 0,
        "allocations in 500 ticks of time-scaling and encoder control"
    );
}
