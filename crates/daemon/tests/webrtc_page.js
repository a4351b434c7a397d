// Evaluated by tests/webrtc.rs in headless Chromium on the daemon's /talk page (a secure context on loopback):
// the fake microphone (a WAV file) goes to the session through the WHIP endpoint, the echo comes back, and both
// tracks are recorded sample-synchronously in one AudioContext (left: what the browser sent, right: what it
// received), so their lag is the browser-to-browser round trip through the daemon. Returns JSON.
(async () => {
  const SESSION = "__SESSION__", TOKEN = "__TOKEN__", SECONDS = __SECONDS__, WARMUP_MS = __WARMUP_MS__;
  const mic = await navigator.mediaDevices.getUserMedia({
    audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
  });
  const pc = new RTCPeerConnection();
  pc.addTransceiver(mic.getAudioTracks()[0], { direction: "sendrecv" });
  const remoteTrack = new Promise((resolve) => (pc.ontrack = (e) => resolve(e.track)));
  // Ask for the daemon's DTX (RFC 7587 usedtx=1: this receiver prefers it): NetEQ then starts each talk spurt
  // as it arrives after a pause (docs/webrtc.md).
  const offer = await pc.createOffer();
  const opus = /a=rtpmap:(\d+) opus\/48000/i.exec(offer.sdp);
  const sdp = opus ? offer.sdp.replace(new RegExp(`(a=fmtp:${opus[1]} [^\r\n]*)`), "$1;usedtx=1") : offer.sdp;
  await pc.setLocalDescription({ type: "offer", sdp });
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
  playMuted(track);
  // Both jitter buffers settle in the first seconds; the round trip is measured after that.
  await sleep(WARMUP_MS);
  let inbound = {}, outbound = {};
  (await pc.getStats()).forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "audio") inbound = s;
  });
  const atStart = inbound;
  const recording = await recordBoth(mic, track);
  const rtts = [];
  for (let t = 0; t < SECONDS * 4; t++) {
    await sleep(250);
    (await pc.getStats()).forEach((s) => {
      if (s.type === "remote-inbound-rtp" && s.roundTripTime !== undefined) rtts.push(s.roundTripTime * 1000);
      if (s.type === "inbound-rtp" && s.kind === "audio") inbound = s;
      if (s.type === "outbound-rtp" && s.kind === "audio") outbound = s;
    });
  }
  const { sent, received } = recording.stop();
  const result = {
    location,
    connectMs,
    rate: 48000,
    sent,
    received,
    rttMs: rtts,
    packetsReceived: inbound.packetsReceived || 0,
    packetsLost: inbound.packetsLost || 0,
    jitterBufferDelayMs: jitterBufferMs(inbound),
    netEq: netEqBetween(atStart, inbound),
    packetsSent: outbound.packetsSent || 0,
  };
  window.peerConnection = pc; // closed by the test after it has read the daemon's statistics
  return JSON.stringify(result);
})()
