//! Pairing: each RX descriptor with the header record the XDP program wrote for the same
//! packet. The program splits every PSP frame: headers and ICV go to the header ring, the
//! payload to the UMEM. Both arrive per queue in packet order, but either side can lose
//! entries: the kernel drops a frame after the record was written (fill ring empty, RX
//! ring full), or the header ring overflows. A record matches a payload of the same length
//! whose last bytes (still ciphertext) equal the record's tag; older records that match
//! nothing belonged to dropped frames. The last bytes, not the first: with whole frames
//! landing back to front, the next frame's ICV may already cover a payload's first bytes.

use std::collections::VecDeque;

use xdp_common::HeaderRecord;

/// Pairing counters, over all queues.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PairingStats {
    /// Descriptors for which no record came (their payload is not handled).
    pub unpaired_descriptors: u64,
    /// Records whose frame never came (dropped by the kernel after the XDP program ran).
    pub unpaired_records: u64,
    /// Records numbered for a queue the receiver does not serve.
    pub foreign_records: u64,
    /// Records the XDP program numbered but that never reached the ring (gaps in the
    /// per-queue sequence of paired records).
    pub seq_gaps: u64,
}

/// Per-queue records waiting for their descriptors.
#[derive(Debug)]
pub struct Pairing {
    waiting: Vec<VecDeque<HeaderRecord>>,
    expected_seq: Vec<Option<u32>>,
    stats: PairingStats,
}

impl Pairing {
    /// Pairing for `queues` queues.
    pub fn new(queues: usize) -> Self {
        Self {
            waiting: vec![VecDeque::new(); queues],
            expected_seq: vec![None; queues],
            stats: PairingStats::default(),
        }
    }

    /// Queues served.
    pub fn queues(&self) -> usize {
        self.waiting.len()
    }

    /// Counters.
    pub fn stats(&self) -> PairingStats {
        self.stats
    }

    /// A record from the header ring.
    pub fn push(&mut self, record: HeaderRecord) {
        match self.waiting.get_mut(record.queue as usize) {
            Some(q) => q.push_back(record),
            None => self.stats.foreign_records += 1,
        }
    }

    /// The record of the descriptor whose payload is `payload` on `queue`, if one came.
    /// Records before it that match nothing are dropped (counted).
    pub fn pair(&mut self, queue: usize, payload: &[u8]) -> Option<HeaderRecord> {
        self.pair_by(queue, |r| {
            let tag = r.tag_bytes();
            r.payload_len as usize == payload.len() && payload.ends_with(tag)
        })
    }

    /// The record of a descriptor that holds a whole frame (headers, then the payload; a
    /// trailing ICV left out by the caller), if one came: its payload is the frame's last
    /// `payload_len` bytes, ending with the record's tag. Neither the headers nor the
    /// payload's first bytes are compared: the next frame, landing back to front, may
    /// already have covered them. Returns the record and where the payload starts in
    /// `frame`.
    pub fn pair_frame(&mut self, queue: usize, frame: &[u8]) -> Option<(HeaderRecord, usize)> {
        let payload_at = |r: &HeaderRecord| frame.len().checked_sub(r.payload_len as usize);
        let record = self.pair_by(queue, |r| {
            payload_at(r).is_some() && frame.ends_with(r.tag_bytes())
        })?;
        Some((record, payload_at(&record)?))
    }

    /// A descriptor too short to hold anything was dropped unpaired.
    pub fn unpaired(&mut self) {
        self.stats.unpaired_descriptors += 1;
    }

    fn pair_by(
        &mut self,
        queue: usize,
        matches: impl Fn(&HeaderRecord) -> bool,
    ) -> Option<HeaderRecord> {
        let Some(waiting) = self.waiting.get_mut(queue) else {
            self.stats.unpaired_descriptors += 1;
            return None;
        };
        while let Some(r) = waiting.pop_front() {
            if matches(&r) {
                self.count_seq(queue, r.seq);
                return Some(r);
            }
            self.stats.unpaired_records += 1;
        }
        self.stats.unpaired_descriptors += 1;
        None
    }

    fn count_seq(&mut self, queue: usize, seq: u32) {
        let Some(expected) = self.expected_seq.get_mut(queue) else {
            return;
        };
        if let Some(e) = *expected
            && seq != e
        {
            self.stats.seq_gaps += u64::from(seq.wrapping_sub(e));
        }
        *expected = Some(seq.wrapping_add(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record for a payload of `len` bytes whose last bytes are `first`, on `queue`.
    fn record(queue: u32, seq: u32, len: u32, first: u8) -> HeaderRecord {
        let mut r = HeaderRecord::zeroed();
        r.queue = queue;
        r.seq = seq;
        r.payload_len = len;
        r.tag_len = 8;
        r.tag = [first; xdp_common::TAG_LEN];
        r
    }

    fn payload(len: usize, first: u8) -> Vec<u8> {
        vec![first; len]
    }

    #[test]
    fn in_order_records_pair_one_to_one() {
        let mut p = Pairing::new(2);
        for i in 0..5u8 {
            p.push(record(1, u32::from(i), 1400, i));
        }
        for i in 0..5u8 {
            let r = p.pair(1, &payload(1400, i)).expect("paired");
            assert_eq!(r.seq, u32::from(i));
        }
        assert_eq!(p.stats(), PairingStats::default());
    }

    #[test]
    fn records_of_dropped_frames_are_skipped_and_counted() {
        let mut p = Pairing::new(1);
        for i in 0..6u8 {
            p.push(record(0, u32::from(i), 1400, i));
        }
        // The kernel dropped frames 1 and 2 after the program wrote their records.
        assert_eq!(p.pair(0, &payload(1400, 0)).map(|r| r.seq), Some(0));
        assert_eq!(p.pair(0, &payload(1400, 3)).map(|r| r.seq), Some(3));
        assert_eq!(p.stats().unpaired_records, 2);
        // A gap in the program's numbering is not a drop of ours.
        assert_eq!(p.stats().seq_gaps, 2);
    }

    #[test]
    fn a_descriptor_whose_record_was_lost_is_counted_and_costs_the_records_after_it() {
        let mut p = Pairing::new(1);
        p.push(record(0, 7, 1400, 7));
        // The record of this payload never came (header ring full): nothing matches.
        assert!(p.pair(0, &payload(1400, 6)).is_none());
        let s = p.stats();
        assert_eq!((s.unpaired_descriptors, s.unpaired_records), (1, 1));
        // Same length but a different tag, or same tag but another length: no pair.
        p.push(record(0, 8, 1400, 8));
        assert!(p.pair(0, &payload(1399, 8)).is_none());
    }

    #[test]
    fn short_payloads_compare_only_their_bytes_and_foreign_queues_are_counted() {
        let mut p = Pairing::new(1);
        let mut r = record(0, 0, 3, 9);
        r.tag_len = 3;
        p.push(r);
        assert!(p.pair(0, &[9, 9, 9]).is_some());
        p.push(record(5, 0, 10, 1));
        assert_eq!(p.stats().foreign_records, 1);
        assert!(p.pair(5, &payload(10, 1)).is_none());
        assert_eq!(p.stats().unpaired_descriptors, 1);
    }
}
