#!/bin/bash
# Issue 9 acceptance: a healthy session's quality with and without a neighbour's garbage flood (60k datagrams in 12 s
# at the neighbour's RTP port and at the QUIC port).
set -u
cd "$(dirname "$0")/../.."
BIN=${MEDIAPROC:-target/release/mediaproc}
export MEDIAPROC_API_TOKEN=flood-test-token-1234
$BIN serve --api 127.0.0.1:18080 --media 127.0.0.1:14433 --workers 2 > ${TMPDIR:-/tmp}/flood-serve.log 2>&1 &
SERVE=$!
sleep 2
for run in base flood base2 flood2; do
  if [[ $run == flood* ]]; then
    (sleep 1; python3 -m benches.quality.flood --api 127.0.0.1:18080 --quic 14433 --seconds 12 --rate 5000 > ${TMPDIR:-/tmp}/flood-$run.json) &
    FL=$!
  fi
  python3 benches/quality/run.py --daemon-api 127.0.0.1:18080 --daemon-media 14433 --paths mediaproc \
    --scenarios clean --senders gstreamer --no-rtt --json ${TMPDIR:-/tmp}/healthy-$run.json > ${TMPDIR:-/tmp}/healthy-$run.log 2>&1
  [[ $run == flood* ]] && wait $FL
  python3 -c "import json;r=json.load(open('${TMPDIR:-/tmp}/healthy-$run.json'));x=[v for v in r['results']][0];print('$run', 'PESQ-WB', x.get('pesqWb'), 'STOI', x.get('stoi'), 'silent', x.get('silentFrames'), 'lag steps', x.get('lagSteps'))"
  [[ $run == flood* ]] && cat ${TMPDIR:-/tmp}/flood-$run.json
done
kill $SERVE
