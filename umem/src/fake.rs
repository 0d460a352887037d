//! In-memory rings for tests: a [`FakeRing`] owns the memory of one ring and hands out
//! both a userspace side and a "kernel" side, so ring and posting logic runs without a
//! kernel.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::ring::{ConsState, Consumer, ProdState, Producer, RingMem};

/// One ring's memory, owned, with both sides' state.
#[derive(Debug)]
pub struct FakeRing<T> {
    producer: Box<AtomicU32>,
    consumer: Box<AtomicU32>,
    flags: Box<AtomicU32>,
    entries: Box<[T]>,
    prod: ProdState<T>,
    cons: ConsState<T>,
}

/// The "kernel's" hold on a fake ring's flags word, borrowed alongside its sides
/// ([`FakeRing::sides_and_flags`]).
#[derive(Debug, Clone, Copy)]
pub struct FakeFlags<'a>(&'a AtomicU32);

impl FakeFlags<'_> {
    /// Sets or clears the need-wakeup flag, as the kernel would.
    pub fn set_need_wakeup(&self, on: bool) {
        let v = if on { crate::ring::NEED_WAKEUP } else { 0 };
        self.0.store(v, Ordering::Relaxed);
    }
}

impl<T: Copy + Default> FakeRing<T> {
    /// A ring of `size` entries (a power of two), starting at index `start` (to test
    /// index wrap-around).
    pub fn new(size: u32, start: u32) -> Self {
        assert!(size.is_power_of_two(), "ring size must be a power of two");
        let producer = Box::new(AtomicU32::new(start));
        let consumer = Box::new(AtomicU32::new(start));
        let flags = Box::new(AtomicU32::new(0));
        let mut entries = vec![T::default(); size as usize].into_boxed_slice();
        let mem = Self::mem(&producer, &consumer, &flags, &mut entries);
        Self {
            prod: ProdState::new(mem),
            cons: ConsState::new(mem),
            producer,
            consumer,
            flags,
            entries,
        }
    }

    fn mem(
        producer: &AtomicU32,
        consumer: &AtomicU32,
        flags: &AtomicU32,
        entries: &mut [T],
    ) -> RingMem<T> {
        RingMem {
            producer,
            consumer,
            flags,
            entries: entries.as_mut_ptr(),
            size: u32::try_from(entries.len()).unwrap_or(u32::MAX),
        }
    }

    /// Both sides, borrowing the ring: neither can outlive it, and no other side can be
    /// taken while they live.
    pub fn sides(&mut self) -> (Producer<'_, T>, Consumer<'_, T>) {
        let (p, c, _) = self.sides_and_flags();
        (p, c)
    }

    /// Both sides and the flags word, to play the kernel's need-wakeup while the sides
    /// are in use.
    pub fn sides_and_flags(&mut self) -> (Producer<'_, T>, Consumer<'_, T>, FakeFlags<'_>) {
        // Fresh pointers and states on every call: the ring may have moved since the
        // last one (its indices live in the boxes, so the states pick up where they were).
        let mem = Self::mem(
            &self.producer,
            &self.consumer,
            &self.flags,
            &mut self.entries,
        );
        self.prod = ProdState::new(mem);
        self.cons = ConsState::new(mem);
        (
            Producer::new(&mut self.prod),
            Consumer::new(&mut self.cons),
            FakeFlags(&self.flags),
        )
    }

    /// Sets or clears the need-wakeup flag, as the kernel would.
    pub fn set_need_wakeup(&self, on: bool) {
        FakeFlags(&self.flags).set_need_wakeup(on);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn produce_consume_in_order_and_full_ring_refuses() {
        let mut ring = FakeRing::<u64>::new(4, 0);
        let (mut p, mut c) = ring.sides();
        assert_eq!(p.produce([1, 2, 3, 4, 5]), 4, "only 4 fit");
        assert_eq!(p.free(), 0);
        let mut out = Vec::new();
        assert_eq!(c.consume(&mut out, 3), 3);
        assert_eq!(out, [1, 2, 3]);
        assert_eq!(p.free(), 3);
        assert_eq!(p.in_flight(), 1);
        assert_eq!(p.produce([6]), 1);
        out.clear();
        assert_eq!(c.consume(&mut out, 10), 2);
        assert_eq!(out, [4, 6]);
        assert_eq!(c.available(), 0);
    }

    #[test]
    fn need_wakeup_is_read_from_the_flags_word() {
        let mut ring = FakeRing::<u64>::new(2, 0);
        let (p, c, kernel) = ring.sides_and_flags();
        assert!(!p.needs_wakeup());
        kernel.set_need_wakeup(true);
        assert!(p.needs_wakeup() && c.needs_wakeup());
        kernel.set_need_wakeup(false);
        assert!(!p.needs_wakeup());
        ring.set_need_wakeup(true);
        assert!(ring.sides().0.needs_wakeup());
    }

    /// Sides taken again (after the ring moved) continue where the last ones stopped.
    #[test]
    fn sides_taken_again_continue_after_a_move() {
        let mut ring = FakeRing::<u64>::new(4, u32::MAX - 1);
        {
            let (mut p, mut c) = ring.sides();
            assert_eq!(p.produce([1, 2, 3]), 3);
            let mut out = Vec::new();
            assert_eq!(c.consume(&mut out, 1), 1);
            assert_eq!(out, [1]);
        }
        let mut moved = Box::new(ring);
        let (mut p, mut c) = moved.sides();
        assert_eq!(p.in_flight(), 2);
        assert_eq!(p.free(), 2);
        let mut out = Vec::new();
        assert_eq!(c.consume(&mut out, 10), 2);
        assert_eq!(out, [2, 3]);
    }

    /// The two sides of one ring run on two threads (scoped: they borrow the ring).
    #[test]
    fn sides_work_across_threads() {
        let mut ring = FakeRing::<u64>::new(8, 0);
        let (mut p, mut c) = ring.sides();
        std::thread::scope(|s| {
            s.spawn(move || {
                let mut next = 0u64;
                while next < 10_000 {
                    next += u64::from(p.produce([next]));
                }
            });
            let (mut out, mut expect) = (Vec::new(), 0u64);
            while expect < 10_000 {
                out.clear();
                c.consume(&mut out, 8);
                for v in &out {
                    assert_eq!(*v, expect);
                    expect += 1;
                }
            }
        });
    }

    proptest! {
        /// Whatever the batch sizes and the starting index (wrap-around included), the
        /// consumer sees exactly the produced sequence, and never more than `size` is
        /// in flight.
        #[test]
        fn fifo_across_wraparound(
            start in prop_oneof![Just(u32::MAX - 5), any::<u32>()],
            batches in proptest::collection::vec((0u32..10, 0u32..10), 1..50),
        ) {
            let mut ring = FakeRing::<u64>::new(8, start);
            let (mut p, mut c) = ring.sides();
            let (mut next, mut expect, mut out) = (0u64, 0u64, Vec::new());
            for (put, take) in batches {
                let n = p.produce((next..next + u64::from(put)).collect::<Vec<_>>());
                next += u64::from(n);
                prop_assert!(p.in_flight() <= 8);
                out.clear();
                c.consume(&mut out, take);
                for v in &out {
                    prop_assert_eq!(*v, expect);
                    expect += 1;
                }
            }
        }
    }
}
