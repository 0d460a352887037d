//! Criterion benchmarks: decision cost against the number of SAs (with 65,536 regions).
//! (CPU vs I/OAT-model copies are in copy-fallback's benchmark.)

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use placement::{Grant, PlacementEngine, Policy, Segment};
use psp::Hint;

const REGIONS: u32 = 65_536;
const REGION_LEN: u64 = 1 << 20;

fn engine_with(sas: u32) -> PlacementEngine {
    let mut e = PlacementEngine::new(Policy::default());
    e.reserve(sas as usize, REGIONS as usize);
    for r in 0..REGIONS {
        e.add_region(r, u64::from(r) * REGION_LEN, REGION_LEN)
            .unwrap();
        e.configure_generation(r, 1, 0).unwrap();
    }
    e.advance(0, |_| {});
    for i in 0..sas {
        let spi = 0x4000_0000 | i;
        e.add_sa(spi).unwrap();
        e.add_grant(Grant {
            spi,
            region_id: i % REGIONS,
            generation: 1,
            offset: 0,
            len: REGION_LEN,
            base_seq: 0,
        })
        .unwrap();
    }
    e
}

fn decision(c: &mut Criterion) {
    let mut group = c.benchmark_group("decide");
    for sas in [1u32, 1_000, 100_000, 1_000_000] {
        let e = engine_with(sas);
        let usage = e.memory_usage();
        eprintln!(
            "decide: {sas} SAs, {REGIONS} regions: SA table {} B ({:.1} B/SA), region table {} B, grant slab {} B ({:.1} B/grant)",
            usage.sa_table,
            usage.sa_table as f64 / f64::from(sas),
            usage.region_table,
            usage.grant_slab,
            usage.grant_slab as f64 / f64::from(sas)
        );
        // 64 segments of SAs spread over the table, cycled: lookups hit different slots.
        let segs: Vec<Segment> = (0..64u32)
            .map(|k| {
                let i = (k.wrapping_mul(2_654_435_761)) % sas;
                let spi = 0x4000_0000 | i;
                let hint = Hint {
                    region_id: i % REGIONS,
                    generation: 1,
                    offset: 4096,
                    base_tcp_seq: 1000,
                };
                Segment {
                    spi,
                    authenticated: true,
                    hint: Some(hint),
                    seq: 1000 + 1400 * k,
                    len: 1400,
                    landed_at: Some(
                        u64::from(i % REGIONS) * REGION_LEN + 4096 + 1400 * u64::from(k),
                    ),
                }
            })
            .collect();
        let mut k = 0;
        group.bench_with_input(BenchmarkId::new("sas", sas), &segs, |b, segs| {
            b.iter(|| {
                k = (k + 1) & 63;
                black_box(e.decide(black_box(&segs[k]), 0))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, decision);
criterion_main!(benches);
