//! The one error type of this crate.

/// Everything that can go wrong while parsing or serializing a wire format.
///
/// Every variant names the structure (`what`), and where it makes sense the field and the byte offset
/// (from the start of the buffer handed to the parser) at which the problem was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The input ended before the structure did.
    #[error(
        "{what}: truncated at byte {offset}: field `{field}` needs {needed} bytes, {available} available"
    )]
    Truncated {
        /// Structure being parsed.
        what: &'static str,
        /// Field being read.
        field: &'static str,
        /// Byte offset of the field.
        offset: usize,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the input.
        available: usize,
    },
    /// A field holds a value the format does not allow.
    #[error("{what}: invalid `{field}` at byte {offset}: {reason}")]
    Invalid {
        /// Structure being parsed or written.
        what: &'static str,
        /// Offending field.
        field: &'static str,
        /// Byte offset of the field (0 when serializing a value).
        offset: usize,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// A length or count exceeds a limit of the format or of this implementation.
    #[error("{what}: `{field}` at byte {offset} is {len}, over the limit of {limit}")]
    TooLarge {
        /// Structure being parsed or written.
        what: &'static str,
        /// Offending field.
        field: &'static str,
        /// Byte offset of the field (0 when serializing a value).
        offset: usize,
        /// The length or count found.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The caller-supplied output buffer cannot hold the serialized value.
    #[error("{what}: output buffer too small: need {needed} bytes, have {available}")]
    BufferTooSmall {
        /// Structure being written.
        what: &'static str,
        /// Bytes needed in total.
        needed: usize,
        /// Size of the buffer.
        available: usize,
    },
    /// A control message carries a protocol version this implementation does not speak.
    #[error(
        "control message: unsupported protocol version {version} at byte 0 (this implementation speaks {supported})"
    )]
    UnsupportedVersion {
        /// Version byte found.
        version: u8,
        /// Version this implementation speaks.
        supported: u8,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, WireError>;

/// Bounds-checked big-endian reader over a borrowed buffer; offsets in errors are absolute.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Self { buf, pos: 0, what }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn bytes(&mut self, n: usize, field: &'static str) -> Result<&'a [u8]> {
        if self.remaining() < n {
            return Err(WireError::Truncated {
                what: self.what,
                field,
                offset: self.pos,
                needed: n,
                available: self.remaining(),
            });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let out = &self.buf[self.pos..];
        self.pos = self.buf.len();
        out
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8> {
        Ok(self.bytes(1, field)?[0])
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16> {
        let b = self.bytes(2, field)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32> {
        let b = self.bytes(4, field)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64> {
        let hi = self.u32(field)?;
        let lo = self.u32(field)?;
        Ok((u64::from(hi) << 32) | u64::from(lo))
    }

    pub(crate) fn array16(&mut self, field: &'static str) -> Result<[u8; 16]> {
        let b = self.bytes(16, field)?;
        let mut out = [0u8; 16];
        out.copy_from_slice(b);
        Ok(out)
    }

    pub(crate) fn varint(&mut self, field: &'static str) -> Result<u64> {
        let offset = self.pos;
        match crate::roq::decode_varint(&self.buf[self.pos..]) {
            Ok((v, n)) => {
                self.pos += n;
                Ok(v)
            }
            Err(_) => {
                let needed = self
                    .buf
                    .get(self.pos)
                    .map_or(1, |b| crate::roq::varint_len_from_first_byte(*b));
                Err(WireError::Truncated {
                    what: self.what,
                    field,
                    offset,
                    needed,
                    available: self.remaining(),
                })
            }
        }
    }

    pub(crate) fn invalid(
        &self,
        field: &'static str,
        offset: usize,
        reason: &'static str,
    ) -> WireError {
        WireError::Invalid {
            what: self.what,
            field,
            offset,
            reason,
        }
    }
}

/// Bounds-checked big-endian writer into a caller-supplied buffer.
#[derive(Debug)]
pub(crate) struct Writer<'b> {
    buf: &'b mut [u8],
    pos: usize,
    what: &'static str,
}

impl<'b> Writer<'b> {
    pub(crate) fn new(buf: &'b mut [u8], what: &'static str) -> Self {
        Self { buf, pos: 0, what }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// Fails unless `total` bytes fit in the buffer (checked up front so nothing half-written is reported as success).
    pub(crate) fn reserve_total(&self, total: usize) -> Result<()> {
        if self.buf.len() < total {
            return Err(WireError::BufferTooSmall {
                what: self.what,
                needed: total,
                available: self.buf.len(),
            });
        }
        Ok(())
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) -> Result<()> {
        self.reserve_total(self.pos + b.len())?;
        self.buf[self.pos..self.pos + b.len()].copy_from_slice(b);
        self.pos += b.len();
        Ok(())
    }

    pub(crate) fn zeros(&mut self, n: usize) -> Result<()> {
        self.reserve_total(self.pos + n)?;
        self.buf[self.pos..self.pos + n].fill(0);
        self.pos += n;
        Ok(())
    }

    pub(crate) fn u8(&mut self, v: u8) -> Result<()> {
        self.bytes(&[v])
    }

    pub(crate) fn u16(&mut self, v: u16) -> Result<()> {
        self.bytes(&v.to_be_bytes())
    }

    pub(crate) fn u32(&mut self, v: u32) -> Result<()> {
        self.bytes(&v.to_be_bytes())
    }

    pub(crate) fn u64(&mut self, v: u64) -> Result<()> {
        self.bytes(&v.to_be_bytes())
    }

    pub(crate) fn varint(&mut self, v: u64, field: &'static str) -> Result<()> {
        let n = crate::roq::varint_len(v).ok_or(WireError::TooLarge {
            what: self.what,
            field,
            offset: 0,
            len: usize::try_from(v).unwrap_or(usize::MAX),
            limit: usize::try_from(crate::roq::VARINT_MAX).unwrap_or(usize::MAX),
        })?;
        self.reserve_total(self.pos + n)?;
        crate::roq::encode_varint(v, &mut self.buf[self.pos..])?;
        self.pos += n;
        Ok(())
    }

    /// Overwrites two bytes at `at` (for length fields known only at the end).
    pub(crate) fn patch_u16(&mut self, at: usize, v: u16) {
        self.buf[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }
}
