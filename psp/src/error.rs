//! The one error type of the `psp` crate.

use thiserror::Error;

/// Everything that can go wrong when parsing, building, sealing or opening PSP packets.
///
/// Every malformed input maps to one of these variants; no function of this crate panics
/// on input bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum Error {
    /// The buffer ends before the structure it should hold.
    #[error("truncated: {what} needs {needed} bytes, {got} available")]
    Truncated {
        /// Which structure was being read.
        what: &'static str,
        /// Bytes the structure needs.
        needed: usize,
        /// Bytes that were there.
        got: usize,
    },
    /// The 4-bit version field names no version this crate knows (0 to 3).
    #[error("unsupported PSP version {0}")]
    UnsupportedVersion(u8),
    /// The bit that the specification requires to be 1 is 0.
    #[error("PSP header's always-1 bit is 0")]
    AlwaysOneBitClear,
    /// Hdr Ext Len is too small for the header it announces (at least 1, 2 with a VC).
    #[error("PSP Hdr Ext Len {0} is too small")]
    HeaderExtensionTooShort(u8),
    /// The crypt offset points past the end of the authenticated data.
    #[error("crypt offset of {offset} bytes lies past the {available} bytes after the IV")]
    CryptOffsetPastEnd {
        /// Crypt offset in bytes, counted from the end of the IV.
        offset: usize,
        /// Bytes between the end of the IV and the ICV.
        available: usize,
    },
    /// A crypt offset or length does not fit its field.
    #[error("{what} of {value} does not fit its field (max {max})")]
    FieldOverflow {
        /// Which field.
        what: &'static str,
        /// The value that was asked for.
        value: usize,
        /// The largest value the field holds.
        max: usize,
    },
    /// The frame is not Ethernet / IP / UDP to port 1000.
    #[error("not a PSP frame: {0}")]
    NotPsp(&'static str),
    /// The inner packet is not TCP, or its TCP header is not readable.
    #[error("no readable TCP header: {0}")]
    NoTcp(&'static str),
    /// The ICV did not verify: the packet was altered or sealed with another key.
    #[error("authentication failed (ICV mismatch)")]
    AuthenticationFailed,
    /// The packet's SPI or version is not the one of the security association used.
    #[error(
        "packet (SPI {packet_spi:#010x}, version {packet_version}) does not belong to this SA (SPI {sa_spi:#010x}, version {sa_version})"
    )]
    SaMismatch {
        /// SPI in the packet.
        packet_spi: u32,
        /// Version in the packet.
        packet_version: u8,
        /// SPI of the SA.
        sa_spi: u32,
        /// Version of the SA.
        sa_version: u8,
    },
    /// A derived key has the wrong length for the version.
    #[error("key of {got} bytes does not fit version {version} (needs {needed})")]
    KeyLength {
        /// The version.
        version: u8,
        /// Bytes the version needs.
        needed: usize,
        /// Bytes given.
        got: usize,
    },
}

/// Result with the crate's [`Error`].
pub type Result<T> = core::result::Result<T, Error>;

/// Checks that `buf` holds at least `needed` bytes.
#[inline]
pub(crate) fn need(what: &'static str, buf: &[u8], needed: usize) -> Result<()> {
    if buf.len() < needed {
        Err(Error::Truncated {
            what,
            needed,
            got: buf.len(),
        })
    } else {
        Ok(())
    }
}
