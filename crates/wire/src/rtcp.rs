//! RTCP (RFC 3550 §6): sender reports, receiver reports, source descriptions and BYE, in compound packets.
//! Parsing borrows from the input; writers serialize into a caller-supplied buffer, one packet per call
//! (a compound packet is their concatenation).

use crate::error::{Reader, Result, WireError, Writer};

/// RTCP packet type of a sender report.
pub const PT_SR: u8 = 200;
/// RTCP packet type of a receiver report.
pub const PT_RR: u8 = 201;
/// RTCP packet type of a source description.
pub const PT_SDES: u8 = 202;
/// RTCP packet type of a BYE.
pub const PT_BYE: u8 = 203;
/// SDES item type of a CNAME.
pub const SDES_CNAME: u8 = 1;
/// Length of one report block.
pub const REPORT_BLOCK_LEN: usize = 24;
/// Length of the sender-info part of an SR.
const SENDER_INFO_LEN: usize = 20;

/// The sender information of an SR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SenderInfo {
    /// 64-bit NTP timestamp of the report (seconds since 1900 in the high 32 bits).
    pub ntp_timestamp: u64,
    /// RTP timestamp corresponding to `ntp_timestamp`.
    pub rtp_timestamp: u32,
    /// Packets sent since the start.
    pub packet_count: u32,
    /// Payload octets sent since the start.
    pub octet_count: u32,
}

/// One reception report block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportBlock {
    /// Source this block reports on.
    pub ssrc: u32,
    /// Fraction lost since the previous report, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative packets lost (24-bit signed; duplicates can make it negative).
    pub cumulative_lost: i32,
    /// Extended highest sequence number received.
    pub highest_sequence: u32,
    /// Interarrival jitter in RTP timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP timestamp of the last SR received from that source (0 if none).
    pub last_sr: u32,
    /// Delay since that SR in 1/65536 s.
    pub delay_since_last_sr: u32,
}

impl ReportBlock {
    fn parse(b: &[u8]) -> Self {
        let u32_at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let raw = (i32::from(b[5]) << 16) | (i32::from(b[6]) << 8) | i32::from(b[7]);
        let cumulative_lost = (raw << 8) >> 8; // sign-extend 24 bits
        Self {
            ssrc: u32_at(0),
            fraction_lost: b[4],
            cumulative_lost,
            highest_sequence: u32_at(8),
            jitter: u32_at(12),
            last_sr: u32_at(16),
            delay_since_last_sr: u32_at(20),
        }
    }

    fn write(&self, w: &mut Writer<'_>) -> Result<()> {
        if !(-(1 << 23)..(1 << 23)).contains(&self.cumulative_lost) {
            return Err(WireError::Invalid {
                what: "RTCP report block",
                field: "cumulative_lost",
                offset: 0,
                reason: "cumulative loss must fit in 24 bits, signed",
            });
        }
        w.u32(self.ssrc)?;
        w.u8(self.fraction_lost)?;
        let c = self.cumulative_lost.to_be_bytes();
        w.bytes(&c[1..])?;
        w.u32(self.highest_sequence)?;
        w.u32(self.jitter)?;
        w.u32(self.last_sr)?;
        w.u32(self.delay_since_last_sr)
    }
}

/// Report blocks of an SR or RR, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlocks<'a>(&'a [u8]);

impl<'a> ReportBlocks<'a> {
    /// Number of blocks.
    pub fn len(&self) -> usize {
        self.0.len() / REPORT_BLOCK_LEN
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The blocks.
    pub fn iter(&self) -> impl Iterator<Item = ReportBlock> + 'a {
        self.0
            .chunks_exact(REPORT_BLOCK_LEN)
            .map(ReportBlock::parse)
    }
}

/// A sender report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderReport<'a> {
    /// Sender's SSRC.
    pub ssrc: u32,
    /// Sender information.
    pub info: SenderInfo,
    /// Reception reports.
    pub reports: ReportBlocks<'a>,
}

/// A receiver report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiverReport<'a> {
    /// Reporter's SSRC.
    pub ssrc: u32,
    /// Reception reports.
    pub reports: ReportBlocks<'a>,
}

/// A source description packet; iterate its chunks with [`Sdes::chunks`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sdes<'a> {
    count: u8,
    body: &'a [u8],
    offset: usize,
}

/// One SDES chunk: an SSRC and its items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdesChunk<'a> {
    /// The source described.
    pub ssrc: u32,
    items: &'a [u8],
}

impl<'a> SdesChunk<'a> {
    /// Items as (type, value).
    pub fn items(&self) -> impl Iterator<Item = (u8, &'a [u8])> + 'a {
        let mut rest = self.items;
        std::iter::from_fn(move || {
            let (&t, tail) = rest.split_first()?;
            if t == 0 {
                return None;
            }
            let (&len, tail) = tail.split_first()?;
            let value = tail.get(..usize::from(len))?;
            rest = &tail[usize::from(len)..];
            Some((t, value))
        })
    }

    /// The CNAME item, if present.
    pub fn cname(&self) -> Option<&'a [u8]> {
        self.items().find(|(t, _)| *t == SDES_CNAME).map(|(_, v)| v)
    }
}

impl<'a> Sdes<'a> {
    /// Number of chunks announced in the header.
    pub fn count(&self) -> u8 {
        self.count
    }

    /// Iterates over chunks; a malformed chunk yields an error and ends the iteration.
    pub fn chunks(&self) -> impl Iterator<Item = Result<SdesChunk<'a>>> + 'a {
        let body = self.body;
        let base = self.offset;
        let mut pos = 0usize;
        let mut left = self.count;
        std::iter::from_fn(move || {
            if left == 0 {
                return None;
            }
            left -= 1;
            let fail = |pos: usize, field: &'static str| {
                Some(Err(WireError::Truncated {
                    what: "RTCP SDES",
                    field,
                    offset: base + pos,
                    needed: 1,
                    available: 0,
                }))
            };
            if pos + 4 > body.len() {
                left = 0;
                return fail(pos, "ssrc");
            }
            let ssrc = u32::from_be_bytes([body[pos], body[pos + 1], body[pos + 2], body[pos + 3]]);
            let start = pos + 4;
            let mut p = start;
            loop {
                match body.get(p) {
                    None => {
                        left = 0;
                        return fail(p, "item");
                    }
                    Some(0) => break,
                    Some(_) => {
                        let Some(&len) = body.get(p + 1) else {
                            left = 0;
                            return fail(p + 1, "item length");
                        };
                        p += 2 + usize::from(len);
                    }
                }
            }
            let items = &body[start..p.min(body.len())];
            // Null terminator, then pad to a 32-bit boundary (measured from the chunk start).
            let end = (p + 1).div_ceil(4) * 4;
            pos = end.min(body.len());
            if p > body.len() {
                left = 0;
                return fail(body.len(), "item data");
            }
            Some(Ok(SdesChunk { ssrc, items }))
        })
    }
}

/// A BYE packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bye<'a> {
    ssrcs: &'a [u8],
    /// Optional reason for leaving (UTF-8 by convention, not checked).
    pub reason: Option<&'a [u8]>,
}

impl<'a> Bye<'a> {
    /// The sources leaving.
    pub fn ssrcs(&self) -> impl Iterator<Item = u32> + 'a {
        self.ssrcs
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
    }
}

/// One packet of an RTCP compound packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RtcpPacket<'a> {
    /// SR (200).
    SenderReport(SenderReport<'a>),
    /// RR (201).
    ReceiverReport(ReceiverReport<'a>),
    /// SDES (202).
    SourceDescription(Sdes<'a>),
    /// BYE (203).
    Goodbye(Bye<'a>),
    /// Any other type (APP, feedback, XR ...), carried opaquely.
    Other {
        /// Packet type.
        packet_type: u8,
        /// The 5-bit count / format field.
        count: u8,
        /// Body after the 4-byte header, without padding.
        body: &'a [u8],
    },
}

/// Iterator over the packets of a compound RTCP packet; see [`parse_compound`].
#[derive(Debug, Clone)]
pub struct RtcpCompound<'a> {
    buf: &'a [u8],
    pos: usize,
    failed: bool,
}

/// Iterates over the packets of a compound RTCP packet. A malformed packet yields one error and ends the
/// iteration; packets before it are still delivered.
pub fn parse_compound(buf: &[u8]) -> RtcpCompound<'_> {
    RtcpCompound {
        buf,
        pos: 0,
        failed: false,
    }
}

impl<'a> Iterator for RtcpCompound<'a> {
    type Item = Result<RtcpPacket<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.buf.len() {
            return None;
        }
        let r = parse_one(self.buf, self.pos);
        match r {
            Ok((p, next)) => {
                self.pos = next;
                Some(Ok(p))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

fn parse_one<'a>(buf: &'a [u8], start: usize) -> Result<(RtcpPacket<'a>, usize)> {
    let mut r = Reader::new(&buf[start..], "RTCP packet");
    let b0 = r.u8("version")?;
    if b0 >> 6 != 2 {
        return Err(WireError::Invalid {
            what: "RTCP packet",
            field: "version",
            offset: start,
            reason: "RTCP version must be 2",
        });
    }
    let count = b0 & 0x1F;
    let packet_type = r.u8("packet type")?;
    let words = usize::from(r.u16("length")?);
    let body_len = words * 4;
    let mut body = r.bytes(body_len, "body").map_err(|e| match e {
        WireError::Truncated {
            needed, available, ..
        } => WireError::Truncated {
            what: "RTCP packet",
            field: "body",
            offset: start + 4,
            needed,
            available,
        },
        e => e,
    })?;
    if b0 & 0x20 != 0 {
        let pad = body.last().copied().unwrap_or(0);
        if pad == 0 || usize::from(pad) > body.len() {
            return Err(WireError::Invalid {
                what: "RTCP packet",
                field: "padding count",
                offset: start + 4 + body_len.saturating_sub(1),
                reason: "padding count is zero or exceeds the body",
            });
        }
        body = &body[..body.len() - usize::from(pad)];
    }
    let next = start + 4 + body_len;
    let body_off = start + 4;
    let blocks = |from: usize, body: &'a [u8]| -> Result<ReportBlocks<'a>> {
        let need = usize::from(count) * REPORT_BLOCK_LEN;
        match body.get(from..from + need) {
            Some(b) => Ok(ReportBlocks(b)),
            None => Err(WireError::Truncated {
                what: "RTCP report",
                field: "report blocks",
                offset: body_off + from,
                needed: need,
                available: body.len().saturating_sub(from),
            }),
        }
    };
    let ssrc_at = |body: &[u8], field: &'static str| -> Result<u32> {
        let mut r = Reader::new(body, "RTCP report");
        r.u32(field).map_err(|_| WireError::Truncated {
            what: "RTCP report",
            field,
            offset: body_off,
            needed: 4,
            available: body.len(),
        })
    };
    let packet = match packet_type {
        PT_SR => {
            let ssrc = ssrc_at(body, "sender ssrc")?;
            if body.len() < 4 + SENDER_INFO_LEN {
                return Err(WireError::Truncated {
                    what: "RTCP SR",
                    field: "sender info",
                    offset: body_off + 4,
                    needed: SENDER_INFO_LEN,
                    available: body.len().saturating_sub(4),
                });
            }
            let mut ir = Reader::new(&body[4..], "RTCP SR");
            let info = SenderInfo {
                ntp_timestamp: ir.u64("ntp timestamp")?,
                rtp_timestamp: ir.u32("rtp timestamp")?,
                packet_count: ir.u32("packet count")?,
                octet_count: ir.u32("octet count")?,
            };
            RtcpPacket::SenderReport(SenderReport {
                ssrc,
                info,
                reports: blocks(4 + SENDER_INFO_LEN, body)?,
            })
        }
        PT_RR => RtcpPacket::ReceiverReport(ReceiverReport {
            ssrc: ssrc_at(body, "reporter ssrc")?,
            reports: blocks(4, body)?,
        }),
        PT_SDES => {
            let sdes = Sdes {
                count,
                body,
                offset: body_off,
            };
            // Validate eagerly so a malformed SDES is reported here rather than at iteration.
            for c in sdes.chunks() {
                c?;
            }
            RtcpPacket::SourceDescription(sdes)
        }
        PT_BYE => {
            let n = usize::from(count) * 4;
            let Some(ssrcs) = body.get(..n) else {
                return Err(WireError::Truncated {
                    what: "RTCP BYE",
                    field: "ssrc list",
                    offset: body_off,
                    needed: n,
                    available: body.len(),
                });
            };
            let reason = match body.get(n) {
                None => None,
                Some(&len) => match body.get(n + 1..n + 1 + usize::from(len)) {
                    Some(v) => Some(v),
                    None => {
                        return Err(WireError::Truncated {
                            what: "RTCP BYE",
                            field: "reason",
                            offset: body_off + n + 1,
                            needed: usize::from(len),
                            available: body.len() - n - 1,
                        });
                    }
                },
            };
            RtcpPacket::Goodbye(Bye { ssrcs, reason })
        }
        _ => RtcpPacket::Other {
            packet_type,
            count,
            body,
        },
    };
    Ok((packet, next))
}

fn header(w: &mut Writer<'_>, count: usize, pt: u8, total_len: usize) -> Result<()> {
    w.reserve_total(total_len)?;
    w.u8(0x80 | count as u8)?;
    w.u8(pt)?;
    w.u16((total_len / 4 - 1) as u16)
}

fn check_blocks(blocks: &[ReportBlock]) -> Result<()> {
    if blocks.len() > 31 {
        return Err(WireError::TooLarge {
            what: "RTCP report",
            field: "report count",
            offset: 0,
            len: blocks.len(),
            limit: 31,
        });
    }
    Ok(())
}

/// Writes an SR; returns its length.
pub fn write_sender_report(
    ssrc: u32,
    info: &SenderInfo,
    blocks: &[ReportBlock],
    buf: &mut [u8],
) -> Result<usize> {
    check_blocks(blocks)?;
    let total = 8 + SENDER_INFO_LEN + blocks.len() * REPORT_BLOCK_LEN;
    let mut w = Writer::new(buf, "RTCP SR");
    header(&mut w, blocks.len(), PT_SR, total)?;
    w.u32(ssrc)?;
    w.u64(info.ntp_timestamp)?;
    w.u32(info.rtp_timestamp)?;
    w.u32(info.packet_count)?;
    w.u32(info.octet_count)?;
    for b in blocks {
        b.write(&mut w)?;
    }
    Ok(w.pos())
}

/// Writes an RR; returns its length.
pub fn write_receiver_report(ssrc: u32, blocks: &[ReportBlock], buf: &mut [u8]) -> Result<usize> {
    check_blocks(blocks)?;
    let total = 8 + blocks.len() * REPORT_BLOCK_LEN;
    let mut w = Writer::new(buf, "RTCP RR");
    header(&mut w, blocks.len(), PT_RR, total)?;
    w.u32(ssrc)?;
    for b in blocks {
        b.write(&mut w)?;
    }
    Ok(w.pos())
}

/// Writes an SDES packet with one chunk holding a CNAME (1..=255 bytes); returns its length.
pub fn write_sdes_cname(ssrc: u32, cname: &[u8], buf: &mut [u8]) -> Result<usize> {
    let len = u8::try_from(cname.len()).map_err(|_| WireError::TooLarge {
        what: "RTCP SDES",
        field: "cname",
        offset: 0,
        len: cname.len(),
        limit: 255,
    })?;
    // ssrc + type + len + value + at least one null, padded to 4.
    let chunk = (4 + 2 + cname.len() + 1).div_ceil(4) * 4;
    let total = 4 + chunk;
    let mut w = Writer::new(buf, "RTCP SDES");
    header(&mut w, 1, PT_SDES, total)?;
    w.u32(ssrc)?;
    w.u8(SDES_CNAME)?;
    w.u8(len)?;
    w.bytes(cname)?;
    w.zeros(total - w.pos())?;
    Ok(w.pos())
}

/// Writes a BYE for up to 31 sources with an optional reason (≤ 255 bytes); returns its length.
pub fn write_bye(ssrcs: &[u32], reason: Option<&[u8]>, buf: &mut [u8]) -> Result<usize> {
    if ssrcs.len() > 31 {
        return Err(WireError::TooLarge {
            what: "RTCP BYE",
            field: "ssrc count",
            offset: 0,
            len: ssrcs.len(),
            limit: 31,
        });
    }
    let reason_len = match reason {
        Some(r) => Some(u8::try_from(r.len()).map_err(|_| WireError::TooLarge {
            what: "RTCP BYE",
            field: "reason",
            offset: 0,
            len: r.len(),
            limit: 255,
        })?),
        None => None,
    };
    let body = ssrcs.len() * 4 + reason.map_or(0, |r| 1 + r.len());
    let total = 4 + body.div_ceil(4) * 4;
    let mut w = Writer::new(buf, "RTCP BYE");
    header(&mut w, ssrcs.len(), PT_BYE, total)?;
    for s in ssrcs {
        w.u32(*s)?;
    }
    if let (Some(r), Some(l)) = (reason, reason_len) {
        w.u8(l)?;
        w.bytes(r)?;
    }
    w.zeros(total - w.pos())?;
    Ok(w.pos())
}

/// Middle 32 bits of a 64-bit NTP timestamp (the form used in LSR).
pub fn ntp_middle32(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

/// Round-trip time from a report block received at `arrival_ntp_middle32` (RFC 3550 §6.4.1:
/// A - LSR - DLSR), in 1/65536 s; `None` when the block carries no LSR or the result is negative.
pub fn round_trip_time(block: &ReportBlock, arrival_ntp_middle32: u32) -> Option<u32> {
    if block.last_sr == 0 {
        return None;
    }
    let rtt = arrival_ntp_middle32
        .wrapping_sub(block.last_sr)
        .wrapping_sub(block.delay_since_last_sr);
    // A negative result wraps to a huge value: treat anything over ~1 hour as invalid.
    (rtt < 3600 * 65536).then_some(rtt)
}
