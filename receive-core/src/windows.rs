//! Windows of one region: first-fit allocation of byte ranges with guard gaps between
//! them. Every length comes from a control-plane client, so all arithmetic is checked and
//! live windows never overlap (nor come closer than [`WINDOW_GAP`]).

use std::collections::BTreeMap;

use crate::error::WindowError;

/// Space kept free between windows of one region, so that a frame longer than its slot
/// (up to a UMEM chunk) never reaches the next window.
pub const WINDOW_GAP: u64 = 4096;

/// How far whole frames landing in a window's slots reach past it: `before` its start (the
/// headers of the lowest slot's frame), `after` its end (the ICV of the highest slot's).
/// Both stay well inside [`WINDOW_GAP`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spill {
    /// Bytes before a window.
    pub before: u64,
    /// Bytes after a window.
    pub after: u64,
}

/// The windows of one region: live ones (granted, or draining after revocation until no
/// copy or digest reads them any more) and every one ever granted.
#[derive(Debug, Clone)]
pub struct RegionWindows {
    len: u64,
    /// Live windows: offset → length.
    live: BTreeMap<u64, u64>,
    /// Bytes of every window ever granted, merged: start → end (for the stray-write
    /// check at the end of a run; bounded by the region however many grants come).
    history: BTreeMap<u64, u64>,
    /// Bytes granted in all, counting reused bytes again.
    granted: u64,
}

impl RegionWindows {
    /// An empty region of `len` bytes.
    pub fn new(len: u64) -> Self {
        Self {
            len,
            live: BTreeMap::new(),
            history: BTreeMap::new(),
            granted: 0,
        }
    }

    /// The region's length.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for a region of no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Finds room for `len` bytes (first fit) and reserves it; returns its offset.
    ///
    /// # Errors
    /// [`WindowError::Empty`] for 0 bytes, [`WindowError::TooLarge`] beyond the region,
    /// [`WindowError::NoRoom`] when no gap between live windows is large enough.
    pub fn allocate(&mut self, len: u64) -> Result<u64, WindowError> {
        if len == 0 {
            return Err(WindowError::Empty);
        }
        if len > self.len {
            return Err(WindowError::TooLarge {
                len,
                region_len: self.len,
            });
        }
        let at = self.first_fit(len).ok_or(WindowError::NoRoom { len })?;
        self.live.insert(at, len);
        self.remember(at, at + len);
        self.granted = self.granted.saturating_add(len);
        debug_assert!(
            self.disjoint(),
            "windows overlap after allocating {len} at {at}"
        );
        Ok(at)
    }

    fn first_fit(&self, len: u64) -> Option<u64> {
        let mut at = 0u64;
        for (&o, &l) in &self.live {
            if at.checked_add(len)?.checked_add(WINDOW_GAP)? <= o {
                break;
            }
            at = o.checked_add(l)?.checked_add(WINDOW_GAP)?;
        }
        (at.checked_add(len)? <= self.len).then_some(at)
    }

    /// Frees the window at `offset`; false when there is none.
    pub fn free(&mut self, offset: u64) -> bool {
        self.live.remove(&offset).is_some()
    }

    /// Live windows, (offset, len) in offset order.
    pub fn live(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.live.iter().map(|(o, l)| (*o, *l))
    }

    /// Adds `start..end` (inside the region) to the merged history.
    fn remember(&mut self, mut start: u64, mut end: u64) {
        let touching: Vec<(u64, u64)> = self
            .history
            .range(..=end)
            .rev()
            .take_while(|(_, e)| **e >= start)
            .map(|(s, e)| (*s, *e))
            .collect();
        for (s, e) in touching {
            self.history.remove(&s);
            start = start.min(s);
            end = end.max(e);
        }
        self.history.insert(start, end);
    }

    /// Bytes granted in all (reused bytes count again).
    pub fn granted_bytes(&self) -> u64 {
        self.granted
    }

    /// True when `offset` lies in a window ever granted.
    pub fn ever_granted(&self, offset: u64) -> bool {
        self.history
            .range(..=offset)
            .next_back()
            .is_some_and(|(_, end)| offset < *end)
    }

    /// The parts of the region no window ever covered, in order.
    pub fn never_granted(&self) -> Vec<std::ops::Range<u64>> {
        self.never_granted_or_spilled(Spill::default())
    }

    /// The parts of the region no window ever covered, and that are not within `spill` of
    /// one (where whole frames landing in its first and last slots reach).
    pub fn never_granted_or_spilled(&self, spill: Spill) -> Vec<std::ops::Range<u64>> {
        let mut gaps = Vec::new();
        let mut at = 0;
        for (&s, &e) in &self.history {
            let spilled_from = s.saturating_sub(spill.before);
            if spilled_from > at {
                gaps.push(at..spilled_from);
            }
            at = at.max(e.saturating_add(spill.after).min(self.len));
        }
        if at < self.len {
            gaps.push(at..self.len);
        }
        gaps
    }

    /// The invariant: live windows lie inside the region, in order, at least
    /// [`WINDOW_GAP`] apart.
    pub fn disjoint(&self) -> bool {
        let mut end_of_previous: Option<u64> = None;
        for (&o, &l) in &self.live {
            let Some(end) = o.checked_add(l).filter(|e| *e <= self.len) else {
                return false;
            };
            if let Some(prev) = end_of_previous
                && prev.checked_add(WINDOW_GAP).is_none_or(|p| p > o)
            {
                return false;
            }
            end_of_previous = Some(end);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hostile_lengths_are_refused_without_wrapping() {
        let mut r = RegionWindows::new(64 << 20);
        assert_eq!(r.allocate(0), Err(WindowError::Empty));
        // The length that wrapped `at + len + WINDOW_GAP` before.
        let wraps = u64::MAX - 12287;
        assert!(matches!(
            r.allocate(wraps),
            Err(WindowError::TooLarge { .. })
        ));
        assert!(matches!(
            r.allocate(u64::MAX),
            Err(WindowError::TooLarge { .. })
        ));
        assert_eq!(r.allocate(1 << 20), Ok(0));
        // Nothing was reserved by the refusals.
        assert_eq!(r.live().count(), 1);
        assert_eq!(r.allocate(1 << 20), Ok((1 << 20) + WINDOW_GAP));
        assert!(r.disjoint());
    }

    #[test]
    fn freed_space_is_reused_and_full_regions_say_so() {
        let mut r = RegionWindows::new(100_000);
        let a = r.allocate(40_000).unwrap();
        let b = r.allocate(40_000).unwrap();
        assert_eq!(r.allocate(40_000), Err(WindowError::NoRoom { len: 40_000 }));
        assert!(r.free(a));
        assert!(!r.free(a));
        assert_eq!(r.allocate(40_000), Ok(a));
        assert!(r.free(b));
        assert_eq!(r.granted_bytes(), 120_000);
        assert!(r.ever_granted(b + 39_999));
        assert!(!r.ever_granted(b + 40_000));
        assert!(!r.ever_granted(a + 40_000));
        assert_eq!(r.never_granted(), vec![40_000..b, b + 40_000..100_000]);
    }

    #[test]
    fn history_stays_bounded_however_many_grants() {
        let mut r = RegionWindows::new(1 << 20);
        for _ in 0..100_000 {
            let at = r.allocate(1).unwrap();
            assert!(r.free(at));
        }
        assert_eq!(r.history.len(), 1);
        assert_eq!(r.never_granted(), vec![1..1 << 20]);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Allocate(u64),
        Free(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => prop_oneof![
                0..200_000u64,
                Just(u64::MAX),
                Just(u64::MAX - 12287),
                (u64::MAX - 10_000)..u64::MAX,
            ]
            .prop_map(Op::Allocate),
            1 => any::<usize>().prop_map(Op::Free),
        ]
    }

    proptest! {
        /// Whatever a client asks, live windows never overlap, never come closer than the
        /// gap, and always lie inside the region.
        #[test]
        fn live_windows_never_overlap(len in 0..1_000_000u64, ops in prop::collection::vec(op(), 1..100)) {
            let mut r = RegionWindows::new(len);
            for op in ops {
                match op {
                    Op::Allocate(n) => {
                        if let Ok(at) = r.allocate(n) {
                            prop_assert!(n > 0 && at.checked_add(n).is_some_and(|e| e <= len));
                        }
                    }
                    Op::Free(i) => {
                        let offsets: Vec<u64> = r.live().map(|(o, _)| o).collect();
                        if !offsets.is_empty() {
                            r.free(offsets[i % offsets.len()]);
                        }
                    }
                }
                prop_assert!(r.disjoint());
            }
        }
    }
}
