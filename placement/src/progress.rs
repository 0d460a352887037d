//! Per-grant completion: which byte ranges arrived, duplicates, and what is missing.

use core::ops::Range;

/// A set of disjoint, non-adjacent byte ranges, kept sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    ranges: Vec<Range<u64>>,
}

impl RangeSet {
    /// Adds `r`; returns how many of its bytes were new.
    pub fn insert(&mut self, r: Range<u64>) -> u64 {
        if r.start >= r.end {
            return 0;
        }
        // First range that ends at or after r.start (may merge), last that starts at or before r.end.
        let lo = self.ranges.partition_point(|x| x.end < r.start);
        let hi = self.ranges.partition_point(|x| x.start <= r.end);
        let overlapped: u64 = self.ranges[lo..hi]
            .iter()
            .map(|x| x.end.min(r.end).saturating_sub(x.start.max(r.start)))
            .sum();
        let merged = match self.ranges[lo..hi] {
            [] => r.clone(),
            ref touching => {
                touching[0].start.min(r.start)..touching[touching.len() - 1].end.max(r.end)
            }
        };
        self.ranges.splice(lo..hi, [merged]);
        (r.end - r.start) - overlapped
    }

    /// Whether every byte of `r` is covered.
    pub fn contains(&self, r: Range<u64>) -> bool {
        if r.start >= r.end {
            return true;
        }
        let i = self.ranges.partition_point(|x| x.end < r.end);
        self.ranges
            .get(i)
            .is_some_and(|x| x.start <= r.start && r.end <= x.end)
    }

    /// Bytes covered.
    pub fn covered(&self) -> u64 {
        self.ranges.iter().map(|r| r.end - r.start).sum()
    }

    /// The ranges of `0..len` not covered.
    pub fn gaps(&self, len: u64) -> Vec<Range<u64>> {
        let mut gaps = Vec::new();
        let mut at = 0;
        for r in &self.ranges {
            if r.start >= len {
                break;
            }
            if r.start > at {
                gaps.push(at..r.start);
            }
            at = at.max(r.end);
        }
        if at < len {
            gaps.push(at..len);
        }
        gaps
    }

    /// The covered ranges.
    pub fn ranges(&self) -> &[Range<u64>] {
        &self.ranges
    }
}

/// Completion of one grant's window (offsets relative to the window start).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrantProgress {
    len: u64,
    arrived: RangeSet,
    duplicate_bytes: u64,
}

impl GrantProgress {
    /// Progress of a window of `len` bytes.
    pub fn new(len: u64) -> Self {
        Self {
            len,
            ..Self::default()
        }
    }

    /// Records bytes `start..start+len` of the window as arrived in an authenticated
    /// segment (direct or copied). Callers never record unauthenticated bytes. Returns the
    /// new bytes; the rest count as duplicates. Bytes past the window are ignored.
    pub fn record(&mut self, start: u64, len: u64) -> u64 {
        let end = start.saturating_add(len).min(self.len);
        let start = start.min(end);
        let new = self.arrived.insert(start..end);
        self.duplicate_bytes += (end - start) - new;
        new
    }

    /// Window length.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for an empty window.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes arrived.
    pub fn arrived(&self) -> u64 {
        self.arrived.covered()
    }

    /// Bytes that arrived more than once.
    pub fn duplicate_bytes(&self) -> u64 {
        self.duplicate_bytes
    }

    /// Ranges still missing: what the sender must retransmit.
    pub fn missing(&self) -> Vec<Range<u64>> {
        self.arrived.gaps(self.len)
    }

    /// Bytes still missing.
    pub fn missing_bytes(&self) -> u64 {
        self.len - self.arrived()
    }

    /// True when every byte of the window arrived.
    pub fn is_complete(&self) -> bool {
        self.arrived() == self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contains_needs_full_cover() {
        let mut s = RangeSet::default();
        s.insert(10..20);
        s.insert(30..40);
        assert!(s.contains(10..20) && s.contains(12..18) && s.contains(30..31));
        assert!(!s.contains(15..25) && !s.contains(5..12) && !s.contains(19..31));
        assert!(!s.contains(40..41) && !s.contains(0..1));
        assert!(s.contains(7..7), "empty range");
    }

    #[test]
    fn out_of_order_duplicates_and_gaps() {
        let mut p = GrantProgress::new(100);
        assert_eq!(p.record(50, 10), 10);
        assert_eq!(p.record(0, 10), 10);
        assert_eq!(p.missing(), vec![10..50, 60..100]);
        assert_eq!(p.record(5, 10), 5);
        assert_eq!(p.duplicate_bytes(), 5);
        assert_eq!(p.record(15, 35), 35);
        assert_eq!(p.missing(), vec![60..100]);
        assert!(!p.is_complete());
        assert_eq!(p.record(60, 100), 40, "bytes past the window are ignored");
        assert!(p.is_complete());
        assert_eq!(p.missing_bytes(), 0);
        assert_eq!(p.arrived.ranges().to_vec(), vec![0..100]);
    }

    #[test]
    fn adjacent_ranges_merge() {
        let mut s = RangeSet::default();
        s.insert(0..10);
        s.insert(20..30);
        s.insert(10..20);
        assert_eq!(s.ranges().to_vec(), vec![0..30]);
        assert_eq!(s.insert(5..25), 0);
        assert_eq!(s.insert(40..40), 0);
        assert_eq!(s.gaps(50), vec![30..50]);
    }
}
