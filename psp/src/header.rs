//! The PSP header: a checked zero-copy view ([`Header`]) and a parsed form ([`HeaderRepr`]).
//!
//! ```text
//!  0               1               2               3
//!  0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7
//! +---------------+---------------+-+-+-----------+-+-+-------+-+-+
//! |  Next Header  |  Hdr Ext Len  |R|R|Crypt Off  |S|D|Version|V|1|
//! +---------------+---------------+-+-+-----------+-+-+-------+-+-+
//! |                Security Parameters Index (SPI)                |
//! +---------------------------------------------------------------+
//! |                 Initialization Vector (IV, 64)                |
//! +---------------------------------------------------------------+
//! |           Virtualization Cookie (64, only when V=1)           |
//! +---------------------------------------------------------------+
//! |          extension area (this testbed: placement hint)        |
//! +---------------------------------------------------------------+
//! ```
//! Hdr Ext Len counts 8-octet units after the first 8 octets, so the plain header has 1,
//! with a VC 2, with the placement hint 3 (4 with a VC).

use crate::error::{Error, Result, need};
use crate::hint::{Hint, be_u32};

/// Byte offsets of the header's fields: declared once ([`xdp_common::wire`], shared with
/// the XDP program and psp-pcap), used by the view and the repr.
mod field {
    use core::ops::Range;
    use xdp_common::wire;
    pub const NEXT_HEADER: usize = wire::PSP_NEXT_HEADER;
    pub const HDR_EXT_LEN: usize = wire::PSP_HDR_EXT_LEN;
    /// Bits 7-6 reserved, bits 5-0 the crypt offset in 4-octet units.
    pub const CRYPT_OFFSET: usize = wire::PSP_CRYPT_OFFSET;
    /// S(7) D(6) Version(5-2) V(1) always-1(0).
    pub const FLAGS: usize = wire::PSP_FLAGS;
    pub const SPI: Range<usize> = wire::PSP_SPI;
    pub const IV: Range<usize> = wire::PSP_IV;
    pub const VC: Range<usize> = wire::PSP_VC;
}

const CRYPT_OFFSET_MASK: u8 = xdp_common::wire::PSP_CRYPT_OFFSET_MASK;
const RESERVED_SHIFT: u8 = 6;
const FLAG_S: u8 = 0x80;
const FLAG_D: u8 = 0x40;
const VERSION_SHIFT: u8 = xdp_common::wire::PSP_VERSION_SHIFT;
const VERSION_MASK: u8 = xdp_common::wire::PSP_VERSION_MASK;
const FLAG_V: u8 = 0x02;
const ALWAYS_ONE: u8 = 0x01;

/// The UDP destination port of PSP.
pub const UDP_PORT: u16 = xdp_common::wire::PSP_UDP_PORT;
/// Bytes of the header up to and including the IV.
pub const BASE_LEN: usize = xdp_common::wire::PSP_BASE_LEN;
/// Bytes of the Virtualization Cookie.
pub const VC_LEN: usize = xdp_common::wire::PSP_VC_LEN;
/// Bytes of the ICV (the AES-GCM tag) that trails the packet.
pub const ICV_LEN: usize = xdp_common::wire::ICV_LEN;
/// The crypt offset counts units of this many bytes.
pub const CRYPT_OFFSET_UNIT: usize = xdp_common::wire::PSP_CRYPT_OFFSET_UNIT;
/// The largest crypt offset the 6-bit field holds, in units.
pub const MAX_CRYPT_OFFSET: u8 = CRYPT_OFFSET_MASK;
/// Hdr Ext Len counts units of this many bytes.
const EXT_UNIT: usize = xdp_common::wire::PSP_EXT_UNIT;

/// PSP versions: the cipher that protects the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// AES-GCM with a 128-bit key: payload encrypted and authenticated.
    AesGcm128 = 0,
    /// AES-GCM with a 256-bit key.
    AesGcm256 = 1,
    /// AES-GMAC with a 128-bit key: everything authenticated, nothing encrypted.
    AesGmac128 = 2,
    /// AES-GMAC with a 256-bit key.
    AesGmac256 = 3,
}

impl Version {
    /// All versions, in wire order.
    pub const ALL: [Version; 4] = [
        Self::AesGcm128,
        Self::AesGcm256,
        Self::AesGmac128,
        Self::AesGmac256,
    ];

    /// The version with wire value `v`.
    ///
    /// # Errors
    /// [`Error::UnsupportedVersion`] for values above 3.
    pub const fn from_wire(v: u8) -> Result<Self> {
        match v {
            0 => Ok(Self::AesGcm128),
            1 => Ok(Self::AesGcm256),
            2 => Ok(Self::AesGmac128),
            3 => Ok(Self::AesGmac256),
            other => Err(Error::UnsupportedVersion(other)),
        }
    }

    /// The 4-bit wire value.
    pub const fn wire(self) -> u8 {
        self as u8
    }

    /// Key length in bytes.
    pub const fn key_len(self) -> usize {
        match self {
            Self::AesGcm128 | Self::AesGmac128 => 16,
            Self::AesGcm256 | Self::AesGmac256 => 32,
        }
    }

    /// True for the authenticate-only versions.
    pub const fn is_gmac(self) -> bool {
        matches!(self, Self::AesGmac128 | Self::AesGmac256)
    }
}

impl core::fmt::Display for Version {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::AesGcm128 => "aes-gcm-128",
            Self::AesGcm256 => "aes-gcm-256",
            Self::AesGmac128 => "aes-gmac-128",
            Self::AesGmac256 => "aes-gmac-256",
        })
    }
}

/// A read (and, over a mutable buffer, write) view of a PSP header at the start of `buffer`.
///
/// After [`Header::new_checked`] succeeds, no accessor panics.
#[derive(Debug, Clone, Copy)]
pub struct Header<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Header<T> {
    /// Wraps `buffer` without checking it; accessors may panic on a short buffer.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` after [`Header::check_len`].
    ///
    /// # Errors
    /// As [`Header::check_len`].
    pub fn new_checked(buffer: T) -> Result<Self> {
        let header = Self::new_unchecked(buffer);
        header.check_len()?;
        Ok(header)
    }

    /// Checks that the buffer holds the whole header that Hdr Ext Len announces, and that
    /// Hdr Ext Len leaves room for the IV (and the VC when V=1).
    ///
    /// # Errors
    /// [`Error::Truncated`] or [`Error::HeaderExtensionTooShort`].
    pub fn check_len(&self) -> Result<()> {
        let buf = self.buffer.as_ref();
        need("PSP header", buf, BASE_LEN)?;
        let ext = buf[field::HDR_EXT_LEN];
        let min = if buf[field::FLAGS] & FLAG_V != 0 {
            2
        } else {
            1
        };
        if ext < min {
            return Err(Error::HeaderExtensionTooShort(ext));
        }
        need("PSP header with extensions", buf, self.header_len())
    }

    /// The protocol of the protected packet (6 for TCP; 4 or 41 in tunnel mode).
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NEXT_HEADER]
    }

    /// Hdr Ext Len: 8-octet units after the first 8 octets.
    pub fn hdr_ext_len(&self) -> u8 {
        self.buffer.as_ref()[field::HDR_EXT_LEN]
    }

    /// Bytes of the whole header: 8 + 8 * Hdr Ext Len.
    pub fn header_len(&self) -> usize {
        EXT_UNIT + EXT_UNIT * usize::from(self.hdr_ext_len())
    }

    /// The two reserved bits (0 on send, ignored on receive, authenticated).
    pub fn reserved(&self) -> u8 {
        self.buffer.as_ref()[field::CRYPT_OFFSET] >> RESERVED_SHIFT
    }

    /// The crypt offset in 4-octet units, counted from the end of the IV.
    pub fn crypt_offset(&self) -> u8 {
        self.buffer.as_ref()[field::CRYPT_OFFSET] & CRYPT_OFFSET_MASK
    }

    /// Index in the segment of the first encrypted byte: end of IV + crypt offset.
    pub fn crypt_start(&self) -> usize {
        BASE_LEN + usize::from(self.crypt_offset()) * CRYPT_OFFSET_UNIT
    }

    /// The S (sample) bit.
    pub fn sample(&self) -> bool {
        self.buffer.as_ref()[field::FLAGS] & FLAG_S != 0
    }

    /// The D (drop) bit.
    pub fn drop_bit(&self) -> bool {
        self.buffer.as_ref()[field::FLAGS] & FLAG_D != 0
    }

    /// The raw 4-bit version.
    pub fn version_raw(&self) -> u8 {
        (self.buffer.as_ref()[field::FLAGS] >> VERSION_SHIFT) & VERSION_MASK
    }

    /// The version.
    ///
    /// # Errors
    /// [`Error::UnsupportedVersion`] for values above 3.
    pub fn version(&self) -> Result<Version> {
        Version::from_wire(self.version_raw())
    }

    /// True when a Virtualization Cookie follows the IV.
    pub fn vc_present(&self) -> bool {
        self.buffer.as_ref()[field::FLAGS] & FLAG_V != 0
    }

    /// The bit that must be 1.
    pub fn always_one(&self) -> bool {
        self.buffer.as_ref()[field::FLAGS] & ALWAYS_ONE != 0
    }

    /// The Security Parameters Index; bit 31 selects the master key.
    pub fn spi(&self) -> u32 {
        be_u32(&self.buffer.as_ref()[field::SPI])
    }

    /// The 64-bit initialization vector.
    pub fn iv(&self) -> u64 {
        let b = &self.buffer.as_ref()[field::IV];
        u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
    }

    /// The Virtualization Cookie, when V=1.
    pub fn vc(&self) -> Option<u64> {
        self.vc_present().then(|| {
            let b = &self.buffer.as_ref()[field::VC];
            u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
        })
    }

    /// The extension area: after the IV (and VC) up to the end of the header.
    pub fn extension(&self) -> &[u8] {
        let start = if self.vc_present() {
            field::VC.end
        } else {
            BASE_LEN
        };
        &self.buffer.as_ref()[start..self.header_len()]
    }

    /// The placement hint, when the extension area is exactly one hint.
    pub fn hint(&self) -> Option<Hint> {
        let ext = self.extension();
        if ext.len() == Hint::LEN {
            Hint::parse(ext).ok()
        } else {
            None
        }
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Header<T> {
    fn flags_mut(&mut self, mask: u8, value: u8) {
        let b = &mut self.buffer.as_mut()[field::FLAGS];
        *b = (*b & !mask) | (value & mask);
    }

    /// Sets Next Header.
    pub fn set_next_header(&mut self, v: u8) {
        self.buffer.as_mut()[field::NEXT_HEADER] = v;
    }

    /// Sets Hdr Ext Len.
    pub fn set_hdr_ext_len(&mut self, v: u8) {
        self.buffer.as_mut()[field::HDR_EXT_LEN] = v;
    }

    /// Sets the reserved bits (two bits) and the crypt offset (six bits).
    pub fn set_crypt_offset(&mut self, reserved: u8, units: u8) {
        self.buffer.as_mut()[field::CRYPT_OFFSET] =
            (reserved << RESERVED_SHIFT) | (units & CRYPT_OFFSET_MASK);
    }

    /// Sets S, D, version, V and the always-1 bit.
    pub fn set_flags(&mut self, sample: bool, drop: bool, version: Version, vc: bool) {
        let v = (u8::from(sample) << 7)
            | (u8::from(drop) << 6)
            | (version.wire() << VERSION_SHIFT)
            | (u8::from(vc) << 1)
            | ALWAYS_ONE;
        self.flags_mut(0xff, v);
    }

    /// Sets the SPI.
    pub fn set_spi(&mut self, spi: u32) {
        self.buffer.as_mut()[field::SPI].copy_from_slice(&spi.to_be_bytes());
    }

    /// Sets the IV.
    pub fn set_iv(&mut self, iv: u64) {
        self.buffer.as_mut()[field::IV].copy_from_slice(&iv.to_be_bytes());
    }

    /// Sets the VC (the V bit must already be set and the buffer hold 24 bytes).
    pub fn set_vc(&mut self, vc: u64) {
        self.buffer.as_mut()[field::VC].copy_from_slice(&vc.to_be_bytes());
    }
}

/// What the extension area holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Extension {
    /// Nothing after the IV (and VC).
    None,
    /// Exactly one placement hint.
    Hint(Hint),
    /// Something else of this many bytes (a multiple of 8); emitted as zeros.
    Other(usize),
}

impl Extension {
    fn len(&self) -> usize {
        match self {
            Self::None => 0,
            Self::Hint(_) => Hint::LEN,
            Self::Other(len) => *len,
        }
    }
}

/// A parsed PSP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HeaderRepr {
    /// Protocol of the protected packet.
    pub next_header: u8,
    /// The two reserved bits.
    pub reserved: u8,
    /// Crypt offset in 4-octet units, counted from the end of the IV.
    pub crypt_offset: u8,
    /// S bit.
    pub sample: bool,
    /// D bit.
    pub drop: bool,
    /// Cipher.
    pub version: Version,
    /// Security Parameters Index.
    pub spi: u32,
    /// Initialization vector.
    pub iv: u64,
    /// Virtualization Cookie.
    pub vc: Option<u64>,
    /// Extension area.
    pub extension: Extension,
}

impl HeaderRepr {
    /// Parses a checked header view.
    ///
    /// # Errors
    /// [`Error::UnsupportedVersion`], [`Error::AlwaysOneBitClear`].
    pub fn parse<T: AsRef<[u8]>>(header: &Header<T>) -> Result<Self> {
        header.check_len()?;
        let version = header.version()?;
        if !header.always_one() {
            return Err(Error::AlwaysOneBitClear);
        }
        let ext = header.extension();
        let extension = match header.hint() {
            Some(h) => Extension::Hint(h),
            None if ext.is_empty() => Extension::None,
            None => Extension::Other(ext.len()),
        };
        Ok(Self {
            next_header: header.next_header(),
            reserved: header.reserved(),
            crypt_offset: header.crypt_offset(),
            sample: header.sample(),
            drop: header.drop_bit(),
            version,
            spi: header.spi(),
            iv: header.iv(),
            vc: header.vc(),
            extension,
        })
    }

    /// Bytes the header takes on the wire.
    pub fn buffer_len(&self) -> usize {
        BASE_LEN + if self.vc.is_some() { VC_LEN } else { 0 } + self.extension.len()
    }

    /// Writes the header into `header`'s buffer.
    ///
    /// # Errors
    /// [`Error::Truncated`] when the buffer is shorter than [`HeaderRepr::buffer_len`];
    /// [`Error::FieldOverflow`] when the extension is not a multiple of 8 bytes, the crypt
    /// offset above 63 or the reserved bits above 3.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, header: &mut Header<T>) -> Result<()> {
        let len = self.buffer_len();
        need("PSP header", header.buffer.as_ref(), len)?;
        if !len.is_multiple_of(EXT_UNIT) {
            return Err(Error::FieldOverflow {
                what: "PSP extension length",
                value: self.extension.len(),
                max: 255 * EXT_UNIT,
            });
        }
        let ext_units = u8::try_from(len / EXT_UNIT - 1).map_err(|_| Error::FieldOverflow {
            what: "Hdr Ext Len",
            value: len / EXT_UNIT - 1,
            max: 255,
        })?;
        if self.crypt_offset > MAX_CRYPT_OFFSET {
            return Err(Error::FieldOverflow {
                what: "crypt offset",
                value: self.crypt_offset.into(),
                max: MAX_CRYPT_OFFSET.into(),
            });
        }
        if self.reserved > 3 {
            return Err(Error::FieldOverflow {
                what: "reserved bits",
                value: self.reserved.into(),
                max: 3,
            });
        }
        header.set_next_header(self.next_header);
        header.set_hdr_ext_len(ext_units);
        header.set_crypt_offset(self.reserved, self.crypt_offset);
        header.set_flags(self.sample, self.drop, self.version, self.vc.is_some());
        header.set_spi(self.spi);
        header.set_iv(self.iv);
        let mut at = BASE_LEN;
        if let Some(vc) = self.vc {
            header.set_vc(vc);
            at += VC_LEN;
        }
        let buf = header.buffer.as_mut();
        match self.extension {
            Extension::None => {}
            Extension::Hint(h) => h.emit(&mut buf[at..])?,
            Extension::Other(n) => buf[at..at + n].fill(0),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_repr() -> HeaderRepr {
        HeaderRepr {
            next_header: 6,
            reserved: 0,
            crypt_offset: 9,
            sample: false,
            drop: true,
            version: Version::AesGcm256,
            spi: 0x9a34_5678,
            iv: 7,
            vc: None,
            extension: Extension::Hint(Hint {
                region_id: 3,
                generation: 2,
                offset: 4096,
                base_tcp_seq: 99,
            }),
        }
    }

    #[test]
    fn emit_matches_the_spec_layout() {
        let repr = sample_repr();
        let mut buf = [0u8; 32];
        repr.emit(&mut Header::new_unchecked(&mut buf[..])).unwrap();
        assert_eq!(&buf[..8], &[6, 3, 9, 0b0100_0101, 0x9a, 0x34, 0x56, 0x78]);
        assert_eq!(&buf[8..16], &7u64.to_be_bytes());
        let view = Header::new_checked(&buf[..]).unwrap();
        assert_eq!(view.header_len(), 32);
        assert_eq!(view.crypt_start(), 16 + 36);
        assert_eq!(HeaderRepr::parse(&view).unwrap(), repr);
    }

    #[test]
    fn vc_and_hint_give_ext_len_4() {
        let repr = HeaderRepr {
            vc: Some(0x1122),
            ..sample_repr()
        };
        let mut buf = [0u8; 40];
        repr.emit(&mut Header::new_unchecked(&mut buf[..])).unwrap();
        assert_eq!(buf[1], 4);
        let view = Header::new_checked(&buf[..]).unwrap();
        assert_eq!(view.vc(), Some(0x1122));
        assert_eq!(HeaderRepr::parse(&view).unwrap(), repr);
    }

    #[test]
    fn malformed_headers_are_typed_errors() {
        let mut buf = [0u8; 32];
        sample_repr()
            .emit(&mut Header::new_unchecked(&mut buf[..]))
            .unwrap();
        assert!(matches!(
            Header::new_checked(&buf[..31]),
            Err(Error::Truncated { .. })
        ));
        let mut bad = buf;
        bad[3] &= !ALWAYS_ONE;
        assert_eq!(
            HeaderRepr::parse(&Header::new_unchecked(&bad[..])),
            Err(Error::AlwaysOneBitClear)
        );
        let mut bad = buf;
        bad[3] = (bad[3] & !(VERSION_MASK << VERSION_SHIFT)) | (9 << VERSION_SHIFT);
        assert_eq!(
            HeaderRepr::parse(&Header::new_unchecked(&bad[..])),
            Err(Error::UnsupportedVersion(9))
        );
        let mut bad = buf;
        bad[1] = 0;
        assert_eq!(
            Header::new_checked(&bad[..]).err(),
            Some(Error::HeaderExtensionTooShort(0))
        );
        let mut bad = buf;
        bad[1] = 1;
        bad[3] |= FLAG_V;
        assert_eq!(
            Header::new_checked(&bad[..]).err(),
            Some(Error::HeaderExtensionTooShort(1))
        );
    }

    #[test]
    fn other_extension_carries_no_hint() {
        let repr = HeaderRepr {
            extension: Extension::Other(8),
            ..sample_repr()
        };
        let mut buf = [0u8; 24];
        repr.emit(&mut Header::new_unchecked(&mut buf[..])).unwrap();
        let view = Header::new_checked(&buf[..]).unwrap();
        assert_eq!(view.hint(), None);
        assert_eq!(
            HeaderRepr::parse(&view).unwrap().extension,
            Extension::Other(8)
        );
    }
}
