//! The baseline measured in the same run: libopus alone doing a call's codec work per tick (decode the edge's
//! packet at 16 kHz; for duplex bots also encode a 16 kHz frame with the daemon's default settings), on one thread
//! of this process, its decoder at the daemon's decoder complexity. Timed in thread CPU time, as the daemon's side is (so preemption by a neighbour counts for
//! neither), best of a few repetitions.

use mediaproc_pipeline::{EncoderSettings, OpusDecoder, OpusEncoder, SampleRate};

const FRAMES: usize = 1000;
const REPETITIONS: usize = 3;

/// µs per call-tick of bare libopus, decoding at `decoder_complexity`; `duplex` adds the encode.
pub fn codec_us_per_call_tick(duplex: bool, decoder_complexity: u8) -> Result<f64, String> {
    let err = |e: mediaproc_pipeline::Error| e.to_string();
    // A second of speech-like audio, encoded once: the packets the edge sends.
    let mut encoder =
        OpusEncoder::new(SampleRate::HZ_16000, EncoderSettings::default()).map_err(err)?;
    let mut voice = mediaproc_callsim::voice::Voice::new(0, 1, 1000, 1000);
    let (mut pcm, mut out) = ([0i16; 320], [0u8; 1500]);
    let mut packets = Vec::with_capacity(50);
    for n in 0..50 {
        voice.frame(n as u64, &mut pcm);
        let len = encoder.encode(&pcm, &mut out).map_err(err)?;
        packets.push(out[..len].to_vec());
    }
    let mut best = f64::INFINITY;
    for _ in 0..REPETITIONS {
        let mut decoder =
            OpusDecoder::with_complexity(SampleRate::HZ_16000, decoder_complexity).map_err(err)?;
        let mut encoder =
            OpusEncoder::new(SampleRate::HZ_16000, EncoderSettings::default()).map_err(err)?;
        let start = thread_cpu_us();
        for i in 0..FRAMES {
            decoder
                .decode(&packets[i % packets.len()], &mut pcm)
                .map_err(err)?;
            if duplex {
                encoder.encode(&pcm, &mut out).map_err(err)?;
            }
        }
        best = best.min((thread_cpu_us() - start) / FRAMES as f64);
    }
    Ok(best)
}

/// CPU time of the calling thread, in µs.
fn thread_cpu_us() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID needs no other argument.
    unsafe {
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts);
    }
    ts.tv_sec as f64 * 1e6 + ts.tv_nsec as f64 / 1e3
}
