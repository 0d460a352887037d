//! Properties of the placement decision over random regions, grants, hints and segments.

use std::sync::Arc;
use std::time::Duration;

use copy_fallback::VecTarget;
use copy_fallback::cpu::CpuEngine;
use copy_fallback::decider::Decider;
use copy_fallback::pipeline::CopyPipeline;
use placement::{Decision, Grant, GrantProgress, PlacementEngine, Policy, Reason, Segment};
use proptest::prelude::*;
use psp::Hint;

const REGION_BASE: u64 = 1 << 40;
const SPIS: [u32; 4] = [0x4000_0001, 0x4000_0002, 0x0000_0003, 0xC000_0004];

#[derive(Debug, Clone)]
struct RegionCfg {
    id: u32,
    len: u64,
    active: Option<u16>,
    pending: Option<(u16, u64)>,
}

fn region_cfg() -> impl Strategy<Value = RegionCfg> {
    (
        0u32..4,
        1u64..(1 << 20),
        proptest::option::of(0u16..4),
        proptest::option::of((0u16..5, 0u64..2000)),
    )
        .prop_map(|(id, len, active, pending)| RegionCfg {
            id,
            len,
            active,
            pending,
        })
}

fn grant_cfg() -> impl Strategy<Value = (usize, u32, u16, u64, u64, u32)> {
    (
        0usize..4,
        0u32..4,
        0u16..5,
        0u64..(1 << 20),
        0u64..(1 << 20),
        any::<u32>(),
    )
}

fn segment() -> impl Strategy<Value = Segment> {
    let hint = (
        0u32..5,
        0u16..5,
        prop_oneof![
            0u64..(1 << 21),
            (psp::hint::MAX_OFFSET - 1000)..=psp::hint::MAX_OFFSET
        ],
        any::<u32>(),
    )
        .prop_map(|(region_id, generation, offset, base_tcp_seq)| Hint {
            region_id,
            generation,
            offset,
            base_tcp_seq,
        });
    (
        0usize..5,
        any::<bool>(),
        proptest::option::of(hint),
        any::<u32>(),
        0u32..3000,
        proptest::option::of(any::<u64>()),
    )
        .prop_map(|(spi, authenticated, hint, seq, len, landed_at)| Segment {
            spi: SPIS.get(spi).copied().unwrap_or(0x4000_0099),
            authenticated: authenticated || len % 7 != 0, // mostly authenticated
            hint,
            // Often near the hint's base, so that bounds matter.
            seq: hint.map_or(seq, |h| {
                if seq % 3 == 0 {
                    seq
                } else {
                    h.base_tcp_seq.wrapping_add(seq % 70_000)
                }
            }),
            len,
            landed_at,
        })
}

/// Builds an engine; returns it and the grants that were accepted.
fn build(
    regions: &[RegionCfg],
    grants: &[(usize, u32, u16, u64, u64, u32)],
) -> (PlacementEngine, Vec<Grant>) {
    let mut e = PlacementEngine::new(Policy::default());
    for r in regions {
        if e.add_region(r.id, REGION_BASE * u64::from(r.id + 1), r.len)
            .is_ok()
        {
            if let Some(a) = r.active {
                e.configure_generation(r.id, a, 0).unwrap();
                e.advance(0, |_| {});
            }
            if let Some((g, at)) = r.pending {
                e.configure_generation(r.id, g, at).unwrap();
            }
        }
    }
    for spi in SPIS {
        e.add_sa(spi).unwrap();
    }
    let mut accepted = Vec::new();
    for &(spi, region_id, generation, offset, len, base_seq) in grants {
        let g = Grant {
            spi: SPIS[spi],
            region_id,
            generation,
            offset,
            len,
            base_seq,
        };
        if e.add_grant(g).is_ok() {
            accepted.push(g);
        }
    }
    (e, accepted)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

    /// 1 and 2: a Direct or Copy names only bytes inside a grant this SPI holds for the
    /// hint's region and generation, inside the region, at region.base + offset.
    #[test]
    fn placements_stay_inside_a_matching_grant(
        regions in proptest::collection::vec(region_cfg(), 1..5),
        grants in proptest::collection::vec(grant_cfg(), 0..10),
        segs in proptest::collection::vec(segment(), 1..40),
        now in 0u64..3000,
    ) {
        let (e, accepted) = build(&regions, &grants);
        for s in &segs {
            let d = e.decide(s, now);
            let (Decision::Direct(p) | Decision::Copy(p, _)) = d else { continue };
            let hint = s.hint.expect("placed without a hint");
            prop_assert!(s.authenticated, "placed an unauthenticated segment");
            let region = e.region(p.region_id).expect("placed into an unknown region");
            prop_assert_eq!(p.region_id, hint.region_id);
            prop_assert_eq!(p.addr, region.base + p.region_offset);
            prop_assert!(p.region_offset + u64::from(p.len) <= region.len);
            let g = e.grant(p.grant.expect("allow-list placement names its grant")).unwrap();
            prop_assert_eq!(g.spi, s.spi);
            prop_assert_eq!((g.region_id, g.generation), (hint.region_id, hint.generation));
            prop_assert!(p.region_offset >= g.offset && p.region_offset + u64::from(p.len) <= g.offset + g.len, "outside the window: {:?} {:?}", p, g);
            let any = accepted.iter().any(|g| g.spi == s.spi && g.region_id == hint.region_id && g.generation == hint.generation);
            prop_assert!(any);
        }
    }

    /// 3: stale generations are never placed; not-ready is never Direct.
    #[test]
    fn stale_never_placed_and_not_ready_never_direct(
        regions in proptest::collection::vec(region_cfg(), 1..5),
        grants in proptest::collection::vec(grant_cfg(), 0..10),
        segs in proptest::collection::vec(segment(), 1..40),
        now in 0u64..3000,
    ) {
        let (e, _) = build(&regions, &grants);
        for s in &segs {
            let d = e.decide(s, now);
            let Some(h) = s.hint else { continue };
            let Some(r) = e.region(h.region_id) else { continue };
            let active = match r.pending { Some(p) if now >= p.at => Some(p.generation), _ => r.active };
            if active.is_some_and(|a| h.generation < a) {
                prop_assert!(matches!(d, Decision::Reject(_)), "stale generation placed: {:?}", d);
            }
            if active != Some(h.generation) {
                prop_assert!(!matches!(d, Decision::Direct(_)), "not-ready generation placed directly: {:?}", d);
            }
        }
    }
}

/// An honest sender's message, cut into `cuts`, sent in `order` with duplicates.
fn honest_transfer(
    len: usize,
    base_seq: u32,
    offset: u64,
    cuts: &[usize],
    order: &[usize],
    dups: &[usize],
    direct_every: usize,
) -> Result<(), TestCaseError> {
    let spi = 0x4000_0001;
    let mut e = PlacementEngine::new(Policy::default());
    let region_len = offset + len as u64;
    e.add_region(1, REGION_BASE, region_len).unwrap();
    e.configure_generation(1, 1, 0).unwrap();
    e.add_sa(spi).unwrap();
    e.add_grant(Grant {
        spi,
        region_id: 1,
        generation: 1,
        offset,
        len: len as u64,
        base_seq,
    })
    .unwrap();
    let message: Vec<u8> = (0..len).map(|i| (i * 131 % 251) as u8).collect();
    let target = Arc::new(VecTarget::new(REGION_BASE, region_len as usize));
    let mut pipeline = CopyPipeline::new(
        Arc::clone(&target),
        CpuEngine::new(Arc::clone(&target)),
        Decider::CPU_ONLY,
    );
    let mut progress = GrantProgress::new(len as u64);

    // Cut points → segments (start, end).
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (len + 1)).collect();
    points.extend([0, len]);
    points.sort_unstable();
    points.dedup();
    let segs: Vec<(usize, usize)> = points.windows(2).map(|w| (w[0], w[1])).collect();
    // Every segment once, in an order shuffled by `order` (Fisher-Yates), plus duplicates.
    let mut sends: Vec<usize> = (0..segs.len()).collect();
    for (k, o) in order.iter().enumerate() {
        let i = sends.len().saturating_sub(1 + k % sends.len().max(1));
        sends.swap(i, o % (i + 1));
    }
    sends.extend(dups.iter().map(|d| d % segs.len().max(1)));
    let hint = Hint {
        region_id: 1,
        generation: 1,
        offset,
        base_tcp_seq: base_seq,
    };
    let mut delivered = Vec::new();
    for (n, i) in sends.into_iter().enumerate() {
        let Some(&(start, end)) = segs.get(i) else {
            continue;
        };
        let seq = base_seq.wrapping_add(start as u32);
        let addr = REGION_BASE + offset + start as u64;
        // Some segments "land" at their address (as AF_XDP would put them); others elsewhere.
        let landed = n % direct_every == 0;
        let s = Segment {
            spi,
            authenticated: true,
            hint: Some(hint),
            seq,
            len: (end - start) as u32,
            landed_at: landed.then_some(addr),
        };
        match e.decide(&s, 0) {
            Decision::Direct(p) => {
                prop_assert_eq!(p.addr, addr);
                copy_fallback::CopyTarget::write(&*target, addr, &message[start..end]).unwrap();
                progress.record(p.region_offset - offset, u64::from(p.len));
            }
            Decision::Copy(p, reason) => {
                prop_assert_eq!(reason, Reason::LandedElsewhere);
                prop_assert_eq!(p.addr, addr);
                pipeline
                    .submit(
                        p.addr,
                        message[start..end].to_vec(),
                        (p.region_offset - offset, p.len),
                    )
                    .unwrap();
            }
            Decision::Reject(r) => prop_assert!(false, "honest segment rejected: {}", r),
        }
        pipeline.poll(&mut delivered).unwrap();
        for d in delivered.drain(..) {
            progress.record(d.tag.0, u64::from(d.tag.1));
        }
    }
    prop_assert!(
        pipeline
            .drain(&mut delivered, Duration::from_secs(5))
            .unwrap()
    );
    for d in delivered.drain(..) {
        progress.record(d.tag.0, u64::from(d.tag.1));
    }
    prop_assert!(progress.is_complete(), "missing {:?}", progress.missing());
    prop_assert_eq!(target.read(REGION_BASE + offset, len).unwrap(), message);
    prop_assert_eq!(
        target.read(REGION_BASE, offset as usize).unwrap(),
        vec![0u8; offset as usize],
        "bytes before the grant were touched"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, failure_persistence: None, ..ProptestConfig::default() })]

    /// 4 and 5: any segmentation, order and duplication of an honest transfer leaves exactly
    /// the sent bytes and reports complete; sequence numbers wrap at 2^32 in some cases.
    #[test]
    fn honest_transfers_complete_exactly(
        len in 1usize..20_000,
        base_seq in prop_oneof![any::<u32>(), (u32::MAX - 30_000)..=u32::MAX],
        offset in 0u64..5000,
        cuts in proptest::collection::vec(any::<usize>(), 0..30),
        order in proptest::collection::vec(any::<usize>(), 0..40),
        dups in proptest::collection::vec(any::<usize>(), 0..10),
        direct_every in 1usize..4,
    ) {
        honest_transfer(len, base_seq, offset, &cuts, &order, &dups, direct_every)?;
    }
}
