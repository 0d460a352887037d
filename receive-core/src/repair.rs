//! Head repair for whole frames that land with their ICV (a zero-copy NIC's DMA).
//!
//! Sent back to front, each frame lands below the one before it, and its 16-byte ICV
//! covers the first bytes of the slot above: a payload that already landed. The XDP
//! program saved those bytes (still ciphertext) in the covered frame's header record
//! (`head`), so the repair needs nothing from the wire:
//! - a frame whose head may still be covered (a slot below it is posted, or is the next
//!   to be posted) waits until the frame below has landed ([`HeadRepair::defer`]);
//! - then its head is restored from its record ([`restore_head`]) and it is opened in
//!   place as any other payload.
//!
//! docs/design.md, "Whole-frame landing", has the byte diagram and why this holds.

use std::collections::VecDeque;

use placement::idmap::FastMap;
use std::ops::Range;

use placement::GrantId;
use serde::Serialize;
use umem::SlotMut;
use xdp_common::{HEAD_LEN, HeaderRecord};

use crate::payload::Received;

/// Repair counts, per grant and in all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RepairCounts {
    /// Payload bytes restored from header records (16 per covered head).
    pub repaired_bytes: u64,
    /// Frames that waited for the frame below them to land before being opened.
    pub waited_frames: u64,
    /// Frames whose head was restored and that still failed to open, frames too short to
    /// repair that a frame below could still cover (dropped), and waiting frames that
    /// could not be held again.
    pub failures: u64,
}

impl RepairCounts {
    fn add(&mut self, other: RepairCounts) {
        self.repaired_bytes += other.repaired_bytes;
        self.waited_frames += other.waited_frames;
        self.failures += other.failures;
    }
}

/// A paired frame waiting for the frame below it. Its payload's bytes after the head
/// stay held; the head is not (the frame below lands on it), and the whole payload is
/// taken again once it is ready ([`Waiting::payload`]).
pub struct Waiting<'m> {
    /// Its header record.
    pub record: HeaderRecord,
    /// Its payload but the head, held.
    rest: SlotMut<'m>,
    /// Entries posted on its queue when its descriptor came (for the fill plan).
    pub outstanding: usize,
    /// Its payload's first bytes (UMEM addresses).
    head: Range<u64>,
}

impl<'m> Waiting<'m> {
    /// The whole payload, held again.
    ///
    /// # Errors
    /// Some of its bytes are held by someone else.
    pub fn payload(self, memory: &'m umem::UmemMemory) -> Result<Received<'m>, umem::Error> {
        let len = self.rest.as_slice().len() + HEAD_LEN;
        drop(self.rest);
        Ok(Received::Slot(memory.slot_mut(self.head.start, len)?))
    }
}

/// The frames waiting per queue, and the counts.
#[derive(Default)]
pub struct HeadRepair<'m> {
    waiting: Vec<VecDeque<Waiting<'m>>>,
    per_grant: FastMap<GrantId, RepairCounts>,
    total: RepairCounts,
}

/// The UMEM bytes of a payload held in a slot that a frame below may cover: its first
/// [`HEAD_LEN`] bytes (all of it when shorter). `None` for bounce frames (nothing lands
/// next to them).
pub fn exposed_head(received: &Received<'_>) -> Option<Range<u64>> {
    match received {
        Received::Slot(slot) => {
            let len = slot.as_slice().len().min(HEAD_LEN) as u64;
            Some(slot.addr()..slot.addr() + len)
        }
        Received::Bounce { .. } => None,
    }
}

/// Writes the record's copy of the payload's first bytes over what is there; returns how
/// many bytes differed (0 or [`HEAD_LEN`]: the head is restored whole).
pub fn restore_head(record: &HeaderRecord, received: &mut Received<'_>) -> u64 {
    let (Some(head), Ok(bytes)) = (record.head_bytes(), received.bytes_mut()) else {
        return 0;
    };
    match bytes.get_mut(..HEAD_LEN) {
        Some(now) if now != head => {
            now.copy_from_slice(head);
            HEAD_LEN as u64
        }
        _ => 0,
    }
}

impl<'m> HeadRepair<'m> {
    /// Repair state for `queues` queues.
    pub fn new(queues: usize) -> Self {
        Self {
            waiting: (0..queues).map(|_| VecDeque::new()).collect(),
            per_grant: FastMap::default(),
            total: RepairCounts::default(),
        }
    }

    /// Holds a frame whose payload (in a slot) has a head that a frame below may still
    /// cover: the head is let go, the rest stays held.
    ///
    /// # Errors
    /// The rest of the payload could not be held again (someone took it meanwhile).
    pub fn defer(
        &mut self,
        queue: usize,
        record: HeaderRecord,
        slot: SlotMut<'m>,
        outstanding: usize,
        memory: &'m umem::UmemMemory,
    ) -> Result<(), umem::Error> {
        let (addr, len) = (slot.addr(), slot.as_slice().len());
        drop(slot);
        let head = addr..addr + HEAD_LEN as u64;
        let rest = memory.slot_mut(head.end, len.saturating_sub(HEAD_LEN))?;
        if let Some(w) = self.waiting.get_mut(queue) {
            w.push_back(Waiting {
                record,
                rest,
                outstanding,
                head,
            });
        }
        Ok(())
    }

    /// Takes the frames of `queue` whose heads nothing may cover any more
    /// (`may_write(queue, head)` false), oldest first, into `out`.
    pub fn ready(
        &mut self,
        queue: usize,
        may_write: impl Fn(usize, &Range<u64>) -> bool,
        out: &mut Vec<Waiting<'m>>,
    ) {
        let Some(w) = self.waiting.get_mut(queue) else {
            return;
        };
        let mut i = 0;
        while i < w.len() {
            if may_write(queue, &w[i].head) {
                i += 1;
            } else if let Some(frame) = w.remove(i) {
                out.push(frame);
            }
        }
    }

    /// Takes every waiting frame (the end of a run).
    pub fn take_all(&mut self, out: &mut Vec<(usize, Waiting<'m>)>) {
        for (q, w) in self.waiting.iter_mut().enumerate() {
            out.extend(w.drain(..).map(|f| (q, f)));
        }
    }

    /// Frames waiting now.
    pub fn waiting(&self) -> usize {
        self.waiting.iter().map(VecDeque::len).sum()
    }

    /// Counts what happened to one frame: `grant` when its hint named one.
    pub fn count(&mut self, grant: Option<GrantId>, counts: RepairCounts) {
        if counts == RepairCounts::default() {
            return;
        }
        self.total.add(counts);
        if let Some(g) = grant {
            self.per_grant.entry(g).or_default().add(counts);
        }
    }

    /// The counts of `grant` (it ended), forgotten here.
    pub fn take_grant(&mut self, grant: GrantId) -> RepairCounts {
        self.per_grant.remove(&grant).unwrap_or_default()
    }

    /// The counts over all grants.
    pub fn total(&self) -> RepairCounts {
        self.total
    }
}
