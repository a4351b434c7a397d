// Evaluated by tests/webrtc.rs in the same headless Chromium after the echo measurement: the browser's own floor.
// The fake microphone goes from one RTCPeerConnection to another in the same page (loopback, no daemon), and both
// tracks are recorded sample-synchronously as in webrtc_page.js, so their lag is the browser's own one-way delay
// (capture, Opus framing, send, NetEQ, playout) — the part of the echo's round trip that is not the daemon's.
(async () => {
  const SECONDS = __SECONDS__, WARMUP_MS = __WARMUP_MS__;
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const mic = await navigator.mediaDevices.getUserMedia({
    audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
  });
  const a = new RTCPeerConnection(), b = new RTCPeerConnection();
  a.onicecandidate = (e) => e.candidate && b.addIceCandidate(e.candidate);
  b.onicecandidate = (e) => e.candidate && a.addIceCandidate(e.candidate);
  a.addTransceiver(mic.getAudioTracks()[0], { direction: "sendonly" });
  const remoteTrack = new Promise((resolve) => (b.ontrack = (e) => resolve(e.track)));
  await a.setLocalDescription(await a.createOffer());
  await b.setRemoteDescription(a.localDescription);
  await b.setLocalDescription(await b.createAnswer());
  await a.setRemoteDescription(b.localDescription);
  const track = await remoteTrack;
  await new Promise((resolve) => {
    if (b.connectionState === "connected") return resolve();
    b.addEventListener("connectionstatechange", () => b.connectionState === "connected" && resolve());
    setTimeout(resolve, 10000);
  });
  if (b.connectionState !== "connected") return JSON.stringify({ error: `loopback ${b.connectionState}` });
  const element = new Audio();
  element.srcObject = new MediaStream([track]);
  element.muted = true;
  element.play().catch(() => {});
  await sleep(WARMUP_MS);
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
  await sleep(SECONDS * 1000);
  recorder.disconnect();
  let inbound = {};
  (await b.getStats()).forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "audio") inbound = s;
  });
  const pack = (chunks) => {
    const n = chunks.reduce((acc, c) => acc + c.length, 0);
    const all = new Float32Array(n);
    let o = 0;
    for (const c of chunks) { all.set(c, o); o += c.length; }
    const out = new Int16Array(Math.floor(n / 3));
    for (let i = 0; i < out.length; i++) {
      const v = (all[3 * i] + all[3 * i + 1] + all[3 * i + 2]) / 3;
      out[i] = Math.max(-32768, Math.min(32767, Math.round(v * 32767)));
    }
    return Array.from(out);
  };
  const result = {
    sent: pack(left),
    received: pack(right),
    jitterBufferDelayMs: inbound.jitterBufferEmittedCount
      ? (1000 * inbound.jitterBufferDelay) / inbound.jitterBufferEmittedCount
      : null,
  };
  a.close();
  b.close();
  return JSON.stringify(result);
})()
