//! Hash maps for receiver-allocated ids (SPIs, region ids, grant ids): one multiply per
//! integer hashed, instead of SipHash (which took ~10 % of the live receive loop).

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// Multiplicative hasher for integer keys (Fx-style). Keys are allocated by the receiver;
/// attackers can only look ids up, not insert them, so flooding does not apply (a map
/// that counts per SPI a packet names bounds how many it keeps).
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

const K: u64 = 0x517c_c1b7_2722_0a95;

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(*b)).wrapping_mul(K);
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u16(&mut self, n: u16) {
        self.add(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl IdHasher {
    fn add(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(K);
    }
}

/// `HashMap<u32, V>` with [`IdHasher`].
pub type IdMap<V> = HashMap<u32, V, BuildHasherDefault<IdHasher>>;

/// `HashMap<K, V>` with [`IdHasher`], for keys made of integer ids.
pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// `HashSet<K>` with [`IdHasher`].
pub type FastSet<K> = HashSet<K, BuildHasherDefault<IdHasher>>;
