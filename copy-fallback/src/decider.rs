//! CPU or engine, by copy size. The threshold is calibrated at start-up by timing both on
//! this host (a patent on I/OAT placement measured a ~1 KB crossover; Linux's NET_DMA used
//! 4 KB) and can be overridden.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Completion, CopyEngine, CopyTarget, Descriptor};

/// Copies of at least `threshold` bytes go to the engine; smaller ones to the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decider {
    /// Smallest copy that goes to the engine.
    pub threshold: usize,
}

impl Decider {
    /// Never use the engine.
    pub const CPU_ONLY: Decider = Decider {
        threshold: usize::MAX,
    };

    /// Engine for copies of `threshold` bytes or more.
    pub const fn fixed(threshold: usize) -> Self {
        Self { threshold }
    }

    /// True when a copy of `len` bytes should go to the engine.
    pub fn use_engine(&self, len: usize) -> bool {
        len >= self.threshold
    }
}

/// One calibration size: what a copy costs the calling thread each way (median of runs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CalibrationPoint {
    /// Copy size in bytes.
    pub size: usize,
    /// Nanoseconds per copy by the CPU.
    pub cpu_ns: f64,
    /// Nanoseconds the calling thread spends per copy handed to the engine (submit + poll;
    /// the copy itself runs on the engine's thread).
    pub engine_ns: f64,
}

/// The outcome of calibration, for the report.
#[derive(Debug, Clone, PartialEq)]
pub struct Calibration {
    /// Per size.
    pub points: Vec<CalibrationPoint>,
    /// The chosen threshold: the smallest size from which the engine costs the calling
    /// thread less than copying (usize::MAX when it never does).
    pub threshold: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Times CPU copies and engine hand-offs of each size in `sizes` (ascending) into `dst` of
/// `target`, `rounds` times each, and picks the crossover.
pub fn calibrate<T: CopyTarget, E: CopyEngine<Vec<u8>>>(
    target: &Arc<T>,
    engine: &mut E,
    dst: u64,
    sizes: &[usize],
    rounds: usize,
) -> Calibration {
    let mut points = Vec::with_capacity(sizes.len());
    let batch = 32;
    let mut done: Vec<Completion<Vec<u8>>> = Vec::with_capacity(batch);
    for &size in sizes {
        let mut bufs: Vec<Vec<u8>> = (0u8..=u8::MAX)
            .cycle()
            .take(batch)
            .map(|b| vec![b; size])
            .collect();
        let (mut cpu, mut eng) = (Vec::new(), Vec::new());
        for _ in 0..rounds.max(1) {
            let t = Instant::now();
            for b in &bufs {
                let _ = target.write(dst, b);
            }
            cpu.push(t.elapsed().as_nanos() as f64 / batch as f64);

            let mut spent = Duration::ZERO;
            let mut sent = 0;
            for (i, b) in bufs.drain(..).enumerate() {
                let t = Instant::now();
                if engine
                    .submit(Descriptor {
                        id: i as u64,
                        dst,
                        src: b,
                    })
                    .is_ok()
                {
                    sent += 1;
                }
                spent += t.elapsed();
            }
            while done.len() < sent {
                let t = Instant::now();
                engine.poll(&mut done);
                spent += t.elapsed();
                std::thread::yield_now();
            }
            eng.push(spent.as_nanos() as f64 / batch as f64);
            bufs.extend(done.drain(..).map(|c| c.descriptor.src));
            bufs.resize_with(batch, || vec![0; size]);
        }
        points.push(CalibrationPoint {
            size,
            cpu_ns: median(cpu),
            engine_ns: median(eng),
        });
    }
    let threshold = points
        .iter()
        .find(|p| p.engine_ns < p.cpu_ns)
        .map_or(usize::MAX, |p| p.size);
    Calibration { points, threshold }
}
