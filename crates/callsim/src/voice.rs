//! Synthetic participants: deterministic speech-like voices that take turns.

/// Sample rate of the voices (the edge encodes Opus at 16 kHz, as a calling service would for speech).
pub const VOICE_RATE: u32 = 16_000;
/// Samples in one 20 ms frame at [`VOICE_RATE`].
pub const FRAME_SAMPLES: usize = 320;

/// A participant's voice: harmonics of a moving pitch with a syllable envelope, speaking in its turns.
#[derive(Debug, Clone)]
pub struct Voice {
    /// A recording to speak instead of the synthetic voice (mono, [`VOICE_RATE`]), played on from turn to turn.
    recording: Option<std::sync::Arc<[i16]>>,
    position: usize,
    base_pitch: f64,
    phase: f64,
    turn: usize,
    participants: usize,
    turn_frames: u64,
    talk_frames: u64,
}

impl Voice {
    /// Voice `index` of `participants`, each speaking `talk_ms` out of every `turn_ms` when its turn comes.
    pub fn new(index: usize, participants: usize, turn_ms: u64, talk_ms: u64) -> Self {
        Voice {
            recording: None,
            position: 0,
            base_pitch: 110.0 + 37.0 * index as f64,
            phase: 0.0,
            turn: index,
            participants: participants.max(1),
            turn_frames: (turn_ms / 20).max(1),
            talk_frames: (talk_ms / 20).max(1),
        }
    }

    /// The same turns, speaking `recording` (mono at [`VOICE_RATE`], looped) instead of the synthetic voice.
    pub fn with_recording(mut self, recording: std::sync::Arc<[i16]>) -> Self {
        if !recording.is_empty() {
            self.recording = Some(recording);
        }
        self
    }

    /// Whether frame `n` (20 ms each, from the call's start) falls in this voice's talk spurt.
    pub fn talking(&self, n: u64) -> bool {
        let turn = n / self.turn_frames;
        turn as usize % self.participants == self.turn && n % self.turn_frames < self.talk_frames
    }

    /// Whether frame `n` starts a talk spurt of this voice.
    pub fn onset(&self, n: u64) -> bool {
        self.talking(n) && n % self.turn_frames == 0
    }

    /// Fills frame `n` (silence outside the voice's turns).
    pub fn frame(&mut self, n: u64, out: &mut [i16]) {
        if !self.talking(n) {
            out.fill(0);
            return;
        }
        if let Some(recording) = &self.recording {
            for sample in out.iter_mut() {
                *sample = recording[self.position % recording.len()];
                self.position = (self.position + 1) % recording.len();
            }
            return;
        }
        let rate = f64::from(VOICE_RATE);
        let len = out.len() as f64;
        for (i, sample) in out.iter_mut().enumerate() {
            let t = (n as f64 * len + i as f64) / rate;
            let pitch = self.base_pitch * (1.0 + 0.25 * (t * 1.7 * std::f64::consts::TAU).sin());
            self.phase = (self.phase + pitch / rate * std::f64::consts::TAU)
                % (std::f64::consts::TAU * 64.0);
            let syllables = 0.6 + 0.4 * (t * 4.0 * std::f64::consts::TAU).sin();
            let voice: f64 = (1..=8)
                .map(|h| (self.phase * f64::from(h)).sin() / f64::from(h))
                .sum();
            *sample = (voice * syllables * 7000.0).clamp(-32000.0, 32000.0) as i16;
        }
    }
}

/// Loads a WAV file as a voice: mono at [`VOICE_RATE`] (channels averaged, other rates resampled).
pub fn load_wav(path: &std::path::Path) -> Result<std::sync::Arc<[i16]>, crate::CallsimError> {
    let bad = |err: String| crate::CallsimError::Wav(format!("{}: {err}", path.display()));
    let mut reader = hound::WavReader::open(path).map_err(|err| bad(err.to_string()))?;
    let spec = reader.spec();
    let shift = u32::from(spec.bits_per_sample).saturating_sub(16);
    let samples: Vec<i16> = match spec.sample_format {
        hound::SampleFormat::Int => reader
            .samples::<i32>()
            .map(|s| s.map(|v| (v >> shift).clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16))
            .collect::<Result<_, _>>(),
        hound::SampleFormat::Float => reader
            .samples::<f32>()
            .map(|s| s.map(|v| (v * 32767.0) as i16))
            .collect(),
    }
    .map_err(|err| bad(err.to_string()))?;
    let rate =
        mediaproc_pipeline::SampleRate::new(VOICE_RATE).map_err(|err| bad(err.to_string()))?;
    let mono = mediaproc_pipeline::to_mono_at(
        &samples,
        usize::from(spec.channels),
        spec.sample_rate,
        rate,
    )
    .map_err(|err| bad(err.to_string()))?;
    Ok(mono.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voices_take_turns_and_never_overlap() {
        let voices: Vec<Voice> = (0..3).map(|i| Voice::new(i, 3, 2000, 1600)).collect();
        for n in 0..3000 {
            let talking = voices.iter().filter(|v| v.talking(n)).count();
            assert!(talking <= 1, "frame {n}: {talking} talking");
        }
        assert!(
            voices[0].onset(0)
                && voices[1].onset(100)
                && voices[2].onset(200)
                && voices[0].onset(300)
        );
        assert!(!voices[0].talking(80), "the pause between spurts");
        let mut frame = [0i16; FRAME_SAMPLES];
        let mut v = voices[1].clone();
        v.frame(0, &mut frame);
        assert!(frame.iter().all(|s| *s == 0));
        v.frame(101, &mut frame);
        assert!(frame.iter().any(|s| s.abs() > 1000));
    }

    #[test]
    fn a_recording_speaks_in_turns_and_loops() {
        let recording: std::sync::Arc<[i16]> = (1..=500).collect::<Vec<i16>>().into();
        let mut v = Voice::new(0, 2, 200, 100).with_recording(recording);
        let mut frame = [0i16; FRAME_SAMPLES];
        v.frame(0, &mut frame);
        assert_eq!((frame[0], frame[319]), (1, 320));
        v.frame(1, &mut frame);
        assert_eq!((frame[0], frame[179], frame[180]), (321, 500, 1), "loops");
        v.frame(5, &mut frame);
        assert!(frame.iter().all(|s| *s == 0), "not its turn");
    }
}
