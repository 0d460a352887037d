//! A deterministic model of the kernel's receive side, for tests that play the kernel: the
//! testbed's XDP program, AF_XDP in copy mode, and the rings between them and the
//! receiver, over a UMEM in plain memory and in-memory rings ([`umem::fake`]).
//!
//! Per queue it keeps a fill ring (the receiver posts to it through
//! [`KernelModel::fill`]) and an RX ring; one header ring serves all queues, as the XDP
//! program's ring buffer does. [`KernelModel::receive`] takes a batch of whole Ethernet
//! frames arriving on a queue and, for each, does what the program and the kernel do:
//!
//! 1. split it as `xdp-prog` does (PSP header through TCP header, payload, ICV) and write
//!    its header record; frames the program passes to the stack are counted and skipped;
//! 2. take the queue's next fill entry, in order; with none, the frame is dropped after
//!    its record was written (`rx_fill_ring_empty_descs`);
//! 3. write what the program left of the frame at fill address + [`Layout::landing_shift`]
//!    and post its RX descriptor: the payload alone ([`ModelLanding::Payload`]), the whole
//!    frame as a zero-copy NIC DMAs it ([`ModelLanding::Whole`]: headers, payload, ICV),
//!    or the whole frame but its ICV ([`ModelLanding::WholeWithoutIcv`], the PSP-offload
//!    NIC model); frames longer than the cap are passed on.
//!
//! The whole batch lands before the receiver sees any of it (the worst case for anything
//! that races the writer: a frame's ICV covers the head of the slot above it before the
//! receiver opened that slot). The record is taken from the frame as it arrived, as the
//! XDP program reads it before the next frame's DMA (docs/design.md, "Whole-frame
//! landing"). Loss, duplication and reordering are the caller's: it decides
//! which frames to hand over, in which order. Records can be lost on purpose
//! ([`KernelModel::lose_next_records`]), as when the header ring overflows.

use std::collections::VecDeque;

use copy_fallback::CopyEngine;
use copy_fallback::CopyTarget;
use umem::fake::FakeRing;
use umem::{Desc, Layout, Producer, UmemMemory};
use xdp_common::{HEAD_LEN, HeaderRecord, ICV_LEN, MAX_HDR, MAX_PSP_HDR, TAG_LEN, wire};

use crate::payload::Payload;
use crate::receiver::Receiver;
use crate::time::Timestamp;

/// What lands in the UMEM of each frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelLanding {
    /// The payload alone (the program strips headers and ICV).
    Payload,
    /// The whole frame with its ICV, at most `frame_cap` bytes (longer frames are passed
    /// to the kernel, as the program does).
    Whole {
        /// Most bytes a landing frame may have.
        frame_cap: u32,
    },
    /// The whole frame without its ICV, at most `frame_cap` bytes (longer frames are
    /// passed to the kernel, as the program does).
    WholeWithoutIcv {
        /// Most bytes a landing frame may have.
        frame_cap: u32,
    },
}

/// What happened to the frames handed to the model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModelStats {
    /// Frames whose payload was written and whose descriptor was posted.
    pub delivered: u64,
    /// Frames dropped for want of a fill entry (their records were written).
    pub fill_ring_empty: u64,
    /// Frames the XDP program would pass to the stack (not PSP, or not splittable).
    pub passed: u64,
    /// Records lost on purpose (header ring overflow).
    pub records_lost: u64,
}

struct QueueModel {
    fill: FakeRing<u64>,
    rx: FakeRing<Desc>,
    /// The program's per-queue record number.
    seq: u32,
}

/// The kernel's side of the rings, and the XDP program's split.
pub struct KernelModel {
    queues: Vec<QueueModel>,
    records: VecDeque<HeaderRecord>,
    landing_shift: u64,
    chunk_size: u64,
    lose_records: u64,
    landing: ModelLanding,
    stats: ModelStats,
    descs: Vec<Desc>,
    fill_entry: Vec<u64>,
}

/// A frame as the XDP program splits it.
struct Split {
    record: HeaderRecord,
    /// Payload range in the frame.
    payload: std::ops::Range<usize>,
}

/// Mirrors `xdp-prog`'s `locate` and `measure`: where the PSP segment starts, and the
/// header and payload lengths, if the program would split this frame.
fn split(frame: &[u8], queue: u32) -> Option<Split> {
    let psp = psp::locate(frame).ok()?.segment;
    let base = frame.get(psp.start..psp.start + 8)?;
    let psp_len = wire::psp_header_len(base[wire::PSP_HDR_EXT_LEN]);
    let crypt_start = wire::psp_crypt_start(base[wire::PSP_CRYPT_OFFSET]);
    let gmac = wire::psp_version(base[wire::PSP_FLAGS]) >= wire::PSP_FIRST_GMAC_VERSION;
    if base[wire::PSP_NEXT_HEADER] != wire::IPPROTO_TCP
        || !(wire::PSP_BASE_LEN..=MAX_PSP_HDR).contains(&psp_len)
    {
        return None;
    }
    let tcp = frame.get(psp.start + psp_len..psp.start + psp_len + wire::TCP_MIN_LEN)?;
    let tcp_len = wire::tcp_header_len(tcp[wire::TCP_DATA_OFFSET]);
    let hdr_len = psp_len + tcp_len;
    if tcp_len < wire::TCP_MIN_LEN || hdr_len > MAX_HDR || (!gmac && crypt_start != hdr_len) {
        return None;
    }
    let payload_len = psp.len().checked_sub(hdr_len + ICV_LEN)?;
    let payload = psp.start + hdr_len..psp.start + hdr_len + payload_len;
    let mut record = HeaderRecord::zeroed();
    record.queue = queue;
    record.payload_len = u32::try_from(payload_len).ok()?;
    record.hdr_len = u16::try_from(hdr_len).ok()?;
    record.hdr[..hdr_len].copy_from_slice(&frame[psp.start..psp.start + hdr_len]);
    record
        .icv
        .copy_from_slice(&frame[psp.end - ICV_LEN..psp.end]);
    if payload_len >= TAG_LEN {
        record.tag_len = u16::try_from(TAG_LEN).unwrap_or(0);
        record
            .tag
            .copy_from_slice(&frame[payload.end - TAG_LEN..payload.end]);
    }
    if payload_len >= HEAD_LEN {
        record
            .head
            .copy_from_slice(&frame[payload.start..payload.start + HEAD_LEN]);
    }
    Some(Split { record, payload })
}

impl KernelModel {
    /// A model of `queues` queues with rings of `ring_size` entries (a power of two), for
    /// a UMEM laid out as `layout`.
    pub fn new(queues: usize, ring_size: u32, layout: &Layout) -> Self {
        Self {
            queues: (0..queues)
                .map(|_| QueueModel {
                    fill: FakeRing::new(ring_size, 0),
                    rx: FakeRing::new(ring_size, 0),
                    seq: 0,
                })
                .collect(),
            records: VecDeque::new(),
            landing_shift: layout.landing_shift(),
            chunk_size: u64::from(layout.chunk_size),
            lose_records: 0,
            landing: ModelLanding::Payload,
            stats: ModelStats::default(),
            descs: Vec::new(),
            fill_entry: Vec::new(),
        }
    }

    /// Lands frames as `landing` says from now on.
    pub fn set_landing(&mut self, landing: ModelLanding) {
        self.landing = landing;
    }

    /// What happened so far.
    pub fn stats(&self) -> ModelStats {
        self.stats
    }

    /// Queue `q`'s fill ring, for the receiver to post to.
    ///
    /// # Panics
    /// `q` is not a queue of the model (a test's mistake).
    pub fn fill(&mut self, q: usize) -> Producer<'_, u64> {
        self.queues[q].fill.sides().0
    }

    /// Fill entries posted on queue `q` and not yet taken.
    pub fn fill_outstanding(&mut self, q: usize) -> u32 {
        self.queues[q].fill.sides().1.available()
    }

    /// The next `n` header records written are lost (header ring full).
    pub fn lose_next_records(&mut self, n: u64) {
        self.lose_records += n;
    }

    /// A batch of whole frames arrives on queue `q`: each is split, takes the next fill
    /// entry and lands in `memory`, before anything else runs.
    ///
    /// # Panics
    /// `q` is not a queue of the model, or a fill entry lies outside `memory` (the
    /// receiver posted a bad address: a test failure).
    pub fn receive(&mut self, memory: &UmemMemory, q: usize, frames: &[Vec<u8>]) {
        let queue = u32::try_from(q).unwrap_or(u32::MAX);
        for frame in frames {
            let Some(mut s) = split(frame, queue) else {
                self.stats.passed += 1;
                continue;
            };
            let lands = match self.landing {
                ModelLanding::Payload => s.payload.clone(),
                ModelLanding::Whole { frame_cap } => {
                    let end = s.payload.end + ICV_LEN;
                    if end > frame_cap as usize {
                        self.stats.passed += 1;
                        continue;
                    }
                    0..end
                }
                ModelLanding::WholeWithoutIcv { frame_cap } => {
                    if s.payload.end > frame_cap as usize {
                        self.stats.passed += 1;
                        continue;
                    }
                    0..s.payload.end
                }
            };
            let model = &mut self.queues[q];
            s.record.seq = model.seq;
            model.seq = model.seq.wrapping_add(1);
            if self.lose_records > 0 {
                self.lose_records -= 1;
                self.stats.records_lost += 1;
            } else {
                self.records.push_back(s.record);
            }
            self.fill_entry.clear();
            model.fill.sides().1.consume(&mut self.fill_entry, 1);
            let Some(fill) = self.fill_entry.first().copied() else {
                self.stats.fill_ring_empty += 1;
                continue;
            };
            let bytes = &frame[lands];
            assert!(
                self.landing_shift + bytes.len() as u64 <= self.chunk_size,
                "a frame longer than its chunk"
            );
            memory
                .write(fill + self.landing_shift, bytes)
                .unwrap_or_else(|e| panic!("fill entry {fill:#x} outside the UMEM: {e}"));
            let desc = Desc {
                addr: fill | (self.landing_shift << 48),
                len: u32::try_from(bytes.len()).unwrap_or(u32::MAX),
                options: 0,
            };
            let posted = model.rx.sides().0.produce([desc]);
            assert_eq!(posted, 1, "RX ring full: the receiver did not keep up");
            self.stats.delivered += 1;
        }
    }

    /// Hands every record and descriptor waiting to `receiver`, as its loop does: the
    /// header ring first, then each queue's RX descriptors.
    pub fn deliver<T: CopyTarget, E: CopyEngine<Payload>>(
        &mut self,
        receiver: &mut Receiver<'_, T, E>,
        now: Timestamp,
    ) {
        for r in self.records.drain(..) {
            receiver.header_record(r);
        }
        for (q, model) in self.queues.iter_mut().enumerate() {
            self.descs.clear();
            model.rx.sides().1.consume(&mut self.descs, u32::MAX);
            for d in self.descs.drain(..) {
                receiver.on_rx(q, d, now);
            }
        }
    }

    /// Lets `receiver` post to every queue's fill ring.
    pub fn refill<T: CopyTarget, E: CopyEngine<Payload>>(
        &mut self,
        receiver: &mut Receiver<'_, T, E>,
    ) {
        for (q, model) in self.queues.iter_mut().enumerate() {
            receiver.refill(q, &mut model.fill.sides().0);
        }
    }
}
