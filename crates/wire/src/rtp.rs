//! RTP packets (RFC 3550 §5.1) and RFC 8285 header extensions, parsed without copying.

use crate::error::{Reader, Result, WireError, Writer};

/// Length of the fixed RTP header.
pub const RTP_FIXED_HEADER_LEN: usize = 12;
/// Profile value of an RFC 8285 one-byte header extension block.
pub const ONE_BYTE_PROFILE: u16 = 0xBEDE;
/// Profile value of an RFC 8285 two-byte header extension block (the low 4 "appbits" are free).
pub const TWO_BYTE_PROFILE: u16 = 0x1000;
/// Largest RTP packet this implementation reads or writes (fits an Ethernet MTU in UDP).
pub const MAX_RTP_PACKET_LEN: usize = 1472;

/// A parsed RTP packet. All slices borrow from the input buffer.
///
/// [`RtpPacket::write`] produces the canonical encoding of the value; `parse(write(p)) == p` holds for every
/// value `write` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    /// The M bit (for Opus: unused, 0; for RFC 4733: first packet of an event).
    pub marker: bool,
    /// Payload type, 0..=127.
    pub payload_type: u8,
    /// Sequence number.
    pub sequence: u16,
    /// RTP timestamp (48 kHz for Opus, 8 kHz for G.711).
    pub timestamp: u32,
    /// Synchronization source.
    pub ssrc: u32,
    /// Contributing sources, 4 bytes each, at most 15.
    pub csrc: Csrcs<'a>,
    /// The header extension block, if the X bit is set.
    pub extension: Option<HeaderExtension<'a>>,
    /// The payload, without padding.
    pub payload: &'a [u8],
    /// Number of padding bytes (including the final count byte); 0 when the P bit is clear.
    pub padding: u8,
}

/// The CSRC list of an RTP packet, borrowed (4 bytes per entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Csrcs<'a>(&'a [u8]);

impl<'a> Csrcs<'a> {
    /// No contributing sources.
    pub const EMPTY: Csrcs<'static> = Csrcs(&[]);

    /// Wraps raw CSRC bytes; the length must be a multiple of 4 and at most 60.
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Self> {
        if bytes.len() % 4 != 0 {
            return Err(WireError::Invalid {
                what: "RTP packet",
                field: "csrc",
                offset: RTP_FIXED_HEADER_LEN,
                reason: "CSRC list length is not a multiple of 4",
            });
        }
        if bytes.len() > 60 {
            return Err(WireError::TooLarge {
                what: "RTP packet",
                field: "csrc count",
                offset: 0,
                len: bytes.len() / 4,
                limit: 15,
            });
        }
        Ok(Self(bytes))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len() / 4
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.0
    }

    /// The CSRC values.
    pub fn iter(&self) -> impl Iterator<Item = u32> + 'a {
        self.0
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
    }
}

/// An RTP header extension block (RFC 3550 §5.3.1), borrowed. With profile [`ONE_BYTE_PROFILE`] or
/// [`TWO_BYTE_PROFILE`] its data holds RFC 8285 elements, read with [`HeaderExtension::elements`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderExtension<'a> {
    /// The "defined by profile" field.
    pub profile: u16,
    /// The extension data; its length is a multiple of 4.
    pub data: &'a [u8],
}

/// The two RFC 8285 element forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtensionForm {
    /// One-byte headers: ids 1..=14, 1..=16 data bytes.
    OneByte,
    /// Two-byte headers: ids 1..=255, 0..=255 data bytes.
    TwoByte,
}

impl ExtensionForm {
    /// Profile value of this form.
    pub fn profile(self) -> u16 {
        match self {
            Self::OneByte => ONE_BYTE_PROFILE,
            Self::TwoByte => TWO_BYTE_PROFILE,
        }
    }
}

/// One RFC 8285 extension element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtensionElement<'a> {
    /// Local identifier negotiated for the extension (e.g. the audio level id declared in the spec).
    pub id: u8,
    /// Element data.
    pub data: &'a [u8],
}

impl<'a> HeaderExtension<'a> {
    /// The RFC 8285 form of this block, if it is one.
    pub fn form(&self) -> Option<ExtensionForm> {
        if self.profile == ONE_BYTE_PROFILE {
            Some(ExtensionForm::OneByte)
        } else if self.profile & 0xFFF0 == TWO_BYTE_PROFILE {
            Some(ExtensionForm::TwoByte)
        } else {
            None
        }
    }

    /// Iterates over RFC 8285 elements (empty if the block is not RFC 8285). A malformed element yields
    /// one error and ends the iteration.
    pub fn elements(&self) -> ExtensionElements<'a> {
        ExtensionElements {
            form: self.form(),
            data: self.data,
            pos: 0,
        }
    }

    /// Data of the first element with `id`, if present and well-formed up to it.
    pub fn find(&self, id: u8) -> Option<&'a [u8]> {
        self.elements()
            .map_while(|e| e.ok())
            .find(|e| e.id == id)
            .map(|e| e.data)
    }
}

/// Iterator over RFC 8285 elements; see [`HeaderExtension::elements`].
#[derive(Debug, Clone)]
pub struct ExtensionElements<'a> {
    form: Option<ExtensionForm>,
    data: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for ExtensionElements<'a> {
    type Item = Result<ExtensionElement<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        let form = self.form?;
        loop {
            let first = *self.data.get(self.pos)?;
            if first == 0 {
                // Padding byte between or after elements.
                self.pos += 1;
                continue;
            }
            let start = self.pos;
            let (id, len, hdr) = match form {
                ExtensionForm::OneByte => {
                    let id = first >> 4;
                    if id == 15 {
                        // RFC 8285 §4.2: id 15 is reserved; stop processing the block.
                        self.form = None;
                        return None;
                    }
                    (id, usize::from(first & 0x0F) + 1, 1)
                }
                ExtensionForm::TwoByte => {
                    let Some(&len) = self.data.get(self.pos + 1) else {
                        self.form = None;
                        return Some(Err(WireError::Truncated {
                            what: "RTP header extension",
                            field: "element length",
                            offset: start + 1,
                            needed: 1,
                            available: 0,
                        }));
                    };
                    (first, usize::from(len), 2)
                }
            };
            let data_start = start + hdr;
            if data_start + len > self.data.len() {
                self.form = None;
                return Some(Err(WireError::Truncated {
                    what: "RTP header extension",
                    field: "element data",
                    offset: data_start,
                    needed: len,
                    available: self.data.len().saturating_sub(data_start),
                }));
            }
            self.pos = data_start + len;
            return Some(Ok(ExtensionElement {
                id,
                data: &self.data[data_start..data_start + len],
            }));
        }
    }
}

/// Writes RFC 8285 elements as extension data (zero-padded to a multiple of 4) into `buf`; returns the
/// length. Use the written bytes as [`HeaderExtension::data`] with `form.profile()`.
pub fn write_extension_elements(
    form: ExtensionForm,
    elements: &[ExtensionElement<'_>],
    buf: &mut [u8],
) -> Result<usize> {
    let mut w = Writer::new(buf, "RTP header extension");
    for e in elements {
        match form {
            ExtensionForm::OneByte => {
                if !(1..=14).contains(&e.id) {
                    return Err(WireError::Invalid {
                        what: "RTP header extension",
                        field: "id",
                        offset: 0,
                        reason: "one-byte element ids are 1..=14",
                    });
                }
                if e.data.is_empty() || e.data.len() > 16 {
                    return Err(WireError::Invalid {
                        what: "RTP header extension",
                        field: "element data",
                        offset: 0,
                        reason: "one-byte elements carry 1..=16 bytes",
                    });
                }
                w.u8((e.id << 4) | (e.data.len() as u8 - 1))?;
            }
            ExtensionForm::TwoByte => {
                if e.id == 0 {
                    return Err(WireError::Invalid {
                        what: "RTP header extension",
                        field: "id",
                        offset: 0,
                        reason: "two-byte element id 0 is padding",
                    });
                }
                let len = u8::try_from(e.data.len()).map_err(|_| WireError::TooLarge {
                    what: "RTP header extension",
                    field: "element data",
                    offset: 0,
                    len: e.data.len(),
                    limit: 255,
                })?;
                w.u8(e.id)?;
                w.u8(len)?;
            }
        }
        w.bytes(e.data)?;
    }
    let pad = (4 - w.pos() % 4) % 4;
    w.zeros(pad)?;
    Ok(w.pos())
}

impl<'a> RtpPacket<'a> {
    /// A packet with no CSRCs, extension or padding.
    pub fn new(
        payload_type: u8,
        sequence: u16,
        timestamp: u32,
        ssrc: u32,
        payload: &'a [u8],
    ) -> Self {
        Self {
            marker: false,
            payload_type,
            sequence,
            timestamp,
            ssrc,
            csrc: Csrcs::default(),
            extension: None,
            payload,
            padding: 0,
        }
    }

    /// Parses one RTP packet occupying all of `buf`.
    pub fn parse(buf: &'a [u8]) -> Result<Self> {
        let mut r = Reader::new(buf, "RTP packet");
        let b0 = r.u8("version")?;
        if b0 >> 6 != 2 {
            return Err(r.invalid("version", 0, "RTP version must be 2"));
        }
        let has_padding = b0 & 0x20 != 0;
        let has_extension = b0 & 0x10 != 0;
        let cc = usize::from(b0 & 0x0F);
        let b1 = r.u8("payload type")?;
        let sequence = r.u16("sequence number")?;
        let timestamp = r.u32("timestamp")?;
        let ssrc = r.u32("ssrc")?;
        let csrc = Csrcs(r.bytes(cc * 4, "csrc")?);
        let extension = if has_extension {
            let profile = r.u16("extension profile")?;
            let words = usize::from(r.u16("extension length")?);
            Some(HeaderExtension {
                profile,
                data: r.bytes(words * 4, "extension data")?,
            })
        } else {
            None
        };
        let body_start = r.pos();
        let mut body = r.rest();
        let mut padding = 0u8;
        if has_padding {
            let Some(&count) = body.last() else {
                return Err(WireError::Truncated {
                    what: "RTP packet",
                    field: "padding count",
                    offset: body_start,
                    needed: 1,
                    available: 0,
                });
            };
            if count == 0 || usize::from(count) > body.len() {
                return Err(WireError::Invalid {
                    what: "RTP packet",
                    field: "padding count",
                    offset: buf.len() - 1,
                    reason: "padding count is zero or exceeds the payload",
                });
            }
            padding = count;
            body = &body[..body.len() - usize::from(count)];
        }
        Ok(Self {
            marker: b1 & 0x80 != 0,
            payload_type: b1 & 0x7F,
            sequence,
            timestamp,
            ssrc,
            csrc,
            extension,
            payload: body,
            padding,
        })
    }

    /// Length of the header (fixed part, CSRCs and extension).
    pub fn header_len(&self) -> usize {
        RTP_FIXED_HEADER_LEN + self.csrc.0.len() + self.extension.map_or(0, |e| 4 + e.data.len())
    }

    /// Bytes [`Self::write`] needs.
    pub fn encoded_len(&self) -> usize {
        self.header_len() + self.payload.len() + usize::from(self.padding)
    }

    /// Serializes into `buf` (padding bytes are zero, the last one the count); returns the length.
    pub fn write(&self, buf: &mut [u8]) -> Result<usize> {
        if self.payload_type > 127 {
            return Err(WireError::Invalid {
                what: "RTP packet",
                field: "payload type",
                offset: 1,
                reason: "payload type must be 0..=127",
            });
        }
        Csrcs::from_bytes(self.csrc.0)?;
        if let Some(ext) = &self.extension {
            if ext.data.len() % 4 != 0 || ext.data.len() > usize::from(u16::MAX) * 4 {
                return Err(WireError::Invalid {
                    what: "RTP packet",
                    field: "extension data",
                    offset: 0,
                    reason: "extension data length must be a multiple of 4 up to 262140",
                });
            }
        }
        let mut w = Writer::new(buf, "RTP packet");
        w.reserve_total(self.encoded_len())?;
        let b0 = 0x80
            | if self.padding > 0 { 0x20 } else { 0 }
            | if self.extension.is_some() { 0x10 } else { 0 }
            | (self.csrc.len() as u8);
        w.u8(b0)?;
        w.u8(self.payload_type | if self.marker { 0x80 } else { 0 })?;
        w.u16(self.sequence)?;
        w.u32(self.timestamp)?;
        w.u32(self.ssrc)?;
        w.bytes(self.csrc.0)?;
        if let Some(ext) = &self.extension {
            w.u16(ext.profile)?;
            w.u16((ext.data.len() / 4) as u16)?;
            w.bytes(ext.data)?;
        }
        w.bytes(self.payload)?;
        if self.padding > 0 {
            w.zeros(usize::from(self.padding) - 1)?;
            w.u8(self.padding)?;
        }
        Ok(w.pos())
    }
}

/// RFC 6464 client-to-mixer audio level: the V (voice activity) flag and the level in -dBov (0 = loudest,
/// 127 = silence).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioLevel {
    /// Voice activity detected by the sender.
    pub voice: bool,
    /// Level in -dBov, 0..=127.
    pub level: u8,
}

impl AudioLevel {
    /// Reads the element data (one byte; RFC 6464 also allows a two-byte form whose second byte is padding).
    pub fn parse(data: &[u8]) -> Result<Self> {
        let Some(&b) = data.first() else {
            return Err(WireError::Truncated {
                what: "RFC 6464 audio level",
                field: "level",
                offset: 0,
                needed: 1,
                available: 0,
            });
        };
        Ok(Self {
            voice: b & 0x80 != 0,
            level: b & 0x7F,
        })
    }

    /// The one-byte element data.
    pub fn to_byte(self) -> u8 {
        (if self.voice { 0x80 } else { 0 }) | self.level.min(127)
    }

    /// Level of 16-bit PCM samples in -dBov (RFC 6464 §3: RMS relative to a full-scale square wave),
    /// 127 for digital silence.
    pub fn level_of_pcm16(samples: &[i16]) -> u8 {
        if samples.is_empty() {
            return 127;
        }
        let sum: f64 = samples.iter().map(|s| f64::from(*s) * f64::from(*s)).sum();
        let rms = (sum / samples.len() as f64).sqrt() / 32768.0;
        if rms <= 0.0 {
            return 127;
        }
        let db = -20.0 * rms.log10();
        db.round().clamp(0.0, 127.0) as u8
    }
}

/// An RFC 4733 telephone-event payload block (4 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// Event code: 0-9 digits, 10 `*`, 11 `#`, 12-15 `A`-`D` (RFC 4733 §3.2).
    pub event: u8,
    /// The E bit: last packet(s) of the event.
    pub end: bool,
    /// Volume in -dBm0, 0..=63.
    pub volume: u8,
    /// Duration in RTP timestamp units since the event's timestamp.
    pub duration: u16,
}

/// Length of one RFC 4733 event block.
pub const TELEPHONE_EVENT_LEN: usize = 4;

impl TelephoneEvent {
    /// Parses the first event block of an RFC 4733 payload (further blocks, if any, are redundant copies
    /// and are ignored).
    pub fn parse(payload: &[u8]) -> Result<Self> {
        let mut r = Reader::new(payload, "RFC 4733 event");
        let event = r.u8("event")?;
        let flags = r.u8("flags")?;
        let duration = r.u16("duration")?;
        Ok(Self {
            event,
            end: flags & 0x80 != 0,
            volume: flags & 0x3F,
            duration,
        })
    }

    /// Writes the 4-byte block; returns 4.
    pub fn write(&self, buf: &mut [u8]) -> Result<usize> {
        if self.volume > 63 {
            return Err(WireError::Invalid {
                what: "RFC 4733 event",
                field: "volume",
                offset: 1,
                reason: "volume must be 0..=63",
            });
        }
        let mut w = Writer::new(buf, "RFC 4733 event");
        w.reserve_total(TELEPHONE_EVENT_LEN)?;
        w.u8(self.event)?;
        w.u8(if self.end { 0x80 } else { 0 } | self.volume)?;
        w.u16(self.duration)?;
        Ok(w.pos())
    }

    /// The DTMF character of the event (`0`-`9`, `*`, `#`, `A`-`D`), if it is a DTMF event.
    pub fn dtmf_char(&self) -> Option<char> {
        dtmf_char(self.event)
    }
}

/// The DTMF character of an RFC 4733 event code.
pub fn dtmf_char(event: u8) -> Option<char> {
    match event {
        0..=9 => Some(char::from(b'0' + event)),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some(char::from(b'A' + event - 12)),
        _ => None,
    }
}

/// The RFC 4733 event code of a DTMF character.
pub fn dtmf_event(c: char) -> Option<u8> {
    match c {
        '0'..='9' => Some(c as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        'A'..='D' => Some(c as u8 - b'A' + 12),
        'a'..='d' => Some(c as u8 - b'a' + 12),
        _ => None,
    }
}
