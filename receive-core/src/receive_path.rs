//! The receive path per segment: parse, open in place, ask the placement engine, then
//! leave the payload (Direct), copy it through the pipeline, stage it (not ready), or
//! count the reject. Shared by replay (whole frames) and the live AF_XDP receiver (header
//! record + payload where it landed).
//!
//! Copies go through a *gate*: a copy whose destination a fill ring may still write (a
//! slot posted to the kernel) is parked until that slot comes back, so that a copy never
//! races the NIC for the same bytes (docs/design.md, "The prediction window").

use std::collections::HashMap;

use placement::idmap::{FastMap, FastSet};

use copy_fallback::pipeline::{CopiedBy, CopyPipeline, Delivered};
use copy_fallback::{CopyEngine, CopyTarget};
use placement::{
    AccessControl, Counters, Decision, GrantId, GrantProgress, Placement, PlacementEngine,
    RangeSet, Reason, Segment,
};
use psp::{MasterKeys, Sa, Version};
use umem::LentFrame;

use crate::error::ReceiveError;
use crate::parking::{Parked, Parking, SlotGate};
use crate::payload::{Payload, Received};
use crate::report::{
    ChannelReport, CopyEngineReport, GrantReport, Numbers, Report, RunSummary, stream_reports,
};
use crate::staging::{Staged, Staging};
use crate::time::Timestamp;

type Result<T> = std::result::Result<T, ReceiveError>;

/// What a copy carries through the pipeline, to account for it when it is delivered.
#[derive(Debug, Clone, Copy)]
pub struct CopyTag {
    spi: u32,
    placement: Placement,
}

/// Streams (SPIs) counted one by one beyond those with an SA; packets of further unknown
/// SPIs count only in the totals.
const MAX_UNKNOWN_STREAMS: usize = 256;

/// Per-stream (per SPI) counters.
pub type Streams = FastMap<u32, Counters>;

/// Where a payload is while the engine decides about it.
enum Landed<'a> {
    /// A replayed frame: nowhere in particular.
    Plain(&'a [u8]),
    /// In a slot at `addr` (the segment's own, or another's).
    Slot { addr: u64, bytes: &'a [u8] },
    /// In a bounce frame, lent.
    Frame(LentFrame),
}

impl Landed<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Self::Plain(b) | Self::Slot { bytes: b, .. } => b,
            Self::Frame(f) => f.as_ref(),
        }
    }

    fn landed_at(&self) -> Option<u64> {
        match self {
            Self::Slot { addr, .. } => Some(*addr),
            _ => None,
        }
    }
}

/// What a segment's header says, before its payload is looked at.
struct SegmentMeta {
    spi: u32,
    hint: Option<psp::Hint>,
    seq: u32,
    authenticated: bool,
}

/// The receive path's state.
pub struct RxPath<T: CopyTarget, E: CopyEngine<Payload>> {
    pub placement: PlacementEngine,
    keys: MasterKeys,
    sas: FastMap<(u32, Version, Option<u32>), Sa>,
    /// SPIs of sessions that agreed on inline crypto: their segments are neither
    /// decrypted nor verified (the NIC model did it).
    inline_spis: FastSet<u32>,
    pipeline: CopyPipeline<T, E, Payload, CopyTag>,
    delivered: Vec<Delivered<Payload, CopyTag>>,
    staging: Staging,
    parking: Parking,
    /// Per grant: window ranges accepted (placed, copying, staged or parked).
    claimed: FastMap<GrantId, RangeSet>,
    /// Per grant: copies submitted to the pipeline and not delivered yet. A grant's
    /// window is released only when this reaches zero (docs/design.md, "Copy ordering").
    in_flight: FastMap<GrantId, u32>,
    /// Payload bytes that landed in a slot belonging to another segment and were copied
    /// out of it before their own copy (a second copy; see docs/design.md).
    pub rescued_bytes: u64,
    pub counters: Counters,
    pub streams: Streams,
    pub progress: FastMap<GrantId, GrantProgress>,
    /// Frames that were not PSP at all (ARP, other traffic).
    pub not_psp: u64,
    /// Copies that no backend could write (the target refused them); their bytes stay
    /// missing.
    pub copy_failures: u64,
}

impl<T: CopyTarget, E: CopyEngine<Payload>> RxPath<T, E> {
    pub fn new(
        placement: PlacementEngine,
        keys: MasterKeys,
        pipeline: CopyPipeline<T, E, Payload, CopyTag>,
        max_staged_bytes: usize,
    ) -> Self {
        let progress = placement
            .grant_ids()
            .filter_map(|g| Some((g, GrantProgress::new(placement.grant(g)?.len))))
            .collect();
        Self {
            placement,
            keys,
            sas: FastMap::default(),
            inline_spis: FastSet::default(),
            pipeline,
            delivered: Vec::new(),
            staging: Staging::new(max_staged_bytes),
            parking: Parking::default(),
            claimed: FastMap::default(),
            in_flight: FastMap::default(),
            rescued_bytes: 0,
            counters: Counters::default(),
            streams: Streams::default(),
            progress,
            not_psp: 0,
            copy_failures: 0,
        }
    }

    /// Stages at most `frames` bounce frames at a time (the rest of the pool keeps the fill
    /// rings going); payloads beyond are rejected as not ready, and retransmitted.
    pub fn limit_staged_frames(&mut self, frames: usize) {
        self.staging.limit_frames(frames);
    }

    fn count(&mut self, spi: u32, f: impl Fn(&mut Counters)) {
        f(&mut self.counters);
        // Per stream only for SPIs the receiver knows (or already counts), and a bounded
        // number of others: packets with made-up SPIs cannot grow the report without end.
        let known = self.streams.contains_key(&spi)
            || self.placement.has_sa(spi)
            || self.streams.len() < MAX_UNKNOWN_STREAMS;
        if known {
            f(self.streams.entry(spi).or_default());
        }
    }

    /// Segments of `spi` come with inline crypto (agreed in its session): trusted as they
    /// are, neither decrypted nor verified.
    pub fn trust_inline(&mut self, spi: u32) {
        self.inline_spis.insert(spi);
    }

    /// Sessions that agreed on inline crypto so far.
    pub fn inline_sessions(&self) -> usize {
        self.inline_spis.len()
    }

    /// The SA for (spi, version[, region]), created on first use.
    fn sa(&mut self, spi: u32, version: Version, region: Option<u32>) -> &Sa {
        let keys = &self.keys;
        self.sas.entry((spi, version, region)).or_insert_with(|| {
            let key = match region {
                Some(r) => psp::derive_region_bound(keys.for_spi(spi), spi, version, r),
                None => keys.derive(spi, version),
            };
            // Derived keys always fit their version.
            Sa::new(spi, version, &key).expect("derived key length matches its version")
        })
    }

    /// Whether to try opening a segment of `spi` with `hint`, and with which region key:
    /// `None` = do not open (unknown SA), `Some(region)` = open with that key.
    fn key_choice(&self, spi: u32, hint: Option<psp::Hint>) -> Option<Option<u32>> {
        if self.placement.policy().access == AccessControl::RegionBoundKeys {
            hint.map(|h| Some(h.region_id))
        } else {
            self.placement.has_sa(spi).then_some(None)
        }
    }

    /// Counts a segment that could not be parsed: one packet, zero bytes.
    fn malformed(&mut self) {
        self.counters.payload.add(0);
        self.counters.reject(Reason::Malformed, 0);
    }

    /// Handles one whole received frame whose payload, if placed by the NIC, sits at
    /// `landed_at`. Returns the decision (None for frames that are not PSP or unparsable).
    pub fn on_frame(
        &mut self,
        frame: &mut [u8],
        landed_at: Option<u64>,
        now: Timestamp,
        gate: &dyn SlotGate,
    ) -> Result<Option<Decision>> {
        let Ok(loc) = psp::locate(frame) else {
            self.not_psp += 1;
            return Ok(None);
        };
        let segment = &mut frame[loc.segment];
        let parsed = psp::Segment::parse(segment).and_then(|s| Ok((s, s.clear_tcp()?)));
        let Ok((seg, tcp)) = parsed else {
            self.malformed();
            return Ok(None);
        };
        let (spi, version, hint) = (seg.header().spi(), seg.version(), seg.hint());
        let layout = seg.layout();
        let payload = layout.header_len + tcp.header_len..layout.icv_start;
        let authenticated = match self.key_choice(spi, hint) {
            Some(region) => self.sa(spi, version, region).open_in_place(segment).is_ok(),
            None => false,
        };
        let meta = SegmentMeta {
            spi,
            hint,
            seq: tcp.seq,
            authenticated,
        };
        let bytes = &segment[payload];
        let landed = match landed_at {
            Some(addr) => Landed::Slot { addr, bytes },
            None => Landed::Plain(bytes),
        };
        self.place(&meta, landed, now, gate).map(Some)
    }

    /// Handles one segment split by the XDP program: `header` (PSP header through TCP
    /// header) and `icv` from the header record, the payload where it was `received`
    /// (decrypted in place there).
    pub fn on_split(
        &mut self,
        header: &[u8],
        icv: &[u8; psp::ICV_LEN],
        mut received: Received<'_>,
        now: Timestamp,
        gate: &dyn SlotGate,
    ) -> Result<Option<Decision>> {
        let parsed = psp::Segment::parse_head(header).and_then(|s| Ok((s, s.clear_tcp()?)));
        let Ok((seg, tcp)) = parsed else {
            self.malformed();
            return Ok(None);
        };
        let (spi, version, hint) = (seg.header().spi(), seg.version(), seg.hint());
        let authenticated = if self.inline_spis.contains(&spi) {
            // Inline crypto: the (modelled) NIC decrypted and verified it.
            true
        } else {
            match self.key_choice(spi, hint) {
                Some(region) => {
                    let payload = received.bytes_mut()?;
                    self.sa(spi, version, region)
                        .open_split(&seg, payload, icv)
                        .is_ok()
                }
                None => false,
            }
        };
        let meta = SegmentMeta {
            spi,
            hint,
            seq: tcp.seq,
            authenticated,
        };
        match received {
            Received::Slot(slot) => {
                let landed = Landed::Slot {
                    addr: slot.addr(),
                    bytes: slot.as_slice(),
                };
                self.place(&meta, landed, now, gate).map(Some)
            }
            Received::Bounce { frame, data, len } => {
                let lent = frame.lend(data, len)?;
                self.place(&meta, Landed::Frame(lent), now, gate).map(Some)
            }
        }
    }

    /// The source of a copy of the payload: its bounce frame, or a copy of it (a slot is
    /// given back, and may be overwritten, as soon as the segment is handled).
    fn source(&mut self, landed: Landed<'_>) -> Payload {
        match landed {
            Landed::Frame(frame) => Payload::Frame(frame),
            Landed::Slot { bytes, .. } => {
                self.rescued_bytes += bytes.len() as u64;
                Payload::Owned(bytes.to_vec())
            }
            Landed::Plain(bytes) => Payload::Owned(bytes.to_vec()),
        }
    }

    fn place(
        &mut self,
        meta: &SegmentMeta,
        landed: Landed<'_>,
        now: Timestamp,
        gate: &dyn SlotGate,
    ) -> Result<Decision> {
        let landed_at = landed.landed_at();
        let spi = meta.spi;
        let payload_len = landed.bytes().len();
        let len = payload_len as u64;
        // A frame is far smaller than 4 GiB; saturate rather than wrap if not.
        let len32 = u32::try_from(payload_len).unwrap_or(u32::MAX);
        self.count(spi, |c| c.payload.add(len));
        let decision = self.placement.decide(
            &Segment {
                spi,
                authenticated: meta.authenticated,
                hint: meta.hint,
                seq: meta.seq,
                len: len32,
                landed_at,
            },
            now.engine_nanos(),
        );
        match decision {
            Decision::Direct(p) => {
                self.claim(p);
                self.count(spi, |c| c.direct.add(len));
                self.record(p);
            }
            Decision::Copy(p, Reason::NotReady) => {
                let in_frame = matches!(landed, Landed::Frame(_));
                if self.staging.has_room(payload_len, in_frame) {
                    self.claim(p);
                    let bytes = self.source(landed);
                    self.staging.push(Staged {
                        spi,
                        placement: p,
                        bytes,
                    });
                    self.count(spi, |c| c.staged.add(len));
                } else {
                    self.count(spi, |c| c.reject(Reason::NotReady, len));
                }
            }
            Decision::Copy(p, _) => {
                self.claim(p);
                let src = self.source(landed);
                self.copy(spi, p, src, gate)?;
            }
            // A bounce frame not kept goes back to the plan here (on drop).
            Decision::Reject(reason) => self.count(spi, |c| c.reject(reason, len)),
        }
        self.deliver()?;
        Ok(decision)
    }

    /// Submits a copy, or parks it while a posted slot may still write its destination.
    fn copy(&mut self, spi: u32, p: Placement, bytes: Payload, gate: &dyn SlotGate) -> Result<()> {
        if let Some(slot) = gate.blocking_slot(p.addr, u64::from(p.len)) {
            self.parking.park(
                slot,
                Parked {
                    spi,
                    placement: p,
                    bytes,
                },
            );
            return Ok(());
        }
        self.pipeline
            .submit(p.addr, bytes, CopyTag { spi, placement: p })?;
        if let Some(g) = p.grant {
            *self.in_flight.entry(g).or_default() += 1;
        }
        Ok(())
    }

    /// The slot landing at `landing` came back from the kernel: copies parked on it go
    /// (or park on the next slot in their way).
    pub fn slot_returned(&mut self, landing: u64, gate: &dyn SlotGate) -> Result<()> {
        let Some(parked) = self.parking.slot_returned(landing) else {
            return Ok(());
        };
        for p in parked {
            self.copy(p.spi, p.placement, p.bytes, gate)?;
        }
        self.deliver()
    }

    /// Copies that waited for a posted slot so far.
    pub fn parked_copies(&self) -> u64 {
        self.parking.parked_total()
    }

    /// Bytes of copies parked behind posted slots.
    pub fn parked_bytes(&self) -> usize {
        self.parking.bytes()
    }

    fn claim(&mut self, p: Placement) {
        let Some(g) = p.grant else { return };
        if let Some(start) = self
            .placement
            .grant(g)
            .and_then(|grant| p.region_offset.checked_sub(grant.offset))
        {
            self.claimed
                .entry(g)
                .or_default()
                .insert(start..start + u64::from(p.len));
        }
    }

    /// Whether window bytes `start..start+len` of grant `g` were already accepted.
    pub fn is_claimed(&self, g: GrantId, start: u64, len: u64) -> bool {
        self.claimed
            .get(&g)
            .is_some_and(|r| r.contains(start..start + len))
    }

    fn record(&mut self, p: Placement) {
        let Some(g) = p.grant else { return };
        // A revoked grant's id names nothing (ids are generational): its late copies
        // count for no one.
        let Some(start) = self
            .placement
            .grant(g)
            .and_then(|grant| p.region_offset.checked_sub(grant.offset))
        else {
            return;
        };
        if let Some(progress) = self.progress.get_mut(&g) {
            let dup = u64::from(p.len) - progress.record(start, u64::from(p.len));
            self.counters.duplicate_bytes += dup;
        }
    }

    fn deliver(&mut self) -> Result<()> {
        self.pipeline.poll(&mut self.delivered)?;
        // Reuse the buffer: take it out for the loop (which borrows self), put it back.
        let mut done = std::mem::take(&mut self.delivered);
        for d in done.drain(..) {
            let len = u64::from(d.tag.placement.len);
            if let Some(g) = d.tag.placement.grant
                && let Some(n) = self.in_flight.get_mut(&g)
            {
                *n -= 1;
                if *n == 0 {
                    self.in_flight.remove(&g);
                }
            }
            match d.by {
                CopiedBy::Cpu => self.count(d.tag.spi, |c| c.cpu_copy.add(len)),
                CopiedBy::Engine => self.count(d.tag.spi, |c| c.engine_copy.add(len)),
                // Nothing was written: the bytes did not arrive (they stay missing).
                CopiedBy::Failed => {
                    self.copy_failures += 1;
                    continue;
                }
            }
            self.record(d.tag.placement);
        }
        self.delivered = done;
        Ok(())
    }

    /// Promotes pending generations due at `now`, then copies in up to `budget` of the
    /// payloads staged for active regions (the rest on later calls, so that a large
    /// backlog does not stall the fill rings). Returns the regions activated.
    pub fn activate(
        &mut self,
        now: Timestamp,
        gate: &dyn SlotGate,
        budget: usize,
    ) -> Result<Vec<u32>> {
        let mut activated = Vec::new();
        self.placement
            .advance(now.engine_nanos(), |r| activated.push(r.id));
        self.staging.activate(&activated);
        let ready = self.staging.take_ready(budget);
        if !ready.is_empty() {
            for Staged {
                spi,
                placement: p,
                bytes,
            } in ready
            {
                // Decide again: only the generation that became active, and a grant that
                // still exists, may have these bytes.
                match self.still_placeable(&p) {
                    Ok(()) => self.copy(spi, p, bytes, gate)?,
                    Err(reason) => {
                        let len = bytes.as_ref().len() as u64;
                        self.count(spi, |c| c.reject(reason, len));
                    }
                }
            }
            self.deliver()?;
        }
        Ok(activated)
    }

    /// Whether a staged placement may still be copied now: its region's active generation
    /// is the one its hint named, and its grant (if any) was not revoked.
    fn still_placeable(&self, p: &Placement) -> std::result::Result<(), Reason> {
        let active = self.placement.region(p.region_id).and_then(|r| r.active);
        if active != Some(p.generation) {
            return Err(Reason::StaleGeneration);
        }
        if p.grant.is_some_and(|g| self.placement.grant(g).is_none()) {
            return Err(Reason::NotGranted);
        }
        Ok(())
    }

    /// Reaps finished copies and accounts for them (called every loop turn, so copies
    /// land in the books also while no packet arrives).
    pub fn poll_copies(&mut self) -> Result<()> {
        self.deliver()
    }

    /// Copies of grant `g` submitted and not yet delivered.
    pub fn copies_in_flight(&self, g: GrantId) -> u32 {
        self.in_flight.get(&g).copied().unwrap_or(0)
    }

    /// Grant `g` was revoked (or finished): its copies that did not start (parked behind
    /// a posted slot, staged for a late region, or ready) are dropped and their frames
    /// return; its bookkeeping goes. Copies already in the pipeline finish (see
    /// [`copies_in_flight`](Self::copies_in_flight)) but count for no one.
    pub fn drop_grant(&mut self, g: GrantId) {
        self.parking.drop_grant(g);
        self.staging.drop_grant(g);
        self.forget_grant(g);
    }

    /// Forgets a grant's bookkeeping (after it was revoked).
    pub fn forget_grant(&mut self, g: GrantId) {
        self.claimed.remove(&g);
        self.progress.remove(&g);
    }

    /// Starts tracking a grant added after construction.
    pub fn track_grant(&mut self, g: GrantId, len: u64) {
        self.progress.insert(g, GrantProgress::new(len));
    }

    /// Waits for every outstanding copy.
    pub fn finish(&mut self) -> Result<()> {
        let ok = self
            .pipeline
            .drain(&mut self.delivered, std::time::Duration::from_secs(30))?;
        if !ok {
            return Err(ReceiveError::CopiesUnfinished);
        }
        self.deliver()
    }

    /// The report of this path's counters for a run of `elapsed` seconds that used `cpu`
    /// seconds, with `grants` per SPI; the live-only parts stay empty.
    pub fn report(
        &self,
        mode: &'static str,
        backend: &'static str,
        run: RunSummary,
        grants: HashMap<u32, Vec<GrantReport>>,
    ) -> Report {
        let payload = self.counters.payload.bytes as f64;
        let per = |x: f64, d: f64| if d > 0.0 { x / d } else { 0.0 };
        let stats = self.pipeline.stats();
        let threshold = self.pipeline.decider().threshold;
        Report {
            mode,
            numbers: Numbers::from(&self.counters),
            duplicate_bytes: self.counters.duplicate_bytes,
            gbit_per_s: per(payload * 8.0 / 1e9, run.elapsed_seconds),
            rx_cpu_seconds_per_gb: per(run.cpu_seconds, payload / 1e9),
            xsk_stats: None,
            xdp_counters: None,
            verified: run.verified,
            missing_bytes: run.missing_bytes,
            not_psp_frames: self.not_psp,
            still_staged_bytes: self.staging.bytes() as u64,
            copy_engine: CopyEngineReport {
                backend,
                threshold_bytes: Some(threshold).filter(|t| *t != usize::MAX),
                refused_to_cpu: stats.refused_to_cpu,
                errors_to_cpu: stats.errors_to_cpu,
                held_for_order: stats.held_for_order,
                failed_copies: self.copy_failures,
                calibration: None,
                channels: self
                    .pipeline
                    .engine()
                    .channel_stats()
                    .iter()
                    .map(ChannelReport::from)
                    .collect(),
            },
            streams: stream_reports(&self.streams, grants),
            regions: Vec::new(),
            control: None,
            accounting: None,
            capture: None,
        }
    }
}
