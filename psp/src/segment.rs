//! A whole PSP segment, from the first PSP byte through the ICV, split with nom.
//!
//! ```text
//! | PSP header (+VC, +hint) | clear part of the body | encrypted part | ICV (16) |
//! 0                    header_len               crypt_start      icv_start    len
//! ```
//! `crypt_start` = end of IV + crypt offset; it may fall inside the VC or extension.

use nom::IResult;
use nom::bytes::complete::take;

use crate::error::{Error, Result};
use crate::header::{BASE_LEN, Header, ICV_LEN, Version};
use crate::hint::{Hint, be_u32};

/// IP protocol number of TCP.
pub const IPPROTO_TCP: u8 = xdp_common::wire::IPPROTO_TCP;
/// Bytes of a TCP header without options.
pub const TCP_MIN_HEADER_LEN: usize = xdp_common::wire::TCP_MIN_LEN;

/// Byte positions inside a PSP segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// End of the PSP header (with VC and extension).
    pub header_len: usize,
    /// First encrypted byte (for GMAC versions: nothing is encrypted).
    pub crypt_start: usize,
    /// First byte of the ICV.
    pub icv_start: usize,
}

impl Layout {
    /// Bytes of the whole segment, ICV included.
    pub fn len(&self) -> usize {
        self.icv_start + ICV_LEN
    }

    /// Never true: a segment holds at least the base header and the ICV.
    pub fn is_empty(&self) -> bool {
        false
    }
}

type NomResult<'a, T> = IResult<&'a [u8], T>;

fn truncated(what: &'static str, needed: usize, got: usize) -> Error {
    Error::Truncated { what, needed, got }
}

/// `header_len` bytes of header, then the body, then exactly `icv_len` bytes of ICV.
fn split(input: &[u8], header_len: usize, icv_len: usize) -> NomResult<'_, (&[u8], &[u8], &[u8])> {
    let (rest, header) = take(header_len)(input)?;
    let body_len = rest.len().saturating_sub(icv_len);
    let (rest, body) = take(body_len)(rest)?;
    let (rest, icv) = take(icv_len)(rest)?;
    Ok((rest, (header, body, icv)))
}

/// A parsed, bounds-checked PSP segment (not yet authenticated).
#[derive(Debug, Clone, Copy)]
pub struct Segment<'a> {
    header: Header<&'a [u8]>,
    body: &'a [u8],
    layout: Layout,
}

impl<'a> Segment<'a> {
    /// Splits `bytes` (first PSP byte through the ICV) and checks every length in it:
    /// the header that Hdr Ext Len announces, a supported version, the always-1 bit, room
    /// for the ICV and a crypt offset within the packet.
    ///
    /// # Errors
    /// [`Error::Truncated`], [`Error::HeaderExtensionTooShort`], [`Error::UnsupportedVersion`],
    /// [`Error::AlwaysOneBitClear`], [`Error::CryptOffsetPastEnd`].
    #[inline]
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        Self::parse_parts(bytes, ICV_LEN, "PSP segment with ICV")
    }

    /// Parses the head of a segment that arrives split, as the XDP program splits it:
    /// `head` runs from the first PSP byte through the TCP header, and the payload and ICV
    /// are elsewhere. The same checks as [`parse`](Self::parse); the layout's `icv_start`
    /// is the end of `head`. Used with [`Sa::open_split`](crate::Sa::open_split), so a
    /// split header is parsed once and never copied.
    ///
    /// # Errors
    /// As [`parse`](Self::parse).
    #[inline]
    pub fn parse_head(head: &'a [u8]) -> Result<Self> {
        Self::parse_parts(head, 0, "PSP segment head")
    }

    #[inline]
    fn parse_parts(bytes: &'a [u8], icv_len: usize, what: &'static str) -> Result<Self> {
        let header = Header::new_checked(bytes)?;
        header.version()?;
        if !header.always_one() {
            return Err(Error::AlwaysOneBitClear);
        }
        let header_len = header.header_len();
        let needed = header_len + icv_len;
        let (_, (_, body, _)) =
            split(bytes, header_len, icv_len).map_err(|_| truncated(what, needed, bytes.len()))?;
        let icv_start = header_len + body.len();
        let crypt_start = header.crypt_start();
        if crypt_start > icv_start {
            return Err(Error::CryptOffsetPastEnd {
                offset: crypt_start - BASE_LEN,
                available: icv_start - BASE_LEN,
            });
        }
        Ok(Self {
            header,
            body,
            layout: Layout {
                header_len,
                crypt_start,
                icv_start,
            },
        })
    }

    /// The bytes parsed: the whole segment, or the head ([`parse_head`](Self::parse_head)).
    pub fn bytes(&self) -> &'a [u8] {
        self.header.into_inner()
    }

    /// The header view.
    pub fn header(&self) -> &Header<&'a [u8]> {
        &self.header
    }

    /// Byte positions.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The placement hint, if the extension area is exactly one.
    #[inline]
    pub fn hint(&self) -> Option<Hint> {
        self.header.hint()
    }

    /// The version (checked by [`Segment::parse`]).
    pub fn version(&self) -> Version {
        // parse() rejected unsupported versions.
        self.header.version().unwrap_or(Version::AesGcm128)
    }

    /// The inner TCP header, when Next Header is TCP and the header lies before the
    /// encrypted part (or the version is GMAC), so it can be read before decryption.
    ///
    /// # Errors
    /// [`Error::NoTcp`] when the next header is not TCP, the TCP header is encrypted, or
    /// it is malformed.
    #[inline]
    pub fn clear_tcp(&self) -> Result<TcpInfo> {
        if self.header.next_header() != IPPROTO_TCP {
            return Err(Error::NoTcp("next header is not TCP"));
        }
        let tcp = TcpInfo::parse(self.body)?;
        let clear_end = if self.version().is_gmac() {
            self.layout.icv_start
        } else {
            self.layout.crypt_start
        };
        if self.layout.header_len + tcp.header_len > clear_end {
            return Err(Error::NoTcp("TCP header is encrypted"));
        }
        Ok(tcp)
    }
}

/// The TCP header fields the testbed uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpInfo {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// Flags (low 8 bits of the offset/flags word).
    pub flags: u8,
    /// Window.
    pub window: u16,
    /// Bytes of the header, options included.
    pub header_len: usize,
}

/// Byte offsets of the TCP header fields.
mod tcp_field {
    use core::ops::Range;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const SEQ: Range<usize> = 4..8;
    pub const ACK: Range<usize> = 8..12;
    pub const DATA_OFFSET: usize = xdp_common::wire::TCP_DATA_OFFSET;
    pub const FLAGS: usize = 13;
    pub const WINDOW: Range<usize> = 14..16;
}

fn be_u16_at(b: &[u8], r: core::ops::Range<usize>) -> u16 {
    u16::from_be_bytes([b[r.start], b[r.start + 1]])
}

impl TcpInfo {
    /// Parses a TCP header at the start of `bytes`.
    ///
    /// # Errors
    /// [`Error::NoTcp`] for a data offset below 5 or a header longer than `bytes`.
    #[inline]
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        if bytes.len() < TCP_MIN_HEADER_LEN {
            return Err(Error::NoTcp("truncated TCP header"));
        }
        let header_len = usize::from(bytes[tcp_field::DATA_OFFSET] >> 4) * 4;
        if header_len < TCP_MIN_HEADER_LEN {
            return Err(Error::NoTcp("TCP data offset below 5"));
        }
        if header_len > bytes.len() {
            return Err(Error::NoTcp("truncated TCP options"));
        }
        Ok(Self {
            src_port: be_u16_at(bytes, tcp_field::SRC_PORT),
            dst_port: be_u16_at(bytes, tcp_field::DST_PORT),
            seq: be_u32(&bytes[tcp_field::SEQ]),
            ack: be_u32(&bytes[tcp_field::ACK]),
            flags: bytes[tcp_field::FLAGS],
            window: be_u16_at(bytes, tcp_field::WINDOW),
            header_len,
        })
    }
}
