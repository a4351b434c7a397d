//! Send pacing: one RTP packet per 20 ms of media timeline, from absolute deadlines.
//!
//! The n-th packet is due at `start + n × 20 ms` (never "sleep 20 ms" from the last send, which accumulates the
//! worker's lateness). The codec is Opus or G.711 ([`SendPacer::set_codec`], switchable at run time; both encoders
//! are built up front). For Opus, when the bot has queued nothing or its frame is digital silence, the encoder is
//! skipped and a one-byte Opus "no audio" packet keeps the stream alive (the receiver conceals/generates comfort
//! noise). G.711 has no such packet: silence is encoded as 160 bytes like any frame (gateways expect a continuous
//! stream), after going through the 8 kHz filter so a talkspurt's end is not cut. The RTP timestamp advances by the
//! codec's ticks per frame (960 for Opus, 160 for G.711). A tick
//! without a bot frame after the bot started sending counts as an underrun. The send status goes
//! [`SendStatus::Active`] with the first frame the bot queues (like `AudioSendStatusChanged`).
//!
//! **DTX** (the encoder's `dtx` on): a pause's first "no audio" or DTX packet goes out, the rest are not sent
//! (RFC 7587 §3.1.3; libwebrtc does the same), their timestamps skipped and their sequence numbers not used. Toward
//! a NetEQ receiver this also lowers the round trip: NetEQ plays comfort noise in the pause and starts each talk
//! spurt as soon as its first packet arrives (docs/webrtc.md).
//!
//! **Time-shifted duplicates** (RFC 7198 §3, [`SendPacer::set_duplicate`]): each audible packet goes out a second
//! time, unchanged (same sequence number and timestamp), [`DUPLICATE_DELAY_FRAMES`] packets later. In-band FEC
//! rebuilds one lost packet from the next; a loss burst of two or three packets defeats it, and a copy sent 40 ms
//! later falls outside a typical burst. The receiver's jitter buffer keeps whichever copy comes first and drops the
//! other as a duplicate (GStreamer's `rtpjitterbuffer`, libwebrtc's NetEQ, mediaproc's own). Two frames of delay
//! keep the copy inside a 60 ms receiver's jitter buffer under 30 ms of jitter. The copies are kept in a fixed
//! ring of the last packets: no allocation.

use std::time::Duration;

use crate::codec::{Codec, EncoderSettings, MAX_PAYLOAD, OPUS_SILENCE_PACKET, OpusEncoder};
use crate::error::{Error, Result};
use crate::frame::{FRAME_DURATION, SampleRate, is_digital_silence};
use crate::g711::G711Encoder;

/// Whether the bot is sending audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendStatus {
    /// The bot has not sent a frame yet.
    Inactive,
    /// The bot has sent at least one frame.
    Active,
}

/// An RTP packet to send (header fields and the encoded payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutgoingPacket<'a> {
    /// Our SSRC.
    pub ssrc: u32,
    /// RTP sequence number.
    pub sequence: u16,
    /// RTP timestamp (on the codec's clock: 48 kHz for Opus, 8 kHz for G.711).
    pub timestamp: u32,
    /// Set on the first packet of a talkspurt.
    pub marker: bool,
    /// RTP payload type.
    pub payload_type: u8,
    /// Media time of the packet's deadline (session-relative).
    pub deadline: Duration,
    /// The payload (Opus, or 160 bytes of G.711).
    pub payload: &'a [u8],
}

/// How many packets after its first sending a packet goes out again when duplicates are on (40 ms).
pub const DUPLICATE_DELAY_FRAMES: usize = 2;

/// A packet kept for its second sending.
#[derive(Clone, Copy)]
struct Kept {
    sequence: u16,
    timestamp: u32,
    marker: bool,
    payload_type: u8,
    deadline: Duration,
    len: usize,
    buf: [u8; MAX_PAYLOAD],
}

impl Kept {
    const EMPTY: Kept = Kept {
        sequence: 0,
        timestamp: 0,
        marker: false,
        payload_type: 0,
        deadline: Duration::ZERO,
        len: 0,
        buf: [0; MAX_PAYLOAD],
    };
}

/// Counters of the pacer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PacerStats {
    /// Packets produced.
    pub packets: u64,
    /// Packets that carried encoded bot audio.
    pub encoded: u64,
    /// Ticks where the encoder was skipped (nothing queued or digital silence); for G.711, ticks that sent encoded
    /// silence for that reason.
    pub encoder_skipped: u64,
    /// Ticks without a bot frame after the bot became active.
    pub underruns: u64,
    /// Second sendings of packets (time-shifted duplicates; not in `packets`).
    pub duplicates: u64,
    /// DTX packets not sent: with DTX on, only the first "no audio" or comfort packet of a pause goes out (not in
    /// `packets`).
    pub dtx_not_sent: u64,
}

/// Paces and encodes the outbound stream.
pub struct SendPacer {
    encoder: OpusEncoder,
    g711: G711Encoder,
    codec: Codec,
    /// Deadline of packet `anchor_index` (the first, or the next one at the last [`SendPacer::shift`]).
    start: Duration,
    anchor_index: u64,
    next_index: u64,
    ssrc: u32,
    payload_type: u8,
    sequence: u16,
    timestamp: u32,
    status: SendStatus,
    talking: bool,
    stats: PacerStats,
    buf: [u8; MAX_PAYLOAD],
    len: usize,
    last: (u16, u32, bool, Duration),
    /// Whether duplicates are on; the last [`DUPLICATE_DELAY_FRAMES`] packets by index modulo the ring's length
    /// (`len` 0: nothing to send again); the copy due with the last packet, and whether there is one.
    duplicate: bool,
    kept: [Kept; DUPLICATE_DELAY_FRAMES],
    dup: Kept,
    dup_ready: bool,
    /// Whether the last produced packet goes out (false: a DTX packet inside a pause, with DTX on).
    send: bool,
    /// Whether the last packet produced was a DTX or "no audio" packet.
    in_dtx: bool,
}

impl std::fmt::Debug for SendPacer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendPacer")
            .field("next_index", &self.next_index)
            .field("stats", &self.stats)
            .finish()
    }
}

impl SendPacer {
    /// A pacer whose first packet is due at `start`, encoding frames at `rate` with Opus (see
    /// [`SendPacer::set_codec`] for G.711).
    pub fn new(
        start: Duration,
        rate: SampleRate,
        settings: EncoderSettings,
        ssrc: u32,
        payload_type: u8,
        initial_sequence: u16,
        initial_timestamp: u32,
    ) -> Result<Self> {
        Ok(Self {
            encoder: OpusEncoder::new(rate, settings)?,
            g711: G711Encoder::new(Codec::Pcmu, rate)?,
            codec: Codec::Opus,
            start,
            anchor_index: 0,
            next_index: 0,
            ssrc,
            payload_type,
            sequence: initial_sequence,
            timestamp: initial_timestamp,
            status: SendStatus::Inactive,
            talking: false,
            stats: PacerStats::default(),
            buf: [0; MAX_PAYLOAD],
            len: 0,
            last: (0, 0, false, Duration::ZERO),
            duplicate: false,
            kept: [Kept::EMPTY; DUPLICATE_DELAY_FRAMES],
            dup: Kept::EMPTY,
            dup_ready: false,
            send: true,
            in_dtx: false,
        })
    }

    /// The encoder's settings in force.
    pub fn encoder_settings(&self) -> EncoderSettings {
        self.encoder.settings()
    }

    /// Changes the running encoder's settings (no allocation).
    pub fn set_encoder_settings(&mut self, settings: EncoderSettings) -> Result<()> {
        self.encoder.set_settings(settings)
    }

    /// Whether audible packets are sent a second time, [`DUPLICATE_DELAY_FRAMES`] later (see the module docs).
    pub fn duplicate(&self) -> bool {
        self.duplicate
    }

    /// Turns the time-shifted duplicates on or off; turned off, no kept packet goes out again.
    pub fn set_duplicate(&mut self, on: bool) {
        if !on {
            for k in &mut self.kept {
                k.len = 0;
            }
            self.dup_ready = false;
        }
        self.duplicate = on;
    }

    /// The codec and payload type of the packets.
    pub fn codec(&self) -> (Codec, u8) {
        (self.codec, self.payload_type)
    }

    /// Switches the codec and payload type from the next packet on (no allocation). The sequence numbers go on; the
    /// timestamp goes on from where it is, in the new codec's ticks; the next audible packet carries the marker.
    /// A payload type above 127 is rejected.
    pub fn set_codec(&mut self, codec: Codec, payload_type: u8) -> Result<()> {
        if payload_type > 127 {
            return Err(Error::Config {
                field: "payload_type",
                problem: "must be 0..=127",
            });
        }
        if codec.is_g711() && codec != self.g711.codec() {
            self.g711.set_codec(codec)?;
        } else if codec.is_g711() && codec != self.codec {
            self.g711.reset();
        }
        if codec != self.codec {
            self.talking = false;
        }
        self.codec = codec;
        self.payload_type = payload_type;
        Ok(())
    }

    /// When the next packet is due.
    pub fn next_deadline(&self) -> Duration {
        deadline(self.start, self.next_index - self.anchor_index)
    }

    /// Moves every later deadline by `by_us` µs (negative: earlier), at most half a frame either way; the RTP
    /// timestamps do not change (one packet goes out that much sooner or later). Returns false, changing nothing,
    /// if the next deadline would come before `not_before`.
    pub fn shift(&mut self, by_us: i64, not_before: Duration) -> bool {
        let half = FRAME_DURATION.as_micros() as i64 / 2;
        if by_us.abs() > half {
            return false;
        }
        let magnitude = Duration::from_micros(by_us.unsigned_abs());
        // Re-anchored on the next packet: a start near the clock's origin (a session created in a daemon's first
        // milliseconds) could not move earlier than zero, though its next deadline can.
        let next = self.next_deadline();
        let moved = if by_us >= 0 {
            next + magnitude
        } else {
            match next.checked_sub(magnitude) {
                Some(moved) => moved,
                None => return false,
            }
        };
        if moved < not_before {
            return false;
        }
        self.start = moved;
        self.anchor_index = self.next_index;
        true
    }

    /// Index of the next packet on the media timeline.
    pub fn next_index(&self) -> u64 {
        self.next_index
    }

    /// The send status.
    pub fn status(&self) -> SendStatus {
        self.status
    }

    /// Counters.
    pub fn stats(&self) -> PacerStats {
        self.stats
    }

    /// Skips `n` packet slots (the worker was too late to send them); the RTP timestamp advances accordingly.
    pub fn skip(&mut self, n: u64) {
        self.next_index += n;
        self.timestamp = self
            .timestamp
            .wrapping_add(self.codec.rtp_ticks_per_frame().wrapping_mul(n as u32));
        self.talking = false;
        // The kept packets would go out too late to be of use after the skipped slots.
        for k in &mut self.kept {
            k.len = 0;
        }
    }

    /// Produces the packet for the current deadline from the bot's frame (or `None` if it queued nothing).
    /// Returns true if the send status just became active.
    pub fn produce(&mut self, frame: Option<&[i16]>) -> Result<bool> {
        let mut became_active = false;
        if frame.is_some() && self.status == SendStatus::Inactive {
            self.status = SendStatus::Active;
            became_active = true;
        }
        if frame.is_none() && self.status == SendStatus::Active {
            self.stats.underruns += 1;
        }
        let audible = frame.filter(|f| !is_digital_silence(f));
        if self.codec.is_g711() {
            return self.produce_g711(audible).map(|()| became_active);
        }
        let marker = match audible {
            Some(pcm) => {
                let encoded = self.encoder.encode(pcm, &mut self.buf);
                match encoded {
                    Ok(len) => {
                        self.len = len;
                        self.stats.encoded += 1;
                    }
                    Err(e) => {
                        self.buf[..1].copy_from_slice(&OPUS_SILENCE_PACKET);
                        self.len = 1;
                        self.finish(false);
                        return Err(e);
                    }
                }
                let m = !self.talking;
                self.talking = true;
                m
            }
            None => {
                self.buf[..1].copy_from_slice(&OPUS_SILENCE_PACKET);
                self.len = 1;
                self.stats.encoder_skipped += 1;
                self.talking = false;
                false
            }
        };
        self.finish(marker);
        Ok(became_active)
    }

    /// Whether a packet of `len` bytes goes out: with DTX on, a pause's "no audio" or DTX packets after its first
    /// are not sent.
    fn dtx_gate(&mut self, len: usize) -> bool {
        let dtx_packet = len <= self.codec.dtx_packet_max_len();
        let send = !(dtx_packet && self.in_dtx && self.encoder.settings().dtx);
        self.in_dtx = dtx_packet;
        send
    }

    /// G.711: every tick is 160 encoded bytes; silence (nothing queued, digital silence) is encoded as well.
    fn produce_g711(&mut self, audible: Option<&[i16]>) -> Result<()> {
        let r = self.g711.encode(audible, &mut self.buf);
        let marker = audible.is_some() && !self.talking;
        self.talking = audible.is_some();
        if audible.is_some() {
            self.stats.encoded += 1;
        } else {
            self.stats.encoder_skipped += 1;
        }
        let r = match r {
            Ok(len) => {
                self.len = len;
                Ok(())
            }
            Err(e) => {
                // Keep the stream going with encoded silence.
                let silence = if self.codec == Codec::Pcma {
                    mediaproc_wire::g711::alaw_encode(0)
                } else {
                    mediaproc_wire::g711::ulaw_encode(0)
                };
                self.buf[..crate::g711::G711_FRAME_BYTES].fill(silence);
                self.len = crate::g711::G711_FRAME_BYTES;
                Err(e)
            }
        };
        self.finish(marker);
        r
    }

    fn finish(&mut self, marker: bool) {
        // DTX (RFC 7587 §3.1.3): a pause's first "no audio" packet tells the receiver it began; the rest are not
        // sent (their sequence numbers are not used, the timestamp moves on), as libwebrtc does. The receiver
        // plays comfort noise and starts the next talk spurt afresh (NetEQ re-anchors on it).
        self.send = self.codec.is_g711() || self.dtx_gate(self.len);
        self.last = (self.sequence, self.timestamp, marker, self.next_deadline());
        self.dup_ready = false;
        if self.duplicate {
            let slot = &mut self.kept[(self.next_index % DUPLICATE_DELAY_FRAMES as u64) as usize];
            if slot.len > 0 {
                self.dup = *slot;
                self.dup_ready = true;
                self.stats.duplicates += 1;
            }
            // Only audio is worth a second sending: a "no audio" or DTX packet is not kept.
            let audible = self.len > self.codec.dtx_packet_max_len();
            slot.len = if audible { self.len } else { 0 };
            if audible {
                slot.sequence = self.sequence;
                slot.timestamp = self.timestamp;
                slot.marker = marker;
                slot.payload_type = self.payload_type;
                slot.deadline = self.last.3;
                slot.buf[..self.len].copy_from_slice(&self.buf[..self.len]);
            }
        }
        if self.send {
            self.sequence = self.sequence.wrapping_add(1);
            self.stats.packets += 1;
        } else {
            self.stats.dtx_not_sent += 1;
        }
        self.timestamp = self
            .timestamp
            .wrapping_add(self.codec.rtp_ticks_per_frame());
        self.next_index += 1;
    }

    /// Whether the packet of the last [`SendPacer::produce`] goes out (false inside a DTX pause with DTX on).
    pub fn sends(&self) -> bool {
        self.send
    }

    /// The packet produced by the last [`SendPacer::produce`].
    pub fn packet(&self) -> OutgoingPacket<'_> {
        OutgoingPacket {
            ssrc: self.ssrc,
            sequence: self.last.0,
            timestamp: self.last.1,
            marker: self.last.2,
            payload_type: self.payload_type,
            deadline: self.last.3,
            payload: &self.buf[..self.len],
        }
    }

    /// The time-shifted duplicate due with the last [`SendPacer::produce`], if duplicates are on and the packet
    /// [`DUPLICATE_DELAY_FRAMES`] before it carried audio. It is sent after [`SendPacer::packet`].
    pub fn duplicate_packet(&self) -> Option<OutgoingPacket<'_>> {
        let d = &self.dup;
        self.dup_ready.then(|| OutgoingPacket {
            ssrc: self.ssrc,
            sequence: d.sequence,
            timestamp: d.timestamp,
            marker: d.marker,
            payload_type: d.payload_type,
            deadline: d.deadline,
            payload: &d.buf[..d.len],
        })
    }
}

/// `start + index × 20 ms`.
pub fn deadline(start: Duration, index: u64) -> Duration {
    start + FRAME_DURATION * u32::try_from(index).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pacer_started_near_the_clock_origin_still_moves_earlier() {
        let ms = Duration::from_millis;
        let mut p = SendPacer::new(
            ms(4),
            SampleRate::HZ_16000,
            EncoderSettings::default(),
            1,
            111,
            0,
            0,
        )
        .unwrap();
        for _ in 0..3 {
            p.produce(None).unwrap();
        }
        assert_eq!(p.next_deadline(), ms(64));
        assert!(
            !p.shift(-10_000, ms(55)),
            "the next deadline may not fall before `not_before`"
        );
        assert!(p.shift(-10_000, ms(50)));
        assert_eq!(p.next_deadline(), ms(54));
        p.produce(None).unwrap();
        assert_eq!(p.next_deadline(), ms(74));
        assert!(p.shift(4_000, ms(60)));
        assert_eq!(p.next_deadline(), ms(78));
        assert!(!p.shift(-12_000, ms(0)), "at most half a frame");
    }

    #[test]
    fn duplicates_repeat_audible_packets_two_frames_later_unchanged() {
        let mut p = SendPacer::new(
            Duration::ZERO,
            SampleRate::HZ_16000,
            EncoderSettings::default(),
            7,
            111,
            65534,
            0,
        )
        .unwrap();
        let tone: Vec<i16> = (0..320).map(|i| ((i % 40) as i16 - 20) * 400).collect();
        p.set_duplicate(true);
        let mut sent = Vec::new();
        // Audio, audio, silence, audio, audio, audio.
        for audible in [true, true, false, true, true, true] {
            p.produce(audible.then_some(&tone[..])).unwrap();
            let first = p.packet();
            sent.push((first.sequence, first.timestamp, first.payload.to_vec()));
            let dup = p
                .duplicate_packet()
                .map(|d| (d.sequence, d.timestamp, d.payload.to_vec()));
            let k = sent.len() - 1;
            let expect = (k >= DUPLICATE_DELAY_FRAMES)
                .then(|| sent[k - DUPLICATE_DELAY_FRAMES].clone())
                .filter(|(_, _, payload)| payload.len() > 2);
            assert_eq!(dup, expect, "packet {k}");
        }
        // Packets 0, 1, 3 (not the silence packet 2) went out again, across the sequence number's wrap.
        assert_eq!(p.stats().duplicates, 3);
        assert_eq!(
            p.stats().packets,
            6,
            "duplicates are not counted as packets"
        );
        assert_eq!(sent[2].0, 0);
        p.set_duplicate(false);
        p.produce(Some(&tone)).unwrap();
        assert!(p.duplicate_packet().is_none(), "off: nothing kept goes out");
    }

    fn tone(n: usize) -> Vec<i16> {
        (0..n)
            .map(|i| ((i as f32 * 0.3).sin() * 5000.0) as i16)
            .collect()
    }

    #[test]
    fn with_dtx_a_pause_sends_its_first_no_audio_packet_only() {
        let settings = EncoderSettings {
            dtx: true,
            ..EncoderSettings::default()
        };
        let mut p =
            SendPacer::new(Duration::ZERO, SampleRate::HZ_16000, settings, 7, 111, 0, 0).unwrap();
        let tone = tone(320);
        let mut sent = Vec::new();
        for talk in [true, false, false, false, true, false] {
            p.produce(if talk { Some(&tone[..]) } else { None })
                .unwrap();
            if p.sends() {
                let pk = p.packet();
                sent.push((pk.sequence, pk.timestamp, pk.marker, pk.payload.len() > 2));
            }
        }
        // The sequence numbers go on without a gap; the timestamps skip the pause.
        assert_eq!(
            sent,
            [
                (0, 0, true, true),
                (1, 960, false, false),
                (2, 4 * 960, true, true),
                (3, 5 * 960, false, false),
            ]
        );
        assert_eq!(p.stats().packets, 4);
        assert_eq!(p.stats().dtx_not_sent, 2);
        assert_eq!(p.next_deadline(), FRAME_DURATION * 6);
        // Without DTX every tick sends.
        let mut p = SendPacer::new(
            Duration::ZERO,
            SampleRate::HZ_16000,
            EncoderSettings::default(),
            7,
            111,
            0,
            0,
        )
        .unwrap();
        for _ in 0..5 {
            p.produce(None).unwrap();
            assert!(p.sends());
        }
        assert_eq!(p.stats().dtx_not_sent, 0);
    }

    #[test]
    fn pacing_silence_underruns_and_status() {
        let start = Duration::from_millis(7);
        let mut p = SendPacer::new(
            start,
            SampleRate::HZ_16000,
            EncoderSettings::default(),
            42,
            111,
            65535,
            u32::MAX,
        )
        .unwrap();
        assert_eq!(p.next_deadline(), start);
        // Bot silent: no encoder, status inactive, no underrun.
        assert!(!p.produce(None).unwrap());
        let pk = p.packet();
        assert_eq!(
            (pk.sequence, pk.timestamp, pk.payload, pk.deadline),
            (65535, u32::MAX, &[0x48][..], start)
        );
        assert_eq!(p.status(), SendStatus::Inactive);
        // First frame: active, encoded, marker.
        let tone: Vec<i16> = (0..320)
            .map(|i| ((i as f32 * 0.3).sin() * 5000.0) as i16)
            .collect();
        assert!(p.produce(Some(&tone)).unwrap());
        let pk = p.packet();
        assert!(pk.marker && pk.payload.len() > 2);
        assert_eq!((pk.sequence, pk.timestamp), (0, 959));
        assert_eq!(pk.deadline, start + Duration::from_millis(20));
        assert!(!p.produce(Some(&tone)).unwrap());
        assert!(!p.packet().marker);
        // Digital silence skips the encoder; nothing queued is an underrun.
        p.produce(Some(&[0; 320])).unwrap();
        p.produce(None).unwrap();
        assert_eq!(
            p.stats(),
            PacerStats {
                packets: 5,
                encoded: 2,
                encoder_skipped: 3,
                underruns: 1,
                duplicates: 0,
                dtx_not_sent: 0,
            }
        );
        assert_eq!(p.next_deadline(), start + Duration::from_millis(100));
        assert_eq!(deadline(start, 1000), start + Duration::from_secs(20));
    }

    #[test]
    fn g711_packets_are_160_bytes_every_160_ticks() {
        let mut p = SendPacer::new(
            Duration::ZERO,
            SampleRate::HZ_16000,
            EncoderSettings::default(),
            42,
            111,
            7,
            1000,
        )
        .unwrap();
        p.set_codec(Codec::Pcma, 8).unwrap();
        assert_eq!(p.codec(), (Codec::Pcma, 8));
        // Nothing queued: encoded silence, not a "no audio" packet.
        p.produce(None).unwrap();
        let pk = p.packet();
        assert_eq!(
            (pk.payload_type, pk.timestamp, pk.payload.len()),
            (8, 1000, 160)
        );
        assert!(pk.payload.iter().all(|&b| b == 0xd5), "A-law silence");
        let tone: Vec<i16> = (0..320)
            .map(|i| ((i as f32 * 0.3).sin() * 5000.0) as i16)
            .collect();
        assert!(p.produce(Some(&tone)).unwrap());
        let pk = p.packet();
        assert!(pk.marker);
        assert_eq!(
            (pk.sequence, pk.timestamp, pk.payload.len()),
            (8, 1160, 160)
        );
        p.skip(2);
        p.produce(Some(&tone)).unwrap();
        assert_eq!(p.packet().timestamp, 1160 + 3 * 160);
        assert!(p.produce(Some(&tone[..100])).is_err());
        assert_eq!(p.packet().payload.len(), 160, "an error still sends 20 ms");
        // Back to Opus: +960 per packet.
        p.set_codec(Codec::Opus, 111).unwrap();
        p.produce(None).unwrap();
        let ts = p.packet().timestamp;
        p.produce(None).unwrap();
        assert_eq!(p.packet().timestamp.wrapping_sub(ts), 960);
        assert_eq!(p.packet().payload, &OPUS_SILENCE_PACKET[..]);
        assert!(p.set_codec(Codec::Pcmu, 128).is_err());
    }
}
