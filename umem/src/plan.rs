//! The fill-ring plan: what each queue's fill ring gets, and what each RX descriptor's
//! fill entry was for. Pure logic, no kernel: tested through fake rings.
//!
//! For the grant being received on a queue the plan posts, in the order the sender sends
//! the segments ([`Order`]), the fill addresses at which the next segments' payloads land
//! exactly at their final address: the payload lands at fill address +
//! [`Layout::landing_shift`], after the frame's headers when whole frames land
//! ([`FrameLanding`]). Each slot is posted at most once. At most `window` entries are
//! outstanding on a queue while it predicts; without a prediction it keeps `bounce_depth`
//! bounce frames posted.
//!
//! Every posted slot has a *span*: the bytes a frame landing there may write. A slot is
//! not posted when its span could overwrite bytes already received, or a slot posted
//! before it (written first, then overwritten), or any slot of another queue.
//!
//! Fill entries are consumed in order, so after a descriptor of the segment at position
//! `j` of the sending order arrives with `n` entries still outstanding, the next entry
//! posted will be taken by the segment at position `j + n + 1` if the stream stays in
//! order: that is where the plan continues ([`FillPlanner::observed`]). Loss, reordering and other streams on the queue make
//! slots catch the wrong segment; the receiver then copies, and
//! [`FillPlanner::blocking_slot`] tells it when a copy must wait because its destination
//! is still posted to the kernel.

use std::collections::VecDeque;
use std::ops::Range;

use crate::memory::Layout;
use crate::ring::Producer;
use crate::slots::{OutstandingSlot, SlotIndex, SlotKey};

/// The order in which a sender sends a grant's segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// 0, 1, 2, ...
    Ascending,
    /// Back to front within runs of `run` segments, the runs in ascending order: with
    /// `run` 3 and 7 segments, 2 1 0 5 4 3 6. A run as long as the grant is fully
    /// descending.
    Descending {
        /// Segments per run (at least 1).
        run: u64,
    },
}

impl Order {
    /// The segment sent at position `pos` of a grant of `segments` segments.
    pub fn index_at(self, pos: u64, segments: u64) -> u64 {
        if pos >= segments {
            return pos;
        }
        match self {
            Self::Ascending => pos,
            Self::Descending { run } => {
                let run = run.max(1);
                let start = pos / run * run;
                let end = start.saturating_add(run).min(segments);
                (end - 1).saturating_sub(pos - start)
            }
        }
    }

    /// The position at which segment `index` is sent (the inverse of
    /// [`index_at`](Self::index_at)).
    pub fn position_of(self, index: u64, segments: u64) -> u64 {
        // Reversal within a run is its own inverse.
        self.index_at(index, segments)
    }
}

/// How a received frame lands in the UMEM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameLanding {
    /// The payload only (the XDP program strips headers and ICV): a frame writes at most
    /// [`Layout::max_frame_payload`] bytes from the payload's address.
    Payload,
    /// The whole frame: `prefix` header bytes before the payload, `trailer` bytes after
    /// it, at most `frame_cap` bytes in all (the XDP program passes longer frames to the
    /// kernel).
    Whole {
        /// Bytes of the frame before the payload (Ethernet through TCP).
        prefix: u32,
        /// Bytes of the frame after the payload (the ICV; 0 when it is trimmed). Back to
        /// front, they cover the first bytes of the slot above, posted before: the
        /// receiver restores those from their header record (docs/design.md,
        /// "Whole-frame landing").
        trailer: u32,
        /// Most bytes a landing frame writes.
        frame_cap: u32,
    },
}

/// Most header bytes a whole frame may bring before its payload (Ethernet, VLAN, IPv6,
/// UDP, PSP with VC and hint, TCP with options: 166), rounded up.
pub const MAX_FRAME_PREFIX: u64 = 256;

/// What to predict for one grant on one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prediction {
    /// The receiver's name for the grant.
    pub key: u64,
    /// Where segment 0's payload belongs (UMEM offset).
    pub first_landing: u64,
    /// Payload bytes per segment.
    pub mss: u32,
    /// Segments in the grant (the last may be short).
    pub segments: u64,
    /// Segments of a full MSS: only these get slots (a frame landing in the slot of a
    /// short last segment could reach past the window's end).
    pub full_segments: u64,
    /// The order the sender sends them in.
    pub order: Order,
    /// How its frames land.
    pub landing: FrameLanding,
}

impl Prediction {
    /// Where segment `index`'s payload belongs.
    fn landing_of(&self, index: u64) -> u64 {
        self.first_landing + index * u64::from(self.mss)
    }

    /// Header bytes landing before the payload.
    fn prefix(&self) -> u64 {
        match self.landing {
            FrameLanding::Payload => 0,
            FrameLanding::Whole { prefix, .. } => u64::from(prefix),
        }
    }

    /// Bytes landing after the payload.
    fn trailer(&self) -> u64 {
        match self.landing {
            FrameLanding::Payload => 0,
            FrameLanding::Whole { trailer, .. } => u64::from(trailer),
        }
    }

    /// The bytes a frame posted for segment `index` may write.
    fn span(&self, index: u64, layout: &Layout) -> Range<u64> {
        let landing = self.landing_of(index);
        match self.landing {
            FrameLanding::Payload => landing..landing + layout.max_frame_payload(),
            FrameLanding::Whole {
                prefix, frame_cap, ..
            } => {
                // The kernel writes no more than a chunk holds after the headroom.
                let len = u64::from(frame_cap).min(layout.max_frame_payload());
                let start = landing.saturating_sub(u64::from(prefix));
                start..start + len
            }
        }
    }

    /// Whether bytes of this grant other than segment `index`'s, already received, lie in
    /// `span`.
    fn received_within(
        &self,
        span: &Range<u64>,
        index: u64,
        received: impl Fn(u64) -> bool,
    ) -> bool {
        let mss = u64::from(self.mss).max(1);
        let first = span.start.saturating_sub(self.first_landing) / mss;
        let last = span
            .end
            .saturating_sub(self.first_landing)
            .div_ceil(mss)
            .min(self.segments);
        (first..last).any(|j| j != index && received(j))
    }
}

/// What a fill entry was posted for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Posted {
    /// Segment `index` of grant `key`.
    Slot {
        /// Grant.
        key: u64,
        /// Segment index within the grant.
        index: u64,
        /// Where its payload belongs.
        landing: u64,
    },
    /// Bounce frame number.
    Bounce(u32),
}

#[derive(Debug, Default)]
struct QueuePlan {
    posted: VecDeque<(u64, Posted)>,
    /// Predictions in order, each with its cursor (next position of its sending order to
    /// post).
    predictions: VecDeque<(Prediction, u64)>,
}

impl QueuePlan {
    fn current(&mut self) -> Option<&mut (Prediction, u64)> {
        self.predictions.iter_mut().find(|(p, c)| *c < p.segments)
    }
}

/// Counters of the plan.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanStats {
    /// Fill entries posted for predicted slots.
    pub slots_posted: u64,
    /// Bounce frames posted.
    pub bounces_posted: u64,
    /// Times the plan moved a cursor because a segment arrived elsewhere than predicted.
    pub resyncs: u64,
    /// Fill entries never returned in order (the kernel skipped them); their frames are
    /// not reused.
    pub skipped: u64,
    /// Predicted slots not posted because a slot still posted could be overwritten by
    /// their frame, or overwrite it (same address, a later slot within a frame's reach, or
    /// another queue's slot within reach).
    pub not_posted_near_posted: u64,
    /// Predicted slots not posted because a following segment within a frame's reach was
    /// already received (a longer frame landing there would overwrite it).
    pub not_posted_near_received: u64,
}

/// The fill plan of all queues sharing one UMEM.
#[derive(Debug)]
pub struct FillPlanner {
    layout: Layout,
    window: usize,
    bounce_depth: usize,
    queues: Vec<QueuePlan>,
    free_bounce: Vec<u32>,
    /// Per bounce frame: whether it is in `free_bounce` (an O(1) guard against returning
    /// a frame twice, which would post it twice).
    bounce_is_free: Vec<bool>,
    /// Landing addresses of slots posted and not yet returned, per (address, queue), with
    /// how many times each is posted (counted so that one return cannot hide another
    /// posting of the same address).
    outstanding_slots: SlotIndex,
    stats: PlanStats,
    /// The batch being posted: fill address, and what for. Kept between refills (no
    /// allocation per loop turn).
    batch: Vec<(u64, Posted)>,
}

impl FillPlanner {
    /// A plan for `queues` queues over `layout`, all bounce frames free.
    pub fn new(layout: &Layout, queues: usize, window: u32, bounce_depth: u32) -> Self {
        Self {
            layout: layout.clone(),
            window: window.max(1) as usize,
            bounce_depth: bounce_depth.max(1) as usize,
            queues: (0..queues).map(|_| QueuePlan::default()).collect(),
            free_bounce: (0..layout.bounce_frames).rev().collect(),
            bounce_is_free: vec![true; layout.bounce_frames as usize],
            outstanding_slots: SlotIndex::default(),
            stats: PlanStats::default(),
            batch: Vec::new(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> PlanStats {
        self.stats
    }

    /// Entries outstanding on `queue`.
    pub fn outstanding(&self, queue: usize) -> usize {
        self.queues.get(queue).map_or(0, |q| q.posted.len())
    }

    /// Starts predicting `p` on `queue` from position `next` of its sending order (0 for
    /// a new grant): the entries already outstanding will be taken by the segments before
    /// it, so the first slot posted is at position `next + outstanding`. A prediction whose
    /// frames bring more than [`MAX_FRAME_PREFIX`] header bytes is ignored.
    pub fn predict(&mut self, queue: usize, p: Prediction, next: u64) {
        if p.prefix() > MAX_FRAME_PREFIX {
            return;
        }
        if let Some(q) = self.queues.get_mut(queue) {
            let cursor = next + q.posted.len() as u64;
            q.predictions.push_back((p, cursor));
        }
    }

    /// Stops predicting grant `key` (completed or revoked). Posted slots stay posted.
    pub fn forget(&mut self, key: u64) {
        for q in &mut self.queues {
            q.predictions.retain(|(p, _)| p.key != key);
        }
    }

    /// Posts what `queue` needs to `fill`; returns how many entries were posted. Slots for
    /// which `skip(key, index)` is true (already received) are passed over.
    pub fn refill(
        &mut self,
        queue: usize,
        fill: &mut Producer<u64>,
        skip: impl Fn(u64, u64) -> bool,
    ) -> u32 {
        let Some(q) = self.queues.get_mut(queue) else {
            return 0;
        };
        let free = fill.free() as usize;
        let mut batch = std::mem::take(&mut self.batch);
        batch.clear();
        while batch.len() < free {
            let outstanding = q.posted.len() + batch.len();
            if let Some((p, cursor)) = q.current() {
                if outstanding >= self.window {
                    break;
                }
                let index = p.order.index_at(*cursor, p.segments);
                *cursor += 1;
                if skip(p.key, index) {
                    continue;
                }
                // Not posted when a frame landing here could overwrite a slot still posted,
                // or bytes already placed (docs/design.md, "The prediction window"): its
                // segment lands elsewhere and is copied once nothing can overwrite it.
                let landing = p.landing_of(index);
                let span = p.span(index, &self.layout);
                let key = p.key;
                let reach = self.layout.max_frame_payload();
                // A short last segment gets no slot (a frame landing there could reach past
                // the window's end), but it still comes, in its place in the order.
                let refused = if index >= p.full_segments {
                    true
                } else if conflicts(
                    &self.outstanding_slots,
                    (landing, queue),
                    &span,
                    p.trailer(),
                    reach,
                ) {
                    self.stats.not_posted_near_posted += 1;
                    true
                } else if p.received_within(&span, index, |j| skip(key, j)) {
                    self.stats.not_posted_near_received += 1;
                    true
                } else {
                    false
                };
                if refused {
                    // Its segment still comes, and takes the next entry: a bounce frame
                    // takes the slot's place, so that the slots after it stay aligned.
                    let Some(i) = self.free_bounce.pop() else {
                        *cursor -= 1;
                        break;
                    };
                    self.bounce_is_free[i as usize] = false;
                    batch.push((self.layout.bounce_addr(i), Posted::Bounce(i)));
                    continue;
                }
                let fill = landing
                    .checked_sub(p.prefix())
                    .and_then(|l| self.layout.fill_addr_for(l));
                if let Some(addr) = fill {
                    // Registered now, so that the rest of the batch is checked against it.
                    let payload_end = landing + u64::from(p.mss);
                    self.outstanding_slots
                        .register((landing, queue), span, payload_end);
                    batch.push((
                        addr,
                        Posted::Slot {
                            key,
                            index,
                            landing,
                        },
                    ));
                }
            } else {
                if outstanding >= self.bounce_depth {
                    break;
                }
                let Some(i) = self.free_bounce.pop() else {
                    break;
                };
                self.bounce_is_free[i as usize] = false;
                batch.push((self.layout.bounce_addr(i), Posted::Bounce(i)));
            }
        }
        let n = fill.produce(batch.iter().map(|(addr, _)| *addr)) as usize;
        // Everything fits (batch ≤ free); anything refused goes back.
        for (_, posted) in batch.drain(n..) {
            match posted {
                Posted::Bounce(i) => {
                    self.bounce_is_free[i as usize] = true;
                    self.free_bounce.push(i);
                }
                Posted::Slot { landing, .. } => {
                    self.outstanding_slots.unregister((landing, queue));
                }
            }
        }
        for (addr, posted) in batch.drain(..) {
            match posted {
                Posted::Slot { .. } => self.stats.slots_posted += 1,
                Posted::Bounce(_) => self.stats.bounces_posted += 1,
            }
            q.posted.push_back((addr, posted));
        }
        self.batch = batch;
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// An RX descriptor on `queue` came back with fill address `addr`: what it was
    /// posted for. `None` when `addr` was not outstanding on this queue.
    pub fn consumed(&mut self, queue: usize, addr: u64) -> Option<Posted> {
        let q = self.queues.get_mut(queue)?;
        let at = q.posted.iter().position(|(a, _)| *a == addr)?;
        for (a, posted) in q.posted.drain(..=at) {
            if let Posted::Slot { landing, .. } = posted {
                self.outstanding_slots.unregister((landing, queue));
            }
            if a == addr {
                return Some(posted);
            }
            self.stats.skipped += 1;
        }
        None
    }

    /// Segment `index` of grant `key` has been received on `queue`, with `outstanding`
    /// entries left posted when its descriptor was [`consumed`](Self::consumed) (a
    /// receiver that handles a descriptor later passes the count it saw then). Moves the
    /// queue's cursor so that the next slot posted is the one the next segment in the
    /// sending order will take.
    pub fn observed(&mut self, queue: usize, key: u64, index: u64, outstanding: usize) {
        let Some(q) = self.queues.get_mut(queue) else {
            return;
        };
        let outstanding = outstanding as u64;
        if let Some((p, cursor)) = q.current()
            && p.key == key
        {
            let next = p.order.position_of(index, p.segments) + outstanding + 1;
            if next > *cursor {
                *cursor = next;
                self.stats.resyncs += 1;
            }
        }
    }

    /// Returns a bounce frame after its payload was handled. Returning a frame that is
    /// already free (or does not exist) is a caller bug: ignored, so that the frame is
    /// never posted twice (debug builds panic).
    pub fn release_bounce(&mut self, i: u32) {
        match self.bounce_is_free.get_mut(i as usize) {
            Some(free @ false) => {
                *free = true;
                self.free_bounce.push(i);
            }
            _ => debug_assert!(false, "bounce frame {i} returned twice or unknown"),
        }
    }

    /// Whether a frame may still be written over `bytes`: a slot posted (on any queue)
    /// whose span meets them, or the slot `queue` will post next. A whole frame's head
    /// that the ICV of the frame below may still cover is opened only once this is false.
    pub fn may_write(&self, queue: usize, bytes: &Range<u64>) -> bool {
        let reach = self.layout.max_frame_payload();
        let meets = |span: &Range<u64>| span.start < bytes.end && bytes.start < span.end;
        if candidates(&self.outstanding_slots, bytes, reach).any(|(_, slot)| meets(&slot.span)) {
            return true;
        }
        let Some(q) = self.queues.get(queue) else {
            return false;
        };
        let next = q.predictions.iter().find(|(p, c)| *c < p.segments);
        next.is_some_and(|(p, cursor)| {
            let index = p.order.index_at(*cursor, p.segments);
            index < p.full_segments && meets(&p.span(index, &self.layout))
        })
    }

    /// The landing address of a posted slot that the kernel may still write and that
    /// overlaps `dst..dst+len`, if any: a copy there must wait until that slot returns.
    pub fn blocking_slot(&self, dst: u64, len: u64) -> Option<u64> {
        let dst_end = dst.saturating_add(len);
        let reach = self.layout.max_frame_payload();
        candidates(&self.outstanding_slots, &(dst..dst_end), reach)
            .filter(|(_, slot)| slot.span.start < dst_end && dst < slot.span.end)
            .map(|((landing, _), _)| *landing)
            .min()
    }
}

/// Posted slots whose span may overlap `bytes`: every span lies within
/// [landing − MAX_FRAME_PREFIX, landing + `reach`), `reach` the most a frame writes.
fn candidates<'a>(
    outstanding: &'a SlotIndex,
    bytes: &Range<u64>,
    reach: u64,
) -> impl Iterator<Item = (&'a SlotKey, &'a OutstandingSlot)> {
    let from = bytes.start.saturating_sub(reach);
    let to = bytes.end.saturating_add(MAX_FRAME_PREFIX + 1);
    outstanding.landing_in(from..to)
}

/// True when a frame landing at `landing` on `queue`, writing `span`, could overwrite a
/// slot still posted or be overwritten by one: the same address; a slot of this queue
/// posted earlier (taken first) whose payload the span reaches, unless only its first
/// `trailer` bytes from below (the ICV of a frame sent back to front, repaired by the
/// receiver); any slot of another queue whose span meets it (no ring order between
/// queues).
fn conflicts(
    outstanding: &SlotIndex,
    (landing, queue): (u64, usize),
    span: &Range<u64>,
    trailer: u64,
    reach: u64,
) -> bool {
    let conflicting = |(&(a, q), slot): (&(u64, usize), &OutstandingSlot)| {
        if a == landing {
            return true;
        }
        if q != queue {
            return slot.span.start < span.end && span.start < slot.span.end;
        }
        let repairable = landing < a && span.end <= a.saturating_add(trailer);
        a < span.end && span.start < slot.payload_end && !repairable
    };
    candidates(outstanding, span, reach).any(conflicting)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeRing;
    use crate::memory::GUARD;

    const MSS: u32 = 1000;

    fn setup(window: u32, bounce: u32) -> (Layout, FillPlanner, FakeRing<u64>) {
        let layout = Layout::new(&[(1, 1 << 20)], 64, 2048).unwrap();
        let planner = FillPlanner::new(&layout, 1, window, bounce);
        (layout, planner, FakeRing::new(64, 0))
    }

    fn pred(segments: u64) -> Prediction {
        Prediction {
            key: 7,
            first_landing: GUARD,
            mss: MSS,
            segments,
            full_segments: segments,
            order: Order::Ascending,
            landing: FrameLanding::Payload,
        }
    }

    /// Plays the kernel: delivers `arrivals` (segment indices of grant 7) one per fill
    /// entry, in order; returns how many landed exactly where they belong.
    fn run(
        layout: &Layout,
        planner: &mut FillPlanner,
        ring: &mut FakeRing<u64>,
        arrivals: &[u64],
    ) -> usize {
        let (mut fill, mut kernel) = ring.sides();
        let mut direct = 0;
        let mut entry = Vec::new();
        for &j in arrivals {
            planner.refill(0, &mut fill, |_, _| false);
            entry.clear();
            assert_eq!(kernel.consume(&mut entry, 1), 1, "fill ring ran dry");
            let addr = entry[0];
            let landed = addr + layout.landing_shift();
            match planner.consumed(0, addr).expect("entry was posted") {
                Posted::Slot { .. } => {
                    if landed == GUARD + j * u64::from(MSS) {
                        direct += 1;
                    }
                }
                Posted::Bounce(i) => planner.release_bounce(i),
            }
            let outstanding = planner.outstanding(0);
            planner.observed(0, 7, j, outstanding);
        }
        direct
    }

    #[test]
    fn back_to_front_runs_are_their_own_inverse() {
        let order = Order::Descending { run: 3 };
        let sent: Vec<u64> = (0..7).map(|p| order.index_at(p, 7)).collect();
        assert_eq!(sent, vec![2, 1, 0, 5, 4, 3, 6]);
        for i in 0..7 {
            assert_eq!(order.index_at(order.position_of(i, 7), 7), i);
        }
        // Past the end, and a run of 0, stay in range without panicking.
        assert_eq!(order.index_at(9, 7), 9);
        assert_eq!(Order::Descending { run: 0 }.index_at(2, 7), 2);
        assert_eq!(Order::Descending { run: 100 }.index_at(0, 7), 6);
    }

    /// Whole frames back to front, ICV after the payload: a slot may be posted below one
    /// posted earlier when only the ICV reaches the head of the one above (repaired from
    /// its record), never when a frame could reach further.
    #[test]
    fn back_to_front_icvs_may_cover_only_the_head_of_the_slot_above() {
        let whole = |frame_cap| Prediction {
            order: Order::Descending { run: 64 },
            landing: FrameLanding::Whole {
                prefix: 94,
                trailer: 16,
                frame_cap,
            },
            ..pred(16)
        };
        let (_, mut planner, mut ring) = setup(8, 4);
        planner.predict(0, whole(94 + MSS + 16), 0);
        planner.refill(0, &mut ring.sides().0, |_, _| false);
        let stats = planner.stats();
        assert_eq!((stats.slots_posted, stats.not_posted_near_posted), (8, 0));
        // Slot 15 went first, and its frame came back; the slot below it (14) is still
        // posted: its ICV may land on 15's head, but not past it.
        let mut entry = Vec::new();
        ring.sides().1.consume(&mut entry, 1);
        assert!(matches!(
            planner.consumed(0, entry[0]),
            Some(Posted::Slot { index: 15, .. })
        ));
        let head = |j: u64| GUARD + j * u64::from(MSS)..GUARD + j * u64::from(MSS) + 16;
        assert!(planner.may_write(0, &head(15)));
        let after_head = head(15).end..head(15).end + 16;
        assert!(!planner.may_write(0, &after_head));
        // Slot 7 is the next to post: its ICV may land on slot 8's head.
        assert!(planner.may_write(0, &head(8)));

        // A frame one byte longer could reach past the head: every slot below a posted
        // one is refused (a bounce frame takes its place).
        let (_, mut planner, mut ring) = setup(8, 4);
        planner.predict(0, whole(94 + MSS + 17), 0);
        planner.refill(0, &mut ring.sides().0, |_, _| false);
        assert_eq!(planner.stats().slots_posted, 4, "{:?}", planner.stats());
    }

    #[test]
    fn in_order_stream_lands_directly_after_the_bounce_frames_ahead_of_it() {
        let (layout, mut planner, mut ring) = setup(16, 4);
        {
            let (mut fill, _) = ring.sides();
            assert_eq!(
                planner.refill(0, &mut fill, |_, _| false),
                4,
                "idle queue keeps 4 bounce frames"
            );
        }
        planner.predict(0, pred(200), 0);
        let arrivals: Vec<u64> = (0..200).collect();
        let direct = run(&layout, &mut planner, &mut ring, &arrivals);
        assert_eq!(
            direct, 196,
            "only the 4 segments that took bounce frames miss"
        );
        assert!(planner.outstanding(0) <= 16);
    }

    #[test]
    fn a_lost_segment_costs_at_most_a_window_then_the_plan_resyncs() {
        let (layout, mut planner, mut ring) = setup(8, 4);
        planner.predict(0, pred(300), 0);
        let arrivals: Vec<u64> = (0..300).filter(|j| *j != 50).collect();
        let direct = run(&layout, &mut planner, &mut ring, &arrivals);
        // Segments 51..=58 take the 8 slots posted for 50..=57; all later land directly.
        assert_eq!(direct, 299 - 8);
        assert!(planner.stats().resyncs >= 1);
    }

    #[test]
    #[cfg_attr(debug_assertions, should_panic(expected = "returned twice"))]
    fn a_bounce_frame_returned_twice_is_posted_once() {
        let (_, mut planner, mut ring) = setup(8, 1);
        let (mut fill, mut kernel) = ring.sides();
        planner.refill(0, &mut fill, |_, _| false);
        let mut out = Vec::new();
        kernel.consume(&mut out, 1);
        let Some(Posted::Bounce(i)) = planner.consumed(0, out[0]) else {
            panic!("a bounce frame was posted");
        };
        planner.release_bounce(i);
        planner.release_bounce(i);
        // Release builds: the second return was ignored, so the frame is free once.
        let free = planner.free_bounce.iter().filter(|f| **f == i).count();
        assert_eq!(free, 1);
    }

    #[test]
    fn slots_are_posted_once_and_never_beyond_the_grant() {
        let (layout, mut planner, mut ring) = setup(8, 2);
        planner.predict(0, pred(10), 0);
        let (mut fill, mut kernel) = ring.sides();
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for _ in 0..40 {
            planner.refill(0, &mut fill, |_, _| false);
            out.clear();
            kernel.consume(&mut out, 3);
            for &addr in &out {
                assert!(seen.insert(addr) || layout.bounce_index(addr).is_some());
                if let Some(Posted::Bounce(i)) = planner.consumed(0, addr) {
                    planner.release_bounce(i);
                }
            }
        }
        assert_eq!(planner.stats().slots_posted, 10);
    }

    #[test]
    fn copies_into_posted_slots_are_blocked_until_the_slot_returns() {
        let (layout, mut planner, mut ring) = setup(4, 1);
        planner.predict(0, pred(100), 0);
        let (mut fill, mut kernel) = ring.sides();
        planner.refill(0, &mut fill, |_, _| false);
        // Slots 0..4 are posted: a copy of segment 2 must wait (slot 1's frame may reach
        // into it: a frame can carry up to 1792 bytes), segment 10 need not.
        assert_eq!(
            planner.blocking_slot(GUARD + 2 * 1000, 1000),
            Some(GUARD + 1000)
        );
        assert_eq!(planner.blocking_slot(GUARD + 10_000, 1000), None);
        // A copy just before slot 0 that reaches into it is blocked too.
        assert!(planner.blocking_slot(GUARD - 10, 20).is_some());
        let mut out = Vec::new();
        kernel.consume(&mut out, 3);
        for a in &out {
            planner.consumed(0, *a);
        }
        assert_eq!(planner.blocking_slot(GUARD + 2 * 1000, 1000), None);
        assert_eq!(
            planner.blocking_slot(GUARD + 3 * 1000, 1),
            Some(GUARD + 3000),
            "slot 3 is still posted"
        );
        assert_eq!(layout.landing_shift(), 256);
    }

    #[test]
    fn received_slots_are_skipped_and_so_are_their_neighbours_below() {
        let (layout, mut planner, mut ring) = setup(4, 1);
        planner.predict(0, pred(10), 0);
        let (mut fill, mut kernel) = ring.sides();
        // Even segments arrived. An odd slot is not posted either: a frame longer than
        // the MSS (up to 1792 bytes) landing there would overwrite the next segment. Its
        // segment still comes: a bounce frame takes its place in the fill order.
        planner.refill(0, &mut fill, |_, i| i % 2 == 0);
        let mut out = Vec::new();
        kernel.consume(&mut out, 10);
        assert_eq!(out.len(), 4, "segments 1, 3, 5 and 7 fill the window");
        assert!(out.iter().all(|a| layout.bounce_index(*a).is_some()));
        assert_eq!(planner.stats().not_posted_near_received, 4);
        // Once they came back, the last slot (no neighbour above) is posted.
        for a in &out {
            planner.consumed(0, *a);
        }
        planner.refill(0, &mut fill, |_, i| i % 2 == 0);
        out.clear();
        kernel.consume(&mut out, 10);
        let landed: Vec<u64> = out.iter().map(|a| a + layout.landing_shift()).collect();
        assert_eq!(landed, [GUARD + 9000]);
    }

    /// Another queue's slot posted within a frame's reach below, or any slot above within
    /// reach, blocks a slot: no ring order protects the bytes between queues.
    #[test]
    fn slots_within_a_frames_reach_of_another_queues_slot_are_not_posted() {
        let (layout, _, mut ring) = setup(8, 1);
        let mut planner = FillPlanner::new(&layout, 2, 2, 1);
        let (mut fill, _) = ring.sides();
        planner.predict(0, pred(8), 0);
        assert_eq!(
            planner.refill(0, &mut fill, |_, _| false),
            2,
            "slots 0 and 1 on queue 0"
        );
        planner.forget(7);
        // A grant on queue 1 whose segment 0 lands 1500 bytes above queue 0's slot: a
        // 1792-byte frame in queue 0's slot would reach it.
        planner.predict(
            1,
            Prediction {
                key: 8,
                first_landing: GUARD + 1500,
                ..pred(8)
            },
            0,
        );
        let mut queue1 = FakeRing::new(64, 0);
        let (mut fill1, mut kernel1) = queue1.sides();
        planner.refill(1, &mut fill1, |_, _| false);
        let mut out = Vec::new();
        kernel1.consume(&mut out, 2);
        assert!(
            layout.bounce_index(out[0]).is_some(),
            "segment 0 (within reach) gets a bounce frame"
        );
        assert!(
            layout.bounce_index(out[1]).is_some(),
            "segment 1 is within reach of queue 0's slot 1"
        );
        assert_eq!(planner.stats().not_posted_near_posted, 2);
    }

    #[test]
    fn consumed_rejects_unknown_addresses_and_counts_skipped_entries() {
        let (layout, mut planner, mut ring) = setup(4, 4);
        let (mut fill, _) = ring.sides();
        planner.refill(0, &mut fill, |_, _| false);
        assert_eq!(planner.consumed(0, 12345), None);
        assert_eq!(planner.outstanding(0), 4);
        // Entry 2 returning first means entries 0 and 1 were skipped.
        let third = layout.bounce_addr(2);
        assert_eq!(planner.consumed(0, third), Some(Posted::Bounce(2)));
        assert_eq!(planner.stats().skipped, 2);
        assert_eq!(planner.outstanding(0), 1);
    }

    /// A grant whose window is reused while the slots of the grant that had it are still
    /// posted (its segments arrived elsewhere): the new prediction must not post the same
    /// bytes again, or a second frame lands over a payload the first already placed.
    #[test]
    fn a_reused_window_is_not_posted_twice() {
        let (layout, _, mut ring) = setup(8, 1);
        let mut planner = FillPlanner::new(&layout, 2, 8, 1);
        let (mut fill, mut kernel) = ring.sides();
        planner.predict(0, pred(8), 0);
        assert_eq!(planner.refill(0, &mut fill, |_, _| false), 8);
        // The first grant is done (its segments came in bounce frames elsewhere): its
        // eight slots stay posted. A new grant gets the same window.
        planner.forget(7);
        planner.predict(1, Prediction { key: 8, ..pred(8) }, 0);
        let mut queue1 = FakeRing::new(64, 0);
        let (mut fill1, _) = queue1.sides();
        assert_eq!(
            planner.refill(1, &mut fill1, |_, _| false),
            8,
            "bounce frames only: every slot is still posted on queue 0"
        );
        assert_eq!(planner.stats().not_posted_near_posted, 8);
        assert_eq!(planner.stats().slots_posted, 8, "queue 0's alone");
        // A copy into the window waits for the stale slot, also after another posting of
        // a neighbouring slot returned.
        let mut out = Vec::new();
        kernel.consume(&mut out, 1);
        planner.consumed(0, out[0]);
        assert_eq!(
            planner.blocking_slot(GUARD + u64::from(MSS), 10),
            Some(GUARD + u64::from(MSS))
        );
    }
}
