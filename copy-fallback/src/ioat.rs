//! A software model of an I/OAT-class DMA copy device: one worker thread per channel (each
//! optionally pinned to a core) consuming a bounded descriptor ring and posting completions
//! asynchronously. No I/OAT or DSA hardware exists on the test hosts.
//!
//! Fault injection per channel: transient queue-full refusals, a channel that fails for good
//! after N descriptors (its outstanding descriptors then move, in one batch, to a healthy
//! channel), and a descriptor that completes with an error.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{
    Receiver, Sender, SyncSender, TryRecvError, TrySendError, channel, sync_channel,
};
use std::thread::JoinHandle;

use std::time::Instant;

use hdrhistogram::Histogram;

use super::{
    ChannelStats, Completion, CopyEngine, CopyTarget, Descriptor, Health, LatencySummary,
    RefuseReason, Refused,
};
use crate::error::{Error, Result};

/// Faults to inject into one channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelFaults {
    /// Refuse every Nth submission as if the ring were full (transient).
    pub refuse_every: Option<u64>,
    /// Fail for good after processing this many descriptors.
    pub fail_after: Option<u64>,
    /// Complete the Nth descriptor this channel processes (0-based) with an error.
    pub error_at: Option<u64>,
}

/// Configuration of the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoatConfig {
    /// Number of channels (worker threads).
    pub channels: usize,
    /// Descriptor ring entries per channel.
    pub ring_size: usize,
    /// Core to pin channel i's worker to (`pin_cores[i]`), if given.
    pub pin_cores: Vec<usize>,
    /// Faults per channel (`faults[i]`), if given.
    pub faults: Vec<ChannelFaults>,
}

impl Default for IoatConfig {
    fn default() -> Self {
        Self {
            channels: 1,
            ring_size: 256,
            pin_cores: Vec::new(),
            faults: Vec::new(),
        }
    }
}

/// A descriptor on a channel's ring, with when it was submitted.
struct Queued<B> {
    descriptor: Descriptor<B>,
    submitted: Instant,
}

enum FromWorker<B> {
    /// Done on channel `.0`, `.2` nanoseconds after submission.
    Done(usize, Completion<B>, u64),
    /// The channel failed; these descriptors were not copied.
    Failed(usize, Vec<Descriptor<B>>),
}

struct Channel<B> {
    ring: Option<SyncSender<Queued<B>>>,
    healthy: Arc<AtomicBool>,
    worker: Option<JoinHandle<()>>,
    submissions: u64,
    refuse_every: Option<u64>,
    /// Descriptors queued on it now.
    depth: u64,
    stats: ChannelCounts,
}

/// A channel's counts, kept on the submitting thread.
struct ChannelCounts {
    copies: u64,
    bytes: u64,
    refusals: u64,
    failures: u64,
    max_depth: u64,
    /// Nanoseconds from submission to completion (1 ns to 60 s, 3 significant digits).
    latency: Option<Histogram<u64>>,
}

impl ChannelCounts {
    fn new() -> Self {
        Self {
            copies: 0,
            bytes: 0,
            refusals: 0,
            failures: 0,
            max_depth: 0,
            latency: Histogram::new_with_bounds(1, 60_000_000_000, 3).ok(),
        }
    }

    fn summary(&self) -> LatencySummary {
        let Some(h) = &self.latency else {
            return LatencySummary::default();
        };
        if h.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            p50: h.value_at_quantile(0.5),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            count: h.len(),
        }
    }
}

/// The I/OAT-class engine model.
pub struct IoatModel<B> {
    channels: Vec<Channel<B>>,
    completions: Receiver<FromWorker<B>>,
    next: usize,
    outstanding: usize,
    /// Descriptors moved off failed channels so far.
    pub rerouted: u64,
}

impl<B> core::fmt::Debug for IoatModel<B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "IoatModel {{ channels: {}, outstanding: {} }}",
            self.channels.len(),
            self.outstanding
        )
    }
}

fn worker<T: CopyTarget, B: AsRef<[u8]>>(
    index: usize,
    target: Arc<T>,
    ring: Receiver<Queued<B>>,
    out: Sender<FromWorker<B>>,
    healthy: Arc<AtomicBool>,
    faults: ChannelFaults,
) {
    let mut processed = 0u64;
    while let Ok(q) = ring.recv() {
        if !healthy.load(Ordering::Acquire) || faults.fail_after == Some(processed) {
            healthy.store(false, Ordering::Release);
            let mut batch = vec![q.descriptor];
            batch.extend(ring.try_iter().map(|q| q.descriptor));
            if out.send(FromWorker::Failed(index, batch)).is_err() {
                return;
            }
            continue;
        }
        let d = q.descriptor;
        let mut result = target.write(d.dst, d.src.as_ref());
        if faults.error_at == Some(processed) {
            result = Err(Error::DescriptorError(d.id));
        }
        processed += 1;
        let latency = u64::try_from(q.submitted.elapsed().as_nanos()).unwrap_or(u64::MAX);
        if out
            .send(FromWorker::Done(
                index,
                Completion {
                    descriptor: d,
                    result,
                },
                latency,
            ))
            .is_err()
        {
            return;
        }
    }
}

impl<B: AsRef<[u8]> + Send + 'static> IoatModel<B> {
    /// Starts the channels' worker threads, writing into `target`.
    ///
    /// # Errors
    /// [`Error::EngineStart`] when a thread cannot be spawned.
    pub fn start<T: CopyTarget>(target: Arc<T>, config: &IoatConfig) -> Result<Self> {
        let (done_tx, completions) = channel();
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let mut channels = Vec::with_capacity(config.channels);
        for i in 0..config.channels.max(1) {
            let (ring_tx, ring_rx) = sync_channel(config.ring_size.max(1));
            let healthy = Arc::new(AtomicBool::new(true));
            let faults = config.faults.get(i).copied().unwrap_or_default();
            let core = config
                .pin_cores
                .get(i)
                .and_then(|c| cores.iter().find(|id| id.id == *c).copied());
            let (target, done_tx, flag) =
                (Arc::clone(&target), done_tx.clone(), Arc::clone(&healthy));
            let handle = std::thread::Builder::new()
                .name(format!("ioat-ch{i}"))
                .spawn(move || {
                    if let Some(core) = core {
                        core_affinity::set_for_current(core);
                    }
                    worker(i, target, ring_rx, done_tx, flag, faults);
                })
                .map_err(|e| Error::EngineStart(e.to_string()))?;
            channels.push(Channel {
                ring: Some(ring_tx),
                healthy,
                worker: Some(handle),
                submissions: 0,
                refuse_every: faults.refuse_every,
                depth: 0,
                stats: ChannelCounts::new(),
            });
        }
        Ok(Self {
            channels,
            completions,
            next: 0,
            outstanding: 0,
            rerouted: 0,
        })
    }

    fn healthy_count(&self) -> usize {
        self.channels
            .iter()
            .filter(|c| c.healthy.load(Ordering::Acquire))
            .count()
    }

    /// Tries each healthy channel once, round robin.
    fn place(&mut self, mut d: Descriptor<B>) -> core::result::Result<(), Refused<B>> {
        let n = self.channels.len();
        let mut saw_healthy = false;
        for step in 0..n {
            let i = (self.next + step) % n;
            let ch = &mut self.channels[i];
            if !ch.healthy.load(Ordering::Acquire) {
                continue;
            }
            saw_healthy = true;
            ch.submissions += 1;
            if ch
                .refuse_every
                .is_some_and(|k| k > 0 && ch.submissions.is_multiple_of(k))
            {
                ch.stats.refusals += 1;
                continue;
            }
            let Some(ring) = &ch.ring else { continue };
            let queued = Queued {
                descriptor: d,
                submitted: Instant::now(),
            };
            match ring.try_send(queued) {
                Ok(()) => {
                    ch.depth += 1;
                    ch.stats.max_depth = ch.stats.max_depth.max(ch.depth);
                    self.next = (i + 1) % n;
                    return Ok(());
                }
                Err(TrySendError::Full(back)) => {
                    ch.stats.refusals += 1;
                    d = back.descriptor;
                }
                Err(TrySendError::Disconnected(back)) => {
                    ch.healthy.store(false, Ordering::Release);
                    d = back.descriptor;
                }
            }
        }
        let reason = if saw_healthy {
            RefuseReason::QueueFull
        } else {
            RefuseReason::NoHealthyChannel
        };
        Err(Refused {
            descriptor: d,
            reason,
        })
    }
}

impl<B: AsRef<[u8]> + Send + 'static> CopyEngine<B> for IoatModel<B> {
    fn submit(&mut self, descriptor: Descriptor<B>) -> core::result::Result<(), Refused<B>> {
        self.place(descriptor)?;
        self.outstanding += 1;
        Ok(())
    }

    fn poll(&mut self, out: &mut Vec<Completion<B>>) -> usize {
        let before = out.len();
        loop {
            match self.completions.try_recv() {
                Ok(FromWorker::Done(channel, c, latency)) => {
                    self.outstanding -= 1;
                    if let Some(ch) = self.channels.get_mut(channel) {
                        ch.depth = ch.depth.saturating_sub(1);
                        if c.result.is_ok() {
                            ch.stats.copies += 1;
                            ch.stats.bytes += c.descriptor.src.as_ref().len() as u64;
                            if let Some(h) = &mut ch.stats.latency {
                                let _ = h.record(latency.max(1));
                            }
                        } else {
                            ch.stats.failures += 1;
                        }
                    }
                    out.push(c);
                }
                Ok(FromWorker::Failed(channel, batch)) => {
                    if let Some(ch) = self.channels.get_mut(channel) {
                        ch.healthy.store(false, Ordering::Release);
                        ch.depth = ch.depth.saturating_sub(batch.len() as u64);
                    }
                    // Move the failed channel's descriptors, as one batch, to healthy channels;
                    // what no channel takes goes back to the caller to copy on the CPU.
                    for d in batch {
                        match self.place(d) {
                            Ok(()) => self.rerouted += 1,
                            Err(refused) => {
                                // Moved nowhere: it failed here (the caller copies it).
                                if let Some(ch) = self.channels.get_mut(channel) {
                                    ch.stats.failures += 1;
                                }
                                self.outstanding -= 1;
                                out.push(Completion {
                                    descriptor: refused.descriptor,
                                    result: Err(Error::ChannelFailed(channel)),
                                });
                            }
                        }
                    }
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        out.len() - before
    }

    fn health(&self) -> Health {
        match self.healthy_count() {
            0 => Health::Failed,
            h if h == self.channels.len() => Health::Healthy,
            healthy => Health::Degraded {
                healthy,
                channels: self.channels.len(),
            },
        }
    }

    fn outstanding(&self) -> usize {
        self.outstanding
    }

    fn channel_stats(&self) -> Vec<ChannelStats> {
        self.channels
            .iter()
            .map(|ch| ChannelStats {
                copies: ch.stats.copies,
                bytes: ch.stats.bytes,
                refusals: ch.stats.refusals,
                failures: ch.stats.failures,
                healthy: ch.healthy.load(Ordering::Acquire),
                max_depth: ch.stats.max_depth,
                depth: ch.depth,
                latency_ns: ch.stats.summary(),
            })
            .collect()
    }
}

impl<B> Drop for IoatModel<B> {
    fn drop(&mut self) {
        for ch in &mut self.channels {
            ch.ring = None; // closes the ring; the worker's recv ends
        }
        for ch in &mut self.channels {
            if let Some(h) = ch.worker.take() {
                let _ = h.join();
            }
        }
    }
}

#[cfg(test)]
mod stats_tests {
    use super::*;
    use crate::VecTarget;

    /// Per-channel counts: copies and bytes with one latency sample each, injected
    /// refusals, and a failed channel's descriptors.
    #[test]
    fn channels_count_copies_refusals_failures_and_latency() {
        let target = Arc::new(VecTarget::new(0, 1 << 20));
        let config = IoatConfig {
            channels: 2,
            ring_size: 64,
            pin_cores: Vec::new(),
            faults: vec![
                ChannelFaults {
                    fail_after: Some(5),
                    ..ChannelFaults::default()
                },
                ChannelFaults {
                    refuse_every: Some(3),
                    ..ChannelFaults::default()
                },
            ],
        };
        let mut engine = IoatModel::start(target, &config).unwrap();
        let mut done = Vec::new();
        let mut submitted = 0;
        for id in 0..40u64 {
            let d = Descriptor {
                id,
                dst: id * 100,
                src: vec![1u8; 100],
            };
            if engine.submit(d).is_ok() {
                submitted += 1;
            }
            engine.poll(&mut done);
        }
        let start = std::time::Instant::now();
        while done.len() < submitted && start.elapsed() < std::time::Duration::from_secs(5) {
            engine.poll(&mut done);
            std::thread::yield_now();
        }
        let stats = engine.channel_stats();
        assert_eq!(stats.len(), 2);
        let ok = done.iter().filter(|c| c.result.is_ok()).count() as u64;
        assert_eq!(stats[0].copies + stats[1].copies, ok);
        assert_eq!(stats[0].bytes + stats[1].bytes, ok * 100);
        assert_eq!(stats[0].copies, 5, "{stats:?}");
        // What was left on it when it failed moved to channel 1 or back to the CPU.
        assert!(!stats[0].healthy, "{stats:?}");
        assert!(engine.rerouted + stats[0].failures > 0, "{stats:?}");
        assert!(stats[1].refusals > 0, "{stats:?}");
        for s in &stats {
            assert_eq!(s.latency_ns.count, s.copies);
            assert!(s.latency_ns.p50 <= s.latency_ns.p999);
            assert_eq!(s.depth, 0);
        }
    }
}
