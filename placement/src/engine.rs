//! The placement engine: regions, SAs, grants, policy, and the per-segment decision.
//!
//! Time is passed in (`now`, nanoseconds on the caller's monotonic clock); nothing here
//! reads a clock, allocates during [`PlacementEngine::decide`], or panics on any input.

use psp::Hint;
use psp::key::SPI_KEY_PHASE_BIT;

use crate::error::{Error, Result};
use crate::idmap::IdMap;
use crate::reason::Reason;

/// Most grants one SA may hold at once; keeps the grant scan of a decision bounded.
pub const MAX_GRANTS_PER_SA: u16 = 64;
/// Sequence deltas at or above this are rejected as `seq_wrap`.
pub const SEQ_WRAP_LIMIT: u32 = 1 << 31;
/// Default start of the direct-write SPI range (key ids from the high numbers).
pub const DEFAULT_DIRECT_SPI_MIN: u32 = 0x4000_0000;

/// A grant's name: its index in the engine's grant slab and the epoch of that slot.
///
/// Slots are reused; the epoch counts the slot's reuses, so an id of a revoked grant never
/// names the grant that reuses its slot ([`PlacementEngine::grant`] returns `None` for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GrantId {
    index: u32,
    epoch: u32,
}

impl GrantId {
    /// The id as one number, for the wire and for reports: epoch in the high 32 bits.
    pub fn to_wire(self) -> u64 {
        u64::from(self.epoch) << 32 | u64::from(self.index)
    }

    /// The id a number from the wire names (it may name no grant).
    pub fn from_wire(wire: u64) -> Self {
        Self {
            index: (wire & u64::from(u32::MAX)) as u32,
            epoch: (wire >> 32) as u32,
        }
    }
}

impl core::fmt::Display for GrantId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}", self.to_wire())
    }
}

const NO_GRANT: u32 = u32::MAX;

/// A memory region that payloads may be placed into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// Region id, as named by hints.
    pub id: u32,
    /// Address of the region's first byte.
    pub base: u64,
    /// Length in bytes.
    pub len: u64,
    /// The generation the "NIC tables" hold now, if any.
    pub active: Option<u16>,
    /// A generation handed out but not active until `at` (ns).
    pub pending: Option<PendingGeneration>,
}

/// A generation that becomes active at a time the caller drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingGeneration {
    /// The generation.
    pub generation: u16,
    /// When it becomes active (ns, caller's clock).
    pub at: u64,
}

impl Region {
    /// The active generation as seen at `now`: a pending generation whose time has come
    /// counts as active even before [`PlacementEngine::advance`] promotes it.
    fn active_at(&self, now: u64) -> Option<u16> {
        match self.pending {
            Some(p) if now >= p.at => Some(p.generation),
            _ => self.active,
        }
    }
}

/// A sender's byte window in a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// The sender's SPI.
    pub spi: u32,
    /// Region.
    pub region_id: u32,
    /// Region generation the grant is for.
    pub generation: u16,
    /// Window start, as an offset in the region.
    pub offset: u64,
    /// Window length.
    pub len: u64,
    /// TCP sequence number that `offset` refers to.
    pub base_seq: u32,
}

#[derive(Debug, Clone, Copy)]
struct GrantSlot {
    grant: Grant,
    next_of_sa: u32,
}

/// What the engine keeps per SA: 12 bytes plus the hash table's slot overhead; grants are
/// chained through the grant slab, so an SA costs no heap allocation of its own.
#[derive(Debug, Clone, Copy)]
struct SaEntry {
    first_grant: u32,
    grants: u16,
}

/// How senders are authorized for a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessControl {
    /// SPI → grants table (the flow allow-list). The default.
    AllowList,
    /// No per-flow state: the caller opened the segment with a region-bound key
    /// (`psp::derive_region_bound`) for the hint's region, so authentication proves the
    /// grant. Bounds are the region's; `unknown_sa`/`not_granted` do not apply.
    RegionBoundKeys,
}

/// Placement policy knobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// SPIs (without the key-phase bit) at or above this may be placed directly; lower ones
    /// are always copied.
    pub direct_spi_min: u32,
    /// Allow-list or region-bound keys.
    pub access: AccessControl,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            direct_spi_min: DEFAULT_DIRECT_SPI_MIN,
            access: AccessControl::AllowList,
        }
    }
}

/// One received segment, as the receiver saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// PSP SPI.
    pub spi: u32,
    /// True when the ICV verified.
    pub authenticated: bool,
    /// Placement hint, if the PSP header carried one.
    pub hint: Option<Hint>,
    /// TCP sequence number of the first payload byte.
    pub seq: u32,
    /// Payload bytes.
    pub len: u32,
    /// Address where the payload landed, if it landed in placement memory.
    pub landed_at: Option<u64>,
}

/// Where a segment's payload belongs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// Computed address: region.base + hint.offset + (seq − base_seq mod 2^32).
    pub addr: u64,
    /// Region.
    pub region_id: u32,
    /// The region generation the hint named.
    pub generation: u16,
    /// Offset in the region.
    pub region_offset: u64,
    /// Payload bytes.
    pub len: u32,
    /// The grant that allows it (none with region-bound keys).
    pub grant: Option<GrantId>,
}

/// The engine's verdict on one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The payload landed exactly at its address: leave it there.
    Direct(Placement),
    /// Copy the payload to its address (`not_ready`: stage it until the region activates;
    /// `not_direct_spi`, `landed_elsewhere`: copy now).
    Copy(Placement, Reason),
    /// Drop it, counting the reason.
    Reject(Reason),
}

/// Regions, SAs, grants and policy.
#[derive(Debug, Default)]
pub struct PlacementEngine {
    policy: Policy,
    regions: IdMap<Region>,
    sas: IdMap<SaEntry>,
    grants: Vec<Option<GrantSlot>>,
    /// Per slab slot: how many grants have left it (the epoch of the next [`GrantId`]).
    epochs: Vec<u32>,
    free_grants: Vec<u32>,
}

/// Bytes the engine's tables take (capacities, not just lengths).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryUsage {
    /// SA hash table.
    pub sa_table: usize,
    /// Region hash table.
    pub region_table: usize,
    /// Grant slab.
    pub grant_slab: usize,
}

/// Bytes one hash-table slot of `V` keyed by u32 costs (entry plus control byte).
const fn slot_bytes<V>() -> usize {
    core::mem::size_of::<(u32, V)>() + 1
}

impl PlacementEngine {
    /// An empty engine with `policy`.
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            ..Self::default()
        }
    }

    /// The policy.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Reserves room for `sas` SAs and `regions` regions.
    pub fn reserve(&mut self, sas: usize, regions: usize) {
        self.sas.reserve(sas);
        self.regions.reserve(regions);
    }

    /// Adds a region with no active generation.
    ///
    /// # Errors
    /// [`Error::DuplicateRegion`]; [`Error::RegionOverflow`] when base + len overflows.
    pub fn add_region(&mut self, id: u32, base: u64, len: u64) -> Result<()> {
        if self.regions.contains_key(&id) {
            return Err(Error::DuplicateRegion(id));
        }
        base.checked_add(len).ok_or(Error::RegionOverflow { id })?;
        self.regions.insert(
            id,
            Region {
                id,
                base,
                len,
                active: None,
                pending: None,
            },
        );
        Ok(())
    }

    /// Makes `generation` of region `id` active at `at` (ns). Until then hints naming it get
    /// `not_ready`; the previous generation stays active meanwhile.
    ///
    /// # Errors
    /// [`Error::UnknownRegion`].
    pub fn configure_generation(&mut self, id: u32, generation: u16, at: u64) -> Result<()> {
        let region = self.regions.get_mut(&id).ok_or(Error::UnknownRegion(id))?;
        region.pending = Some(PendingGeneration { generation, at });
        Ok(())
    }

    /// Promotes every pending generation whose time has come; calls `activated` for each
    /// region that changed (the receiver copies in what it staged for it).
    pub fn advance(&mut self, now: u64, mut activated: impl FnMut(&Region)) {
        for region in self.regions.values_mut() {
            if let Some(p) = region.pending.filter(|p| now >= p.at) {
                region.active = Some(p.generation);
                region.pending = None;
                activated(region);
            }
        }
    }

    /// Retires region `id`: later hints naming it get `unknown_region`. Its grants go too.
    ///
    /// # Errors
    /// [`Error::UnknownRegion`].
    pub fn retire_region(&mut self, id: u32) -> Result<Region> {
        let region = self.regions.remove(&id).ok_or(Error::UnknownRegion(id))?;
        let doomed: Vec<GrantId> = self
            .grant_ids()
            .filter(|g| self.grant(*g).is_some_and(|g| g.region_id == id))
            .collect();
        for g in doomed {
            self.revoke_grant(g)?;
        }
        Ok(region)
    }

    /// The region `id`.
    pub fn region(&self, id: u32) -> Option<&Region> {
        self.regions.get(&id)
    }

    /// Adds an SA (an allow-list entry) for `spi`.
    ///
    /// # Errors
    /// [`Error::DuplicateSa`].
    pub fn add_sa(&mut self, spi: u32) -> Result<()> {
        if self.sas.contains_key(&spi) {
            return Err(Error::DuplicateSa(spi));
        }
        self.sas.insert(
            spi,
            SaEntry {
                first_grant: NO_GRANT,
                grants: 0,
            },
        );
        Ok(())
    }

    /// Removes an SA and its grants.
    ///
    /// # Errors
    /// [`Error::UnknownSa`].
    pub fn remove_sa(&mut self, spi: u32) -> Result<()> {
        let mut next = self
            .sas
            .remove(&spi)
            .ok_or(Error::UnknownSa(spi))?
            .first_grant;
        while let Some(slot) = self.grants.get_mut(next as usize).and_then(Option::take) {
            self.free_slot(next);
            next = slot.next_of_sa;
        }
        Ok(())
    }

    /// True when an SA exists for `spi`.
    pub fn has_sa(&self, spi: u32) -> bool {
        self.sas.contains_key(&spi)
    }

    /// Number of SAs.
    pub fn sa_count(&self) -> usize {
        self.sas.len()
    }

    /// Grants `grant.spi` the window `grant` describes.
    ///
    /// # Errors
    /// [`Error::UnknownSa`], [`Error::UnknownRegion`], [`Error::GrantOutsideRegion`],
    /// [`Error::TooManyGrants`].
    pub fn add_grant(&mut self, grant: Grant) -> Result<GrantId> {
        let region = self
            .regions
            .get(&grant.region_id)
            .ok_or(Error::UnknownRegion(grant.region_id))?;
        let fits = grant
            .offset
            .checked_add(grant.len)
            .is_some_and(|end| end <= region.len);
        if !fits {
            return Err(Error::GrantOutsideRegion {
                region: grant.region_id,
                offset: grant.offset,
                len: grant.len,
                region_len: region.len,
            });
        }
        let sa = self
            .sas
            .get_mut(&grant.spi)
            .ok_or(Error::UnknownSa(grant.spi))?;
        if sa.grants >= MAX_GRANTS_PER_SA {
            return Err(Error::TooManyGrants {
                spi: grant.spi,
                max: MAX_GRANTS_PER_SA,
            });
        }
        let slot = GrantSlot {
            grant,
            next_of_sa: sa.first_grant,
        };
        let index = match self.free_grants.pop() {
            Some(i) => {
                self.grants[i as usize] = Some(slot);
                i
            }
            None => {
                let i = u32::try_from(self.grants.len()).map_err(|_| Error::TooManyGrants {
                    spi: grant.spi,
                    max: MAX_GRANTS_PER_SA,
                })?;
                self.grants.push(Some(slot));
                self.epochs.push(0);
                i
            }
        };
        sa.first_grant = index;
        sa.grants += 1;
        Ok(self.id_of(index))
    }

    /// The id of the grant now in slab slot `index`.
    fn id_of(&self, index: u32) -> GrantId {
        GrantId {
            index,
            epoch: self.epochs.get(index as usize).copied().unwrap_or(0),
        }
    }

    /// Frees slab slot `index`: a later grant there gets the next epoch.
    fn free_slot(&mut self, index: u32) {
        if let Some(e) = self.epochs.get_mut(index as usize) {
            *e = e.wrapping_add(1);
        }
        self.free_grants.push(index);
    }

    /// Removes grant `id`.
    ///
    /// # Errors
    /// [`Error::UnknownGrant`].
    pub fn revoke_grant(&mut self, id: GrantId) -> Result<Grant> {
        let unknown = Error::UnknownGrant(id.to_wire());
        if self.id_of(id.index) != id {
            return Err(unknown);
        }
        let slot = self
            .grants
            .get(id.index as usize)
            .copied()
            .flatten()
            .ok_or(unknown)?;
        if let Some(sa) = self.sas.get_mut(&slot.grant.spi) {
            if sa.first_grant == id.index {
                sa.first_grant = slot.next_of_sa;
            } else {
                let mut cur = sa.first_grant;
                while let Some(Some(s)) = self.grants.get_mut(cur as usize) {
                    if s.next_of_sa == id.index {
                        s.next_of_sa = slot.next_of_sa;
                        break;
                    }
                    cur = s.next_of_sa;
                }
            }
            sa.grants -= 1;
        }
        self.grants[id.index as usize] = None;
        self.free_slot(id.index);
        Ok(slot.grant)
    }

    /// Grant `id`, if it exists.
    pub fn grant(&self, id: GrantId) -> Option<&Grant> {
        if self.epochs.get(id.index as usize) != Some(&id.epoch) {
            return None;
        }
        self.grants
            .get(id.index as usize)
            .and_then(Option::as_ref)
            .map(|s| &s.grant)
    }

    /// Ids of all grants.
    pub fn grant_ids(&self) -> impl Iterator<Item = GrantId> + '_ {
        self.grants
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_some())
            .map(|(i, _)| self.id_of(i as u32))
    }

    /// Bytes the tables take now.
    pub fn memory_usage(&self) -> MemoryUsage {
        MemoryUsage {
            sa_table: self.sas.capacity() * slot_bytes::<SaEntry>(),
            region_table: self.regions.capacity() * slot_bytes::<Region>(),
            grant_slab: self.grants.capacity() * core::mem::size_of::<Option<GrantSlot>>(),
        }
    }

    /// True when `spi` (key-phase bit ignored) is in the direct-write range.
    pub fn is_direct_spi(&self, spi: u32) -> bool {
        spi & !SPI_KEY_PHASE_BIT >= self.policy.direct_spi_min
    }

    /// Decides what to do with `seg` at time `now`. Checks, in order: `unknown_sa`,
    /// `auth_failed`, `no_hint`, `unknown_region`, `stale_generation`, `not_granted`,
    /// `seq_wrap`, `out_of_bounds`; then `not_ready` (copy, staged), `not_direct_spi` (copy),
    /// and Direct only if the payload landed exactly at its address.
    ///
    /// O(1) in SAs, regions and grants (at most [`MAX_GRANTS_PER_SA`] grants scanned);
    /// allocation-free; all arithmetic on packet fields is overflow-checked.
    pub fn decide(&self, seg: &Segment, now: u64) -> Decision {
        match self.check(seg, now) {
            Ok(d) => d,
            Err(reason) => Decision::Reject(reason),
        }
    }

    fn check(&self, seg: &Segment, now: u64) -> core::result::Result<Decision, Reason> {
        let allow_list = self.policy.access == AccessControl::AllowList;
        let sa = if allow_list {
            Some(self.sas.get(&seg.spi).ok_or(Reason::UnknownSa)?)
        } else {
            None
        };
        if !seg.authenticated {
            return Err(Reason::AuthFailed);
        }
        let hint = seg.hint.ok_or(Reason::NoHint)?;
        let region = self
            .regions
            .get(&hint.region_id)
            .ok_or(Reason::UnknownRegion)?;
        let active = region.active_at(now);
        if active.is_some_and(|a| hint.generation < a) {
            return Err(Reason::StaleGeneration);
        }
        let ready = active == Some(hint.generation);

        let delta = seg.seq.wrapping_sub(hint.base_tcp_seq);
        // 48-bit offset + 32-bit delta + 32-bit length cannot overflow u64.
        let region_offset = (hint.offset & psp::hint::MAX_OFFSET) + u64::from(delta);
        let end = region_offset + u64::from(seg.len);
        let (window_start, window_end, grant) = match sa {
            Some(sa) => {
                let (id, g) = self
                    .find_grant(sa, hint.region_id, hint.generation, region_offset, end)
                    .ok_or(Reason::NotGranted)?;
                (g.offset, g.offset + g.len, Some(id))
            }
            None => (0, region.len, None),
        };
        if delta >= SEQ_WRAP_LIMIT {
            return Err(Reason::SeqWrap);
        }
        if region_offset < window_start || end > window_end || end > region.len {
            return Err(Reason::OutOfBounds);
        }
        let placement = Placement {
            addr: region.base + region_offset,
            region_id: region.id,
            generation: hint.generation,
            region_offset,
            len: seg.len,
            grant,
        };
        if !ready {
            return Ok(Decision::Copy(placement, Reason::NotReady));
        }
        if !self.is_direct_spi(seg.spi) {
            return Ok(Decision::Copy(placement, Reason::NotDirectSpi));
        }
        if seg.landed_at == Some(placement.addr) {
            Ok(Decision::Direct(placement))
        } else {
            Ok(Decision::Copy(placement, Reason::LandedElsewhere))
        }
    }

    /// The SA's grant for (region, generation) whose window holds the bytes
    /// `start..end` of the region. An SA may hold several disjoint windows of one region
    /// generation; when none holds the bytes, the first grant for the pair is returned, so
    /// that the bounds check rejects them as `out_of_bounds`; with no grant for the pair,
    /// None (`not_granted`). Window ends cannot overflow: `add_grant` checked them.
    fn find_grant(
        &self,
        sa: &SaEntry,
        region_id: u32,
        generation: u16,
        start: u64,
        end: u64,
    ) -> Option<(GrantId, &Grant)> {
        let mut first = None;
        let mut cur = sa.first_grant;
        for _ in 0..MAX_GRANTS_PER_SA {
            let Some(Some(slot)) = self.grants.get(cur as usize) else {
                break;
            };
            let g = &slot.grant;
            if g.region_id == region_id && g.generation == generation {
                if start >= g.offset && end <= g.offset + g.len {
                    return Some((self.id_of(cur), g));
                }
                first.get_or_insert((self.id_of(cur), g));
            }
            cur = slot.next_of_sa;
        }
        first
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIRECT: u32 = 0x4000_0001;
    const LOW: u32 = 0x0000_0002;
    const BASE: u64 = 1 << 30;

    /// Region 1: 1 MiB at BASE, generation 1 active, 2 pending at t=1000. Grants: DIRECT and
    /// LOW get [4096, 4096+65536) of generation 1, base seq 1000; DIRECT also generation 2.
    fn engine() -> PlacementEngine {
        let mut e = PlacementEngine::new(Policy::default());
        e.add_region(1, BASE, 1 << 20).unwrap();
        e.configure_generation(1, 1, 0).unwrap();
        e.advance(0, |_| {});
        e.configure_generation(1, 2, 1000).unwrap();
        for spi in [DIRECT, LOW] {
            e.add_sa(spi).unwrap();
            e.add_grant(Grant {
                spi,
                region_id: 1,
                generation: 1,
                offset: 4096,
                len: 65536,
                base_seq: 1000,
            })
            .unwrap();
        }
        e.add_grant(Grant {
            spi: DIRECT,
            region_id: 1,
            generation: 2,
            offset: 0,
            len: 1 << 20,
            base_seq: 0,
        })
        .unwrap();
        e
    }

    fn seg(spi: u32, generation: u16, offset: u64, base: u32, seq: u32, len: u32) -> Segment {
        Segment {
            spi,
            authenticated: true,
            hint: Some(Hint {
                region_id: 1,
                generation,
                offset,
                base_tcp_seq: base,
            }),
            seq,
            len,
            landed_at: None,
        }
    }

    #[test]
    fn every_reason_is_reachable() {
        let e = engine();
        let ok = seg(DIRECT, 1, 4096, 1000, 1000, 1400);
        let cases: Vec<(Segment, u64, Decision)> = vec![
            (
                Segment {
                    spi: 0x4000_0099,
                    ..ok
                },
                0,
                Decision::Reject(Reason::UnknownSa),
            ),
            (
                Segment {
                    authenticated: false,
                    ..ok
                },
                0,
                Decision::Reject(Reason::AuthFailed),
            ),
            (
                Segment { hint: None, ..ok },
                0,
                Decision::Reject(Reason::NoHint),
            ),
            (
                Segment {
                    hint: Some(Hint {
                        region_id: 7,
                        ..ok.hint.unwrap()
                    }),
                    ..ok
                },
                0,
                Decision::Reject(Reason::UnknownRegion),
            ),
            (
                Segment {
                    hint: Some(Hint {
                        generation: 0,
                        ..ok.hint.unwrap()
                    }),
                    ..ok
                },
                0,
                Decision::Reject(Reason::StaleGeneration),
            ),
            (
                seg(LOW, 2, 0, 0, 0, 10),
                0,
                Decision::Reject(Reason::NotGranted),
            ),
            (
                seg(DIRECT, 1, 4096, 1000, 999, 10),
                0,
                Decision::Reject(Reason::SeqWrap),
            ),
            (
                seg(DIRECT, 1, 4096 + 65536 - 10, 1000, 1000, 11),
                0,
                Decision::Reject(Reason::OutOfBounds),
            ),
            (
                seg(DIRECT, 1, 4095, 1000, 1000, 10),
                0,
                Decision::Reject(Reason::OutOfBounds),
            ),
        ];
        for (s, now, want) in cases {
            assert_eq!(e.decide(&s, now), want, "{s:?}");
        }
        // Pending generation 2 before t=1000: copy (staged), never direct.
        let pending = Segment {
            landed_at: Some(BASE + 100),
            ..seg(DIRECT, 2, 100, 0, 0, 10)
        };
        assert!(matches!(
            e.decide(&pending, 999),
            Decision::Copy(_, Reason::NotReady)
        ));
        // At t=1000 it is active even before advance(); generation 1 is then stale.
        assert!(matches!(e.decide(&pending, 1000), Decision::Direct(_)));
        assert_eq!(
            e.decide(&ok, 1000),
            Decision::Reject(Reason::StaleGeneration)
        );
        // Low SPI: copied even when it landed right.
        let low = Segment {
            landed_at: Some(BASE + 4096),
            ..seg(LOW, 1, 4096, 1000, 1000, 10)
        };
        assert!(matches!(
            e.decide(&low, 0),
            Decision::Copy(_, Reason::NotDirectSpi)
        ));
        // Direct only where it landed exactly.
        let addr = BASE + 4096 + 500;
        let here = Segment {
            landed_at: Some(addr),
            ..seg(DIRECT, 1, 4096, 1000, 1500, 100)
        };
        match e.decide(&here, 0) {
            Decision::Direct(pl) => {
                assert_eq!((pl.addr, pl.region_offset, pl.len), (addr, 4596, 100))
            }
            other => panic!("{other:?}"),
        }
        let elsewhere = Segment {
            landed_at: Some(addr + 1),
            ..here
        };
        assert!(matches!(
            e.decide(&elsewhere, 0),
            Decision::Copy(_, Reason::LandedElsewhere)
        ));
    }

    #[test]
    fn key_phase_bit_does_not_change_the_direct_range() {
        let e = engine();
        assert!(e.is_direct_spi(DIRECT | SPI_KEY_PHASE_BIT));
        assert!(!e.is_direct_spi(LOW | SPI_KEY_PHASE_BIT));
    }

    #[test]
    fn retire_and_revoke() {
        let mut e = engine();
        let g = e.grant_ids().next().unwrap();
        e.revoke_grant(g).unwrap();
        assert!(e.revoke_grant(g).is_err());
        e.retire_region(1).unwrap();
        assert_eq!(e.grant_ids().count(), 0);
        assert_eq!(
            e.decide(&seg(DIRECT, 1, 4096, 1000, 1000, 10), 0),
            Decision::Reject(Reason::UnknownRegion)
        );
        e.remove_sa(DIRECT).unwrap();
        assert_eq!(
            e.decide(&seg(DIRECT, 1, 4096, 1000, 1000, 10), 0),
            Decision::Reject(Reason::UnknownSa)
        );
    }

    #[test]
    fn grants_are_checked_when_added() {
        let mut e = engine();
        assert!(matches!(
            e.add_grant(Grant {
                spi: DIRECT,
                region_id: 1,
                generation: 1,
                offset: (1 << 20) - 1,
                len: 2,
                base_seq: 0
            }),
            Err(Error::GrantOutsideRegion { .. })
        ));
        assert!(matches!(
            e.add_grant(Grant {
                spi: DIRECT,
                region_id: 1,
                generation: 1,
                offset: u64::MAX,
                len: 2,
                base_seq: 0
            }),
            Err(Error::GrantOutsideRegion { .. })
        ));
        assert_eq!(
            e.add_grant(Grant {
                spi: 5,
                region_id: 1,
                generation: 1,
                offset: 0,
                len: 1,
                base_seq: 0
            }),
            Err(Error::UnknownSa(5))
        );
        for i in 0..(MAX_GRANTS_PER_SA - 1) {
            e.add_grant(Grant {
                spi: LOW,
                region_id: 1,
                generation: 9,
                offset: u64::from(i),
                len: 1,
                base_seq: 0,
            })
            .unwrap();
        }
        assert!(matches!(
            e.add_grant(Grant {
                spi: LOW,
                region_id: 1,
                generation: 9,
                offset: 0,
                len: 1,
                base_seq: 0
            }),
            Err(Error::TooManyGrants { .. })
        ));
        assert!(e.add_region(2, u64::MAX - 5, 10).is_err());
    }

    #[test]
    fn edge_cases() {
        // Offsets near 2^48, with the sequence delta carrying past it.
        let max_off = psp::hint::MAX_OFFSET;
        let region_len = max_off + (1u64 << 32);
        let mut e = PlacementEngine::new(Policy::default());
        e.add_region(1, 1 << 60, region_len).unwrap();
        e.configure_generation(1, 0, 0).unwrap();
        e.add_sa(DIRECT).unwrap();
        e.add_grant(Grant {
            spi: DIRECT,
            region_id: 1,
            generation: 0,
            offset: max_off - 10,
            len: region_len - (max_off - 10),
            base_seq: 0,
        })
        .unwrap();
        let hint = Hint {
            region_id: 1,
            generation: 0,
            offset: max_off,
            base_tcp_seq: u32::MAX - 10,
        };
        let far = |seq: u32, len: u32, landed: u64| {
            e.decide(
                &Segment {
                    spi: DIRECT,
                    authenticated: true,
                    hint: Some(hint),
                    seq,
                    len,
                    landed_at: Some(landed),
                },
                0,
            )
        };
        assert!(
            matches!(far(5, 10, (1 << 60) + max_off + 16), Decision::Direct(p) if p.region_offset == max_off + 16)
        );
        let last = (u32::MAX - 10).wrapping_add((1 << 31) - 1);
        assert!(
            matches!(far(last, 1, 0), Decision::Copy(p, Reason::LandedElsewhere) if p.region_offset == max_off + (1 << 31) - 1)
        );
        // An offset above 48 bits is masked to the field's width, as on the wire.
        let wide = Hint {
            offset: max_off + 1,
            ..hint
        };
        let d = e.decide(
            &Segment {
                spi: DIRECT,
                authenticated: true,
                hint: Some(wide),
                seq: u32::MAX - 10,
                len: 1,
                landed_at: None,
            },
            0,
        );
        assert_eq!(d, Decision::Reject(Reason::OutOfBounds));

        // Zero-length payload at the end of a grant is in bounds; one byte more is not.
        let mut e = PlacementEngine::new(Policy::default());
        e.add_region(1, 0, 1000).unwrap();
        e.configure_generation(1, 0, 0).unwrap();
        e.add_sa(DIRECT).unwrap();
        e.add_grant(Grant {
            spi: DIRECT,
            region_id: 1,
            generation: 0,
            offset: 900,
            len: 100,
            base_seq: u32::MAX - 10,
        })
        .unwrap();
        let hint = Hint {
            region_id: 1,
            generation: 0,
            offset: 900,
            base_tcp_seq: u32::MAX - 10,
        };
        let at = |seq: u32, len: u32| {
            e.decide(
                &Segment {
                    spi: DIRECT,
                    authenticated: true,
                    hint: Some(hint),
                    seq,
                    len,
                    landed_at: Some(900 + u64::from(seq.wrapping_sub(u32::MAX - 10))),
                },
                0,
            )
        };
        assert!(
            matches!(at(5, 10), Decision::Direct(p) if p.region_offset == 916),
            "wraps past 2^32"
        );
        assert!(matches!(at(89, 0), Decision::Direct(p) if p.region_offset == 1000 && p.len == 0));
        assert_eq!(at(89, 1), Decision::Reject(Reason::OutOfBounds));
        assert_eq!(
            at((u32::MAX - 10).wrapping_add(1 << 31), 0),
            Decision::Reject(Reason::SeqWrap)
        );
        assert!(matches!(
            at((u32::MAX - 10).wrapping_add((1 << 31) - 1), 0),
            Decision::Reject(Reason::OutOfBounds)
        ));
    }

    #[test]
    fn disjoint_grants_of_one_sa_in_one_generation_are_all_reachable() {
        let mut e = PlacementEngine::new(Policy::default());
        e.add_region(1, BASE, 1 << 20).unwrap();
        e.configure_generation(1, 0, 0).unwrap();
        e.add_sa(DIRECT).unwrap();
        let window = |offset, base_seq| Grant {
            spi: DIRECT,
            region_id: 1,
            generation: 0,
            offset,
            len: 10_000,
            base_seq,
        };
        let older = e.add_grant(window(0, 100)).unwrap();
        let newer = e.add_grant(window(20_000, 50_000)).unwrap();
        fn placed(
            e: &PlacementEngine,
            (offset, base, seq, len): (u64, u32, u32, u32),
        ) -> core::result::Result<Option<GrantId>, Reason> {
            match e.decide(&seg(DIRECT, 0, offset, base, seq, len), 0) {
                Decision::Copy(p, Reason::LandedElsewhere) => Ok(p.grant),
                Decision::Reject(r) => Err(r),
                other => panic!("{other:?}"),
            }
        }
        // Both windows, first and last bytes.
        assert_eq!(placed(&e, (0, 100, 100, 1400)), Ok(Some(older)));
        assert_eq!(placed(&e, (0, 100, 100 + 8_600, 1400)), Ok(Some(older)));
        assert_eq!(placed(&e, (20_000, 50_000, 50_000, 1400)), Ok(Some(newer)));
        assert_eq!(
            placed(&e, (20_000, 50_000, 50_000 + 8_600, 1400)),
            Ok(Some(newer))
        );
        // The gap between them, and a segment straddling a window's end, stay out of bounds.
        assert_eq!(placed(&e, (10_000, 0, 0, 10)), Err(Reason::OutOfBounds));
        assert_eq!(
            placed(&e, (0, 100, 100 + 9_000, 1400)),
            Err(Reason::OutOfBounds)
        );
        assert_eq!(placed(&e, (19_000, 0, 0, 2_000)), Err(Reason::OutOfBounds));
        // Another generation is still not granted.
        assert_eq!(
            e.decide(&seg(DIRECT, 1, 0, 100, 100, 10), 0),
            Decision::Reject(Reason::NotGranted)
        );
        // After revoking the newer window, the older one still works and the newer's
        // bytes are out of bounds.
        e.revoke_grant(newer).unwrap();
        assert_eq!(placed(&e, (0, 100, 100, 1400)), Ok(Some(older)));
        assert_eq!(
            placed(&e, (20_000, 50_000, 50_000, 1400)),
            Err(Reason::OutOfBounds)
        );
    }

    #[test]
    fn region_bound_keys_need_no_sa() {
        let mut e = PlacementEngine::new(Policy {
            access: AccessControl::RegionBoundKeys,
            ..Policy::default()
        });
        e.add_region(3, 0, 4096).unwrap();
        e.configure_generation(3, 0, 0).unwrap();
        let s = Segment {
            spi: DIRECT,
            authenticated: true,
            hint: Some(Hint {
                region_id: 3,
                generation: 0,
                offset: 0,
                base_tcp_seq: 0,
            }),
            seq: 10,
            len: 100,
            landed_at: Some(10),
        };
        assert!(matches!(e.decide(&s, 0), Decision::Direct(p) if p.grant.is_none()));
        assert_eq!(
            e.decide(&Segment { len: 4087, ..s }, 0),
            Decision::Reject(Reason::OutOfBounds)
        );
        assert_eq!(
            e.decide(
                &Segment {
                    authenticated: false,
                    ..s
                },
                0
            ),
            Decision::Reject(Reason::AuthFailed)
        );
    }

    #[test]
    fn a_revoked_grant_id_never_names_the_grant_that_reuses_its_slot() {
        let mut e = engine();
        let window = Grant {
            spi: DIRECT,
            region_id: 1,
            generation: 1,
            offset: 200_000,
            len: 1000,
            base_seq: 0,
        };
        let old = e.add_grant(window).unwrap();
        e.revoke_grant(old).unwrap();
        let new = e
            .add_grant(Grant {
                offset: 300_000,
                ..window
            })
            .unwrap();
        assert_ne!(old, new, "the slot is reused under a new epoch");
        assert_eq!(e.grant(old), None, "the old id names nothing");
        assert_eq!(e.grant(new).map(|g| g.offset), Some(300_000));
        assert_eq!(e.revoke_grant(old), Err(Error::UnknownGrant(old.to_wire())));
        assert_eq!(GrantId::from_wire(new.to_wire()), new);
        assert!(e.grant_ids().any(|g| g == new));
        assert!(!e.grant_ids().any(|g| g == old));
        // Removing the SA frees its slots too, under new epochs.
        e.remove_sa(DIRECT).unwrap();
        assert_eq!(e.grant(new), None);
    }
}
