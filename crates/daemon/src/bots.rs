//! The built-in bots that run as tasks: `record`, `play`, `tone`. (`echo` runs on the media worker itself, for the
//! lowest round trip; external bots use the WebSocket, see `ws`.)
//!
//! Each task bot runs on its own thread, so file I/O stays off the media workers and the async runtime. What a peer
//! or a bot could grow is capped:
//! - **record**: a file closes at `recording_max_seconds` or `recording_max_bytes` (kept far below the 4 GiB a
//!   WAV header's u32 sizes can say) and the next part opens (`<session>-mixed.1.wav`) or, without rotation, that
//!   stream stops; a session opens at most `recording_max_files` files (a new speaker beyond it is not recorded).
//!   Each cap, refusal and write error is counted in the session's statistics, noted in its notices and logged
//!   once. Files are created new (never through a symlink) with mode 0600.
//! - **play**: the file must be a regular file inside `media_dir` (canonicalised; `..` and symlinks out of it are
//!   refused), opened non-blocking (a FIFO cannot hold a thread) and checked with `fstat`, at most
//!   `play_max_bytes`, read on a blocking thread (`spawn_blocking`) before the session starts.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mediaproc_pipeline::{ReceivedAudio, SampleRate};
use serde_json::json;
use uuid::Uuid;

use crate::config::Config;
use crate::request::BotKind;
use crate::session::{BotPort, Dropped, LiveSession};

/// How far ahead of real time the `play` and `tone` bots keep the outbound queue filled.
pub const PLAYOUT_LEAD_FRAMES: usize = 10;
/// Bytes of a WAV header as hound writes it for 16-bit PCM.
pub const WAV_HEADER_BYTES: u64 = 44;
/// Streams (the mix and speakers) one recorder keeps track of; a speaker beyond it is not recorded (counted).
pub const MAX_TRACKS: usize = 256;

/// What the task bots may do, from the configuration.
#[derive(Debug, Clone)]
pub struct BotLimits {
    /// Where recordings go.
    pub recordings_dir: PathBuf,
    /// Seconds per recording file.
    pub recording_max_seconds: u64,
    /// Bytes per recording file.
    pub recording_max_bytes: u64,
    /// Files per session.
    pub recording_max_files: usize,
    /// Rotate (true) or stop (false) at a file's cap.
    pub recording_rotate: bool,
    /// The only directory `play` reads from.
    pub media_dir: PathBuf,
    /// Largest file `play` reads.
    pub play_max_bytes: u64,
}

impl BotLimits {
    /// The limits a configuration sets.
    pub fn from_config(config: &Config) -> Self {
        BotLimits {
            recordings_dir: config.recordings_dir.clone(),
            recording_max_seconds: config.recording_max_seconds,
            recording_max_bytes: config.recording_max_bytes,
            recording_max_files: config.recording_max_files,
            recording_rotate: config.recording_rotate,
            media_dir: config.media_dir.clone(),
            play_max_bytes: config.play_max_bytes,
        }
    }

    /// Samples one recording file holds at most (16-bit mono).
    pub fn max_samples_per_file(&self, rate: SampleRate) -> u64 {
        let by_time = self
            .recording_max_seconds
            .saturating_mul(u64::from(rate.hz()));
        let by_bytes = self.recording_max_bytes.saturating_sub(WAV_HEADER_BYTES) / 2;
        by_time.min(by_bytes).max(1)
    }
}

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

/// Starts a built-in bot on its own thread; a `play` file is read and checked first, off the async runtime.
pub async fn start(
    kind: &BotKind,
    port: BotPort,
    session: Uuid,
    rate: SampleRate,
    limits: &BotLimits,
    live: Arc<LiveSession>,
) -> Result<BotTask, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let body: Box<dyn FnOnce(BotPort, Arc<AtomicBool>) + Send> = match kind {
        BotKind::Record => {
            let dir = limits.recordings_dir.clone();
            let made = dir.clone();
            tokio::task::spawn_blocking(move || std::fs::create_dir_all(&made))
                .await
                .map_err(|err| format!("recordings directory: {err}"))?
                .map_err(|err| format!("recordings directory {}: {err}", dir.display()))?;
            let limits = limits.clone();
            Box::new(move |port, stop| {
                let recorder = Recorder::new(session, rate, &limits, live, |path: &Path| {
                    create_private(path).map(BufWriter::new)
                });
                record(port, stop, recorder);
            })
        }
        BotKind::Play { file } => {
            let (file, dir, max) = (
                file.clone(),
                limits.media_dir.clone(),
                limits.play_max_bytes,
            );
            let samples =
                tokio::task::spawn_blocking(move || load_confined(&file, &dir, max, rate))
                    .await
                    .map_err(|err| format!("bot.file: {err}"))??;
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

/// Creates a new file with mode 0600, never following a symlink and never reusing an existing file.
fn create_private(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
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

/// One recorded stream: the mix, or one speaker.
struct Track<W: Write + Seek> {
    /// `mixed` or the speaker's media source id.
    name: String,
    msi: Option<u32>,
    part: u32,
    writer: Option<hound::WavWriter<W>>,
    /// Samples in the open part.
    samples: u64,
    /// Nothing more is recorded for this stream (a cap without rotation, the file limit, a write error).
    done: bool,
}

/// The `record` bot's files, with their caps. Generic over the file type so the caps and error paths can be
/// tested without a disk.
struct Recorder<W: Write + Seek, F: FnMut(&Path) -> std::io::Result<W>> {
    session: Uuid,
    dir: PathBuf,
    spec: hound::WavSpec,
    max_samples: u64,
    max_files: usize,
    rotate: bool,
    files: usize,
    live: Arc<LiveSession>,
    create: F,
    tracks: Vec<Track<W>>,
    /// One log line per kind of trouble per session, so a failing disk does not flood the log.
    logged_refusal: bool,
    logged_error: bool,
}

impl<W: Write + Seek, F: FnMut(&Path) -> std::io::Result<W>> Recorder<W, F> {
    fn new(
        session: Uuid,
        rate: SampleRate,
        limits: &BotLimits,
        live: Arc<LiveSession>,
        create: F,
    ) -> Self {
        let mut recorder = Recorder {
            session,
            dir: limits.recordings_dir.clone(),
            spec: hound::WavSpec {
                channels: 1,
                sample_rate: rate.hz(),
                bits_per_sample: 16,
                sample_format: hound::SampleFormat::Int,
            },
            max_samples: limits.max_samples_per_file(rate),
            max_files: limits.recording_max_files,
            rotate: limits.recording_rotate,
            files: 0,
            live,
            create,
            tracks: Vec::with_capacity(8),
            logged_refusal: false,
            logged_error: false,
        };
        recorder.tracks.push(Track {
            name: "mixed".to_owned(),
            msi: None,
            part: 0,
            writer: None,
            samples: 0,
            done: false,
        });
        recorder
    }

    fn path(&self, track: &Track<W>) -> PathBuf {
        let name = match track.part {
            0 => format!("{}-{}.wav", self.session, track.name),
            part => format!("{}-{}.{part}.wav", self.session, track.name),
        };
        self.dir.join(name)
    }

    fn write_error(&mut self, what: &str, path: &Path, err: &dyn std::fmt::Display) {
        self.live.count(Dropped::RecordingWriteError);
        self.live.notice(
            "recordingWriteError",
            json!({"file": path.display().to_string(), "error": format!("{what}: {err}")}),
        );
        if !self.logged_error {
            self.logged_error = true;
            tracing::error!(session = %self.session, path = %path.display(), "recording {what} failed: {err}");
        }
    }

    /// Opens the track's current part, unless the session's file limit is reached.
    fn open(&mut self, index: usize) -> Option<hound::WavWriter<W>> {
        let path = self.path(&self.tracks[index]);
        if self.files >= self.max_files {
            self.live.count(Dropped::RecordingFileRefused);
            self.live.notice(
                "recordingFileRefused",
                json!({"file": path.display().to_string(), "maxFiles": self.max_files}),
            );
            if !self.logged_refusal {
                self.logged_refusal = true;
                tracing::warn!(session = %self.session, max = self.max_files, "recording file limit reached; further streams are not recorded");
            }
            return None;
        }
        self.files += 1;
        let opened = (self.create)(&path)
            .map_err(|err| err.to_string())
            .and_then(|file| hound::WavWriter::new(file, self.spec).map_err(|err| err.to_string()));
        match opened {
            Ok(writer) => {
                self.live.recording_files.fetch_add(1, Ordering::Relaxed);
                Some(writer)
            }
            Err(err) => {
                self.write_error("create", &path, &err);
                None
            }
        }
    }

    fn finalize(&mut self, index: usize) {
        if let Some(writer) = self.tracks[index].writer.take() {
            if let Err(err) = writer.finalize() {
                let path = self.path(&self.tracks[index]);
                self.write_error("finalise", &path, &err);
            }
        }
    }

    /// Opens the mix's file at once, so a recording session always leaves a valid WAV, even one that heard nothing.
    fn start(&mut self) {
        if self.tracks[0].writer.is_none() && !self.tracks[0].done {
            self.tracks[0].writer = self.open(0);
            self.tracks[0].done = self.tracks[0].writer.is_none();
        }
    }

    /// The track of a speaker (`None` for the mix), made on first sight while there is room.
    fn track(&mut self, msi: Option<u32>) -> Option<usize> {
        if let Some(index) = self.tracks.iter().position(|t| t.msi == msi) {
            return Some(index);
        }
        if self.tracks.len() >= MAX_TRACKS {
            self.live.count(Dropped::RecordingFileRefused);
            return None;
        }
        self.tracks.push(Track {
            name: msi.map_or_else(|| "mixed".to_owned(), |m| m.to_string()),
            msi,
            part: 0,
            writer: None,
            samples: 0,
            done: false,
        });
        Some(self.tracks.len() - 1)
    }

    /// Appends samples to a stream, closing (and rotating) its file at the cap.
    fn write(&mut self, msi: Option<u32>, mut samples: &[i16]) {
        let Some(index) = self.track(msi) else { return };
        while !samples.is_empty() && !self.tracks[index].done {
            if self.tracks[index].writer.is_none() {
                match self.open(index) {
                    Some(writer) => self.tracks[index].writer = Some(writer),
                    None => {
                        self.tracks[index].done = true;
                        return;
                    }
                }
            }
            let track = &mut self.tracks[index];
            let room = (self.max_samples - track.samples).min(samples.len() as u64) as usize;
            let (now, later) = samples.split_at(room);
            samples = later;
            let failed = track.writer.as_mut().and_then(|writer| {
                now.iter()
                    .find_map(|&sample| writer.write_sample(sample).err())
            });
            track.samples += room as u64;
            if let Some(err) = failed {
                let path = self.path(&self.tracks[index]);
                self.write_error("write", &path, &err);
                // A broken file does not mend; keep what it holds and record no more of this stream.
                self.finalize(index);
                self.tracks[index].done = true;
                return;
            }
            if self.tracks[index].samples >= self.max_samples {
                let path = self.path(&self.tracks[index]);
                self.finalize(index);
                self.live.count(Dropped::RecordingCap);
                self.live.notice(
                    if self.rotate {
                        "recordingRotated"
                    } else {
                        "recordingStopped"
                    },
                    json!({"file": path.display().to_string(), "samples": self.max_samples}),
                );
                tracing::info!(session = %self.session, path = %path.display(), rotate = self.rotate, "recording file reached its cap");
                let track = &mut self.tracks[index];
                track.samples = 0;
                track.part += 1;
                track.done = !self.rotate;
            }
        }
    }

    /// Finalises every open file.
    fn finish(mut self) {
        for index in 0..self.tracks.len() {
            self.finalize(index);
        }
        tracing::info!(session = %self.session, files = self.files, "recording finalised");
    }
}

fn record<W: Write + Seek, F: FnMut(&Path) -> std::io::Result<W>>(
    mut port: BotPort,
    stop: Arc<AtomicBool>,
    mut recorder: Recorder<W, F>,
) {
    let mut frame = Box::new(ReceivedAudio::new(
        SampleRate::new(recorder.spec.sample_rate).unwrap_or(SampleRate::HZ_16000),
    ));
    let mut pace = Pace::new();
    recorder.start();
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        while port.endpoint.inbound.pop(&mut frame) {
            recorder.write(None, frame.mixed());
            for i in 0..frame.unmixed_len() {
                if let Some((msi, samples)) = frame.unmixed(i) {
                    recorder.write(Some(msi), samples);
                }
            }
        }
        while port.events.try_recv().is_ok() {}
        if stopping {
            break;
        }
        pace.wait();
    }
    recorder.finish();
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

/// Checks a `play` file against the media directory and reads it (blocking: call it off the async runtime).
///
/// Refused: a path with `..`, a path (or symlink) that resolves outside `media_dir`, anything but a regular file
/// (a FIFO, a device, a directory: opened non-blocking, so the check itself cannot hang), a file over `max_bytes`.
pub fn load_confined(
    file: &Path,
    media_dir: &Path,
    max_bytes: u64,
    rate: SampleRate,
) -> Result<Vec<i16>, String> {
    let shown = file.display();
    if file.components().any(|c| c == Component::ParentDir) {
        return Err(format!("bot.file: `{shown}` may not contain `..`"));
    }
    let root = media_dir.canonicalize().map_err(|err| {
        format!(
            "bot.file: the media directory `{}` is not usable: {err}",
            media_dir.display()
        )
    })?;
    let candidate = if file.is_absolute() {
        file.to_path_buf()
    } else {
        root.join(file)
    };
    let real = candidate
        .canonicalize()
        .map_err(|err| format!("bot.file: {shown}: {err}"))?;
    if !real.starts_with(&root) {
        return Err(format!(
            "bot.file: `{shown}` is outside the media directory `{}`",
            root.display()
        ));
    }
    let mut opened = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(&real)
        .map_err(|err| format!("bot.file: {shown}: {err}"))?;
    let meta = opened
        .metadata()
        .map_err(|err| format!("bot.file: {shown}: {err}"))?;
    if !meta.file_type().is_file() {
        return Err(format!("bot.file: `{shown}` is not a regular file"));
    }
    if meta.len() > max_bytes {
        return Err(format!(
            "bot.file: `{shown}` is {} bytes, more than play_max_bytes ({max_bytes})",
            meta.len()
        ));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    (&mut opened)
        .take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| format!("bot.file: {shown}: {err}"))?;
    if bytes.len() as u64 > max_bytes {
        return Err(format!(
            "bot.file: `{shown}` grew past play_max_bytes ({max_bytes}) while read"
        ));
    }
    decode_wav(std::io::Cursor::new(bytes), rate, max_bytes)
        .map_err(|err| format!("bot.file: {shown}: {err}"))
}

/// Decodes a WAV as mono 16-bit PCM at `rate` (channels are averaged; other rates are resampled), refusing one
/// whose decoded audio would take more than `max_bytes` (an 8 kHz 8-bit file resampled to 48 kHz grows twelvefold).
pub fn decode_wav<R: Read>(
    source: R,
    rate: SampleRate,
    max_bytes: u64,
) -> Result<Vec<i16>, String> {
    let mut reader = hound::WavReader::new(source).map_err(|err| err.to_string())?;
    let spec = reader.spec();
    let frames = u64::from(reader.duration());
    let decoded = frames.saturating_mul(u64::from(rate.hz())) / u64::from(spec.sample_rate.max(1));
    let interleaved = u64::from(reader.len());
    if decoded.max(interleaved).saturating_mul(2) > max_bytes {
        return Err(format!(
            "{frames} frames at {} Hz decode to more than play_max_bytes ({max_bytes})",
            spec.sample_rate
        ));
    }
    // Integer samples come at their own width: scale them to 16 bits (8-bit up, 24/32-bit down).
    let bits = u32::from(spec.bits_per_sample).min(32);
    let to_i16 = |s: i32| {
        let scaled = if bits < 16 {
            s << (16 - bits)
        } else {
            s >> (bits - 16)
        };
        scaled.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16
    };
    let samples: Vec<i16> = match spec.sample_format {
        hound::SampleFormat::Int => reader
            .samples::<i32>()
            .map(|s| s.map(to_i16))
            .collect::<Result<_, _>>(),
        hound::SampleFormat::Float => reader
            .samples::<f32>()
            .map(|s| s.map(|v| (v * 32767.0).clamp(-32768.0, 32767.0) as i16))
            .collect::<Result<_, _>>(),
    }
    .map_err(|err| err.to_string())?;
    mediaproc_pipeline::to_mono_at(&samples, usize::from(spec.channels), spec.sample_rate, rate)
        .map_err(|err| err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::io::{Cursor, SeekFrom};
    use std::sync::Mutex;

    use crate::session::DropCounters;

    /// An in-memory file that fails every write past `fail_after` bytes.
    #[derive(Clone)]
    struct MemFile {
        data: Arc<Mutex<Cursor<Vec<u8>>>>,
        fail_after: u64,
    }

    impl Write for MemFile {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let mut data = self.data.lock().unwrap_or_else(|p| p.into_inner());
            if data.position() + buf.len() as u64 > self.fail_after {
                return Err(std::io::Error::other("disk full"));
            }
            data.write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Seek for MemFile {
        fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
            self.data
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .seek(pos)
        }
    }

    type Files = Arc<Mutex<BTreeMap<String, Arc<Mutex<Cursor<Vec<u8>>>>>>>;

    fn limits(max_bytes: u64, max_files: usize, rotate: bool) -> BotLimits {
        BotLimits {
            recordings_dir: PathBuf::from("/rec"),
            recording_max_seconds: 3600,
            recording_max_bytes: max_bytes,
            recording_max_files: max_files,
            recording_rotate: rotate,
            media_dir: PathBuf::from("/media"),
            play_max_bytes: 1 << 20,
        }
    }

    #[allow(clippy::type_complexity)]
    fn recorder(
        limits: &BotLimits,
        fail_after: u64,
    ) -> (
        Recorder<MemFile, impl FnMut(&Path) -> std::io::Result<MemFile>>,
        Files,
        Arc<LiveSession>,
    ) {
        let files: Files = Arc::default();
        let live = Arc::new(LiveSession::new(None, Arc::new(DropCounters::default())));
        let made = files.clone();
        let create = move |path: &Path| {
            let data = Arc::new(Mutex::new(Cursor::new(Vec::new())));
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            made.lock().unwrap().insert(name.into_owned(), data.clone());
            Ok(MemFile { data, fail_after })
        };
        let session = Uuid::nil();
        (
            Recorder::new(session, SampleRate::HZ_16000, limits, live.clone(), create),
            files,
            live,
        )
    }

    fn samples_of(files: &Files, name: &str) -> Vec<i16> {
        let files = files.lock().unwrap();
        let data = files[name].lock().unwrap().get_ref().clone();
        let reader = hound::WavReader::new(Cursor::new(data)).expect("a valid WAV");
        reader.into_samples::<i16>().map(Result::unwrap).collect()
    }

    const NIL: &str = "00000000-0000-0000-0000-000000000000";

    #[test]
    fn a_file_rotates_at_its_cap_and_each_part_is_a_valid_wav() {
        // 44 + 2 × 1000 bytes: 1000 samples a file.
        let limits = limits(WAV_HEADER_BYTES + 2000, 16, true);
        let (mut rec, files, live) = recorder(&limits, u64::MAX);
        let frame: Vec<i16> = (0..320).map(|i| i as i16).collect();
        for _ in 0..10 {
            rec.write(None, &frame);
        }
        rec.finish();
        let first = samples_of(&files, &format!("{NIL}-mixed.wav"));
        let second = samples_of(&files, &format!("{NIL}-mixed.1.wav"));
        let third = samples_of(&files, &format!("{NIL}-mixed.2.wav"));
        let fourth = samples_of(&files, &format!("{NIL}-mixed.3.wav"));
        assert_eq!(
            (first.len(), second.len(), third.len(), fourth.len()),
            (1000, 1000, 1000, 200)
        );
        assert_eq!(first[320], 0, "samples stay in order across frames");
        assert_eq!(
            second[0],
            (1000 % 320) as i16,
            "the next part goes on where the last stopped"
        );
        assert_eq!(live.dropped(Dropped::RecordingCap), 3);
        assert_eq!(live.stats_json()["recording"]["files"], 4);
        assert_eq!(live.notices_json()[0]["event"], "recordingRotated");
    }

    #[test]
    fn without_rotation_the_stream_stops_at_the_cap() {
        let limits = limits(WAV_HEADER_BYTES + 2000, 16, false);
        let (mut rec, files, live) = recorder(&limits, u64::MAX);
        for _ in 0..10 {
            rec.write(None, &[7; 320]);
        }
        rec.finish();
        assert_eq!(samples_of(&files, &format!("{NIL}-mixed.wav")).len(), 1000);
        assert_eq!(files.lock().unwrap().len(), 1);
        assert_eq!(live.dropped(Dropped::RecordingCap), 1);
        assert_eq!(live.notices_json()[0]["event"], "recordingStopped");
    }

    #[test]
    fn speakers_beyond_the_file_limit_are_not_recorded_and_counted() {
        let limits = limits(1 << 20, 3, true);
        let (mut rec, files, live) = recorder(&limits, u64::MAX);
        for msi in 1..=5 {
            rec.write(None, &[1; 320]);
            rec.write(Some(msi), &[2; 320]);
            rec.write(Some(msi), &[2; 320]);
        }
        rec.finish();
        // The mix and two speakers; speakers 3, 4, 5 refused once each.
        assert_eq!(files.lock().unwrap().len(), 3);
        assert_eq!(live.dropped(Dropped::RecordingFileRefused), 3);
        assert_eq!(samples_of(&files, &format!("{NIL}-2.wav")).len(), 640);
    }

    #[test]
    fn a_write_error_is_counted_and_stops_that_stream() {
        let limits = limits(1 << 20, 16, true);
        // The header (44 bytes) and a little audio fit, then the disk is full.
        let (mut rec, _files, live) = recorder(&limits, 44 + 8192 + 100);
        for _ in 0..100 {
            rec.write(None, &[3; 320]);
        }
        rec.finish();
        assert!(live.dropped(Dropped::RecordingWriteError) >= 1);
        assert!(
            live.dropped(Dropped::RecordingWriteError) <= 2,
            "one write, maybe the finalise"
        );
        assert_eq!(live.notices_json()[0]["event"], "recordingWriteError");
    }

    #[test]
    fn file_caps_stay_far_below_the_wav_u32_wrap() {
        let limits = limits(crate::config::RECORDING_BYTES_CEILING, 16, true);
        let max = limits.max_samples_per_file(SampleRate::HZ_48000);
        assert!(max * 2 + WAV_HEADER_BYTES <= 1 << 31);
    }

    #[test]
    fn play_files_are_confined_to_the_media_directory() {
        let base =
            std::env::temp_dir().join(format!("mediaproc-confine-{}", Uuid::new_v4().simple()));
        let media = base.join("media");
        std::fs::create_dir_all(&media).unwrap();
        let wav = |path: &Path| {
            let spec = hound::WavSpec {
                channels: 1,
                sample_rate: 16_000,
                bits_per_sample: 16,
                sample_format: hound::SampleFormat::Int,
            };
            let mut writer = hound::WavWriter::create(path, spec).unwrap();
            for i in 0..3200 {
                writer.write_sample((i % 100) as i16).unwrap();
            }
            writer.finalize().unwrap();
        };
        wav(&media.join("ok.wav"));
        wav(&base.join("secret.wav"));
        std::os::unix::fs::symlink(base.join("secret.wav"), media.join("link.wav")).unwrap();
        let rate = SampleRate::HZ_16000;
        let load = |file: &str| load_confined(Path::new(file), &media, 1 << 20, rate);
        assert_eq!(load("ok.wav").unwrap().len(), 3200);
        let inside = media.join("ok.wav");
        assert_eq!(load(inside.to_str().unwrap()).unwrap().len(), 3200);
        assert!(load("../secret.wav").unwrap_err().contains("`..`"));
        let outside = base.join("secret.wav");
        assert!(
            load(outside.to_str().unwrap())
                .unwrap_err()
                .contains("outside the media directory")
        );
        assert!(
            load("link.wav")
                .unwrap_err()
                .contains("outside the media directory")
        );
        assert!(load("missing.wav").unwrap_err().contains("missing.wav"));
        assert!(load(".").unwrap_err().contains("not a regular file"));
        let small = load_confined(Path::new("ok.wav"), &media, 1000, rate).unwrap_err();
        assert!(small.contains("more than play_max_bytes"), "{small}");
        // 3200 samples (6.4 KB) fit 8 KB as they are, but not resampled to 48 kHz (19.2 KB).
        assert!(load_confined(Path::new("ok.wav"), &media, 8192, rate).is_ok());
        let grown =
            load_confined(Path::new("ok.wav"), &media, 8192, SampleRate::HZ_48000).unwrap_err();
        assert!(
            grown.contains("decode to more than play_max_bytes"),
            "{grown}"
        );
        std::fs::remove_dir_all(&base).unwrap();
    }
}
