//! The built-in bots that run as tasks: `record`, `play`, `tone`. (`echo` runs on the media
//! worker itself, for the lowest round trip; external bots use the WebSocket, see [`crate::ws`].)

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mediaproc_pipeline::{ReceivedAudio, SampleRate};
use uuid::Uuid;

use crate::request::BotKind;
use crate::session::BotPort;

/// How far ahead of real time the `play` and `tone` bots keep the outbound queue filled.
pub const PLAYOUT_LEAD_FRAMES: usize = 10;

/// A running built-in bot.
#[derive(Debug)]
pub struct BotTask {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for BotTask {
    fn drop(&mut self) {
        // A bot whose session never started (or is being torn down) must not run on.
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl BotTask {
    /// Stops the bot and waits for it (the recorder finalises its WAV files).
    pub async fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// Starts a built-in bot on its own thread (file I/O stays off the media workers and the async runtime).
pub fn spawn(
    kind: &BotKind,
    port: BotPort,
    session: Uuid,
    rate: SampleRate,
    recordings: &Path,
) -> Result<BotTask, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let body: Box<dyn FnOnce(BotPort, Arc<AtomicBool>) + Send> = match kind {
        BotKind::Record => {
            std::fs::create_dir_all(recordings)
                .map_err(|err| format!("recordings directory {}: {err}", recordings.display()))?;
            let dir = recordings.to_path_buf();
            Box::new(move |port, stop| record(port, stop, &dir, session, rate))
        }
        BotKind::Play { file } => {
            let samples = load_wav(file, rate)?;
            Box::new(move |port, stop| play(port, stop, samples, rate))
        }
        BotKind::Tone { frequency_hz } => {
            let frequency = *frequency_hz;
            Box::new(move |port, stop| tone(port, stop, frequency, rate))
        }
        BotKind::WebSocket | BotKind::Echo | BotKind::InProcess => {
            return Err("not a task bot".to_owned());
        }
    };
    let stop_for_thread = stop.clone();
    let thread = std::thread::Builder::new()
        .name(format!("bot-{}", kind.name()))
        .spawn(move || body(port, stop_for_thread))
        .map_err(|err| format!("cannot start the bot: {err}"))?;
    Ok(BotTask {
        stop,
        thread: Some(thread),
    })
}

/// Paces a bot thread by absolute deadlines (`start + n × 20 ms`).
struct Pace {
    start: std::time::Instant,
    n: u32,
}

impl Pace {
    fn new() -> Self {
        Pace {
            start: std::time::Instant::now(),
            n: 0,
        }
    }

    fn wait(&mut self) {
        self.n += 1;
        let deadline = self.start + Duration::from_millis(20) * self.n;
        let now = std::time::Instant::now();
        if deadline > now {
            std::thread::sleep(deadline - now);
        }
    }
}

fn record(mut port: BotPort, stop: Arc<AtomicBool>, dir: &Path, session: Uuid, rate: SampleRate) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate.hz(),
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mixed_path = dir.join(format!("{session}-mixed.wav"));
    let Ok(mut mixed) = hound::WavWriter::create(&mixed_path, spec) else {
        tracing::error!(session = %session, path = %mixed_path.display(), "cannot create the recording");
        return;
    };
    let mut speakers: Vec<(u32, hound::WavWriter<std::io::BufWriter<std::fs::File>>)> = Vec::new();
    let mut frame = Box::new(ReceivedAudio::new(rate));
    let mut pace = Pace::new();
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        while port.endpoint.inbound.pop(&mut frame) {
            for &sample in frame.mixed() {
                let _ = mixed.write_sample(sample);
            }
            for i in 0..frame.unmixed_len() {
                let Some((msi, samples)) = frame.unmixed(i) else {
                    continue;
                };
                let index = match speakers.iter().position(|(id, _)| *id == msi) {
                    Some(index) => index,
                    None => match hound::WavWriter::create(
                        dir.join(format!("{session}-{msi}.wav")),
                        spec,
                    ) {
                        Ok(writer) => {
                            speakers.push((msi, writer));
                            speakers.len() - 1
                        }
                        Err(_) => continue,
                    },
                };
                let writer = &mut speakers[index].1;
                for &sample in samples {
                    let _ = writer.write_sample(sample);
                }
            }
        }
        while port.events.try_recv().is_ok() {}
        if stopping {
            break;
        }
        pace.wait();
    }
    if let Err(err) = mixed.finalize() {
        tracing::error!(session = %session, "cannot finalise the recording: {err}");
    }
    for (_, writer) in speakers {
        let _ = writer.finalize();
    }
    tracing::info!(session = %session, path = %mixed_path.display(), "recording finalised");
}

fn play(mut port: BotPort, stop: Arc<AtomicBool>, samples: Vec<i16>, rate: SampleRate) {
    let spf = rate.samples_per_frame();
    let mut chunks = samples.chunks(spf);
    let mut last = vec![0i16; spf];
    let mut pace = Pace::new();
    while !stop.load(Ordering::Relaxed) {
        while port.endpoint.outbound.queued_frames() < PLAYOUT_LEAD_FRAMES {
            let Some(chunk) = chunks.next() else { break };
            last[..chunk.len()].copy_from_slice(chunk);
            last[chunk.len()..].fill(0);
            if port.endpoint.outbound.push(&last).is_err() {
                break;
            }
        }
        while port.events.try_recv().is_ok() {}
        pace.wait();
    }
}

fn tone(mut port: BotPort, stop: Arc<AtomicBool>, frequency: f32, rate: SampleRate) {
    let spf = rate.samples_per_frame();
    let mut frame = vec![0i16; spf];
    let mut phase = 0.0f32;
    let step = std::f32::consts::TAU * frequency / rate.hz() as f32;
    let mut pace = Pace::new();
    while !stop.load(Ordering::Relaxed) {
        while port.endpoint.outbound.queued_frames() < PLAYOUT_LEAD_FRAMES {
            for sample in frame.iter_mut() {
                *sample = (phase.sin() * 8000.0) as i16;
                phase = (phase + step) % std::f32::consts::TAU;
            }
            if port.endpoint.outbound.push(&frame).is_err() {
                break;
            }
        }
        while port.events.try_recv().is_ok() {}
        pace.wait();
    }
}

/// Loads a WAV file as mono 16-bit PCM at `rate` (channels are averaged; other rates are resampled).
pub fn load_wav(path: &Path, rate: SampleRate) -> Result<Vec<i16>, String> {
    let mut reader = hound::WavReader::open(path)
        .map_err(|err| format!("bot.file: {}: {err}", path.display()))?;
    let spec = reader.spec();
    let raw: Vec<i32> = match spec.sample_format {
        hound::SampleFormat::Int => reader.samples::<i32>().collect::<Result<_, _>>(),
        hound::SampleFormat::Float => reader
            .samples::<f32>()
            .map(|s| s.map(|v| (v * 32767.0) as i32))
            .collect::<Result<_, _>>(),
    }
    .map_err(|err| format!("bot.file: {}: {err}", path.display()))?;
    let shift = u32::from(spec.bits_per_sample).saturating_sub(16);
    let samples: Vec<i16> = raw
        .iter()
        .map(|&s| (s >> shift).clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16)
        .collect();
    mediaproc_pipeline::to_mono_at(&samples, usize::from(spec.channels), spec.sample_rate, rate)
        .map_err(|err| format!("bot.file: {}: {err}", path.display()))
}
