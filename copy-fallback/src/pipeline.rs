//! The asynchronous copy pipeline: submit (decide, enqueue, keep pending) → poll (reap) →
//! post-copy (deliver, in submission order, so the caller marks byte ranges complete and
//! releases the source buffer).
//!
//! Ordering rules (docs/design.md, "Copy ordering"):
//! 1. **A source stays owned until its copy has executed.** The pipeline (or the engine's
//!    descriptor) holds the buffer until the copy is delivered; the caller gets it back, and
//!    may reuse it, only then.
//! 2. **Copies to overlapping destinations take effect in submission order**, whichever
//!    backend runs them: a copy whose destination overlaps an earlier copy that has not
//!    executed yet (queued on an engine channel, or itself waiting) is held back, and runs
//!    (on the engine or the CPU) only when every earlier overlapping copy has executed. So
//!    a copy refused by a full engine ring cannot overtake a queued one, two channels cannot
//!    reorder two copies to the same bytes, and the CPU re-copy of a failed descriptor
//!    cannot undo a later copy.
//! 3. **Bytes count as arrived only after their copy executed**: deliveries come in
//!    submission order and only for executed copies (DPDK's vhost dropped its size threshold
//!    because small CPU copies overtook large engine copies).
//!
//! Fault handling: engine queue full → the CPU copies it; a descriptor that completes with
//! an error, or that no healthy channel takes after a channel failure, → the CPU copies it.
//! Nothing is lost, duplicated or written elsewhere.

use std::collections::{BTreeMap, VecDeque};
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
    /// Nobody: the target refused the write (outside it), so nothing was written and the
    /// bytes did not arrive.
    Failed,
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
    /// Held back: an earlier copy to overlapping bytes has not executed yet.
    Waiting(B),
    /// Queued on the engine.
    InEngine,
    /// Executed (or failed for good); waiting for its turn to be delivered.
    Done(B, CopiedBy),
}

struct Pending<B, Tag> {
    tag: Tag,
    dst: u64,
    len: u64,
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
    /// Copies held back behind an earlier copy to overlapping bytes (rule 2).
    pub held_for_order: u64,
}

/// Copies into `T` through engine `E`, delivering in submission order.
pub struct CopyPipeline<T, E, B, Tag> {
    target: Arc<T>,
    engine: E,
    decider: Decider,
    pending: VecDeque<Pending<B, Tag>>,
    front_id: u64,
    /// Copies not executed yet (waiting or on the engine), by (destination, id) → end.
    unexecuted: BTreeMap<(u64, u64), u64>,
    /// Copies in `Waiting`.
    waiting: usize,
    /// Longest copy submitted so far (bounds the overlap search).
    longest: u64,
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
            unexecuted: BTreeMap::new(),
            waiting: 0,
            longest: 0,
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

    /// The engine, mutably (to drive a test engine, or to inject faults).
    pub fn engine_mut(&mut self) -> &mut E {
        &mut self.engine
    }

    /// The decider.
    pub fn decider(&self) -> Decider {
        self.decider
    }

    /// Copies submitted and not yet delivered.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// True when a copy submitted before `id` and not executed yet overlaps
    /// `dst..dst+len`.
    fn blocked(&self, id: u64, dst: u64, len: u64) -> bool {
        let from = dst.saturating_sub(self.longest);
        let end = dst.saturating_add(len);
        self.unexecuted
            .range((from, 0)..(end, 0))
            .any(|(&(_, other), &other_end)| other < id && other_end > dst)
    }

    /// Submits a copy of `src` to `dst`.
    ///
    /// # Errors
    /// The target's error when a CPU copy falls outside it (nothing is written then).
    pub fn submit(&mut self, dst: u64, src: B, tag: Tag) -> Result<()> {
        let id = self.front_id + self.pending.len() as u64;
        let len = src.as_ref().len() as u64;
        self.longest = self.longest.max(len);
        if self.blocked(id, dst, len) {
            self.stats.held_for_order += 1;
            self.unexecuted.insert((dst, id), dst.saturating_add(len));
            self.waiting += 1;
            self.pending.push_back(Pending {
                tag,
                dst,
                len,
                state: State::Waiting(src),
            });
            return Ok(());
        }
        let state = match self.dispatch(id, dst, len, src) {
            Ok(state) => state,
            Err((e, _src)) => return Err(e),
        };
        self.pending.push_back(Pending {
            tag,
            dst,
            len,
            state,
        });
        Ok(())
    }

    /// Runs copy `id` now: on the engine when the decider says so and the engine takes
    /// it, else on the CPU. Hands the source back with the target's error when a CPU copy
    /// falls outside the target.
    fn dispatch(
        &mut self,
        id: u64,
        dst: u64,
        len: u64,
        src: B,
    ) -> core::result::Result<State<B>, (crate::error::Error, B)> {
        let src = if self.decider.use_engine(src.as_ref().len()) {
            match self.engine.submit(Descriptor { id, dst, src }) {
                Ok(()) => {
                    self.stats.engine_submitted += 1;
                    self.unexecuted.insert((dst, id), dst.saturating_add(len));
                    return Ok(State::InEngine);
                }
                Err(refused) => {
                    self.stats.refused_to_cpu += 1;
                    refused.descriptor.src
                }
            }
        } else {
            src
        };
        match self.target.write(dst, src.as_ref()) {
            Ok(()) => Ok(State::Done(src, CopiedBy::Cpu)),
            Err(e) => Err((e, src)),
        }
    }

    fn index_of(&self, id: u64) -> Option<usize> {
        id.checked_sub(self.front_id)
            .and_then(|i| usize::try_from(i).ok())
    }

    /// Reaps engine completions and appends every copy now deliverable in submission order
    /// to `out`. Returns how many were delivered.
    ///
    /// # Errors
    /// The target's error when a CPU re-copy falls outside it.
    pub fn poll(&mut self, out: &mut Vec<Delivered<B, Tag>>) -> Result<usize> {
        self.engine.poll(&mut self.completions);
        let mut completions = std::mem::take(&mut self.completions);
        for c in completions.drain(..) {
            self.reap(c);
        }
        self.completions = completions;
        if self.waiting > 0 {
            self.release_waiting();
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
                ..
            }) = self.pending.pop_front()
            {
                out.push(Delivered { tag, src, by });
            }
            self.front_id += 1;
        }
        Ok(out.len() - before)
    }

    /// Records one engine completion; a failed descriptor is copied again by the CPU (no
    /// later overlapping copy has executed: rule 2 held them back).
    fn reap(&mut self, c: Completion<B>) {
        let Descriptor { id, dst, src } = c.descriptor;
        // Only a copy this pipeline put on the engine, to this destination, completes here;
        // anything else (a duplicate or bogus completion) is ignored and its buffer dropped.
        let on_engine = self
            .index_of(id)
            .and_then(|i| self.pending.get(i))
            .is_some_and(|p| matches!(p.state, State::InEngine) && p.dst == dst);
        if !on_engine {
            return;
        }
        let by = match c.result {
            Ok(()) => CopiedBy::Engine,
            Err(_) => {
                self.stats.errors_to_cpu += 1;
                if self.target.write(dst, src.as_ref()).is_ok() {
                    CopiedBy::Cpu
                } else {
                    CopiedBy::Failed
                }
            }
        };
        self.unexecuted.remove(&(dst, id));
        if let Some(p) = self.index_of(id).and_then(|i| self.pending.get_mut(i)) {
            p.state = State::Done(src, by);
        }
    }

    /// Runs, in submission order, every waiting copy that no earlier unexecuted copy
    /// overlaps any more.
    fn release_waiting(&mut self) {
        for i in 0..self.pending.len() {
            if self.waiting == 0 {
                break;
            }
            let (dst, len) = match &self.pending[i] {
                Pending {
                    state: State::Waiting(_),
                    dst,
                    len,
                    ..
                } => (*dst, *len),
                _ => continue,
            };
            let id = self.front_id + i as u64;
            if self.blocked(id, dst, len) {
                continue;
            }
            let State::Waiting(src) =
                std::mem::replace(&mut self.pending[i].state, State::InEngine)
            else {
                continue;
            };
            self.waiting -= 1;
            self.unexecuted.remove(&(dst, id));
            self.pending[i].state = match self.dispatch(id, dst, len, src) {
                Ok(state) => state,
                Err((_, src)) => State::Done(src, CopiedBy::Failed),
            };
        }
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
