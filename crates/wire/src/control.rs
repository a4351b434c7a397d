//! Control-stream messages (spec §5): length-prefixed, versioned, with size limits.
//!
//! Frame layout: `version u8 | type u8 | body_len u16 (big-endian) | body`. Control messages are not on the
//! media hot path, so decoded values own their strings; encoding writes into a caller-supplied buffer.

use uuid::Uuid;

use crate::error::{Reader, Result, WireError, Writer};

/// Protocol version carried in every frame.
pub const PROTOCOL_VERSION: u8 = 1;
/// Length of the frame header.
pub const FRAME_HEADER_LEN: usize = 4;
/// Largest body a frame may carry.
pub const MAX_BODY_LEN: usize = 8192;
/// Largest frame (header + body).
pub const MAX_FRAME_LEN: usize = FRAME_HEADER_LEN + MAX_BODY_LEN;
/// Longest edge token.
pub const MAX_TOKEN_LEN: usize = 64;
/// Most flows declared in one `Attach`.
pub const MAX_FLOWS_PER_ATTACH: usize = 32;
/// Most participants in one `Roster`.
pub const MAX_ROSTER_ENTRIES: usize = 100;
/// Longest participant id.
pub const MAX_PARTICIPANT_ID_LEN: usize = 64;
/// Longest error message text.
pub const MAX_ERROR_TEXT_LEN: usize = 255;
/// Media source id meaning "none" / "mixed".
pub const NO_MSI: u32 = u32::MAX;
/// First message type of the range that receivers silently ignore when unknown (spec §5.4).
pub const FIRST_IGNORABLE_TYPE: u8 = 0x80;

/// Message type codes.
pub mod msg_type {
    /// Edge → MP: attach to a media session.
    pub const ATTACH: u8 = 0x01;
    /// MP → edge: attach accepted.
    pub const ATTACH_OK: u8 = 0x02;
    /// Either: leave a media session.
    pub const DETACH: u8 = 0x03;
    /// Edge → MP: declare one more flow.
    pub const OPEN_FLOW: u8 = 0x04;
    /// Edge → MP: a flow ends.
    pub const CLOSE_FLOW: u8 = 0x05;
    /// Edge → MP: participants and their media source ids.
    pub const ROSTER: u8 = 0x06;
    /// Edge → MP: dominant speaker changed.
    pub const DOMINANT_SPEAKER: u8 = 0x07;
    /// Edge → MP: a DTMF tone was received.
    pub const DTMF: u8 = 0x08;
    /// Edge → MP: whether the MP may send on a source context.
    pub const SEND_STATUS: u8 = 0x09;
    /// Either: keep-alive request.
    pub const KEEP_ALIVE: u8 = 0x0A;
    /// Either: keep-alive answer.
    pub const KEEP_ALIVE_ACK: u8 = 0x0B;
    /// Either: an error.
    pub const ERROR: u8 = 0x0C;
}

/// Error codes of the `Error` message (spec §5.5).
pub mod error_code {
    /// A malformed message or datagram; the connection is closed.
    pub const PROTOCOL_VIOLATION: u16 = 0x0001;
    /// The version byte is not supported; the connection is closed.
    pub const UNSUPPORTED_VERSION: u16 = 0x0002;
    /// A message type in 0x00..=0x7F is unknown to the receiver.
    pub const UNKNOWN_MESSAGE: u16 = 0x0003;
    /// Attach refused: unknown session or wrong token (deliberately one code).
    pub const ATTACH_REFUSED: u16 = 0x0010;
    /// The message names a session not attached on this connection.
    pub const NOT_ATTACHED: u16 = 0x0011;
    /// A flow declaration is invalid or its id is already in use.
    pub const INVALID_FLOW: u16 = 0x0012;
    /// A limit (sessions per connection, flows per session) was reached.
    pub const LIMIT_EXCEEDED: u16 = 0x0013;
    /// Detach reason: the session ended on the MP side.
    pub const SESSION_ENDED: u16 = 0x0020;
    /// Detach reason: another connection attached to the session.
    pub const REPLACED: u16 = 0x0021;
    /// Detach reason: normal.
    pub const NORMAL: u16 = 0x0000;
    /// Something failed inside the receiver.
    pub const INTERNAL: u16 = 0x00FF;
}

/// Direction of a flow, seen from the media processor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Edge → MP: media the bot receives (a *render* context).
    Render = 0,
    /// MP → edge: media the bot sends (a *source* context).
    Source = 1,
}

/// Media kind of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// Audio (the only kind processed in version 1).
    Audio = 0,
    /// Video (reserved: carried opaquely).
    Video = 1,
    /// Data (reserved: carried opaquely).
    Data = 2,
}

/// Codec of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// Not interpreted (video/data in version 1).
    Opaque = 0,
    /// Opus, RFC 7587.
    Opus = 1,
    /// G.711 µ-law.
    Pcmu = 2,
    /// G.711 A-law.
    Pcma = 3,
}

/// A flow declaration: binds a flow id to (session, socket context, participant stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowDecl {
    /// Flow id used in datagrams (QUIC varint, ≤ 2^62-1), unique on the connection.
    pub flow_id: u64,
    /// Direction.
    pub direction: Direction,
    /// Media kind.
    pub media: MediaKind,
    /// Socket context id from the blob (an entry of `audioRenderContexts`, `audioSourceContexts`, ...).
    pub context: Uuid,
    /// Media source id of the participant stream, or [`NO_MSI`] for the mixed stream / the bot's own.
    pub msi: u32,
    /// RTP payload type used on the flow (0..=127).
    pub payload_type: u8,
    /// Codec.
    pub codec: Codec,
}

/// One roster entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Participant {
    /// Graph participant id (≤ 64 bytes of UTF-8).
    pub id: String,
    /// Media source id of the participant's audio.
    pub msi: u32,
    /// Server-muted.
    pub muted: bool,
}

/// A control message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ControlMessage {
    /// Edge → MP: attach to a session, presenting its edge token, with the initial flows.
    Attach {
        /// `mpMediaSessionId`.
        session_id: Uuid,
        /// `edgeToken` from the blob (1..=64 bytes).
        token: Vec<u8>,
        /// Initial flows (≤ 32).
        flows: Vec<FlowDecl>,
    },
    /// MP → edge: the attach succeeded; media may flow.
    AttachOk {
        /// The session.
        session_id: Uuid,
    },
    /// Either: leave a session.
    Detach {
        /// The session.
        session_id: Uuid,
        /// Reason, an [`error_code`].
        reason: u16,
    },
    /// Edge → MP: declare a flow after attach (e.g. a new unmixed speaker).
    OpenFlow {
        /// The session.
        session_id: Uuid,
        /// The flow.
        flow: FlowDecl,
    },
    /// Edge → MP: a flow ends; its id may be reused afterwards.
    CloseFlow {
        /// The session.
        session_id: Uuid,
        /// The flow id.
        flow_id: u64,
    },
    /// Edge → MP: the full participant list (replaces the previous one).
    Roster {
        /// The session.
        session_id: Uuid,
        /// Participants (≤ 100).
        participants: Vec<Participant>,
    },
    /// Edge → MP: dominant speaker changed.
    DominantSpeaker {
        /// The session.
        session_id: Uuid,
        /// Media source id, or [`NO_MSI`] for none.
        msi: u32,
    },
    /// Edge → MP: a DTMF tone.
    Dtmf {
        /// The session.
        session_id: Uuid,
        /// RFC 4733 event code (0..=15).
        event: u8,
        /// Tone duration in milliseconds.
        duration_ms: u16,
    },
    /// Edge → MP: whether the MP may send on a source context.
    SendStatus {
        /// The session.
        session_id: Uuid,
        /// The source context.
        context: Uuid,
        /// True: sending is active.
        active: bool,
    },
    /// Either: keep-alive request; the peer answers with the same nonce.
    KeepAlive {
        /// Opaque.
        nonce: u64,
    },
    /// Either: keep-alive answer.
    KeepAliveAck {
        /// The request's nonce.
        nonce: u64,
    },
    /// Either: an error.
    Error {
        /// An [`error_code`].
        code: u16,
        /// The session concerned, or nil for the connection.
        session_id: Uuid,
        /// Human-readable text (≤ 255 bytes; never discloses other sessions).
        message: String,
    },
}

/// Outcome of [`decode_frame`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// More bytes are needed: at least `needed` in total.
    Incomplete {
        /// Total bytes needed for the frame (header included) when known, else the header length.
        needed: usize,
    },
    /// A known message and the number of bytes it occupied.
    Message(ControlMessage, usize),
    /// A well-framed message of an unknown type; skip `len` bytes (spec §5.4 says what to answer).
    Unknown {
        /// Its type.
        msg_type: u8,
        /// Frame length.
        len: usize,
    },
}

impl ControlMessage {
    /// The message type code.
    pub fn msg_type(&self) -> u8 {
        use msg_type::*;
        match self {
            Self::Attach { .. } => ATTACH,
            Self::AttachOk { .. } => ATTACH_OK,
            Self::Detach { .. } => DETACH,
            Self::OpenFlow { .. } => OPEN_FLOW,
            Self::CloseFlow { .. } => CLOSE_FLOW,
            Self::Roster { .. } => ROSTER,
            Self::DominantSpeaker { .. } => DOMINANT_SPEAKER,
            Self::Dtmf { .. } => DTMF,
            Self::SendStatus { .. } => SEND_STATUS,
            Self::KeepAlive { .. } => KEEP_ALIVE,
            Self::KeepAliveAck { .. } => KEEP_ALIVE_ACK,
            Self::Error { .. } => ERROR,
        }
    }

    /// The session the message concerns, if any.
    pub fn session_id(&self) -> Option<Uuid> {
        match self {
            Self::Attach { session_id, .. }
            | Self::AttachOk { session_id }
            | Self::Detach { session_id, .. }
            | Self::OpenFlow { session_id, .. }
            | Self::CloseFlow { session_id, .. }
            | Self::Roster { session_id, .. }
            | Self::DominantSpeaker { session_id, .. }
            | Self::Dtmf { session_id, .. }
            | Self::SendStatus { session_id, .. } => Some(*session_id),
            Self::Error { session_id, .. } if !session_id.is_nil() => Some(*session_id),
            _ => None,
        }
    }

    /// Serializes the frame (header + body) into `buf`; returns its length.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize> {
        let mut w = Writer::new(buf, "control message");
        w.u8(PROTOCOL_VERSION)?;
        w.u8(self.msg_type())?;
        w.u16(0)?;
        match self {
            Self::Attach {
                session_id,
                token,
                flows,
            } => {
                if token.is_empty() || token.len() > MAX_TOKEN_LEN {
                    return Err(too_large("token", token.len(), MAX_TOKEN_LEN));
                }
                if flows.len() > MAX_FLOWS_PER_ATTACH {
                    return Err(too_large("flows", flows.len(), MAX_FLOWS_PER_ATTACH));
                }
                w.bytes(session_id.as_bytes())?;
                w.u8(token.len() as u8)?;
                w.bytes(token)?;
                w.u8(flows.len() as u8)?;
                for f in flows {
                    write_flow(&mut w, f)?;
                }
            }
            Self::AttachOk { session_id } => w.bytes(session_id.as_bytes())?,
            Self::Detach { session_id, reason } => {
                w.bytes(session_id.as_bytes())?;
                w.u16(*reason)?;
            }
            Self::OpenFlow { session_id, flow } => {
                w.bytes(session_id.as_bytes())?;
                write_flow(&mut w, flow)?;
            }
            Self::CloseFlow {
                session_id,
                flow_id,
            } => {
                w.bytes(session_id.as_bytes())?;
                w.varint(*flow_id, "flow_id")?;
            }
            Self::Roster {
                session_id,
                participants,
            } => {
                if participants.len() > MAX_ROSTER_ENTRIES {
                    return Err(too_large(
                        "participants",
                        participants.len(),
                        MAX_ROSTER_ENTRIES,
                    ));
                }
                w.bytes(session_id.as_bytes())?;
                w.u16(participants.len() as u16)?;
                for p in participants {
                    if p.id.len() > MAX_PARTICIPANT_ID_LEN {
                        return Err(too_large(
                            "participant id",
                            p.id.len(),
                            MAX_PARTICIPANT_ID_LEN,
                        ));
                    }
                    w.u8(p.id.len() as u8)?;
                    w.bytes(p.id.as_bytes())?;
                    w.u32(p.msi)?;
                    w.u8(u8::from(p.muted))?;
                }
            }
            Self::DominantSpeaker { session_id, msi } => {
                w.bytes(session_id.as_bytes())?;
                w.u32(*msi)?;
            }
            Self::Dtmf {
                session_id,
                event,
                duration_ms,
            } => {
                if *event > 15 {
                    return Err(WireError::Invalid {
                        what: "control message",
                        field: "event",
                        offset: 0,
                        reason: "DTMF event codes are 0..=15",
                    });
                }
                w.bytes(session_id.as_bytes())?;
                w.u8(*event)?;
                w.u16(*duration_ms)?;
            }
            Self::SendStatus {
                session_id,
                context,
                active,
            } => {
                w.bytes(session_id.as_bytes())?;
                w.bytes(context.as_bytes())?;
                w.u8(u8::from(*active))?;
            }
            Self::KeepAlive { nonce } | Self::KeepAliveAck { nonce } => w.u64(*nonce)?,
            Self::Error {
                code,
                session_id,
                message,
            } => {
                if message.len() > MAX_ERROR_TEXT_LEN {
                    return Err(too_large("message", message.len(), MAX_ERROR_TEXT_LEN));
                }
                w.u16(*code)?;
                w.bytes(session_id.as_bytes())?;
                w.u8(message.len() as u8)?;
                w.bytes(message.as_bytes())?;
            }
        }
        let body = w.pos() - FRAME_HEADER_LEN;
        if body > MAX_BODY_LEN {
            return Err(too_large("body length", body, MAX_BODY_LEN));
        }
        w.patch_u16(2, body as u16);
        Ok(w.pos())
    }
}

fn too_large(field: &'static str, len: usize, limit: usize) -> WireError {
    WireError::TooLarge {
        what: "control message",
        field,
        offset: 0,
        len,
        limit,
    }
}

fn write_flow(w: &mut Writer<'_>, f: &FlowDecl) -> Result<()> {
    if f.payload_type > 127 {
        return Err(WireError::Invalid {
            what: "control message",
            field: "payload_type",
            offset: 0,
            reason: "payload type must be 0..=127",
        });
    }
    w.varint(f.flow_id, "flow_id")?;
    w.u8(f.direction as u8)?;
    w.u8(f.media as u8)?;
    w.bytes(f.context.as_bytes())?;
    w.u32(f.msi)?;
    w.u8(f.payload_type)?;
    w.u8(f.codec as u8)
}

fn read_uuid(r: &mut Reader<'_>, field: &'static str) -> Result<Uuid> {
    Ok(Uuid::from_bytes(r.array16(field)?))
}

fn read_flow(r: &mut Reader<'_>) -> Result<FlowDecl> {
    let flow_id = r.varint("flow_id")?;
    let at = r.pos();
    let direction = match r.u8("direction")? {
        0 => Direction::Render,
        1 => Direction::Source,
        _ => {
            return Err(r.invalid(
                "direction",
                at,
                "direction must be 0 (render) or 1 (source)",
            ));
        }
    };
    let at = r.pos();
    let media = match r.u8("media")? {
        0 => MediaKind::Audio,
        1 => MediaKind::Video,
        2 => MediaKind::Data,
        _ => {
            return Err(r.invalid(
                "media",
                at,
                "media must be 0 (audio), 1 (video) or 2 (data)",
            ));
        }
    };
    let context = read_uuid(r, "context")?;
    let msi = r.u32("msi")?;
    let at = r.pos();
    let payload_type = r.u8("payload_type")?;
    if payload_type > 127 {
        return Err(r.invalid("payload_type", at, "payload type must be 0..=127"));
    }
    let at = r.pos();
    let codec = match r.u8("codec")? {
        0 => Codec::Opaque,
        1 => Codec::Opus,
        2 => Codec::Pcmu,
        3 => Codec::Pcma,
        _ => return Err(r.invalid("codec", at, "codec must be 0..=3")),
    };
    Ok(FlowDecl {
        flow_id,
        direction,
        media,
        context,
        msi,
        payload_type,
        codec,
    })
}

fn read_str(r: &mut Reader<'_>, len: usize, field: &'static str) -> Result<String> {
    let at = r.pos();
    let b = r.bytes(len, field)?;
    match std::str::from_utf8(b) {
        Ok(s) => Ok(s.to_owned()),
        Err(_) => Err(r.invalid(field, at, "not valid UTF-8")),
    }
}

/// Reads the frame header: returns (message type, total frame length) or `None` if fewer than 4 bytes.
pub fn peek_frame(buf: &[u8]) -> Result<Option<(u8, usize)>> {
    if buf.len() < FRAME_HEADER_LEN {
        return Ok(None);
    }
    if buf[0] != PROTOCOL_VERSION {
        return Err(WireError::UnsupportedVersion {
            version: buf[0],
            supported: PROTOCOL_VERSION,
        });
    }
    let body = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    if body > MAX_BODY_LEN {
        return Err(WireError::TooLarge {
            what: "control message",
            field: "body length",
            offset: 2,
            len: body,
            limit: MAX_BODY_LEN,
        });
    }
    Ok(Some((buf[1], FRAME_HEADER_LEN + body)))
}

/// Decodes one frame from the start of `buf` (a stream reassembly buffer). Bytes after the body of a
/// known message that the message does not define are ignored (spec §5.3: minor extensions append fields).
pub fn decode_frame(buf: &[u8]) -> Result<Decoded> {
    let Some((ty, len)) = peek_frame(buf)? else {
        return Ok(Decoded::Incomplete {
            needed: FRAME_HEADER_LEN,
        });
    };
    if buf.len() < len {
        return Ok(Decoded::Incomplete { needed: len });
    }
    // Offsets in errors are relative to the frame start: parse the body with a reader over the frame.
    let frame = &buf[..len];
    let mut r = Reader::new(frame, "control message");
    r.bytes(FRAME_HEADER_LEN, "header")?;
    use msg_type::*;
    let msg = match ty {
        ATTACH => {
            let session_id = read_uuid(&mut r, "session_id")?;
            let at = r.pos();
            let tlen = usize::from(r.u8("token length")?);
            if tlen == 0 || tlen > MAX_TOKEN_LEN {
                return Err(WireError::TooLarge {
                    what: "control message",
                    field: "token length",
                    offset: at,
                    len: tlen,
                    limit: MAX_TOKEN_LEN,
                });
            }
            let token = r.bytes(tlen, "token")?.to_vec();
            let at = r.pos();
            let n = usize::from(r.u8("flow count")?);
            if n > MAX_FLOWS_PER_ATTACH {
                return Err(WireError::TooLarge {
                    what: "control message",
                    field: "flow count",
                    offset: at,
                    len: n,
                    limit: MAX_FLOWS_PER_ATTACH,
                });
            }
            let mut flows = Vec::with_capacity(n);
            for _ in 0..n {
                flows.push(read_flow(&mut r)?);
            }
            ControlMessage::Attach {
                session_id,
                token,
                flows,
            }
        }
        ATTACH_OK => ControlMessage::AttachOk {
            session_id: read_uuid(&mut r, "session_id")?,
        },
        DETACH => ControlMessage::Detach {
            session_id: read_uuid(&mut r, "session_id")?,
            reason: r.u16("reason")?,
        },
        OPEN_FLOW => ControlMessage::OpenFlow {
            session_id: read_uuid(&mut r, "session_id")?,
            flow: read_flow(&mut r)?,
        },
        CLOSE_FLOW => ControlMessage::CloseFlow {
            session_id: read_uuid(&mut r, "session_id")?,
            flow_id: r.varint("flow_id")?,
        },
        ROSTER => {
            let session_id = read_uuid(&mut r, "session_id")?;
            let at = r.pos();
            let n = usize::from(r.u16("participant count")?);
            if n > MAX_ROSTER_ENTRIES {
                return Err(WireError::TooLarge {
                    what: "control message",
                    field: "participant count",
                    offset: at,
                    len: n,
                    limit: MAX_ROSTER_ENTRIES,
                });
            }
            let mut participants = Vec::with_capacity(n);
            for _ in 0..n {
                let at = r.pos();
                let idlen = usize::from(r.u8("participant id length")?);
                if idlen > MAX_PARTICIPANT_ID_LEN {
                    return Err(WireError::TooLarge {
                        what: "control message",
                        field: "participant id length",
                        offset: at,
                        len: idlen,
                        limit: MAX_PARTICIPANT_ID_LEN,
                    });
                }
                let id = read_str(&mut r, idlen, "participant id")?;
                let msi = r.u32("msi")?;
                let flags = r.u8("flags")?;
                participants.push(Participant {
                    id,
                    msi,
                    muted: flags & 1 != 0,
                });
            }
            ControlMessage::Roster {
                session_id,
                participants,
            }
        }
        DOMINANT_SPEAKER => ControlMessage::DominantSpeaker {
            session_id: read_uuid(&mut r, "session_id")?,
            msi: r.u32("msi")?,
        },
        DTMF => {
            let session_id = read_uuid(&mut r, "session_id")?;
            let at = r.pos();
            let event = r.u8("event")?;
            if event > 15 {
                return Err(r.invalid("event", at, "DTMF event codes are 0..=15"));
            }
            ControlMessage::Dtmf {
                session_id,
                event,
                duration_ms: r.u16("duration_ms")?,
            }
        }
        SEND_STATUS => ControlMessage::SendStatus {
            session_id: read_uuid(&mut r, "session_id")?,
            context: read_uuid(&mut r, "context")?,
            active: r.u8("active")? != 0,
        },
        KEEP_ALIVE => ControlMessage::KeepAlive {
            nonce: r.u64("nonce")?,
        },
        KEEP_ALIVE_ACK => ControlMessage::KeepAliveAck {
            nonce: r.u64("nonce")?,
        },
        ERROR => {
            let code = r.u16("code")?;
            let session_id = read_uuid(&mut r, "session_id")?;
            let n = usize::from(r.u8("message length")?);
            ControlMessage::Error {
                code,
                session_id,
                message: read_str(&mut r, n, "message")?,
            }
        }
        _ => return Ok(Decoded::Unknown { msg_type: ty, len }),
    };
    Ok(Decoded::Message(msg, len))
}
