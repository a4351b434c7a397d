#!/usr/bin/env bash
# Runs the Python example bot against a real `mediaproc serve`, with GStreamer as the far side over RTP/UDP:
# GStreamer sends 4 s of a speech-like signal as Opus RTP to the session, the Python bot echoes it, and a second
# GStreamer pipeline writes what comes back. Passes when the bot echoed at least 150 frames and the returned audio
# is not silent. Used by .ci/run; needs python3 with `websockets`, gst-launch-1.0 and a built `mediaproc`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=${MEDIAPROC_BIN:-$root/target/debug/mediaproc}
work=$(mktemp -d)
api_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
back_port=$(python3 -c 'import socket; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# GStreamer sends from another socket than it receives on: the session takes RTP only from this one (strict RTP).
send_port=$(python3 -c 'import socket; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export MEDIAPROC_API_TOKEN=example-token-$$
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

"$bin" serve --api 127.0.0.1:$api_port --media 127.0.0.1:0 --workers 1 --recordings "$work" >"$work/serve.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$api_port/healthz')" 2>/dev/null && break; sleep 0.2; done

python3 - "$work/in.wav" <<'PY'
import math, struct, sys, wave
rate, seconds = 16000, 4.0
with wave.open(sys.argv[1], "wb") as w:
    w.setnchannels(1); w.setsampwidth(2); w.setframerate(rate)
    phase, frames = 0.0, []
    for i in range(int(rate * seconds)):
        t = i / rate
        pitch = 165 + 55 * math.sin(2 * math.pi * 1.3 * t)
        phase += 2 * math.pi * pitch / rate
        env = 0.55 + 0.45 * math.sin(2 * math.pi * 3 * t)
        s = sum(math.sin(h * phase) / h for h in range(1, 9)) * env * 6000
        frames.append(struct.pack("<h", int(s)))
    w.writeframes(b"".join(frames))
PY

gst-launch-1.0 -e udpsrc address=127.0.0.1 port=$back_port \
  caps='application/x-rtp,media=(string)audio,clock-rate=(int)48000,encoding-name=(string)OPUS,payload=(int)96' \
  ! rtpjitterbuffer latency=50 ! rtpopusdepay ! opusdec plc=true ! audioconvert ! audioresample \
  ! audio/x-raw,format=S16LE,rate=16000,channels=1 ! wavenc ! filesink location="$work/out.wav" >"$work/recv.log" 2>&1 &
receiver=$!
pids+=($receiver)

python3 "$here/echo_bot.py" --api http://127.0.0.1:$api_port --rtp-remote 127.0.0.1:$back_port --rtp-source 127.0.0.1:$send_port --seconds 8 \
  --min-frames 150 --ready-file "$work/ready" >"$work/bot.log" 2>&1 &
bot=$!
for _ in $(seq 100); do [ -s "$work/ready" ] && break; sleep 0.1; done
rtp=$(cat "$work/ready")
[ -n "$rtp" ] || { echo "example: the bot did not connect"; cat "$work/bot.log" "$work/serve.log"; exit 1; }
gst-launch-1.0 filesrc location="$work/in.wav" ! wavparse ! audioconvert ! audioresample \
  ! audio/x-raw,format=S16LE,rate=48000,channels=1 ! opusenc frame-size=20 bitrate=32000 audio-type=voice \
  ! rtpopuspay pt=96 ! udpsink host=${rtp%:*} port=${rtp##*:} bind-address=127.0.0.1 bind-port=$send_port \
  >"$work/send.log" 2>&1
status=0
wait $bot || status=$?
kill -INT $receiver 2>/dev/null || true
wait $receiver 2>/dev/null || true
cat "$work/bot.log"
[ $status -eq 0 ] || { echo "example: the bot failed"; cat "$work/serve.log"; exit 1; }
python3 - "$work/out.wav" <<'PY'
import struct, sys, wave
with wave.open(sys.argv[1]) as w:
    data = w.readframes(w.getnframes())
samples = struct.unpack(f"<{len(data)//2}h", data)
rms = (sum(s * s for s in samples) / max(1, len(samples))) ** 0.5
print(f"example: {len(samples)/16000:.2f} s came back, rms {rms:.0f}")
sys.exit(0 if rms > 300 else 1)
PY
echo "example: python bot echoed the call's audio"

# Second: `mediaproc demo --bot websocket` waits for an external bot; the Python bot joins the printed session.
"$bin" demo --bot websocket --seconds 6 >"$work/demo.log" 2>&1 &
demo=$!
pids+=($demo)
url=""
for _ in $(seq 100); do
  url=$(grep -o "\-\-media-url '[^']*'" "$work/demo.log" 2>/dev/null | head -1 | sed "s/--media-url '//; s/'$//" || true)
  [ -n "$url" ] && break
  sleep 0.1
done
[ -n "$url" ] || { echo "example: the demo printed no media URL"; cat "$work/demo.log"; exit 1; }
python3 "$here/echo_bot.py" --media-url "$url" --seconds 15 --min-frames 100 >"$work/bot2.log" 2>&1 || {
  echo "example: the bot failed with the demo"; cat "$work/bot2.log" "$work/demo.log"; exit 1; }
wait $demo || { echo "example: the demo failed"; cat "$work/demo.log"; exit 1; }
tail -n 4 "$work/bot2.log"
grep -q "echo round trip" "$work/demo.log" || { echo "example: no summary from the demo"; cat "$work/demo.log"; exit 1; }
grep -A 12 "^summary" "$work/demo.log"
echo "example: python bot served mediaproc demo --bot websocket"
