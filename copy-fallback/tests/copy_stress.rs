//! A deterministic stress test of the copy pipeline (no threads, no root): a scripted
//! multi-channel engine whose channels run their rings in an order the test chooses,
//! refuse submissions (queue full), complete descriptors with errors and fail for good,
//! while the sources come from a small frame pool whose frames are scribbled over and
//! handed out again the moment they are returned.
//!
//! Invariants:
//! - every destination byte ends equal to the data of the *last submitted* copy that
//!   covers it (copies to overlapping destinations take effect in submission order,
//!   whichever backend, fallback or re-copy ran them);
//! - no source frame is returned (and so reused) before its copy has been executed;
//! - every copy is delivered once, in submission order, and only after it was executed.

#![allow(
    clippy::cast_possible_truncation,
    reason = "test data: small numbers made into bytes"
)]

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use copy_fallback::Error;
use copy_fallback::decider::Decider;
use copy_fallback::pipeline::CopyPipeline;
use copy_fallback::{
    Completion, CopyEngine, CopyTarget, Descriptor, Health, RefuseReason, Refused,
};
use proptest::prelude::*;

const BASE: u64 = 0x10_0000;
/// Destination space: small, so that copies overlap often.
const SPACE: usize = 4096;
/// Frames in the source pool.
const POOL: usize = 12;

/// What happened, in order, as the test sees it.
#[derive(Debug, Default)]
struct Log {
    /// Submission numbers whose bytes were written into the target.
    executed: Vec<u64>,
    /// Frames returned to the pool, with the submission number they carried.
    returned: Vec<u64>,
}

/// The copy target: plain memory that records which submission each write came from
/// (the first 8 bytes of every source carry its submission number).
#[derive(Debug)]
struct Target {
    mem: Mutex<Vec<u8>>,
    log: Arc<Mutex<Log>>,
}

impl CopyTarget for Target {
    fn write(&self, addr: u64, src: &[u8]) -> copy_fallback::Result<()> {
        let out = Error::CopyOutOfRange {
            addr,
            len: src.len(),
        };
        let start =
            usize::try_from(addr.checked_sub(BASE).ok_or(out.clone())?).map_err(|_| out.clone())?;
        let mut mem = self.mem.lock().unwrap();
        let end = start
            .checked_add(src.len())
            .filter(|e| *e <= mem.len())
            .ok_or(out)?;
        mem[start..end].copy_from_slice(src);
        let seq = u64::from_le_bytes(src[..8].try_into().unwrap());
        self.log.lock().unwrap().executed.push(seq);
        Ok(())
    }
}

/// The frame pool: a returned frame is scribbled over at once and goes to the front of
/// the free list, so the very next submission reuses it.
#[derive(Debug)]
struct Pool {
    free: Vec<Vec<u8>>,
    log: Arc<Mutex<Log>>,
}

/// A source frame lent out of the pool; returned (and reused) when dropped.
#[derive(Debug)]
struct Frame {
    bytes: Vec<u8>,
    seq: u64,
    pool: Rc<RefCell<Pool>>,
}

impl AsRef<[u8]> for Frame {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Frame {
    fn drop(&mut self) {
        let mut bytes = std::mem::take(&mut self.bytes);
        bytes.fill(0xEE);
        let mut pool = self.pool.borrow_mut();
        pool.log.lock().unwrap().returned.push(self.seq);
        pool.free.push(bytes);
    }
}

/// One step of the script.
#[derive(Debug, Clone)]
enum Step {
    /// Submit a copy of `len` bytes to `at` (`len` ≥ 8: the submission number leads).
    Submit { at: usize, len: usize },
    /// Channel `ch` (mod channels) executes its oldest descriptor; `error` completes it
    /// with an error instead (nothing written).
    Run { ch: usize, error: bool },
    /// Channel `ch` fails for good: its descriptors come back uncopied.
    Fail { ch: usize },
    /// The caller polls the pipeline.
    Poll,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..SPACE / 8, 1..96usize).prop_map(|(a, l)| Step::Submit { at: a * 8, len: 8 + l * 8 }),
        4 => (0..4usize, prop::bool::weighted(0.1)).prop_map(|(ch, error)| Step::Run { ch, error }),
        1 => (0..4usize).prop_map(|ch| Step::Fail { ch }),
        2 => Just(Step::Poll),
    ]
}

/// A deterministic engine: `channels` rings of `ring` entries, run only when the script
/// says so; a submission goes to the next healthy channel with room, round robin, and
/// is refused (queue full) every `refuse_every`th time.
struct ScriptedEngine {
    target: Arc<Target>,
    rings: Vec<VecDeque<Descriptor<Frame>>>,
    healthy: Vec<bool>,
    ring: usize,
    next: usize,
    submissions: u64,
    refuse_every: u64,
    done: Vec<Completion<Frame>>,
}

impl ScriptedEngine {
    fn run(&mut self, ch: usize, error: bool) {
        let ch = ch % self.rings.len();
        let Some(d) = self.rings[ch].pop_front() else {
            return;
        };
        let result = if error {
            Err(Error::DescriptorError(d.id))
        } else {
            self.target.write(d.dst, d.src.as_ref())
        };
        self.done.push(Completion {
            descriptor: d,
            result,
        });
    }

    fn fail(&mut self, ch: usize) {
        let ch = ch % self.rings.len();
        self.healthy[ch] = false;
        for d in self.rings[ch].drain(..) {
            self.done.push(Completion {
                descriptor: d,
                result: Err(Error::ChannelFailed(ch)),
            });
        }
    }
}

impl CopyEngine<Frame> for ScriptedEngine {
    fn submit(&mut self, d: Descriptor<Frame>) -> Result<(), Refused<Frame>> {
        self.submissions += 1;
        let n = self.rings.len();
        let refuse = self.submissions.is_multiple_of(self.refuse_every);
        let mut saw_healthy = false;
        for step in 0..n {
            let ch = (self.next + step) % n;
            if !self.healthy[ch] {
                continue;
            }
            saw_healthy = true;
            if !refuse && self.rings[ch].len() < self.ring {
                self.rings[ch].push_back(d);
                self.next = (ch + 1) % n;
                return Ok(());
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

    fn poll(&mut self, out: &mut Vec<Completion<Frame>>) -> usize {
        let n = self.done.len();
        out.append(&mut self.done);
        n
    }

    fn health(&self) -> Health {
        Health::Healthy
    }

    fn outstanding(&self) -> usize {
        self.rings.iter().map(VecDeque::len).sum::<usize>() + self.done.len()
    }
}

#[derive(Debug, Clone)]
struct Setup {
    channels: usize,
    ring: usize,
    refuse_every: u64,
    threshold: usize,
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        1..4usize,
        1..6usize,
        2..9u64,
        prop_oneof![Just(0usize), Just(64), Just(400)],
    )
        .prop_map(|(channels, ring, refuse_every, threshold)| Setup {
            channels,
            ring,
            refuse_every,
            threshold,
        })
}

fn play(setup: &Setup, steps: &[Step]) -> Result<(), TestCaseError> {
    let log = Arc::new(Mutex::new(Log::default()));
    let target = Arc::new(Target {
        mem: Mutex::new(vec![0; SPACE + 1024]),
        log: Arc::clone(&log),
    });
    let pool = Rc::new(RefCell::new(Pool {
        free: (0..POOL).map(|_| Vec::with_capacity(1024)).collect(),
        log: Arc::clone(&log),
    }));
    let engine = ScriptedEngine {
        target: Arc::clone(&target),
        rings: (0..setup.channels).map(|_| VecDeque::new()).collect(),
        healthy: vec![true; setup.channels],
        ring: setup.ring,
        next: 0,
        submissions: 0,
        refuse_every: setup.refuse_every,
        done: Vec::new(),
    };
    let mut pipeline: CopyPipeline<Target, ScriptedEngine, Frame, u64> =
        CopyPipeline::new(Arc::clone(&target), engine, Decider::fixed(setup.threshold));
    // The expected destination: every submission's bytes, applied in submission order.
    let mut expected = vec![0u8; SPACE + 1024];
    let mut delivered = Vec::new();
    let mut seq = 0u64;
    let mut fill = |step: &Step, pipeline: &mut CopyPipeline<_, ScriptedEngine, Frame, u64>| {
        match *step {
            Step::Submit { at, len } => {
                let Some(mut bytes) = pool.borrow_mut().free.pop() else {
                    // Pool empty: the caller must poll for frames to come back.
                    return;
                };
                bytes.clear();
                bytes.extend_from_slice(&seq.to_le_bytes());
                bytes.extend((8..len).map(|i| (seq as usize * 31 + i) as u8 | 1));
                expected[at..at + len].copy_from_slice(&bytes);
                let frame = Frame {
                    bytes,
                    seq,
                    pool: Rc::clone(&pool),
                };
                pipeline.submit(BASE + at as u64, frame, seq).unwrap();
                seq += 1;
            }
            Step::Run { ch, error } => pipeline.engine_mut().run(ch, error),
            Step::Fail { ch } => pipeline.engine_mut().fail(ch),
            Step::Poll => {}
        }
    };
    for s in steps {
        fill(s, &mut pipeline);
        pipeline.poll(&mut delivered).unwrap();
        // Dropping delivered frames returns them to the pool (and scribbles them).
        delivered.clear();
    }
    // Let every channel finish.
    loop {
        let e = pipeline.engine_mut();
        let busy: Vec<usize> = (0..e.rings.len())
            .filter(|c| !e.rings[*c].is_empty())
            .collect();
        if busy.is_empty() {
            break;
        }
        for c in busy {
            e.run(c, false);
        }
        pipeline.poll(&mut delivered).unwrap();
        delivered.clear();
    }
    pipeline.poll(&mut delivered).unwrap();
    delivered.clear();
    prop_assert_eq!(pipeline.pending(), 0, "copies left undelivered");

    let mem = target.mem.lock().unwrap();
    if let Some(i) = (0..expected.len()).find(|i| mem[*i] != expected[*i]) {
        return Err(TestCaseError::fail(format!(
            "byte {i}: {:#x}, expected {:#x} (older data landed last, or a reused frame was copied)",
            mem[i], expected[i]
        )));
    }
    let log = log.lock().unwrap();
    // A frame is returned only after its copy was executed (at least once).
    let mut first_exec = BTreeMap::new();
    for (t, s) in log.executed.iter().enumerate() {
        first_exec.entry(*s).or_insert(t);
    }
    prop_assert_eq!(log.returned.len() as u64, seq, "every frame returned once");
    let mut returned_sorted = log.returned.clone();
    returned_sorted.sort_unstable();
    prop_assert_eq!(returned_sorted, (0..seq).collect::<Vec<_>>());
    prop_assert_eq!(
        &log.returned,
        &(0..seq).collect::<Vec<_>>(),
        "delivered in submission order"
    );
    for s in 0..seq {
        prop_assert!(first_exec.contains_key(&s), "copy {} never executed", s);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn overlapping_copies_take_effect_in_submission_order(
        setup in setup(),
        steps in prop::collection::vec(step(), 1..200),
    ) {
        play(&setup, &steps)?;
    }
}

/// The smallest case the old pipeline got wrong: an engine copy still queued when a
/// later copy to the same bytes is refused by the engine and done by the CPU at once;
/// the engine then writes the older data last.
#[test]
fn refused_copy_does_not_overtake_a_queued_one() {
    let setup = Setup {
        channels: 1,
        ring: 4,
        refuse_every: 2,
        threshold: 0,
    };
    let steps = [
        Step::Submit { at: 0, len: 64 },
        Step::Submit { at: 0, len: 64 },
        Step::Run {
            ch: 0,
            error: false,
        },
    ];
    play(&setup, &steps).unwrap();
}

/// Two channels: the later copy to the same bytes runs first on the other channel.
#[test]
fn channels_do_not_reorder_overlapping_copies() {
    let setup = Setup {
        channels: 2,
        ring: 4,
        refuse_every: 1000,
        threshold: 0,
    };
    let steps = [
        Step::Submit { at: 0, len: 64 },
        Step::Submit { at: 32, len: 64 },
        Step::Run {
            ch: 1,
            error: false,
        },
        Step::Run {
            ch: 0,
            error: false,
        },
    ];
    play(&setup, &steps).unwrap();
}

/// A descriptor that failed is copied again by the CPU; a later copy to the same bytes
/// that the engine already ran must not be undone by that re-copy.
#[test]
fn recopy_after_error_does_not_undo_a_later_copy() {
    let setup = Setup {
        channels: 2,
        ring: 4,
        refuse_every: 1000,
        threshold: 0,
    };
    let steps = [
        Step::Submit { at: 0, len: 64 },
        Step::Submit { at: 0, len: 64 },
        Step::Run {
            ch: 1,
            error: false,
        },
        Step::Run { ch: 0, error: true },
    ];
    play(&setup, &steps).unwrap();
}
