//! Parking: a copy whose destination a fill ring may still write (a slot posted to the
//! kernel and not returned) waits here, keyed by that slot's landing address, until the
//! slot comes back: a copy never races the NIC for the same bytes (docs/design.md, "The
//! prediction window").

use placement::idmap::FastMap;

use placement::{GrantId, Placement};

use crate::payload::Payload;

/// Answers whether a copy to `dst..dst+len` must wait: the landing address of a posted
/// slot in its way, if any. The fill plan is one; [`OpenGate`] (no fill rings) another.
pub trait SlotGate {
    /// The landing address of a posted slot that a copy to `dst..dst+len` must wait for.
    fn blocking_slot(&self, dst: u64, len: u64) -> Option<u64>;
}

impl SlotGate for umem::FillPlanner {
    fn blocking_slot(&self, dst: u64, len: u64) -> Option<u64> {
        umem::FillPlanner::blocking_slot(self, dst, len)
    }
}

/// The gate of paths without fill rings (replay): nothing ever blocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenGate;

impl SlotGate for OpenGate {
    fn blocking_slot(&self, _: u64, _: u64) -> Option<u64> {
        None
    }
}

/// A copy waiting for a slot to come back.
pub struct Parked {
    /// The stream (SPI).
    pub spi: u32,
    /// Where it goes.
    pub placement: Placement,
    /// The bytes.
    pub bytes: Payload,
}

/// Copies parked per blocking slot.
#[derive(Default)]
pub struct Parking {
    by_slot: FastMap<u64, Vec<Parked>>,
    parked_total: u64,
}

impl Parking {
    /// Parks `copy` until the slot landing at `slot` returns.
    pub fn park(&mut self, slot: u64, copy: Parked) {
        self.by_slot.entry(slot).or_default().push(copy);
        self.parked_total += 1;
    }

    /// The copies that waited for the slot landing at `landing`.
    pub fn slot_returned(&mut self, landing: u64) -> Option<Vec<Parked>> {
        self.by_slot.remove(&landing)
    }

    /// Drops the copies of grant `g` (their frames return to the plan).
    pub fn drop_grant(&mut self, g: GrantId) {
        for parked in self.by_slot.values_mut() {
            parked.retain(|p| p.placement.grant != Some(g));
        }
        self.by_slot.retain(|_, v| !v.is_empty());
    }

    /// Bytes parked.
    pub fn bytes(&self) -> usize {
        self.by_slot
            .values()
            .flatten()
            .map(|p| p.bytes.as_ref().len())
            .sum()
    }

    /// Copies parked so far.
    pub fn parked_total(&self) -> u64 {
        self.parked_total
    }
}
