//! The receive path per frame: locate PSP, parse, open in place, ask the placement engine,
//! then leave the payload (Direct), copy it through the pipeline, stage it (not ready), or
//! count the reject. Shared by replay and (later) the live AF_XDP receiver.

use std::collections::HashMap;

use anyhow::Result;
use placement::copy::pipeline::{CopiedBy, CopyPipeline, Delivered};
use placement::copy::{CopyEngine, CopyTarget};
use placement::{
    AccessControl, Counters, Decision, GrantId, GrantProgress, Placement, PlacementEngine, Reason,
    Segment,
};
use psp::{MasterKeys, Sa, Version};

/// What a copy carries through the pipeline, to account for it when it is delivered.
#[derive(Debug, Clone, Copy)]
pub struct CopyTag {
    spi: u32,
    placement: Placement,
}

/// Per-stream (per SPI) counters.
pub type Streams = HashMap<u32, Counters>;

/// The receive path's state.
pub struct RxPath<T: CopyTarget, E: CopyEngine<Vec<u8>>> {
    pub engine: PlacementEngine,
    keys: MasterKeys,
    sas: HashMap<(u32, Version, Option<u32>), Sa>,
    pipeline: CopyPipeline<T, E, Vec<u8>, CopyTag>,
    delivered: Vec<Delivered<Vec<u8>, CopyTag>>,
    staged: Vec<(u32, Placement, Vec<u8>)>,
    staged_bytes: usize,
    max_staged_bytes: usize,
    pub counters: Counters,
    pub streams: Streams,
    pub progress: HashMap<GrantId, GrantProgress>,
    /// Frames that were not PSP at all (ARP, other traffic).
    pub not_psp: u64,
}

impl<T: CopyTarget, E: CopyEngine<Vec<u8>>> RxPath<T, E> {
    pub fn new(
        engine: PlacementEngine,
        keys: MasterKeys,
        pipeline: CopyPipeline<T, E, Vec<u8>, CopyTag>,
        max_staged_bytes: usize,
    ) -> Self {
        let progress = engine
            .grant_ids()
            .filter_map(|g| Some((g, GrantProgress::new(engine.grant(g)?.len))))
            .collect();
        Self {
            engine,
            keys,
            sas: HashMap::new(),
            pipeline,
            delivered: Vec::new(),
            staged: Vec::new(),
            staged_bytes: 0,
            max_staged_bytes,
            counters: Counters::default(),
            streams: Streams::new(),
            progress,
            not_psp: 0,
        }
    }

    fn count(&mut self, spi: u32, f: impl Fn(&mut Counters)) {
        f(&mut self.counters);
        f(self.streams.entry(spi).or_default());
    }

    /// Opens `segment` in place with the key of (spi, version[, region]); true when the
    /// ICV verified.
    fn open(
        &mut self,
        segment: &mut [u8],
        spi: u32,
        version: Version,
        region: Option<u32>,
    ) -> bool {
        let keys = &self.keys;
        let sa = self.sas.entry((spi, version, region)).or_insert_with(|| {
            let key = match region {
                Some(r) => psp::derive_region_bound(keys.for_spi(spi), spi, version, r),
                None => keys.derive(spi, version),
            };
            // Derived keys always fit their version.
            Sa::new(spi, version, &key).expect("derived key length matches its version")
        });
        sa.open_in_place(segment).is_ok()
    }

    /// Handles one received frame whose payload, if placed by the NIC, sits at `landed_at`.
    pub fn on_frame(&mut self, frame: &mut [u8], landed_at: Option<u64>, now: u64) -> Result<()> {
        let Ok(loc) = psp::locate(frame) else {
            self.not_psp += 1;
            return Ok(());
        };
        let segment = &mut frame[loc.segment];
        let parsed = psp::Segment::parse(segment).and_then(|s| Ok((s, s.clear_tcp()?)));
        let Ok((seg, tcp)) = parsed else {
            // The payload of an unparsable segment is unknown: one packet, zero bytes.
            self.counters.payload.add(0);
            self.counters.reject(Reason::Malformed, 0);
            return Ok(());
        };
        let (spi, version, hint) = (seg.header().spi(), seg.version(), seg.hint());
        let layout = seg.layout();
        let payload = layout.header_len + tcp.header_len..layout.icv_start;
        let len = payload.len() as u64;
        // A frame is far smaller than 4 GiB; saturate rather than wrap if not.
        let len32 = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        self.count(spi, |c| c.payload.add(len));

        let region_bound = self.engine.policy().access == AccessControl::RegionBoundKeys;
        let known = if region_bound {
            hint.is_some()
        } else {
            self.engine.has_sa(spi)
        };
        let authenticated = known
            && self.open(
                segment,
                spi,
                version,
                region_bound.then(|| hint.map(|h| h.region_id)).flatten(),
            );
        let decision = self.engine.decide(
            &Segment {
                spi,
                authenticated,
                hint,
                seq: tcp.seq,
                len: len32,
                landed_at,
            },
            now,
        );
        match decision {
            Decision::Direct(p) => {
                self.count(spi, |c| c.direct.add(len));
                self.record(p);
            }
            Decision::Copy(p, Reason::NotReady) => {
                if self.staged_bytes + payload.len() > self.max_staged_bytes {
                    self.count(spi, |c| c.reject(Reason::NotReady, len));
                } else {
                    self.staged_bytes += payload.len();
                    self.staged.push((spi, p, segment[payload].to_vec()));
                    self.count(spi, |c| c.staged.add(len));
                }
            }
            Decision::Copy(p, _) => {
                self.pipeline.submit(
                    p.addr,
                    segment[payload].to_vec(),
                    CopyTag { spi, placement: p },
                )?;
            }
            Decision::Reject(reason) => self.count(spi, |c| c.reject(reason, len)),
        }
        self.deliver()
    }

    fn record(&mut self, p: Placement) {
        let Some(g) = p.grant else { return };
        let Some(start) = self
            .engine
            .grant(g)
            .map(|grant| p.region_offset - grant.offset)
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
            match d.by {
                CopiedBy::Cpu => self.count(d.tag.spi, |c| c.cpu_copy.add(len)),
                CopiedBy::Engine => self.count(d.tag.spi, |c| c.engine_copy.add(len)),
            }
            self.record(d.tag.placement);
        }
        self.delivered = done;
        Ok(())
    }

    /// Promotes pending generations due at `now` and copies in what was staged for them.
    pub fn activate(&mut self, now: u64) -> Result<()> {
        let mut activated = Vec::new();
        self.engine.advance(now, |r| activated.push(r.id));
        if activated.is_empty() {
            return Ok(());
        }
        let (ready, waiting): (Vec<_>, Vec<_>) = self
            .staged
            .drain(..)
            .partition(|(_, p, _)| activated.contains(&p.region_id));
        self.staged = waiting;
        for (spi, p, bytes) in ready {
            self.staged_bytes -= bytes.len();
            self.pipeline
                .submit(p.addr, bytes, CopyTag { spi, placement: p })?;
        }
        self.deliver()
    }

    /// Waits for every outstanding copy.
    pub fn finish(&mut self) -> Result<()> {
        let ok = self
            .pipeline
            .drain(&mut self.delivered, std::time::Duration::from_secs(30))?;
        anyhow::ensure!(ok, "copy engine did not finish within 30 s");
        self.deliver()
    }

    /// Bytes still staged (regions that never activated).
    pub fn staged_bytes(&self) -> usize {
        self.staged_bytes
    }

    /// The pipeline (for its stats and decider).
    pub fn pipeline(&self) -> &CopyPipeline<T, E, Vec<u8>, CopyTag> {
        &self.pipeline
    }
}
