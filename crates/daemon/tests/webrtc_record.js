// Shared by webrtc_page.js and webrtc_loopback.js (tests/webrtc.rs puts it in front of each): the remote track
// played into WebAudio, and both tracks recorded sample-synchronously in one AudioContext (left: the microphone,
// right: the remote track), so their lag is what the track went through. Function declarations only: both scripts
// are evaluated in the same page, where a second top-level `const` of the same name would not parse.
function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

// Chrome feeds a remote track into WebAudio only while a media element plays it.
function playMuted(track) {
  const element = new Audio();
  element.srcObject = new MediaStream([track]);
  element.muted = true;
  element.play().catch(() => {});
}

// Starts recording `mic` and `track`; `stop()` ends it and returns both as 16 kHz i16 arrays.
async function recordBoth(mic, track) {
  const ctx = new AudioContext({ sampleRate: 48000 });
  await ctx.resume();
  const merger = ctx.createChannelMerger(2);
  ctx.createMediaStreamSource(mic).connect(merger, 0, 0);
  ctx.createMediaStreamSource(new MediaStream([track])).connect(merger, 0, 1);
  const recorder = ctx.createScriptProcessor(4096, 2, 1);
  const left = [], right = [];
  recorder.onaudioprocess = (e) => {
    left.push(new Float32Array(e.inputBuffer.getChannelData(0)));
    right.push(new Float32Array(e.inputBuffer.getChannelData(1)));
  };
  const mute = ctx.createGain();
  mute.gain.value = 0;
  merger.connect(recorder);
  recorder.connect(mute);
  mute.connect(ctx.destination);
  return {
    stop() {
      recorder.disconnect();
      return { sent: pack(left), received: pack(right) };
    },
  };
}

// 48 kHz float → 16 kHz i16 (mean of 3).
function pack(chunks) {
  const n = chunks.reduce((a, c) => a + c.length, 0);
  const all = new Float32Array(n);
  let o = 0;
  for (const c of chunks) { all.set(c, o); o += c.length; }
  const out = new Int16Array(Math.floor(n / 3));
  for (let i = 0; i < out.length; i++) {
    const v = (all[3 * i] + all[3 * i + 1] + all[3 * i + 2]) / 3;
    out[i] = Math.max(-32768, Math.min(32767, Math.round(v * 32767)));
  }
  return Array.from(out);
}

// What Chromium's jitter buffer (NetEQ) did between two inbound-rtp reports: mean delay, target and minimum per
// emitted sample (ms), and the audio it removed (accelerate), inserted (decelerate) and concealed (ms at 48 kHz).
function netEqBetween(a, b) {
  const d = (k) => (b[k] || 0) - (a[k] || 0);
  const emitted = d("jitterBufferEmittedCount");
  const perSample = (k) => (emitted ? Math.round((10000 * d(k)) / emitted) / 10 : null);
  return {
    delayMs: perSample("jitterBufferDelay"),
    targetMs: perSample("jitterBufferTargetDelay"),
    minimumMs: perSample("jitterBufferMinimumDelay"),
    acceleratedMs: Math.round(d("removedSamplesForAcceleration") / 48),
    deceleratedMs: Math.round(d("insertedSamplesForDeceleration") / 48),
    concealedMs: Math.round(d("concealedSamples") / 48),
  };
}

// Chromium's jitter buffer delay per emitted sample (ms) from an inbound-rtp report.
function jitterBufferMs(inbound) {
  return inbound.jitterBufferEmittedCount
    ? (1000 * inbound.jitterBufferDelay) / inbound.jitterBufferEmittedCount
    : null;
}
