//! The asynchronous copy pipeline: submit (decide, enqueue, keep pending) → poll (reap) →
//! post-copy (deliver, in submission order, so the caller marks byte ranges complete and
//! releases the source buffer).
//!
//! Completions reach the caller in submission order even when a small CPU copy finishes
//! before a large engine copy (DPDK's vhost dropped its size threshold because of exactly
//! this reordering). Fault handling: engine queue full → the CPU copies it; a descriptor
//! that completes with an error, or that no healthy channel takes after a channel failure,
//! → the CPU copies it. Nothing is lost, duplicated or written elsewhere.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::decider::Decider;
use super::{Completion, CopyEngine, CopyTarget, Descriptor};
use crate::error::Result;

/// Who performed a copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopiedBy {
    /// The calling thread.
    Cpu,
    /// The copy engine.
    Engine,
}

/// A finished copy, in submission order.
#[derive(Debug)]
pub struct Delivered<B, Tag> {
    /// The caller's tag (e.g. grant and range).
    pub tag: Tag,
    /// The source buffer, to release.
    pub src: B,
    /// Who copied it.
    pub by: CopiedBy,
}

enum State<B> {
    InEngine,
    Done(B, CopiedBy),
}

struct Pending<B, Tag> {
    tag: Tag,
    state: State<B>,
}

/// Fault-handling counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PipelineStats {
    /// Copies the decider sent to the engine and the engine took.
    pub engine_submitted: u64,
    /// Engine refusals (queue full, no healthy channel) copied by the CPU instead.
    pub refused_to_cpu: u64,
    /// Engine completions with an error, copied again by the CPU.
    pub errors_to_cpu: u64,
}

/// Copies into `T` through engine `E`, delivering in submission order.
pub struct CopyPipeline<T, E, B, Tag> {
    target: Arc<T>,
    engine: E,
    decider: Decider,
    pending: VecDeque<Pending<B, Tag>>,
    front_id: u64,
    completions: Vec<Completion<B>>,
    stats: PipelineStats,
}

impl<T: CopyTarget, E: CopyEngine<B>, B: AsRef<[u8]>, Tag> CopyPipeline<T, E, B, Tag> {
    /// A pipeline over `engine`, choosing by `decider`.
    pub fn new(target: Arc<T>, engine: E, decider: Decider) -> Self {
        Self {
            target,
            engine,
            decider,
            pending: VecDeque::new(),
            front_id: 0,
            completions: Vec::new(),
            stats: PipelineStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> PipelineStats {
        self.stats
    }

    /// The engine.
    pub fn engine(&self) -> &E {
        &self.engine
    }

    /// The decider.
    pub fn decider(&self) -> Decider {
        self.decider
    }

    /// Copies submitted and not yet delivered.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Submits a copy of `src` to `dst`.
    ///
    /// # Errors
    /// The target's error when a CPU copy falls outside it (nothing is written then).
    pub fn submit(&mut self, dst: u64, src: B, tag: Tag) -> Result<()> {
        let id = self.front_id + self.pending.len() as u64;
        let src = if self.decider.use_engine(src.as_ref().len()) {
            match self.engine.submit(Descriptor { id, dst, src }) {
                Ok(()) => {
                    self.stats.engine_submitted += 1;
                    self.pending.push_back(Pending {
                        tag,
                        state: State::InEngine,
                    });
                    return Ok(());
                }
                Err(refused) => {
                    self.stats.refused_to_cpu += 1;
                    refused.descriptor.src
                }
            }
        } else {
            src
        };
        self.target.write(dst, src.as_ref())?;
        self.pending.push_back(Pending {
            tag,
            state: State::Done(src, CopiedBy::Cpu),
        });
        Ok(())
    }

    /// Reaps engine completions and appends every copy now deliverable in submission order
    /// to `out`. Returns how many were delivered.
    ///
    /// # Errors
    /// The target's error when a CPU re-copy falls outside it.
    pub fn poll(&mut self, out: &mut Vec<Delivered<B, Tag>>) -> Result<usize> {
        self.engine.poll(&mut self.completions);
        for c in self.completions.drain(..) {
            let Descriptor { id, dst, src } = c.descriptor;
            let by = match c.result {
                Ok(()) => CopiedBy::Engine,
                Err(_) => {
                    self.stats.errors_to_cpu += 1;
                    self.target.write(dst, src.as_ref())?;
                    CopiedBy::Cpu
                }
            };
            let index = id
                .checked_sub(self.front_id)
                .and_then(|i| usize::try_from(i).ok());
            if let Some(p) = index.and_then(|i| self.pending.get_mut(i)) {
                p.state = State::Done(src, by);
            }
        }
        let before = out.len();
        while matches!(
            self.pending.front(),
            Some(Pending {
                state: State::Done(..),
                ..
            })
        ) {
            if let Some(Pending {
                tag,
                state: State::Done(src, by),
            }) = self.pending.pop_front()
            {
                out.push(Delivered { tag, src, by });
            }
            self.front_id += 1;
        }
        Ok(out.len() - before)
    }

    /// Polls until everything submitted is delivered, or `timeout` passes.
    ///
    /// # Errors
    /// As [`CopyPipeline::poll`].
    pub fn drain(&mut self, out: &mut Vec<Delivered<B, Tag>>, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        while !self.pending.is_empty() {
            self.poll(out)?;
            if Instant::now() > deadline {
                return Ok(false);
            }
            std::thread::yield_now();
        }
        Ok(true)
    }
}
