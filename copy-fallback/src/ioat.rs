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

use super::{Completion, CopyEngine, CopyTarget, Descriptor, Health, RefuseReason, Refused};
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

enum FromWorker<B> {
    Done(Completion<B>),
    /// The channel failed; these descriptors were not copied.
    Failed(usize, Vec<Descriptor<B>>),
}

struct Channel<B> {
    ring: Option<SyncSender<Descriptor<B>>>,
    healthy: Arc<AtomicBool>,
    worker: Option<JoinHandle<()>>,
    submissions: u64,
    refuse_every: Option<u64>,
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
    ring: Receiver<Descriptor<B>>,
    out: Sender<FromWorker<B>>,
    healthy: Arc<AtomicBool>,
    faults: ChannelFaults,
) {
    let mut processed = 0u64;
    while let Ok(d) = ring.recv() {
        if !healthy.load(Ordering::Acquire) || faults.fail_after == Some(processed) {
            healthy.store(false, Ordering::Release);
            let mut batch = vec![d];
            batch.extend(ring.try_iter());
            if out.send(FromWorker::Failed(index, batch)).is_err() {
                return;
            }
            continue;
        }
        let mut result = target.write(d.dst, d.src.as_ref());
        if faults.error_at == Some(processed) {
            result = Err(Error::DescriptorError(d.id));
        }
        processed += 1;
        if out
            .send(FromWorker::Done(Completion {
                descriptor: d,
                result,
            }))
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
                continue;
            }
            let Some(ring) = &ch.ring else { continue };
            match ring.try_send(d) {
                Ok(()) => {
                    self.next = (i + 1) % n;
                    return Ok(());
                }
                Err(TrySendError::Full(back)) => d = back,
                Err(TrySendError::Disconnected(back)) => {
                    ch.healthy.store(false, Ordering::Release);
                    d = back;
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
                Ok(FromWorker::Done(c)) => {
                    self.outstanding -= 1;
                    out.push(c);
                }
                Ok(FromWorker::Failed(channel, batch)) => {
                    self.channels[channel]
                        .healthy
                        .store(false, Ordering::Release);
                    // Move the failed channel's descriptors, as one batch, to healthy channels;
                    // what no channel takes goes back to the caller to copy on the CPU.
                    for d in batch {
                        match self.place(d) {
                            Ok(()) => self.rerouted += 1,
                            Err(refused) => {
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
