//! The placement hint: this testbed's 16-byte PSP header extension.
//!
//! ```text
//!  0               1               2               3
//!  0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7
//! +---------------------------------------------------------------+
//! |                          region_id (32)                        |
//! +-------------------------------+-------------------------------+
//! |        generation (16)        |                               |
//! +-------------------------------+         offset (48)           |
//! |                                                               |
//! +---------------------------------------------------------------+
//! |                        base_tcp_seq (32)                       |
//! +---------------------------------------------------------------+
//! ```
//! All fields are big-endian. The receiver computes
//! `region.base + offset + (tcp.seq - base_tcp_seq mod 2^32)`.

use crate::error::{Result, need};

/// Byte offsets of the hint's fields.
mod field {
    use core::ops::Range;
    pub const REGION_ID: Range<usize> = 0..4;
    pub const GENERATION: Range<usize> = 4..6;
    pub const OFFSET: Range<usize> = 6..12;
    pub const BASE_SEQ: Range<usize> = 12..16;
}

/// The largest offset the 48-bit field holds.
pub const MAX_OFFSET: u64 = (1 << 48) - 1;

/// A parsed placement hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Hint {
    /// Which memory region the payload belongs to.
    pub region_id: u32,
    /// Which generation of that region the sender was granted.
    pub generation: u16,
    /// Byte offset in the region at which `base_tcp_seq` belongs (48 bits used).
    pub offset: u64,
    /// The TCP sequence number that `offset` refers to.
    pub base_tcp_seq: u32,
}

impl Hint {
    /// Bytes on the wire.
    pub const LEN: usize = 16;

    /// Reads a hint from the first 16 bytes of `buf`.
    ///
    /// # Errors
    /// [`crate::Error::Truncated`] when `buf` is shorter than 16 bytes.
    #[inline]
    pub fn parse(buf: &[u8]) -> Result<Self> {
        need("placement hint", buf, Self::LEN)?;
        let o = &buf[field::OFFSET];
        let offset = u64::from_be_bytes([0, 0, o[0], o[1], o[2], o[3], o[4], o[5]]);
        Ok(Self {
            region_id: be_u32(&buf[field::REGION_ID]),
            generation: u16::from_be_bytes([
                buf[field::GENERATION.start],
                buf[field::GENERATION.start + 1],
            ]),
            offset,
            base_tcp_seq: be_u32(&buf[field::BASE_SEQ]),
        })
    }

    /// Writes the hint into the first 16 bytes of `buf`. Offset bits above 48 are dropped.
    ///
    /// # Errors
    /// [`crate::Error::Truncated`] when `buf` is shorter than 16 bytes.
    pub fn emit(&self, buf: &mut [u8]) -> Result<()> {
        need("placement hint", buf, Self::LEN)?;
        buf[field::REGION_ID].copy_from_slice(&self.region_id.to_be_bytes());
        buf[field::GENERATION].copy_from_slice(&self.generation.to_be_bytes());
        buf[field::OFFSET].copy_from_slice(&(self.offset & MAX_OFFSET).to_be_bytes()[2..]);
        buf[field::BASE_SEQ].copy_from_slice(&self.base_tcp_seq.to_be_bytes());
        Ok(())
    }

    /// Offset in the region of the byte carried with TCP sequence number `seq`:
    /// `offset + (seq - base_tcp_seq mod 2^32)`. Never overflows (48 + 32 bits fit in 64).
    pub fn region_offset(&self, seq: u32) -> u64 {
        (self.offset & MAX_OFFSET) + u64::from(seq.wrapping_sub(self.base_tcp_seq))
    }
}

/// Big-endian u32 from a 4-byte slice (callers pass a checked range).
#[inline]
pub(crate) fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_big_endian() {
        let hint = Hint {
            region_id: 0x0102_0304,
            generation: 0x0506,
            offset: 0x0708_090a_0b0c,
            base_tcp_seq: 0x0d0e_0f10,
        };
        let mut buf = [0u8; 16];
        hint.emit(&mut buf).unwrap();
        assert_eq!(buf, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]);
        assert_eq!(Hint::parse(&buf).unwrap(), hint);
    }

    #[test]
    fn region_offset_wraps_sequence() {
        let hint = Hint {
            region_id: 1,
            generation: 1,
            offset: 100,
            base_tcp_seq: u32::MAX - 9,
        };
        assert_eq!(hint.region_offset(u32::MAX - 9), 100);
        assert_eq!(hint.region_offset(5), 100 + 15);
        let far = Hint {
            offset: MAX_OFFSET,
            base_tcp_seq: 0,
            ..hint
        };
        assert_eq!(
            far.region_offset(u32::MAX),
            MAX_OFFSET + u64::from(u32::MAX)
        );
    }

    #[test]
    fn short_buffer_is_an_error() {
        assert!(Hint::parse(&[0u8; 15]).is_err());
        assert!(Hint::default().emit(&mut [0u8; 3]).is_err());
    }
}
