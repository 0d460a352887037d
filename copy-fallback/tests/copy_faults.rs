//! The copy pipeline under injected faults: every byte arrives once, at its place, and
//! deliveries come in submission order.

#![allow(
    clippy::cast_possible_truncation,
    reason = "test data: small numbers made into bytes"
)]

use std::sync::Arc;
use std::time::Duration;

use copy_fallback::decider::{Decider, calibrate};
use copy_fallback::ioat::{ChannelFaults, IoatConfig, IoatModel};
use copy_fallback::pipeline::{CopiedBy, CopyPipeline};
use copy_fallback::{CopyEngine, Health, VecTarget};

const BASE: u64 = 0x1000_0000;
const COPIES: usize = 600;

/// Sizes that straddle the decider's threshold so CPU and engine copies interleave.
fn size_of(i: usize) -> usize {
    [64, 4096, 200, 9000, 1500, 65536][i % 6]
}

type Pipeline = CopyPipeline<VecTarget, IoatModel<Vec<u8>>, Vec<u8>, usize>;

fn run(config: IoatConfig, threshold: usize) -> (Pipeline, Arc<VecTarget>, Vec<(usize, CopiedBy)>) {
    let offsets: Vec<usize> = (0..COPIES)
        .scan(0, |at, i| {
            let o = *at;
            *at += size_of(i);
            Some(o)
        })
        .collect();
    let total = offsets[COPIES - 1] + size_of(COPIES - 1);
    let target = Arc::new(VecTarget::new(BASE, total + 4096));
    let engine = IoatModel::start(Arc::clone(&target), &config).unwrap();
    let mut p = CopyPipeline::new(Arc::clone(&target), engine, Decider::fixed(threshold));
    let mut out = Vec::new();
    for (i, offset) in offsets.iter().enumerate() {
        let src = vec![(i % 251) as u8 + 1; size_of(i)];
        p.submit(BASE + *offset as u64, src, i).unwrap();
        if i % 16 == 0 {
            p.poll(&mut out).unwrap();
        }
    }
    assert!(
        p.drain(&mut out, Duration::from_secs(20)).unwrap(),
        "pipeline did not drain"
    );
    let order: Vec<(usize, CopiedBy)> = out.iter().map(|d| (d.tag, d.by)).collect();
    // Every byte exactly where it belongs, nothing past the end.
    for (i, offset) in offsets.iter().enumerate() {
        assert_eq!(
            target.read(BASE + *offset as u64, size_of(i)).unwrap(),
            vec![(i % 251) as u8 + 1; size_of(i)],
            "copy {i}"
        );
    }
    assert_eq!(
        target.read(BASE + total as u64, 4096).unwrap(),
        vec![0; 4096],
        "wrote past the last copy"
    );
    (p, target, order)
}

fn assert_in_order_once(order: &[(usize, CopiedBy)]) {
    let tags: Vec<usize> = order.iter().map(|(t, _)| *t).collect();
    assert_eq!(
        tags,
        (0..COPIES).collect::<Vec<_>>(),
        "delivered out of order, lost or duplicated"
    );
}

#[test]
fn healthy_two_channels_deliver_in_order() {
    let (p, _, order) = run(
        IoatConfig {
            channels: 2,
            ring_size: 64,
            ..IoatConfig::default()
        },
        1024,
    );
    assert_in_order_once(&order);
    assert!(order.iter().any(|(_, by)| *by == CopiedBy::Engine));
    assert!(order.iter().any(|(_, by)| *by == CopiedBy::Cpu));
    assert_eq!(p.engine().health(), Health::Healthy);
}

#[test]
fn transient_queue_full_goes_to_cpu() {
    let faults = vec![ChannelFaults {
        refuse_every: Some(3),
        ..ChannelFaults::default()
    }];
    let (p, _, order) = run(
        IoatConfig {
            channels: 1,
            ring_size: 4,
            faults,
            ..IoatConfig::default()
        },
        1024,
    );
    assert_in_order_once(&order);
    assert!(p.stats().refused_to_cpu > 0, "{:?}", p.stats());
}

#[test]
fn failed_channel_moves_its_descriptors_to_a_healthy_one() {
    let faults = vec![
        ChannelFaults {
            fail_after: Some(20),
            ..ChannelFaults::default()
        },
        ChannelFaults::default(),
    ];
    let (p, _, order) = run(
        IoatConfig {
            channels: 2,
            ring_size: 256,
            faults,
            ..IoatConfig::default()
        },
        1024,
    );
    assert_in_order_once(&order);
    assert_eq!(
        p.engine().health(),
        Health::Degraded {
            healthy: 1,
            channels: 2
        }
    );
}

#[test]
fn no_healthy_channel_left_means_cpu() {
    let faults = vec![
        ChannelFaults {
            fail_after: Some(5),
            ..ChannelFaults::default()
        },
        ChannelFaults {
            fail_after: Some(7),
            ..ChannelFaults::default()
        },
    ];
    let (p, _, order) = run(
        IoatConfig {
            channels: 2,
            ring_size: 32,
            faults,
            ..IoatConfig::default()
        },
        1024,
    );
    assert_in_order_once(&order);
    assert_eq!(p.engine().health(), Health::Failed);
    let engine_copies = order
        .iter()
        .filter(|(_, by)| *by == CopiedBy::Engine)
        .count();
    assert_eq!(
        engine_copies, 12,
        "exactly the descriptors the channels processed before failing"
    );
}

#[test]
fn descriptor_error_is_copied_again_by_cpu() {
    let faults = vec![ChannelFaults {
        error_at: Some(10),
        ..ChannelFaults::default()
    }];
    let (p, _, order) = run(
        IoatConfig {
            channels: 1,
            ring_size: 64,
            faults,
            ..IoatConfig::default()
        },
        1024,
    );
    assert_in_order_once(&order);
    assert_eq!(p.stats().errors_to_cpu, 1);
}

#[test]
fn calibration_reports_every_size_and_a_threshold() {
    let target = Arc::new(VecTarget::new(BASE, 1 << 20));
    let mut engine: IoatModel<Vec<u8>> =
        IoatModel::start(Arc::clone(&target), &IoatConfig::default()).unwrap();
    let sizes = [64, 1024, 65536];
    let cal = calibrate(&target, &mut engine, BASE, &sizes, 3);
    assert_eq!(cal.points.iter().map(|p| p.size).collect::<Vec<_>>(), sizes);
    assert!(
        cal.points
            .iter()
            .all(|p| p.cpu_ns > 0.0 && p.engine_ns > 0.0)
    );
    assert!(cal.threshold == usize::MAX || sizes.contains(&cal.threshold));
    assert_eq!(engine.outstanding(), 0);
}
