//! The copy fallback: a virtual copy-accelerator layer that keeps engine drivers apart from
//! placement logic.
//!
//! - [`CopyTarget`]: the memory copies write into (a `Vec` here; the UMEM in the receiver);
//! - [`CopyEngine`]: non-blocking submit that may refuse, poll for completions, health;
//! - backends: [`cpu::CpuEngine`] (synchronous memcpy) and [`ioat::IoatModel`] (a software
//!   model of an I/OAT-class DMA device: worker threads over bounded descriptor rings, with
//!   fault injection). A hardware backend (e.g. Intel DSA work queues) implements the same
//!   trait;
//! - [`decider::Decider`]: CPU or engine by copy size, calibrated on this host;
//! - [`pipeline::CopyPipeline`]: submit → poll → post-copy, delivering completions in
//!   submission order, with fault tolerance.

pub mod cpu;
pub mod decider;
pub mod error;
pub mod ioat;
pub mod pipeline;

use std::sync::Mutex;

pub use crate::error::{Error, Result};

/// Memory that copies write into, addressed like the placement engine's addresses.
pub trait CopyTarget: Send + Sync + 'static {
    /// Writes `src` at `addr`.
    ///
    /// # Errors
    /// [`Error::CopyOutOfRange`] when `addr..addr+len` is not inside the target.
    fn write(&self, addr: u64, src: &[u8]) -> Result<()>;
}

/// A copy target in ordinary memory: addresses `base..base+len`.
#[derive(Debug)]
pub struct VecTarget {
    base: u64,
    mem: Mutex<Vec<u8>>,
}

impl VecTarget {
    /// `len` zeroed bytes at addresses from `base`.
    pub fn new(base: u64, len: usize) -> Self {
        Self {
            base,
            mem: Mutex::new(vec![0; len]),
        }
    }

    fn range(&self, addr: u64, len: usize, mem_len: usize) -> Result<core::ops::Range<usize>> {
        let out = Error::CopyOutOfRange { addr, len };
        let start = usize::try_from(addr.checked_sub(self.base).ok_or(out.clone())?)
            .map_err(|_| out.clone())?;
        let end = start
            .checked_add(len)
            .filter(|e| *e <= mem_len)
            .ok_or(out)?;
        Ok(start..end)
    }

    /// A copy of `len` bytes at `addr`.
    ///
    /// # Errors
    /// [`Error::CopyOutOfRange`].
    pub fn read(&self, addr: u64, len: usize) -> Result<Vec<u8>> {
        let mem = self.mem.lock().unwrap_or_else(|e| e.into_inner());
        let r = self.range(addr, len, mem.len())?;
        Ok(mem[r].to_vec())
    }
}

impl CopyTarget for VecTarget {
    fn write(&self, addr: u64, src: &[u8]) -> Result<()> {
        let mut mem = self.mem.lock().unwrap_or_else(|e| e.into_inner());
        let r = self.range(addr, src.len(), mem.len())?;
        mem[r].copy_from_slice(src);
        Ok(())
    }
}

/// One copy: write `src` at `dst`.
#[derive(Debug)]
pub struct Descriptor<B> {
    /// Pipeline-assigned id, increasing in submission order.
    pub id: u64,
    /// Destination address.
    pub dst: u64,
    /// Source buffer; handed back on completion so it can be released.
    pub src: B,
}

/// A finished (or failed) copy.
#[derive(Debug)]
pub struct Completion<B> {
    /// The descriptor, with its source buffer.
    pub descriptor: Descriptor<B>,
    /// Ok, or why the copy did not happen (the caller must copy it another way).
    pub result: Result<()>,
}

/// Why an engine refused a descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefuseReason {
    /// Every healthy channel's ring is full (transient).
    QueueFull,
    /// No healthy channel is left.
    NoHealthyChannel,
}

/// A refused descriptor, handed back.
#[derive(Debug)]
pub struct Refused<B> {
    /// The descriptor.
    pub descriptor: Descriptor<B>,
    /// Why.
    pub reason: RefuseReason,
}

/// An engine's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Every channel works.
    Healthy,
    /// Some channels failed.
    Degraded {
        /// Working channels.
        healthy: usize,
        /// All channels.
        channels: usize,
    },
    /// No channel works.
    Failed,
}

/// A copy engine. Submit never blocks; completions are collected by polling.
pub trait CopyEngine<B> {
    /// Queues a copy, or hands it back when it cannot take it now.
    ///
    /// # Errors
    /// [`Refused`] with the descriptor.
    fn submit(&mut self, descriptor: Descriptor<B>) -> core::result::Result<(), Refused<B>>;
    /// Moves finished copies into `out`; returns how many were added.
    fn poll(&mut self, out: &mut Vec<Completion<B>>) -> usize;
    /// Health.
    fn health(&self) -> Health;
    /// Descriptors submitted and not yet returned by `poll`.
    fn outstanding(&self) -> usize;
    /// Per channel: what it copied, refused and failed, its queue depth and copy latency
    /// (none for engines without channels).
    fn channel_stats(&self) -> Vec<ChannelStats> {
        Vec::new()
    }
}

/// One engine channel's counts over a run.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelStats {
    /// Copies completed without error.
    pub copies: u64,
    /// Bytes of those copies.
    pub bytes: u64,
    /// Submissions this channel refused (ring full, or an injected refusal).
    pub refusals: u64,
    /// Descriptors that failed here: completed with an error, or left on the channel
    /// when it failed and taken by no other channel (back to the CPU).
    pub failures: u64,
    /// Whether the channel still works.
    pub healthy: bool,
    /// Most descriptors queued on it at once.
    pub max_depth: u64,
    /// Descriptors queued on it at the end.
    pub depth: u64,
    /// Submission to completion, nanoseconds: median, 99th and 99.9th percentile, max
    /// (0 when it copied nothing).
    pub latency_ns: LatencySummary,
}

/// Percentiles of a latency histogram.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LatencySummary {
    /// 50th percentile.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
    /// Samples.
    pub count: u64,
}
