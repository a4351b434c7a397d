//! RTP over QUIC datagram framing (draft-ietf-avtcore-rtp-over-quic): each QUIC DATAGRAM frame carries
//! a QUIC variable-length integer *flow identifier* followed by exactly one RTP or RTCP packet.
//!
//! RTP and RTCP of one flow share its flow id and are told apart as in RFC 5761 (see [`is_rtcp`]).

use crate::error::{Result, WireError};

/// Largest value a QUIC variable-length integer can hold (2^62 - 1).
pub const VARINT_MAX: u64 = (1 << 62) - 1;

/// Number of bytes [`encode_varint`] uses for `v`, or `None` if `v` exceeds [`VARINT_MAX`].
pub const fn varint_len(v: u64) -> Option<usize> {
    if v < (1 << 6) {
        Some(1)
    } else if v < (1 << 14) {
        Some(2)
    } else if v < (1 << 30) {
        Some(4)
    } else if v <= VARINT_MAX {
        Some(8)
    } else {
        None
    }
}

/// Length of a varint given its first byte (the two most significant bits).
pub const fn varint_len_from_first_byte(b: u8) -> usize {
    1 << (b >> 6)
}

/// Writes `v` as a QUIC varint (RFC 9000 §16) in its shortest form; returns the bytes written.
pub fn encode_varint(v: u64, buf: &mut [u8]) -> Result<usize> {
    let n = varint_len(v).ok_or(WireError::TooLarge {
        what: "QUIC varint",
        field: "value",
        offset: 0,
        len: usize::try_from(v).unwrap_or(usize::MAX),
        limit: usize::try_from(VARINT_MAX).unwrap_or(usize::MAX),
    })?;
    if buf.len() < n {
        return Err(WireError::BufferTooSmall {
            what: "QUIC varint",
            needed: n,
            available: buf.len(),
        });
    }
    match n {
        1 => buf[0] = v as u8,
        2 => buf[..2].copy_from_slice(&((v as u16) | 0x4000).to_be_bytes()),
        4 => buf[..4].copy_from_slice(&((v as u32) | 0x8000_0000).to_be_bytes()),
        _ => buf[..8].copy_from_slice(&(v | 0xC000_0000_0000_0000).to_be_bytes()),
    }
    Ok(n)
}

/// Reads a QUIC varint from the start of `buf`; returns the value and its length in bytes.
/// Non-shortest encodings are accepted, as RFC 9000 requires.
pub fn decode_varint(buf: &[u8]) -> Result<(u64, usize)> {
    let Some(&first) = buf.first() else {
        return Err(WireError::Truncated {
            what: "QUIC varint",
            field: "value",
            offset: 0,
            needed: 1,
            available: 0,
        });
    };
    let n = varint_len_from_first_byte(first);
    if buf.len() < n {
        return Err(WireError::Truncated {
            what: "QUIC varint",
            field: "value",
            offset: 0,
            needed: n,
            available: buf.len(),
        });
    }
    let mut v = u64::from(first & 0x3F);
    for b in &buf[1..n] {
        v = (v << 8) | u64::from(*b);
    }
    Ok((v, n))
}

/// One RTP-over-QUIC datagram: a flow id and one RTP or RTCP packet, borrowed from the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoqDatagram<'a> {
    /// Flow identifier (declared on the control stream; see the spec).
    pub flow_id: u64,
    /// The RTP or RTCP packet, not parsed here.
    pub packet: &'a [u8],
}

impl<'a> RoqDatagram<'a> {
    /// Splits a datagram into flow id and packet. An empty packet is an error (the draft forbids it).
    pub fn parse(buf: &'a [u8]) -> Result<Self> {
        let (flow_id, n) = decode_varint(buf).map_err(|_| WireError::Truncated {
            what: "RoQ datagram",
            field: "flow_id",
            offset: 0,
            needed: buf.first().map_or(1, |b| varint_len_from_first_byte(*b)),
            available: buf.len(),
        })?;
        let packet = &buf[n..];
        if packet.is_empty() {
            return Err(WireError::Truncated {
                what: "RoQ datagram",
                field: "packet",
                offset: n,
                needed: 1,
                available: 0,
            });
        }
        Ok(Self { flow_id, packet })
    }

    /// Bytes [`Self::write`] needs.
    pub fn encoded_len(&self) -> usize {
        varint_len(self.flow_id).unwrap_or(8) + self.packet.len()
    }

    /// Writes flow id and packet into `buf`; returns the length.
    pub fn write(&self, buf: &mut [u8]) -> Result<usize> {
        let n = write_header(self.flow_id, buf)?;
        let total = n + self.packet.len();
        if buf.len() < total {
            return Err(WireError::BufferTooSmall {
                what: "RoQ datagram",
                needed: total,
                available: buf.len(),
            });
        }
        buf[n..total].copy_from_slice(self.packet);
        Ok(total)
    }
}

/// Writes only the flow id prefix (for callers that serialize the RTP packet right after it, in place).
pub fn write_header(flow_id: u64, buf: &mut [u8]) -> Result<usize> {
    encode_varint(flow_id, buf).map_err(|e| match e {
        WireError::BufferTooSmall {
            needed, available, ..
        } => WireError::BufferTooSmall {
            what: "RoQ datagram",
            needed,
            available,
        },
        _ => WireError::TooLarge {
            what: "RoQ datagram",
            field: "flow_id",
            offset: 0,
            len: usize::try_from(flow_id).unwrap_or(usize::MAX),
            limit: usize::try_from(VARINT_MAX).unwrap_or(usize::MAX),
        },
    })
}

/// RFC 5761 §4 demultiplexing: a packet whose second byte is 192..=223 (RTCP packet types 192-223)
/// is RTCP; anything else is RTP. RTP payload types 64-95 are therefore not used on any flow.
pub fn is_rtcp(packet: &[u8]) -> bool {
    matches!(packet.get(1), Some(192..=223))
}
