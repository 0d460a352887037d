//! Master keys and the PSP key derivation (NIST SP 800-108 counter mode, AES-256-CMAC).
//!
//! Per-SA keys are derived from one of two 256-bit master keys; bit 31 of the SPI selects
//! which, so that the master keys can be rotated while SAs of the older phase still work.
//!
//! Derivation input block (16 bytes), one CMAC per 128 bits of key:
//! ```text
//! counter (u32, from 1) | label "Pv0\0".."Pv3\0" | SPI (u32) | L (u32, key bits)
//! ```
//! "Pv0\0" (128-bit) and "Pv1\0" (256-bit, counters 1 and 2 concatenated) are the
//! specification's. The specification does not define GMAC keys: this testbed uses
//! "Pv2\0" (GMAC-128) and "Pv3\0" (GMAC-256).
//!
//! Region-bound keys (testbed extension, see [`derive_region_bound`]) use a 20-byte block
//! with another label, so they never equal a standard key:
//! ```text
//! counter (u32) | label "Pr0\0".."Pr3\0" | SPI (u32) | region_id (u32) | L (u32)
//! ```

use aes::Aes256;
use cmac::{Cmac, Mac};

use crate::header::Version;

/// Bytes of a master key.
pub const MASTER_KEY_LEN: usize = 32;
/// The SPI bit that selects master key 1.
pub const SPI_KEY_PHASE_BIT: u32 = 0x8000_0000;

/// A 256-bit master key.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey(pub [u8; MASTER_KEY_LEN]);

impl core::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

/// Which of the two master keys an SPI uses: its bit 31.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyPhase {
    /// SPI bit 31 clear: master key 0.
    Zero,
    /// SPI bit 31 set: master key 1.
    One,
}

impl KeyPhase {
    /// The phase of `spi`.
    pub const fn of_spi(spi: u32) -> Self {
        if spi & SPI_KEY_PHASE_BIT != 0 {
            Self::One
        } else {
            Self::Zero
        }
    }

    /// `spi` with its phase bit set to this phase.
    pub const fn apply(self, spi: u32) -> u32 {
        match self {
            Self::Zero => spi & !SPI_KEY_PHASE_BIT,
            Self::One => spi | SPI_KEY_PHASE_BIT,
        }
    }

    const fn index(self) -> usize {
        match self {
            Self::Zero => 0,
            Self::One => 1,
        }
    }

    const fn other(self) -> Self {
        match self {
            Self::Zero => Self::One,
            Self::One => Self::Zero,
        }
    }
}

/// The two master keys of a device, and which phase new SAs use.
#[derive(Debug, Clone)]
pub struct MasterKeys {
    keys: [MasterKey; 2],
    current: KeyPhase,
}

impl MasterKeys {
    /// Master keys 0 and 1; new SAs start in phase 0.
    pub fn new(key0: MasterKey, key1: MasterKey) -> Self {
        Self {
            keys: [key0, key1],
            current: KeyPhase::Zero,
        }
    }

    /// The master key an SPI derives from.
    pub fn for_spi(&self, spi: u32) -> &MasterKey {
        &self.keys[KeyPhase::of_spi(spi).index()]
    }

    /// The phase new SAs are given.
    pub fn current_phase(&self) -> KeyPhase {
        self.current
    }

    /// Rotates: `new_key` replaces the key of the other phase, which becomes current.
    /// SAs of the previous phase keep working until the next rotation replaces their key.
    pub fn rotate(&mut self, new_key: MasterKey) {
        let next = self.current.other();
        self.keys[next.index()] = new_key;
        self.current = next;
    }

    /// Derives the key of `spi` for `version` (master key chosen by SPI bit 31).
    pub fn derive(&self, spi: u32, version: Version) -> DerivedKey {
        derive(self.for_spi(spi), spi, version)
    }
}

/// A derived per-SA key.
#[derive(Clone, PartialEq, Eq)]
pub enum DerivedKey {
    /// 128-bit key (versions 0 and 2).
    Aes128([u8; 16]),
    /// 256-bit key (versions 1 and 3).
    Aes256([u8; 32]),
}

impl DerivedKey {
    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Aes128(k) => k,
            Self::Aes256(k) => k,
        }
    }
}

impl core::fmt::Debug for DerivedKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "DerivedKey({} bits)", self.as_bytes().len() * 8)
    }
}

fn label(prefix: u8, version: Version) -> [u8; 4] {
    [b'P', prefix, b'0' + version.wire(), 0]
}

fn cmac_block(master: &MasterKey, block: &[u8]) -> [u8; 16] {
    // A 32-byte key always fits AES-256-CMAC.
    let mut mac = <Cmac<Aes256> as Mac>::new(&master.0.into());
    mac.update(block);
    mac.finalize().into_bytes().into()
}

/// Runs the counter-mode KDF: one CMAC over `context` (with the counter prepended and `L`
/// appended) per 128 bits of key.
fn kdf(master: &MasterKey, version: Version, label: [u8; 4], context: &[u8]) -> DerivedKey {
    let bits = u32::try_from(version.key_len() * 8).unwrap_or(u32::MAX);
    let block = |counter: u32| {
        let mut input = [0u8; 24];
        input[..4].copy_from_slice(&counter.to_be_bytes());
        input[4..8].copy_from_slice(&label);
        let end = 8 + context.len();
        input[8..end].copy_from_slice(context);
        input[end..end + 4].copy_from_slice(&bits.to_be_bytes());
        cmac_block(master, &input[..end + 4])
    };
    match version.key_len() {
        16 => DerivedKey::Aes128(block(1)),
        _ => {
            let mut key = [0u8; 32];
            key[..16].copy_from_slice(&block(1));
            key[16..].copy_from_slice(&block(2));
            DerivedKey::Aes256(key)
        }
    }
}

/// Derives the key of `spi` for `version` from `master`, per the PSP specification.
pub fn derive(master: &MasterKey, spi: u32, version: Version) -> DerivedKey {
    kdf(master, version, label(b'v', version), &spi.to_be_bytes())
}

/// Derives a region-bound key (testbed extension): the KDF context also carries the
/// region id, so only a sender that was handed this key for region `region_id` can produce
/// a valid ICV for a hint naming that region. An alternative to a per-flow allow-list.
pub fn derive_region_bound(
    master: &MasterKey,
    spi: u32,
    version: Version,
    region_id: u32,
) -> DerivedKey {
    let mut context = [0u8; 8];
    context[..4].copy_from_slice(&spi.to_be_bytes());
    context[4..].copy_from_slice(&region_id.to_be_bytes());
    kdf(master, version, label(b'r', version), &context)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex32(s: &str) -> [u8; 32] {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    fn spec_keys() -> MasterKeys {
        MasterKeys::new(
            MasterKey(hex32(
                "34448a064292601b11a0978f56a2d34cf3fc35ede1a6bc04f8db3e5243a2b0ca",
            )),
            MasterKey(hex32(
                "563952565d3a78ae773ec1b779f2f2d99f4a7f53a6fbb9b07d5b71f39364d739",
            )),
        )
    }

    #[test]
    fn spec_vectors() {
        let keys = spec_keys();
        assert_eq!(
            hex::encode(keys.derive(0x1234_5678, Version::AesGcm128).as_bytes()),
            "96c22dc799198090b74b70ae468e4e30"
        );
        assert_eq!(
            hex::encode(keys.derive(0x9A34_5678, Version::AesGcm128).as_bytes()),
            "3946da2554eae46ad1ef77a64372edc4"
        );
        assert_eq!(
            hex::encode(keys.derive(0x1234_5678, Version::AesGcm256).as_bytes()),
            "2b7d72074e42ca334487f2990e3f8c4037e436f38283449b76463e9b7fb2e3de"
        );
    }

    #[test]
    fn gmac_and_region_bound_keys_differ_from_gcm_keys() {
        let keys = spec_keys();
        let m = keys.for_spi(1);
        let gcm = derive(m, 1, Version::AesGcm128);
        let gmac = derive(m, 1, Version::AesGmac128);
        assert_ne!(gcm, gmac);
        let r1 = derive_region_bound(m, 1, Version::AesGcm128, 1);
        let r2 = derive_region_bound(m, 1, Version::AesGcm128, 2);
        assert_ne!(r1, r2);
        assert_ne!(r1, gcm);
        assert_eq!(derive(m, 1, Version::AesGmac256).as_bytes().len(), 32);
    }

    #[test]
    fn rotation_replaces_the_other_phase() {
        let mut keys = spec_keys();
        let old_phase0 = keys.derive(0x10, Version::AesGcm128);
        let old_phase1 = keys.derive(0x8000_0010, Version::AesGcm128);
        assert_eq!(keys.current_phase(), KeyPhase::Zero);
        keys.rotate(MasterKey([7; 32]));
        assert_eq!(keys.current_phase(), KeyPhase::One);
        assert_eq!(
            keys.derive(0x10, Version::AesGcm128),
            old_phase0,
            "phase 0 SAs keep working"
        );
        assert_ne!(keys.derive(0x8000_0010, Version::AesGcm128), old_phase1);
        assert_eq!(KeyPhase::One.apply(0x10), 0x8000_0010);
        keys.rotate(MasterKey([8; 32]));
        assert_ne!(keys.derive(0x10, Version::AesGcm128), old_phase0);
    }
}
