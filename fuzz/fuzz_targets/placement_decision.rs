//! Fuzzes the placement decision with structured input: a configuration (regions, SAs,
//! grants, policy) and a batch of segments. Checks the invariants the proptests check.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use placement::{AccessControl, Decision, Grant, PlacementEngine, Policy, Segment};
use psp::Hint;

#[derive(Debug, Arbitrary)]
struct RegionIn {
    id: u8,
    base: u64,
    len: u32,
    active: Option<u16>,
    pending: Option<(u16, u16)>,
}

#[derive(Debug, Arbitrary)]
struct GrantIn {
    spi: u32,
    region: u8,
    generation: u16,
    offset: u32,
    len: u32,
    base_seq: u32,
}

#[derive(Debug, Arbitrary)]
struct SegmentIn {
    spi: u32,
    authenticated: bool,
    hint: Option<(u8, u16, u64, u32)>,
    seq: u32,
    len: u16,
    landed_at: Option<u64>,
}

#[derive(Debug, Arbitrary)]
struct Input {
    direct_spi_min: u32,
    region_bound: bool,
    regions: Vec<RegionIn>,
    spis: Vec<u32>,
    grants: Vec<GrantIn>,
    segments: Vec<SegmentIn>,
    now: u16,
}

fuzz_target!(|input: Input| {
    let access = if input.region_bound { AccessControl::RegionBoundKeys } else { AccessControl::AllowList };
    let mut e = PlacementEngine::new(Policy { direct_spi_min: input.direct_spi_min, access });
    for r in &input.regions {
        if e.add_region(r.id.into(), r.base, r.len.into()).is_ok() {
            if let Some(a) = r.active {
                let _ = e.configure_generation(r.id.into(), a, 0);
                e.advance(0, |_| {});
            }
            if let Some((g, at)) = r.pending {
                let _ = e.configure_generation(r.id.into(), g, at.into());
            }
        }
    }
    for spi in &input.spis {
        let _ = e.add_sa(*spi);
    }
    for g in &input.grants {
        let _ = e.add_grant(Grant { spi: g.spi, region_id: g.region.into(), generation: g.generation, offset: g.offset.into(), len: g.len.into(), base_seq: g.base_seq });
    }
    for s in &input.segments {
        let hint = s.hint.map(|(region_id, generation, offset, base_tcp_seq)| Hint { region_id: region_id.into(), generation, offset, base_tcp_seq });
        let seg = Segment { spi: s.spi, authenticated: s.authenticated, hint, seq: s.seq, len: s.len.into(), landed_at: s.landed_at };
        let d = e.decide(&seg, input.now.into());
        if let Decision::Direct(p) | Decision::Copy(p, _) = d {
            assert!(seg.authenticated);
            let region = e.region(p.region_id).expect("placed in a known region");
            assert!(p.region_offset + u64::from(p.len) <= region.len);
            assert_eq!(p.addr, region.base + p.region_offset);
            if let Some(gid) = p.grant {
                let g = e.grant(gid).expect("grant exists");
                assert_eq!(g.spi, seg.spi);
                assert!(p.region_offset >= g.offset && p.region_offset + u64::from(p.len) <= g.offset + g.len);
            } else {
                assert!(input.region_bound);
            }
            if matches!(d, Decision::Direct(_)) {
                assert_eq!(seg.landed_at, Some(p.addr));
            }
        }
    }
});
