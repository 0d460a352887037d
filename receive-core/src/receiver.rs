//! The receiver: one owner for the receive path, the grant table, the fill plan and the
//! pairing of descriptors with header records, driven by events with the time passed in.
//!
//! The I/O layer (zc-recv, or a test playing the kernel) moves events in and actions out:
//!
//! ```text
//! control request ──handle_control()──▶ response now, or later from poll()
//! connection gone ──connection_closed()
//! fill ring       ◀──refill()──         fill addresses to post
//! header record   ──header_record()
//! RX descriptor   ──on_rx()
//! every turn      ──poll()──▶ Output::Reply (answers), Output::CheckDigest (windows to hash)
//! digest verdict  ──digest_checked()──▶ Output::Reply
//! end of run      ──finish(), report()
//! ```
//!
//! A grant's life across its owners: the grant table reserves its window and registers it
//! with the placement engine; [`Receiver`] starts its progress, claims and prediction
//! ([`granted`](Receiver::handle_control)); a completion removes it from all of them at
//! once and hands its window to the digest check; the window is released after the
//! verdict, or, for a revoked grant, once no copy into it is in flight and no slot of it
//! is posted.

use std::collections::{BTreeMap, HashMap};

use placement::idmap::FastMap;
use std::sync::Arc;
use std::time::Duration;

use control::{Request, Response};
use copy_fallback::pipeline::CopyPipeline;
use copy_fallback::{CopyEngine, CopyTarget};
use placement::{Decision, GrantId, PlacementEngine, Policy};
use psp::MasterKeys;
use umem::{
    Desc, FillPlanner, FrameLanding, FrameReturns, Layout, Order, Posted, Prediction, Producer,
    ReceivedFrame, UmemMemory,
};
use xdp_common::{CaptureExt, HEAD_LEN, HeaderRecord};

use crate::capture::{CaptureLimit, CaptureTap};
use crate::error::{ReceiveError, SetupError};
use crate::grant_table::{Action, ConnId, GrantEntry, GrantTable, Limits, RegionSpec, WholeFrame};
use crate::pairing::Pairing;
use crate::payload::{Payload, Received};
use crate::receive_path::{CopyTag, RxPath};
use crate::repair::{HeadRepair, RepairCounts, Waiting, exposed_head, restore_head};
use crate::report::{
    AccountingReport, CalibrationReport, ControlReport, GrantReport, QueueReport, ReceiverReport,
    RegionReport, Report, RunSummary, XskReport,
};
use crate::time::Timestamp;
use crate::windows::{RegionWindows, Spill};

/// How long a completion waits for the window to fill before answering with what is
/// missing.
pub const COMPLETION_WAIT: Duration = Duration::from_millis(300);

/// How often grants are checked for their timeout and drained windows released.
const TICK: Duration = Duration::from_millis(100);

/// Staged payloads copied in per [`Receiver::poll`]: ~0.1 ms of copying.
const ACTIVATION_BUDGET: usize = 256;

/// Copies into the UMEM: the copy pipeline's target.
#[derive(Debug)]
pub struct UmemTarget(pub Arc<UmemMemory>);

impl CopyTarget for UmemTarget {
    fn write(&self, addr: u64, src: &[u8]) -> copy_fallback::Result<()> {
        self.0
            .write(addr, src)
            .map_err(|_| copy_fallback::Error::CopyOutOfRange {
                addr,
                len: src.len(),
            })
    }
}

/// What the receiver is set up with.
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    /// The regions offered (their bases in the UMEM layout).
    pub regions: Vec<RegionSpec>,
    /// Queues served.
    pub queues: usize,
    /// Most fill entries outstanding per queue while predicting.
    pub window: u32,
    /// Bounce frames kept posted on a queue with nothing to predict.
    pub bounce_depth: u32,
    /// Predict slots. Without, every payload lands in a bounce frame and is copied (hints
    /// are still checked): the copy-everything baseline; queues then keep `window` bounce
    /// frames posted.
    pub predict: bool,
    /// Grant timeout and activation delay (`queues` is set from [`queues`](Self::queues)).
    pub limits: Limits,
    /// Most bytes staged for late regions.
    pub max_staged_bytes: usize,
    /// The receiver's MAC, told to senders with their session.
    pub mac: String,
}

/// What the I/O layer must do.
#[derive(Debug)]
pub enum Output {
    /// Send `response` to connection `conn` (the answer to its pending request).
    Reply {
        /// The connection.
        conn: ConnId,
        /// The answer.
        response: Response,
    },
    /// Hash a complete window off the loop; report with [`Receiver::digest_checked`].
    CheckDigest(DigestCheck),
}

/// A window to hash: nothing writes it any more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestCheck {
    /// The grant whose window it is.
    pub grant: GrantId,
    /// UMEM offset of its first byte.
    pub addr: u64,
    /// Bytes.
    pub len: u64,
    /// The sender's SHA-256, hex.
    pub expected: String,
}

/// What the I/O layer adds to the report at the end of a live run.
#[derive(Debug, Clone)]
pub struct RunFacts {
    /// Copy backend name.
    pub backend: &'static str,
    /// CPU seconds from the first packet to the last verdict.
    pub cpu_seconds: f64,
    /// Connections the control server refused.
    pub refused_connections: u64,
    /// The run ended because its goal (`--sessions`) was reached, or had none.
    pub goal_reached: bool,
    /// Per socket (`queueN`): XDP_STATISTICS.
    pub queues: BTreeMap<String, QueueReport>,
    /// native or generic.
    pub xdp_mode: &'static str,
    /// The XDP program's counters.
    pub xdp_counters: BTreeMap<&'static str, u64>,
    /// Where the CPU went, as the I/O layer measured it.
    pub accounting: Option<AccountingReport>,
    /// The copy decider's start-up calibration, if it ran.
    pub calibration: Option<CalibrationReport>,
}

/// Progress for a display.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Payload bytes received.
    pub payload_bytes: u64,
    /// Share of them placed directly.
    pub direct_share: f64,
    /// Grants open.
    pub open_grants: usize,
}

/// A grant's prediction state on its queue.
#[derive(Debug, Clone, Copy)]
struct Predicted {
    queue: u32,
    mss: u32,
    first_landing: u64,
    segments: u64,
    full_segments: u64,
    /// Highest position of the sending order seen so far (+1).
    next_position: u64,
    /// Slots are being predicted (its region is active).
    predicting: bool,
    order: Order,
    landing: FrameLanding,
}

impl Predicted {
    fn prediction(&self, grant: GrantId) -> Prediction {
        Prediction {
            key: grant.to_wire(),
            first_landing: self.first_landing,
            mss: self.mss,
            segments: self.segments,
            full_segments: self.full_segments,
            order: self.order,
            landing: self.landing,
        }
    }
}

/// The order and landing of a grant's frames: back to front, whole, when the receiver
/// lands whole frames and the grant declared its header length.
fn order_and_landing(whole: Option<WholeFrame>, entry: &GrantEntry) -> (Order, FrameLanding) {
    match (whole, entry.frame_prefix) {
        (Some(w), Some(prefix)) => (
            Order::Descending {
                run: w.descending_run,
            },
            FrameLanding::Whole {
                prefix,
                trailer: w.trailer,
                frame_cap: w.frame_cap,
            },
        ),
        _ => (Order::Ascending, FrameLanding::Payload),
    }
}

/// A completion request waiting for the window to fill or its deadline.
struct PendingCompletion {
    conn: ConnId,
    grant: GrantId,
    sha256: String,
    /// Answer "incomplete" (with the missing ranges) after this.
    deadline: Timestamp,
}

/// A window whose digest is being checked, and whom to tell.
struct Checking {
    conn: ConnId,
    spi: u32,
    report: GrantReport,
}

/// Counters of the receiver's own checks.
#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    bad_records: u64,
    /// Segments, activations or copies that failed on bad input: counted and logged, the
    /// receiver goes on.
    input_errors: u64,
    /// Bytes received for grants revoked before they completed (connection closed, timeout).
    abandoned_bytes: u64,
}

/// The receiver's state between the kernel and the control plane.
pub struct Receiver<'m, T: CopyTarget, E: CopyEngine<Payload>> {
    memory: &'m Arc<UmemMemory>,
    layout: Layout,
    /// Whole frames land (headers, payload), not payloads alone.
    whole_frame: Option<WholeFrame>,
    /// Slots are predicted (off: the copy-everything baseline).
    predict: bool,
    rx: RxPath<T, E>,
    table: GrantTable,
    planner: FillPlanner,
    pairing: Pairing,
    keys: MasterKeys,
    mac: String,
    predicted: FastMap<GrantId, Predicted>,
    /// Whole frames waiting for the frame below them (their ICV lands on heads).
    repair: HeadRepair<'m>,
    ready: Vec<Waiting<'m>>,
    pending: Vec<PendingCompletion>,
    checking: HashMap<GrantId, Checking>,
    /// Revoked grants whose copies are still in flight: their windows stay reserved.
    draining: Vec<GrantId>,
    finished: HashMap<u32, Vec<GrantReport>>,
    counters: Counters,
    returns: FrameReturns,
    returned: Vec<u32>,
    first_packet: Option<Timestamp>,
    last_packet: Option<Timestamp>,
    next_tick: Timestamp,
    /// Frames rebuilt as they were on the wire, and the grants (`--capture`).
    capture: Option<CaptureTap>,
}

impl<'m, T: CopyTarget, E: CopyEngine<Payload>> Receiver<'m, T, E> {
    /// A receiver over `memory` laid out as `layout`, opening with `keys` and copying
    /// through `pipeline`.
    ///
    /// # Errors
    /// The placement engine or grant table refused a region.
    pub fn new(
        config: ReceiverConfig,
        memory: &'m Arc<UmemMemory>,
        layout: Layout,
        keys: MasterKeys,
        pipeline: CopyPipeline<T, E, Payload, CopyTag>,
    ) -> Result<Self, SetupError> {
        let mut engine = PlacementEngine::new(Policy::default());
        let limits = Limits {
            queues: u32::try_from(config.queues).unwrap_or(u32::MAX),
            ..config.limits
        };
        let table = GrantTable::new(&mut engine, &config.regions, limits)?;
        let mut rx = RxPath::new(engine, keys.clone(), pipeline, config.max_staged_bytes);
        // Staged payloads stay in their bounce frames; keep enough of the pool for the
        // queues' bounce depth and the copies in flight.
        let bounce_depth = if config.predict {
            config.bounce_depth
        } else {
            config.window.max(config.bounce_depth)
        };
        let reserve = config.queues * (bounce_depth as usize + 512);
        rx.limit_staged_frames((layout.bounce_frames as usize).saturating_sub(reserve));
        let planner = FillPlanner::new(&layout, config.queues, config.window, bounce_depth);
        Ok(Self {
            memory,
            layout,
            whole_frame: limits.whole_frame,
            predict: config.predict,
            rx,
            table,
            planner,
            pairing: Pairing::new(config.queues),
            keys,
            mac: config.mac,
            predicted: FastMap::default(),
            repair: HeadRepair::new(config.queues),
            ready: Vec::new(),
            pending: Vec::new(),
            checking: HashMap::new(),
            draining: Vec::new(),
            finished: HashMap::new(),
            counters: Counters::default(),
            returns: FrameReturns::default(),
            returned: Vec::new(),
            first_packet: None,
            last_packet: None,
            next_tick: Timestamp::START,
            capture: None,
        })
    }

    /// Nothing is being received or checked: no open or draining grant, no completion or
    /// digest waiting.
    pub fn idle(&self) -> bool {
        self.pending.is_empty()
            && self.checking.is_empty()
            && self.predicted.is_empty()
            && self.draining.is_empty()
    }

    /// Sessions that said goodbye after a verified window of their own.
    pub fn completed_sessions(&self) -> u64 {
        self.table.stats().completed_sessions
    }

    /// When the first payload arrived.
    pub fn first_packet(&self) -> Option<Timestamp> {
        self.first_packet
    }

    /// Progress for a display.
    pub fn progress(&self) -> Progress {
        Progress {
            payload_bytes: self.rx.counters.payload.bytes,
            direct_share: self.rx.counters.copies_avoided(),
            open_grants: self.predicted.len(),
        }
    }

    /// The grant table (read-only: for tests and reports).
    pub fn grant_table(&self) -> &GrantTable {
        &self.table
    }

    /// The fill plan (read-only: for tests and reports).
    pub fn fill_plan(&self) -> &FillPlanner {
        &self.planner
    }

    /// Serves one control request of `conn`. `None`: the answer comes later, from
    /// [`poll`](Self::poll) (a completion waits for its window).
    pub fn handle_control(
        &mut self,
        conn: ConnId,
        request: &Request,
        now: Timestamp,
    ) -> Option<Response> {
        match self
            .table
            .handle(&mut self.rx.placement, conn, request, now)
        {
            Action::Reply(r) => Some(r),
            Action::SessionOpened {
                spi,
                version,
                crypto,
            } => {
                if crypto == control::Crypto::Inline {
                    self.rx.trust_inline(spi);
                }
                Some(Response::Session {
                    spi,
                    version: version.wire(),
                    key: hex::encode(self.keys.derive(spi, version).as_bytes()),
                    mac: self.mac.clone(),
                    crypto,
                })
            }
            Action::Granted { grant, reply } => {
                self.granted(grant);
                Some(reply)
            }
            Action::Complete { grant, sha256 } => {
                if let Some(tap) = self.capture.as_mut() {
                    tap.digest(grant, &sha256);
                }
                self.pending.push(PendingCompletion {
                    conn,
                    grant,
                    sha256,
                    deadline: now + COMPLETION_WAIT,
                });
                None
            }
        }
    }

    /// Connection `conn` closed: its grants are revoked, its pending answers dropped.
    pub fn connection_closed(&mut self, conn: ConnId) {
        for g in self.table.close(&mut self.rx.placement, conn) {
            self.retire(g);
        }
        self.pending.retain(|c| c.conn != conn);
    }

    /// A new grant: track it, and predict its slots if its region is active.
    fn granted(&mut self, id: GrantId) {
        let Some(entry) = self.table.grant(id).copied() else {
            return;
        };
        let g = entry.grant;
        if let Some(tap) = self.capture.as_mut() {
            tap.granted(id, &g);
        }
        self.rx.track_grant(id, g.len);
        let region = self.rx.placement.region(g.region_id);
        let base = region.map_or(0, |r| r.base);
        let active = self.predict && region.and_then(|r| r.active) == Some(g.generation);
        let (order, landing) = order_and_landing(self.whole_frame, &entry);
        let p = Predicted {
            queue: entry.queue,
            mss: entry.mss,
            first_landing: base + g.offset,
            segments: g.len.div_ceil(u64::from(entry.mss)),
            // Full segments only get slots: a frame landing in the slot of a short last
            // segment would reach past the window's end (into the gap). It is copied.
            full_segments: g.len / u64::from(entry.mss),
            next_position: 0,
            predicting: active,
            order,
            landing,
        };
        if active {
            self.planner.predict(p.queue as usize, p.prediction(id), 0);
        }
        self.predicted.insert(id, p);
    }

    /// A grant left the engine without completing: stop predicting it, drop its copies
    /// that did not start, and keep its window until the ones in flight finish.
    fn retire(&mut self, id: GrantId) {
        if let Some(p) = self.rx.progress.get(&id) {
            let len = self.table.grant(id).map_or(0, |g| g.grant.len);
            self.counters.abandoned_bytes += len.saturating_sub(p.missing_bytes());
        }
        self.planner.forget(id.to_wire());
        self.rx.drop_grant(id);
        self.predicted.remove(&id);
        self.repair.take_grant(id);
        self.draining.push(id);
    }

    /// Posts what queue `q` needs to its fill ring; returns how many entries. Slots whose
    /// bytes were already received are passed over.
    pub fn refill(&mut self, q: usize, fill: &mut Producer<'_, u64>) -> u32 {
        let (rx, predicted) = (&self.rx, &self.predicted);
        self.planner.refill(q, fill, |key, index| {
            let id = GrantId::from_wire(key);
            predicted
                .get(&id)
                .is_some_and(|g| rx.is_claimed(id, index * u64::from(g.mss), u64::from(g.mss)))
        })
    }

    /// A record from the header ring.
    pub fn header_record(&mut self, record: HeaderRecord) {
        self.pairing.push(record);
    }

    /// A record from the header ring with the outer headers the program captured.
    pub fn captured_record(&mut self, record: HeaderRecord, ext: CaptureExt) {
        if let Some(tap) = self.capture.as_mut() {
            tap.record(&record, ext);
        }
        self.pairing.push(record);
    }

    /// Captures from now on: frames as they were on the wire (rebuilt before they are
    /// opened), up to `limit`, and every grant made.
    pub fn start_capture(&mut self, limit: Option<CaptureLimit>) {
        self.capture = Some(CaptureTap::new(limit));
    }

    /// The capture, when capturing.
    pub fn capture_mut(&mut self) -> Option<&mut CaptureTap> {
        self.capture.as_mut()
    }

    /// Header-ring entries that were not records.
    pub fn bad_header_records(&mut self, n: u64) {
        self.counters.bad_records += n;
    }

    /// One RX descriptor of queue `q`: take its bytes, pair them with their record, open
    /// them where they landed, decide, account, return the slot. A whole frame whose head
    /// the ICV of a frame below may still cover waits for that frame first.
    pub fn on_rx(&mut self, q: usize, d: Desc, now: Timestamp) {
        let posted = self.planner.consumed(q, d.base());
        let outstanding = self.planner.outstanding(q);
        let (data, len) = (d.data_addr(), d.len as usize);
        match self.take_paired(q, posted, data, len) {
            Ok(Some((r, received))) => self.arrived(q, r, received, outstanding, now),
            // Unpaired: the bytes (a bounce frame goes back to the plan) are dropped.
            Ok(None) => {}
            Err(e) => {
                // A frame that cannot be taken is held by someone: it is not posted again
                // (a lost frame rather than one written under a reader).
                self.input_error(format_args!("queue {q}: descriptor {data:#x}+{len}: {e}"));
            }
        }
        // Frames that waited for this one first: copies parked on this slot may be aimed
        // at their bytes.
        self.open_ready(q, now);
        if let Some(Posted::Slot { landing, .. }) = posted
            && let Err(e) = self.rx.slot_returned(landing, &self.planner)
        {
            self.input_error(format_args!("queue {q}: parked copies: {e}"));
        }
    }

    /// Bytes landing after each payload (the ICV of whole frames as a NIC DMAs them).
    fn trailer(&self) -> u32 {
        self.whole_frame.map_or(0, |w| w.trailer)
    }

    /// A paired frame: handled now, or held while a frame below may still land on its head.
    fn arrived(
        &mut self,
        q: usize,
        r: HeaderRecord,
        received: Received<'m>,
        outstanding: usize,
        now: Timestamp,
    ) {
        if self.trailer() > 0
            && let Some(head) = exposed_head(&received)
            && self.planner.may_write(q, &head)
            && let Received::Slot(slot) = received
        {
            let result = if head.end - head.start < HEAD_LEN as u64 {
                // Too short to have its head in the record: an ICV may still land on it
                // while it is opened. Dropped (it is retransmitted), counted.
                Err(format!(
                    "{} B payload too short to repair",
                    head.end - head.start
                ))
            } else {
                self.repair
                    .defer(q, r, slot, outstanding, self.memory)
                    .map_err(|e| e.to_string())
            };
            if let Err(e) = result {
                self.repair.count(
                    None,
                    RepairCounts {
                        failures: 1,
                        ..RepairCounts::default()
                    },
                );
                self.input_error(format_args!("queue {q}: frame not held: {e}"));
            }
            return;
        }
        self.handle(q, r, received, outstanding, false, now);
    }

    /// Opens the frames of queue `q` that waited and whose heads nothing covers any more.
    fn open_ready(&mut self, q: usize, now: Timestamp) {
        if self.repair.waiting() == 0 {
            return;
        }
        let mut ready = std::mem::take(&mut self.ready);
        let planner = &self.planner;
        self.repair
            .ready(q, |q, head| planner.may_write(q, head), &mut ready);
        for w in ready.drain(..) {
            self.handle_waited(q, w, now);
        }
        self.ready = ready;
    }

    /// A frame that waited for the one below it: held whole again, then handled.
    fn handle_waited(&mut self, q: usize, w: Waiting<'m>, now: Timestamp) {
        let (record, outstanding) = (w.record, w.outstanding);
        match w.payload(self.memory) {
            Ok(received) => self.handle(q, record, received, outstanding, true, now),
            Err(e) => {
                self.repair.count(
                    None,
                    RepairCounts {
                        failures: 1,
                        ..RepairCounts::default()
                    },
                );
                self.input_error(format_args!("queue {q}: waiting frame not held: {e}"));
            }
        }
    }

    /// Restores the head (whole frames with their ICV), then opens and decides.
    fn handle(
        &mut self,
        q: usize,
        r: HeaderRecord,
        mut received: Received<'_>,
        outstanding: usize,
        waited: bool,
        now: Timestamp,
    ) {
        let repaired_bytes = if self.trailer() > 0 {
            restore_head(&r, &mut received)
        } else {
            0
        };
        if let Some(tap) = self.capture.as_mut()
            && let Ok(payload) = received.bytes_mut()
        {
            tap.payload(&r, payload);
        }
        let (grant, accepted) = match self.on_segment(q, &r, received, outstanding, now) {
            Ok(decided) => decided,
            Err(e) => {
                self.input_error(format_args!("queue {q}: segment not handled: {e}"));
                (None, false)
            }
        };
        let counts = RepairCounts {
            repaired_bytes,
            waited_frames: u64::from(waited),
            failures: u64::from(repaired_bytes > 0 && !accepted),
        };
        self.repair.count(grant, counts);
    }

    /// Takes what an RX descriptor brought and pairs it with its header record: the
    /// payload (split landing), or the payload at the end of a whole frame.
    fn take_paired(
        &mut self,
        q: usize,
        posted: Option<Posted>,
        data: u64,
        len: usize,
    ) -> Result<Option<(HeaderRecord, Received<'m>)>, umem::Error> {
        if self.whole_frame.is_none() {
            let mut received = self.take_received(posted, data, len)?;
            let Ok(bytes) = received.bytes_mut() else {
                return Ok(None);
            };
            return Ok(self.pairing.pair(q, bytes).map(|r| (r, received)));
        }
        // The ICV after the payload is not taken: it may lie on the head of a frame above
        // that waits for this one, and the record has it.
        let Some(len) = len.checked_sub(self.trailer() as usize) else {
            // Taken, so that a bounce frame goes back to the plan when it is dropped.
            drop(self.take_received(posted, data, len)?);
            self.pairing.unpaired();
            return Ok(None);
        };
        let mut received = self.take_received(posted, data, len)?;
        let Ok(bytes) = received.bytes_mut() else {
            return Ok(None);
        };
        let Some((record, at)) = self.pairing.pair_frame(q, bytes) else {
            return Ok(None);
        };
        // The payload only, from here on.
        let payload = match received {
            Received::Bounce { frame, data, len } => Received::Bounce {
                frame,
                data: data + at as u64,
                len: len - at,
            },
            Received::Slot(slot) => {
                drop(slot);
                Received::Slot(self.memory.slot_mut(data + at as u64, len - at)?)
            }
        };
        Ok(Some((record, payload)))
    }

    /// Takes the bytes an RX descriptor brought, exclusively: the bounce frame (the plan
    /// gets it back only when the lent payload is dropped), or the slot's range.
    fn take_received(
        &self,
        posted: Option<Posted>,
        data: u64,
        len: usize,
    ) -> Result<Received<'m>, umem::Error> {
        let memory: &'m Arc<UmemMemory> = self.memory;
        Ok(match posted {
            Some(Posted::Bounce(i)) => Received::Bounce {
                frame: ReceivedFrame::take(memory, i, &self.returns)?,
                data,
                len,
            },
            _ => Received::Slot(memory.slot_mut(data, len)?),
        })
    }

    /// Opens, decides and accounts one paired segment; returns the grant its hint named
    /// and whether it was placed or copied (not rejected).
    fn on_segment(
        &mut self,
        q: usize,
        r: &HeaderRecord,
        received: Received<'_>,
        outstanding: usize,
        now: Timestamp,
    ) -> Result<(Option<GrantId>, bool), ReceiveError> {
        self.first_packet.get_or_insert(now);
        self.last_packet = Some(now);
        let decision = self
            .rx
            .on_split(r.header_bytes(), &r.icv, received, now, &self.planner)?;
        match decision {
            Some(Decision::Direct(p) | Decision::Copy(p, _)) => {
                if let Some(gid) = p.grant {
                    self.observed(q, gid, p.region_offset, outstanding);
                }
                Ok((p.grant, true))
            }
            _ => Ok((None, false)),
        }
    }

    /// Moves the plan's cursor after segment at `region_offset` of grant `gid` arrived.
    fn observed(&mut self, q: usize, gid: GrantId, region_offset: u64, outstanding: usize) {
        let (Some(g), Some(window)) = (self.predicted.get_mut(&gid), self.rx.placement.grant(gid))
        else {
            return;
        };
        let Some(index) = region_offset
            .checked_sub(window.offset)
            .map(|o| o / u64::from(g.mss))
        else {
            return;
        };
        let position = g.order.position_of(index, g.segments);
        g.next_position = g.next_position.max(position + 1);
        self.planner.observed(q, gid.to_wire(), index, outstanding);
    }

    /// Work not tied to a packet: returned bounce frames back to the plan, late regions
    /// activated, finished copies accounted, completions answered or sent to the digest
    /// check, and (every 100 ms) grant timeouts.
    pub fn poll(&mut self, now: Timestamp, out: &mut Vec<Output>) {
        for q in 0..self.pairing.queues() {
            self.open_ready(q, now);
        }
        self.returns.drain_into(&mut self.returned);
        for i in self.returned.drain(..) {
            self.planner.release_bounce(i);
        }
        self.activate(now);
        if let Err(e) = self.rx.poll_copies() {
            self.input_error(format_args!("copies: {e}"));
        }
        self.complete_pending(now, out);
        if now >= self.next_tick {
            self.next_tick = now + TICK;
            for g in self.table.expire(&mut self.rx.placement, now) {
                self.retire(g);
            }
            self.release_drained();
        }
    }

    /// Late regions whose time has come: copy in what waited, start predicting.
    fn activate(&mut self, now: Timestamp) {
        let activated = match self.rx.activate(now, &self.planner, ACTIVATION_BUDGET) {
            Ok(a) => a,
            Err(e) => {
                self.input_error(format_args!("activating staged payloads: {e}"));
                return;
            }
        };
        for region in activated {
            let grants: Vec<GrantId> = self
                .table
                .open_grants_of(region)
                .map(|(id, _)| id)
                .collect();
            for id in grants {
                if let Some(p) = self.predicted.get_mut(&id)
                    && !p.predicting
                    && self.predict
                {
                    p.predicting = true;
                    let (queue, prediction, next) = (p.queue, p.prediction(id), p.next_position);
                    self.planner.predict(queue as usize, prediction, next);
                }
            }
        }
    }

    fn input_error(&mut self, what: std::fmt::Arguments<'_>) {
        self.counters.input_errors += 1;
        tracing::warn!("{what}");
    }

    /// Completions whose window filled (and whose copies all landed), or whose deadline
    /// passed.
    fn complete_pending(&mut self, now: Timestamp, out: &mut Vec<Output>) {
        let mut i = 0;
        while i < self.pending.len() {
            let c = &self.pending[i];
            let complete = self
                .rx
                .progress
                .get(&c.grant)
                .is_some_and(|p| p.is_complete());
            let copying = self.rx.copies_in_flight(c.grant) > 0;
            let open = self.table.is_open_grant_of(c.conn, c.grant);
            // A complete window is checked only once every copy into it landed.
            if open && (copying || (!complete && now < c.deadline)) {
                i += 1;
                continue;
            }
            let c = self.pending.swap_remove(i);
            out.push(self.complete_grant(c));
        }
    }

    /// Answers a completion: an incomplete window gets its missing ranges now; a complete
    /// one leaves the engine (nothing lands in it any more) and goes to the digest check.
    /// Its window is released only after the verdict.
    fn complete_grant(&mut self, c: PendingCompletion) -> Output {
        let gid = c.grant;
        let reply = |response| Output::Reply {
            conn: c.conn,
            response,
        };
        let (Some(entry), Some(p)) = (self.table.grant(gid).copied(), self.rx.progress.get(&gid))
        else {
            return reply(Response::Error {
                message: format!("no open grant {gid}"),
            });
        };
        if !p.is_complete() {
            return reply(Response::Status {
                grant: gid.to_wire(),
                complete: false,
                verified: false,
                missing: p.missing().into_iter().map(|r| (r.start, r.end)).collect(),
            });
        }
        let mut report = GrantReport::new(&entry.grant, p, None);
        report.head_repair = self.repair.take_grant(gid);
        if self.table.finish(&mut self.rx.placement, gid).is_none() {
            return reply(Response::Error {
                message: format!("grant {gid} is no longer open"),
            });
        }
        self.planner.forget(gid.to_wire());
        self.rx.drop_grant(gid);
        self.predicted.remove(&gid);
        let w = entry.grant;
        let base = self.rx.placement.region(w.region_id).map_or(0, |r| r.base);
        self.checking.insert(
            gid,
            Checking {
                conn: c.conn,
                spi: w.spi,
                report,
            },
        );
        Output::CheckDigest(DigestCheck {
            grant: gid,
            addr: base + w.offset,
            len: w.len,
            expected: c.sha256,
        })
    }

    /// The digest check of `grant`'s window is done: record it, release the window, and
    /// answer the sender.
    pub fn digest_checked(&mut self, grant: GrantId, matches: bool, out: &mut Vec<Output>) {
        let Some(c) = self.checking.remove(&grant) else {
            return;
        };
        let mut report = c.report;
        report.digest_ok = Some(matches);
        self.finished.entry(c.spi).or_default().push(report);
        // Every copy into the window landed before the check began (complete_pending).
        if matches {
            self.table.verified(grant);
        }
        self.table.release(grant);
        out.push(Output::Reply {
            conn: c.conn,
            response: Response::Status {
                grant: grant.to_wire(),
                complete: true,
                verified: matches,
                missing: Vec::new(),
            },
        });
    }

    /// Releases the windows of revoked grants whose copies have all landed.
    /// A revoked window is also kept while a slot its grant posted may still be written
    /// (the queue saw no traffic since): a grant given those bytes could have them
    /// overwritten, or wait behind slots that never return.
    fn release_drained(&mut self) {
        let (rx, table, planner) = (&self.rx, &mut self.table, &self.planner);
        self.draining.retain(|g| {
            let posted = table.grant(*g).is_some_and(|e| {
                let base = rx.placement.region(e.grant.region_id).map_or(0, |r| r.base);
                planner
                    .blocking_slot(base + e.grant.offset, e.grant.len)
                    .is_some()
            });
            if rx.copies_in_flight(*g) > 0 || posted {
                return true;
            }
            table.release(*g);
            false
        });
    }

    /// Waits for every outstanding copy (at the end of a run).
    ///
    /// # Errors
    /// The copy engine did not finish.
    pub fn finish(&mut self) -> Result<(), ReceiveError> {
        let mut waiting = Vec::new();
        self.repair.take_all(&mut waiting);
        let now = self.last_packet.unwrap_or(Timestamp::START);
        for (q, w) in waiting {
            self.handle_waited(q, w, now);
        }
        self.rx.finish()?;
        self.release_drained();
        Ok(())
    }

    /// The run's report.
    pub fn report(mut self, facts: RunFacts) -> Report {
        self.release_drained();
        let elapsed = match (self.first_packet, self.last_packet) {
            (Some(f), Some(l)) => l.saturating_since(f).as_secs_f64(),
            _ => 0.0,
        };
        // Grants still open at the end count as unverified.
        let mut missing_bytes = 0;
        let open: Vec<GrantId> = self.predicted.keys().copied().collect();
        for gid in &open {
            if let (Some(w), Some(p)) = (self.table.grant(*gid), self.rx.progress.get(gid)) {
                missing_bytes += p.missing_bytes();
                self.finished
                    .entry(w.grant.spi)
                    .or_default()
                    .push(GrantReport::new(&w.grant, p, None));
            }
        }
        let stats = self.table.stats();
        let c = self.counters;
        let verified = facts.goal_reached
            && open.is_empty()
            && c.abandoned_bytes == 0
            && stats.abandoned_completions == 0
            && !self.finished.is_empty()
            && self
                .finished
                .values()
                .flatten()
                .all(|g| g.digest_ok == Some(true));
        let run = RunSummary {
            elapsed_seconds: elapsed,
            cpu_seconds: facts.cpu_seconds,
            verified,
            missing_bytes,
        };
        let regions = self.region_reports();
        let xsk = self.xsk_report(&facts);
        let finished = std::mem::take(&mut self.finished);
        let mut report = self.rx.report("live", facts.backend, run, finished);
        report.xsk_stats = Some(xsk);
        report.xdp_counters = Some(facts.xdp_counters);
        report.regions = regions;
        report.accounting = facts.accounting.clone();
        report.copy_engine.calibration = facts.calibration.clone();
        report.control = Some(ControlReport {
            sessions: stats.sessions,
            completed_sessions: stats.completed_sessions,
            refused_requests: stats.refused_requests,
            refused_connections: facts.refused_connections,
            revoked_on_close: stats.revoked_on_close,
            grants_timed_out: stats.timed_out,
            abandoned_bytes: c.abandoned_bytes,
            abandoned_completions: stats.abandoned_completions,
            input_errors: c.input_errors,
        });
        report
    }

    /// The sockets' statistics and the receiver's own counters.
    fn xsk_report(&self, facts: &RunFacts) -> XskReport {
        let plan = self.planner.stats();
        let pairing = self.pairing.stats();
        XskReport {
            queues: facts.queues.clone(),
            receiver: ReceiverReport {
                xdp_mode: facts.xdp_mode,
                umem_backing: self.memory.backing().as_str(),
                landing: match self.whole_frame {
                    None => "split",
                    Some(w) if w.trailer > 0 => "whole-frame",
                    Some(_) => "whole-frame-no-icv",
                },
                predict: self.predict,
                crypto: match self.rx.inline_sessions() {
                    0 => "software",
                    n if n as u64 == self.table.stats().sessions => "inline",
                    _ => "mixed",
                },
                unpaired_descriptors: pairing.unpaired_descriptors,
                unpaired_header_records: pairing.unpaired_records,
                header_seq_gaps: pairing.seq_gaps,
                foreign_header_records: pairing.foreign_records,
                bad_header_records: self.counters.bad_records,
                slots_posted: plan.slots_posted,
                slots_not_posted_near_posted: plan.not_posted_near_posted,
                slots_not_posted_near_received: plan.not_posted_near_received,
                bounce_frames_posted: plan.bounces_posted,
                resyncs: plan.resyncs,
                skipped_fill_entries: plan.skipped,
                parked_copies: self.rx.parked_copies(),
                parked_bytes_at_end: self.rx.parked_bytes() as u64,
                rescued_bytes: self.rx.rescued_bytes,
                head_repair: self.repair.total(),
            },
        }
    }

    /// Counts non-zero bytes outside every window ever granted, per region.
    fn region_reports(&self) -> Vec<RegionReport> {
        // Whole frames: the headers of a window's first slot land just before it, the ICV
        // of its last slot just after it.
        let spill = self.whole_frame.map_or(Spill::default(), |w| Spill {
            before: umem::plan::MAX_FRAME_PREFIX,
            after: u64::from(w.trailer),
        });
        self.table
            .region_ids()
            .filter_map(|id| {
                let windows = self.table.windows(id)?;
                let span = self.layout.region(id)?;
                Some(RegionReport {
                    id,
                    len: windows.len(),
                    granted_bytes: windows.granted_bytes(),
                    stray_bytes: stray_bytes(self.memory, span.base, windows, spill),
                })
            })
            .collect()
    }
}

/// Non-zero bytes of the region at `base` outside every window ever granted (and outside
/// the `spill` around each, where whole frames' headers and ICVs may land).
pub fn stray_bytes(memory: &UmemMemory, base: u64, windows: &RegionWindows, spill: Spill) -> u64 {
    let mut buf = vec![0u8; 1 << 20];
    let mut stray = 0u64;
    for gap in windows.never_granted_or_spilled(spill) {
        let mut at = gap.start;
        while at < gap.end {
            let n = usize::try_from(gap.end - at).map_or(buf.len(), |left| left.min(buf.len()));
            if memory.read(base + at, &mut buf[..n]).is_err() {
                break;
            }
            stray += buf[..n].iter().filter(|b| **b != 0).count() as u64;
            at += n as u64;
        }
    }
    stray
}
