//! Security associations: seal and open PSP segments in place with `ring`.
//!
//! AEAD inputs, per the PSP specification:
//! - nonce = SPI (4 bytes) ‖ IV (8 bytes), exactly as on the wire;
//! - AES-GCM: AAD = the segment from its first byte up to `crypt_start`; the rest up to
//!   the ICV is encrypted;
//! - AES-GMAC: AAD = everything from the first byte up to the ICV; nothing is encrypted.
//!
//! The tag is always verified, also when the encrypted part is empty.

use ring::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, Tag, UnboundKey};

use crate::error::{Error, Result};
use crate::header::{Header, ICV_LEN, Version};
use crate::key::DerivedKey;
use crate::segment::{Layout, Segment};

/// One direction of a PSP security association: SPI, version and derived key.
pub struct Sa {
    spi: u32,
    version: Version,
    key: LessSafeKey,
}

impl core::fmt::Debug for Sa {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "Sa {{ spi: {:#010x}, version: {} }}",
            self.spi, self.version
        )
    }
}

impl Sa {
    /// An SA for `spi` and `version` with key `key`.
    ///
    /// # Errors
    /// [`Error::KeyLength`] when the key length does not fit the version.
    pub fn new(spi: u32, version: Version, key: &DerivedKey) -> Result<Self> {
        let bytes = key.as_bytes();
        let alg = if version.key_len() == 16 {
            &AES_128_GCM
        } else {
            &AES_256_GCM
        };
        let unbound = UnboundKey::new(alg, bytes).map_err(|_| Error::KeyLength {
            version: version.wire(),
            needed: version.key_len(),
            got: bytes.len(),
        })?;
        Ok(Self {
            spi,
            version,
            key: LessSafeKey::new(unbound),
        })
    }

    /// The SPI.
    pub fn spi(&self) -> u32 {
        self.spi
    }

    /// The version.
    pub fn version(&self) -> Version {
        self.version
    }

    fn check(&self, segment: &Segment<'_>) -> Result<Layout> {
        let header = segment.header();
        if header.spi() != self.spi || header.version_raw() != self.version.wire() {
            return Err(Error::SaMismatch {
                packet_spi: header.spi(),
                packet_version: header.version_raw(),
                sa_spi: self.spi,
                sa_version: self.version.wire(),
            });
        }
        Ok(segment.layout())
    }

    /// Seals `segment` in place. `segment` runs from the first PSP byte through 16 bytes
    /// reserved for the ICV; its header (SPI, IV, crypt offset) is already written.
    /// Encrypts from `crypt_start` (GCM versions) and writes the ICV.
    ///
    /// # Errors
    /// Any [`Segment::parse`] error, or [`Error::SaMismatch`].
    pub fn seal_in_place(&self, segment: &mut [u8]) -> Result<()> {
        let layout = self.check(&Segment::parse(segment)?)?;
        let nonce = nonce(segment);
        let (authenticated, icv) = segment.split_at_mut(layout.icv_start);
        let tag = if self.version.is_gmac() {
            self.seal(nonce, authenticated, &mut [])
        } else {
            let (aad, plaintext) = authenticated.split_at_mut(layout.crypt_start);
            self.seal(nonce, aad, plaintext)
        }?;
        icv[..ICV_LEN].copy_from_slice(tag.as_ref());
        Ok(())
    }

    fn seal(&self, nonce: Nonce, aad: &[u8], in_out: &mut [u8]) -> Result<Tag> {
        self.key
            .seal_in_place_separate_tag(nonce, Aad::from(aad), in_out)
            // ring refuses only inputs beyond GCM's 64 GiB limit.
            .map_err(|_| Error::FieldOverflow {
                what: "GCM input",
                value: in_out.len(),
                max: 1 << 36,
            })
    }

    /// Verifies and (GCM versions) decrypts `segment` in place: first PSP byte through ICV.
    /// On success the body is plaintext and the returned layout says where things are.
    /// On failure the segment's bytes are unspecified and must not be used.
    ///
    /// # Errors
    /// Any [`Segment::parse`] error, [`Error::SaMismatch`] or [`Error::AuthenticationFailed`].
    pub fn open_in_place(&self, segment: &mut [u8]) -> Result<Layout> {
        let layout = self.check(&Segment::parse(segment)?)?;
        let nonce = nonce(segment);
        let whole = &mut segment[..layout.len()];
        let split_at = if self.version.is_gmac() {
            layout.icv_start
        } else {
            layout.crypt_start
        };
        let (aad, in_out) = whole.split_at_mut(split_at);
        self.key
            .open_in_place(nonce, Aad::from(&aad[..]), in_out)
            .map_err(|_| Error::AuthenticationFailed)?;
        Ok(layout)
    }
}

impl Sa {
    /// Verifies and (GCM versions) decrypts a segment that arrives in two pieces, as the
    /// XDP program splits it: `head` is the PSP header through the TCP header (exactly
    /// the GCM AAD), parsed once by [`Segment::parse_head`]; `payload` the encrypted rest
    /// (decrypted in place where it landed), `icv` the tag. For GMAC versions the payload
    /// is only authenticated (through a scratch copy: ring wants the AAD in one piece).
    ///
    /// # Errors
    /// [`Error::SaMismatch`], [`Error::NoTcp`] when the crypt offset does not end at the
    /// head's end (GCM), or
    /// [`Error::AuthenticationFailed`].
    pub fn open_split(
        &self,
        head: &Segment<'_>,
        payload: &mut [u8],
        icv: &[u8; ICV_LEN],
    ) -> Result<()> {
        let layout = self.check(head)?;
        let header = head.bytes();
        let nonce = nonce(header);
        let tag = Tag::from(*icv);
        if self.version.is_gmac() {
            let mut aad = Vec::with_capacity(header.len() + payload.len());
            aad.extend_from_slice(header);
            aad.extend_from_slice(payload);
            return self
                .key
                .open_in_place_separate_tag(nonce, Aad::from(&aad[..]), tag, &mut [], 0..)
                .map(|_| ())
                .map_err(|_| Error::AuthenticationFailed);
        }
        if layout.crypt_start != header.len() {
            return Err(Error::NoTcp("crypt offset does not end at the TCP header"));
        }
        self.key
            .open_in_place_separate_tag(nonce, Aad::from(header), tag, payload, 0..)
            .map(|_| ())
            .map_err(|_| Error::AuthenticationFailed)
    }
}

/// SPI ‖ IV, the 12 bytes at offsets 4..16 of a checked header.
fn nonce(segment: &[u8]) -> Nonce {
    let header = Header::new_unchecked(segment);
    let mut n = [0u8; NONCE_LEN];
    n[..4].copy_from_slice(&header.spi().to_be_bytes());
    n[4..].copy_from_slice(&header.iv().to_be_bytes());
    Nonce::assume_unique_for_key(n)
}
