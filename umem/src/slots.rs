//! The fill plan's posted slots, by landing address: an exact entry per (landing, queue)
//! and the entries whose landing lies in a range, through buckets of [`BUCKET`] bytes
//! indexed directly by address. The plan asks both once or more per packet; an ordered map
//! made them a quarter of the receive loop's time.

use std::ops::Range;

/// Bytes of UMEM per bucket: a range query of a frame's reach (~4 KiB) meets two or three.
const BUCKET_SHIFT: u32 = 12;
/// Bytes of UMEM per bucket.
pub const BUCKET: u64 = 1 << BUCKET_SHIFT;

/// A slot posted and not returned yet: how often, and what a frame landing there may
/// write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutstandingSlot {
    /// Times posted and not returned.
    pub count: u32,
    /// What a frame landing there may write.
    pub span: Range<u64>,
    /// The payload's end (what must not be overwritten once it landed).
    pub payload_end: u64,
}

/// (landing address, queue).
pub type SlotKey = (u64, usize);

/// Posted slots by landing address.
#[derive(Debug, Default)]
pub struct SlotIndex {
    /// Bucket `landing >> BUCKET_SHIFT`: its slots, in no order. Buckets keep their memory
    /// once used (no allocation per packet).
    buckets: Vec<Vec<(SlotKey, OutstandingSlot)>>,
    len: usize,
}

impl SlotIndex {
    /// Slots outstanding.
    pub fn len(&self) -> usize {
        self.len
    }

    /// No slot outstanding.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn bucket_of(landing: u64) -> usize {
        usize::try_from(landing >> BUCKET_SHIFT).unwrap_or(usize::MAX)
    }

    /// Counts one more posting of the slot at `key`, widening its span.
    pub fn register(&mut self, key: SlotKey, span: Range<u64>, payload_end: u64) {
        let b = Self::bucket_of(key.0);
        if b >= self.buckets.len() {
            // Landings are UMEM offsets (checked by the layout): the vector is at most
            // the UMEM's size over BUCKET entries.
            self.buckets.resize_with(b + 1, Vec::new);
        }
        let bucket = &mut self.buckets[b];
        if let Some((_, slot)) = bucket.iter_mut().find(|(k, _)| *k == key) {
            slot.count += 1;
            slot.span = slot.span.start.min(span.start)..slot.span.end.max(span.end);
            return;
        }
        bucket.push((
            key,
            OutstandingSlot {
                count: 1,
                span,
                payload_end,
            },
        ));
        self.len += 1;
    }

    /// Counts one posting of the slot at `key` less (returned, or never posted after all).
    pub fn unregister(&mut self, key: SlotKey) {
        let Some(bucket) = self.buckets.get_mut(Self::bucket_of(key.0)) else {
            return;
        };
        let Some(i) = bucket.iter().position(|(k, _)| *k == key) else {
            return;
        };
        bucket[i].1.count -= 1;
        if bucket[i].1.count == 0 {
            bucket.swap_remove(i);
            self.len -= 1;
        }
    }

    /// The slot at `key`, if outstanding.
    pub fn get(&self, key: SlotKey) -> Option<&OutstandingSlot> {
        self.buckets
            .get(Self::bucket_of(key.0))?
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, s)| s)
    }

    /// The slots whose landing address lies in `landings`, in no particular order.
    pub fn landing_in(
        &self,
        landings: Range<u64>,
    ) -> impl Iterator<Item = (&SlotKey, &OutstandingSlot)> {
        let empty = landings.start >= landings.end;
        let first = Self::bucket_of(landings.start).min(self.buckets.len());
        let last = if empty {
            first
        } else {
            Self::bucket_of(landings.end - 1)
                .saturating_add(1)
                .min(self.buckets.len())
        };
        self.buckets[first..last.max(first)]
            .iter()
            .flatten()
            .filter(move |((landing, _), _)| landings.contains(landing))
            .map(|(k, s)| (k, s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    proptest! {
        /// The index answers as an ordered map of the same postings does.
        #[test]
        fn answers_as_an_ordered_map_does(
            ops in proptest::collection::vec((0u64..40_000, 0usize..3, any::<bool>()), 1..300),
            queries in proptest::collection::vec((0u64..45_000, 0u64..9000), 1..40),
        ) {
            let mut index = SlotIndex::default();
            let mut model: BTreeMap<SlotKey, u32> = BTreeMap::new();
            for (landing, queue, add) in ops {
                let key = (landing, queue);
                if add {
                    index.register(key, landing..landing + 100, landing + 50);
                    *model.entry(key).or_default() += 1;
                } else if let Some(n) = model.get_mut(&key) {
                    index.unregister(key);
                    *n -= 1;
                    if *n == 0 {
                        model.remove(&key);
                    }
                } else {
                    // Unregistering what is not there changes nothing.
                    index.unregister(key);
                }
            }
            prop_assert_eq!(index.len(), model.len());
            for (key, n) in &model {
                prop_assert_eq!(index.get(*key).map(|s| s.count), Some(*n));
            }
            for (start, len) in queries {
                let range = start..start + len;
                let mut got: Vec<SlotKey> = index.landing_in(range.clone()).map(|(k, _)| *k).collect();
                got.sort_unstable();
                let want: Vec<SlotKey> = model
                    .keys()
                    .filter(|(l, _)| range.contains(l))
                    .copied()
                    .collect();
                prop_assert_eq!(got, want);
            }
        }
    }

    #[test]
    fn spans_widen_and_the_last_return_removes_the_slot() {
        let mut index = SlotIndex::default();
        index.register((8192, 0), 8000..9000, 8500);
        index.register((8192, 0), 7900..8800, 8500);
        assert_eq!(index.get((8192, 0)).unwrap().span, 7900..9000);
        assert_eq!(index.len(), 1);
        index.unregister((8192, 0));
        assert_eq!(index.get((8192, 0)).unwrap().count, 1);
        index.unregister((8192, 0));
        assert!(index.is_empty());
        assert_eq!(index.landing_in(0..u64::MAX).count(), 0);
        // Empty and inverted ranges find nothing.
        index.register((100, 1), 0..200, 150);
        assert_eq!(index.landing_in(100..100).count(), 0);
        let (start, end) = (101, 100);
        assert_eq!(index.landing_in(start..end).count(), 0);
        assert_eq!(index.landing_in(100..101).count(), 1);
    }
}
