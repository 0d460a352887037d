//! In-memory rings for tests: a [`FakeRing`] owns the memory of one ring and hands out
//! both a userspace side and a "kernel" side, so ring and posting logic runs without a
//! kernel.

use std::sync::atomic::AtomicU32;

use crate::ring::{Consumer, Producer, RingMem};

/// One ring's memory, owned.
#[derive(Debug)]
pub struct FakeRing<T> {
    producer: Box<AtomicU32>,
    consumer: Box<AtomicU32>,
    flags: Box<AtomicU32>,
    entries: Box<[T]>,
}

impl<T: Copy + Default> FakeRing<T> {
    /// A ring of `size` entries (a power of two), starting at index `start` (to test
    /// index wrap-around).
    pub fn new(size: u32, start: u32) -> Self {
        assert!(size.is_power_of_two(), "ring size must be a power of two");
        Self {
            producer: Box::new(AtomicU32::new(start)),
            consumer: Box::new(AtomicU32::new(start)),
            flags: Box::new(AtomicU32::new(0)),
            entries: vec![T::default(); size as usize].into_boxed_slice(),
        }
    }

    fn mem(&mut self) -> RingMem<T> {
        RingMem {
            producer: &*self.producer,
            consumer: &*self.consumer,
            flags: &*self.flags,
            entries: self.entries.as_mut_ptr(),
            size: u32::try_from(self.entries.len()).unwrap_or(u32::MAX),
        }
    }

    /// Both sides. They borrow nothing, so the caller must keep `self` alive while using
    /// them (tests do: the ring lives in the test's scope).
    pub fn sides(&mut self) -> (Producer<T>, Consumer<T>) {
        let mem = self.mem();
        (Producer::new(mem), Consumer::new(mem))
    }

    /// Sets or clears the need-wakeup flag, as the kernel would.
    pub fn set_need_wakeup(&self, on: bool) {
        let v = if on { crate::ring::NEED_WAKEUP } else { 0 };
        self.flags.store(v, std::sync::atomic::Ordering::Relaxed);
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
        let (p, c) = ring.sides();
        assert!(!p.needs_wakeup());
        ring.set_need_wakeup(true);
        assert!(p.needs_wakeup() && c.needs_wakeup());
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
