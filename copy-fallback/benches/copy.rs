//! Criterion benchmark: CPU vs I/OAT-model copies by size, with the calibrated crossover
//! printed.

use std::hint::black_box;
use std::sync::Arc;

use copy_fallback::decider::{Decider, calibrate};
use copy_fallback::ioat::{IoatConfig, IoatModel};
use copy_fallback::pipeline::CopyPipeline;
use copy_fallback::{CopyTarget, VecTarget};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn copies(c: &mut Criterion) {
    let sizes = [
        64usize,
        256,
        1024,
        4096,
        16 * 1024,
        64 * 1024,
        256 * 1024,
        1024 * 1024,
    ];
    let target = Arc::new(VecTarget::new(0, 2 << 20));
    let mut engine: IoatModel<Vec<u8>> = IoatModel::start(
        Arc::clone(&target),
        &IoatConfig {
            channels: 1,
            ring_size: 256,
            pin_cores: vec![1],
            faults: vec![],
        },
    )
    .unwrap();
    let cal = calibrate(&target, &mut engine, 0, &sizes, 7);
    for p in &cal.points {
        eprintln!(
            "calibration: {:>8} B  cpu {:>10.0} ns  engine hand-off {:>8.0} ns  ratio {:.2}",
            p.size,
            p.cpu_ns,
            p.engine_ns,
            p.cpu_ns / p.engine_ns
        );
    }
    eprintln!(
        "calibration: crossover (engine from) = {}",
        if cal.threshold == usize::MAX {
            "never".to_string()
        } else {
            format!("{} B", cal.threshold)
        }
    );

    let mut group = c.benchmark_group("copy");
    for size in sizes {
        group.throughput(Throughput::Bytes(size as u64));
        let src = vec![7u8; size];
        group.bench_with_input(BenchmarkId::new("cpu", size), &src, |b, src| {
            b.iter(|| target.write(0, black_box(src)).unwrap())
        });
        // Engine: submit + complete through the pipeline, end to end (wall time, so the
        // copy on the engine thread counts too).
        let engine: IoatModel<Vec<u8>> =
            IoatModel::start(Arc::clone(&target), &IoatConfig::default()).unwrap();
        let mut pipeline = CopyPipeline::new(Arc::clone(&target), engine, Decider::fixed(0));
        let mut out = Vec::new();
        let mut buf = Some(src.clone());
        group.bench_function(BenchmarkId::new("ioat_model", size), |b| {
            b.iter(|| {
                pipeline
                    .submit(0, buf.take().unwrap_or_else(|| vec![7u8; size]), ())
                    .unwrap();
                while out.is_empty() {
                    pipeline.poll(&mut out).unwrap();
                }
                buf = out.pop().map(|d| d.src);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, copies);
criterion_main!(benches);
