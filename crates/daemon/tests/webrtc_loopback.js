// Evaluated by tests/webrtc.rs in the same headless Chromium after the echo measurement: the browser's own floor.
// The fake microphone goes from one RTCPeerConnection to another in the same page (loopback, no daemon), and both
// tracks are recorded sample-synchronously as in webrtc_page.js, so their lag is the browser's own one-way delay
// (capture, Opus framing, send, NetEQ, playout) — the part of the echo's round trip that is not the daemon's.
(async () => {
  const SECONDS = __SECONDS__, WARMUP_MS = __WARMUP_MS__;
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
  playMuted(track);
  await sleep(WARMUP_MS);
  const inboundNow = async () => {
    let inbound = {};
    (await b.getStats()).forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "audio") inbound = s;
    });
    return inbound;
  };
  const atStart = await inboundNow();
  const recording = await recordBoth(mic, track);
  await sleep(SECONDS * 1000);
  const { sent, received } = recording.stop();
  const inbound = await inboundNow();
  const result = {
    sent,
    received,
    jitterBufferDelayMs: jitterBufferMs(inbound),
    netEq: netEqBetween(atStart, inbound),
  };
  a.close();
  b.close();
  return JSON.stringify(result);
})()
