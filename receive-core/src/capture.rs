//! Capture of received frames as they were on the wire (`zc-recv live --capture`), and of
//! the grants a replay of them needs. Sans-IO: frames are rebuilt here and handed to the
//! I/O layer, which writes them.
//!
//! A frame is rebuilt from its header record (outer headers, PSP header through TCP
//! header, ICV) and its payload as it landed, *before* it is opened (the region then holds
//! plaintext). Whole frames are captured after their head was restored.

use std::collections::{HashMap, VecDeque};

use placement::idmap::FastMap;

use placement::{Grant, GrantId};
use serde::{Deserialize, Serialize};
use xdp_common::{CaptureExt, HeaderRecord};

/// Records waiting for their payload, at most (older ones are forgotten).
const MAX_WAITING: usize = 1 << 16;

/// When to stop capturing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureLimit {
    /// Frames' bytes (as captured).
    Bytes(u64),
    /// Frames.
    Frames(u64),
}

/// Captured frames, back to back in one buffer, with their arrival times: handed to the
/// writer whole and given back empty, so that capturing allocates nothing per frame.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapturedBatch {
    bytes: Vec<u8>,
    /// Per frame: CLOCK_MONOTONIC nanoseconds when the XDP program saw it, and its length.
    frames: Vec<(u64, usize)>,
}

impl CapturedBatch {
    /// Appends a frame made of `parts`.
    fn push(&mut self, ktime_ns: u64, parts: &[&[u8]]) {
        let len = parts.iter().map(|p| p.len()).sum();
        for p in parts {
            self.bytes.extend_from_slice(p);
        }
        self.frames.push((ktime_ns, len));
    }

    /// Empties it, keeping its memory.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.frames.clear();
    }

    /// No frames.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Frames.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Bytes of all frames.
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    /// The frames with their arrival times, in the order they were captured.
    pub fn frames(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.frames.iter().scan(0usize, |at, &(ktime, len)| {
            let frame = self.bytes.get(*at..*at + len)?;
            *at += len;
            Some((ktime, frame))
        })
    }
}

/// A grant as a replay configuration names it (`[[grant]]` of `zc-recv replay`'s TOML).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantSpec {
    pub spi: u32,
    pub region: u32,
    pub generation: u16,
    pub offset: u64,
    pub len: u64,
    pub base_seq: u32,
    /// SHA-256 of the window's expected contents (hex): the owner's digest, once it said
    /// the message was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

impl From<&Grant> for GrantSpec {
    fn from(g: &Grant) -> Self {
        Self {
            spi: g.spi,
            region: g.region_id,
            generation: g.generation,
            offset: g.offset,
            len: g.len,
            base_seq: g.base_seq,
            sha256: None,
        }
    }
}

/// What capturing did (reported).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CaptureCounts {
    /// Frames captured.
    pub frames: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Frames not captured: the limit was reached.
    pub over_limit: u64,
    /// Frames not captured: their record had no outer headers (a frame shorter than the
    /// program's fixed load, or a record from before capturing started).
    pub without_outer: u64,
}

/// A record's queue and sequence number, as one key.
fn key(r: &HeaderRecord) -> u64 {
    u64::from(r.queue) << 32 | u64::from(r.seq)
}

/// Rebuilds captured frames and remembers grants.
#[derive(Debug)]
pub struct CaptureTap {
    limit: Option<CaptureLimit>,
    /// Outer headers by [`key`] (queue, record sequence), until the payload comes.
    outer: FastMap<u64, CaptureExt>,
    arrival: VecDeque<u64>,
    batch: CapturedBatch,
    grants: Vec<GrantSpec>,
    grant_index: HashMap<GrantId, usize>,
    counts: CaptureCounts,
    /// The limit was reached.
    full: bool,
}

impl CaptureTap {
    /// A tap that stops at `limit` (none: never).
    pub fn new(limit: Option<CaptureLimit>) -> Self {
        Self {
            limit,
            outer: FastMap::default(),
            arrival: VecDeque::new(),
            batch: CapturedBatch::default(),
            grants: Vec::new(),
            grant_index: HashMap::new(),
            counts: CaptureCounts::default(),
            full: false,
        }
    }

    /// A record came with its capture extension.
    pub fn record(&mut self, r: &HeaderRecord, ext: CaptureExt) {
        let key = key(r);
        if self.outer.insert(key, ext).is_none() {
            self.arrival.push_back(key);
        }
        while self.arrival.len() > MAX_WAITING {
            if let Some(old) = self.arrival.pop_front() {
                self.outer.remove(&old);
            }
        }
    }

    /// The payload of record `r` as it landed, before it is opened.
    pub fn payload(&mut self, r: &HeaderRecord, payload: &[u8]) {
        let Some(ext) = self.outer.remove(&key(r)) else {
            self.counts.without_outer += 1;
            return;
        };
        if ext.outer_len == 0 {
            self.counts.without_outer += 1;
            return;
        }
        let (outer, hdr) = (ext.outer_bytes(), r.header_bytes());
        let len = outer.len() + hdr.len() + payload.len() + r.icv.len();
        // Once a frame did not fit, none is captured: the file stays a prefix of the run.
        self.full |= match self.limit {
            Some(CaptureLimit::Frames(n)) => self.counts.frames >= n,
            Some(CaptureLimit::Bytes(n)) => self.counts.bytes.saturating_add(len as u64) > n,
            None => false,
        };
        if self.full {
            self.counts.over_limit += 1;
            return;
        }
        self.batch
            .push(ext.ktime_ns, &[outer, hdr, payload, &r.icv[..]]);
        self.counts.frames += 1;
        self.counts.bytes += len as u64;
    }

    /// A grant was made.
    pub fn granted(&mut self, id: GrantId, g: &Grant) {
        self.grant_index.insert(id, self.grants.len());
        self.grants.push(GrantSpec::from(g));
    }

    /// The owner of grant `id` gave its digest.
    pub fn digest(&mut self, id: GrantId, sha256: &str) {
        if let Some(g) = self
            .grant_index
            .get(&id)
            .and_then(|&i| self.grants.get_mut(i))
        {
            g.sha256 = Some(sha256.to_string());
        }
    }

    /// The frames captured since the last call; `spare` (emptied) collects the next ones.
    pub fn take_batch(&mut self, mut spare: CapturedBatch) -> CapturedBatch {
        spare.clear();
        std::mem::replace(&mut self.batch, spare)
    }

    /// Frames captured and not taken yet.
    pub fn pending(&self) -> usize {
        self.batch.len()
    }

    /// Every grant made while capturing, in order.
    pub fn grants(&self) -> &[GrantSpec] {
        &self.grants
    }

    /// What capturing did.
    pub fn counts(&self) -> CaptureCounts {
        self.counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xdp_common::MAX_OUTER;

    fn record(seq: u32) -> HeaderRecord {
        let mut r = HeaderRecord::zeroed();
        r.queue = 1;
        r.seq = seq;
        r.hdr_len = 3;
        r.hdr[..3].copy_from_slice(b"HDR");
        r.icv = [9; 16];
        r
    }

    fn ext(outer_len: u16) -> CaptureExt {
        let mut outer = [0u8; MAX_OUTER];
        outer[..5].copy_from_slice(b"OUTER");
        CaptureExt {
            ktime_ns: 77,
            outer_len,
            pad: [0; 6],
            outer,
        }
    }

    #[test]
    fn frames_are_outer_headers_psp_and_tcp_headers_payload_and_icv() {
        let mut tap = CaptureTap::new(None);
        tap.record(&record(5), ext(5));
        tap.payload(&record(5), b"payload");
        tap.record(&record(8), ext(5));
        tap.payload(&record(8), b"");
        let batch = tap.take_batch(CapturedBatch::default());
        let frames: Vec<_> = batch.frames().collect();
        assert_eq!(frames.len(), 2);
        let mut want = b"OUTERHDRpayload".to_vec();
        want.extend([9; 16]);
        assert_eq!(frames[0], (77, &want[..]));
        let mut empty_payload = b"OUTERHDR".to_vec();
        empty_payload.extend([9; 16]);
        assert_eq!(frames[1], (77, &empty_payload[..]));
        assert_eq!(batch.byte_len(), want.len() + empty_payload.len());
        // The spare handed back comes back empty next time, its memory kept.
        let next = tap.take_batch(batch);
        assert!(next.is_empty());
        assert_eq!(tap.pending(), 0);
        // A payload whose record had no extension (or no outer bytes) is counted, not
        // captured.
        tap.payload(&record(6), b"x");
        tap.record(&record(7), ext(0));
        tap.payload(&record(7), b"x");
        assert_eq!(tap.counts().without_outer, 2);
        assert_eq!(tap.counts().frames, 2);
        assert_eq!(
            tap.counts().bytes,
            (want.len() + empty_payload.len()) as u64
        );
    }

    #[test]
    fn a_shorter_frame_after_the_byte_limit_is_not_captured() {
        let mut tap = CaptureTap::new(Some(CaptureLimit::Bytes(60)));
        for (seq, payload) in [(0, &b"0123456789"[..]), (1, b"0123456789"), (2, b"")] {
            tap.record(&record(seq), ext(5));
            tap.payload(&record(seq), payload);
        }
        // 34 bytes, then 34 more do not fit: the 24-byte frame after them would, but the
        // capture stopped.
        assert_eq!((tap.counts().frames, tap.counts().over_limit), (1, 2));
    }

    #[test]
    fn limits_stop_capturing_and_count_the_rest() {
        let mut frames = CaptureTap::new(Some(CaptureLimit::Frames(2)));
        let mut bytes = CaptureTap::new(Some(CaptureLimit::Bytes(60)));
        for seq in 0..4 {
            for tap in [&mut frames, &mut bytes] {
                tap.record(&record(seq), ext(5));
                tap.payload(&record(seq), b"0123456789");
            }
        }
        // Each frame is 5 + 3 + 10 + 16 = 34 bytes: one fits in 60.
        assert_eq!((frames.counts().frames, frames.counts().over_limit), (2, 2));
        assert_eq!((bytes.counts().frames, bytes.counts().over_limit), (1, 3));
        assert_eq!(bytes.counts().bytes, 34);
    }

    #[test]
    fn records_that_never_get_their_payload_are_forgotten() {
        let mut tap = CaptureTap::new(None);
        let waiting = u32::try_from(MAX_WAITING).unwrap();
        for seq in 0..waiting + 10 {
            tap.record(&record(seq), ext(5));
        }
        assert_eq!(tap.outer.len(), MAX_WAITING);
        tap.payload(&record(0), b"x");
        assert_eq!(tap.counts().without_outer, 1);
        tap.payload(&record(waiting + 9), b"x");
        assert_eq!(tap.counts().frames, 1);
    }

    #[test]
    fn grants_keep_their_order_and_digests() {
        let mut tap = CaptureTap::new(None);
        let g = |spi| Grant {
            spi,
            region_id: 1,
            generation: 1,
            offset: 0,
            len: 10,
            base_seq: 5,
        };
        tap.granted(GrantId::from_wire(1), &g(10));
        tap.granted(GrantId::from_wire(2), &g(11));
        tap.digest(GrantId::from_wire(2), "ab");
        tap.digest(GrantId::from_wire(3), "cd");
        assert_eq!(tap.grants().len(), 2);
        assert_eq!(tap.grants()[0].sha256, None);
        assert_eq!(tap.grants()[1].sha256.as_deref(), Some("ab"));
        assert_eq!(tap.grants()[1].spi, 11);
    }
}
