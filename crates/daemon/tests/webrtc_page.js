// Evaluated by tests/webrtc.rs in headless Chromium on the daemon's /talk page (a secure context on loopback):
// the fake microphone (a WAV file) goes to the session through the WHIP endpoint, the echo comes back, and both
// tracks are recorded sample-synchronously in one AudioContext (left: what the browser sent, right: what it
// received), so their lag is the browser-to-browser round trip through the daemon. Returns JSON.
(async () => {
  const SESSION = "__SESSION__", TOKEN = "__TOKEN__", SECONDS = __SECONDS__, WARMUP_MS = __WARMUP_MS__;
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const mic = await navigator.mediaDevices.getUserMedia({
    audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
  });
  const pc = new RTCPeerConnection();
  pc.addTransceiver(mic.getAudioTracks()[0], { direction: "sendrecv" });
  const remoteTrack = new Promise((resolve) => (pc.ontrack = (e) => resolve(e.track)));
  await pc.setLocalDescription(await pc.createOffer());
  // WHIP without trickle ICE: the offer carries the gathered candidates.
  await new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    pc.addEventListener("icegatheringstatechange", () => pc.iceGatheringState === "complete" && resolve());
    setTimeout(resolve, 2000);
  });
  const posted = performance.now();
  const response = await fetch(`/v1/sessions/${SESSION}/webrtc`, {
    method: "POST",
    headers: { "Content-Type": "application/sdp", Authorization: `Bearer ${TOKEN}` },
    body: pc.localDescription.sdp,
  });
  const answer = await response.text();
  if (response.status !== 201) return JSON.stringify({ error: `${response.status} ${answer}` });
  const location = response.headers.get("Location");
  await pc.setRemoteDescription({ type: "answer", sdp: answer });
  const track = await remoteTrack;
  await new Promise((resolve) => {
    if (pc.connectionState === "connected") return resolve();
    pc.addEventListener("connectionstatechange", () => pc.connectionState === "connected" && resolve());
    setTimeout(resolve, 10000);
  });
  const connectMs = performance.now() - posted;
  if (pc.connectionState !== "connected") return JSON.stringify({ error: `connection ${pc.connectionState}` });
  // Chrome feeds a remote track into WebAudio only while a media element plays it.
  const element = new Audio();
  element.srcObject = new MediaStream([track]);
  element.muted = true;
  element.play().catch(() => {});
  // Both jitter buffers settle in the first seconds; the round trip is measured after that.
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
  const rtts = [];
  let inbound = {}, outbound = {};
  for (let t = 0; t < SECONDS * 4; t++) {
    await sleep(250);
    (await pc.getStats()).forEach((s) => {
      if (s.type === "remote-inbound-rtp" && s.roundTripTime !== undefined) rtts.push(s.roundTripTime * 1000);
      if (s.type === "inbound-rtp" && s.kind === "audio") inbound = s;
      if (s.type === "outbound-rtp" && s.kind === "audio") outbound = s;
    });
  }
  recorder.disconnect();
  // 48 kHz float → 16 kHz i16 (mean of 3).
  const pack = (chunks) => {
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
  };
  const result = {
    location,
    connectMs,
    rate: ctx.sampleRate,
    sent: pack(left),
    received: pack(right),
    rttMs: rtts,
    packetsReceived: inbound.packetsReceived || 0,
    packetsLost: inbound.packetsLost || 0,
    jitterBufferDelayMs: inbound.jitterBufferEmittedCount
      ? (1000 * inbound.jitterBufferDelay) / inbound.jitterBufferEmittedCount
      : null,
    packetsSent: outbound.packetsSent || 0,
  };
  window.peerConnection = pc; // closed by the test after it has read the daemon's statistics
  return JSON.stringify(result);
})()
