//! AF_XDP rings: single-producer/single-consumer queues of `T` in memory shared with the
//! kernel (or, in tests, with a [`FakeRing`](crate::fake::FakeRing) playing the kernel).
//!
//! The protocol (Documentation/networking/af_xdp.rst): the producer writes entries at
//! `producer & mask`, then publishes them with a release store of `producer`; the consumer
//! reads entries up to an acquire load of `producer`, then frees them with a release
//! store of `consumer`. Indices are free-running `u32`s.

use std::sync::atomic::{AtomicU32, Ordering};

/// Where one ring lives. Built by [`crate::sys`] from libxdp's ring structs, or by a fake.
#[derive(Debug, Clone, Copy)]
pub struct RingMem<T> {
    pub(crate) producer: *const AtomicU32,
    pub(crate) consumer: *const AtomicU32,
    pub(crate) flags: *const AtomicU32,
    pub(crate) entries: *mut T,
    pub(crate) size: u32,
}

// SAFETY: the ring memory is shared by design; each side is owned by one thread at a time
// (Producer/Consumer are not Clone), and all index exchange goes through atomics.
unsafe impl<T: Send> Send for RingMem<T> {}

impl<T: Copy> RingMem<T> {
    fn load(p: *const AtomicU32, order: Ordering) -> u32 {
        // SAFETY: `p` points into the ring's mapped memory for the ring's lifetime (the
        // owner keeps the mapping alive while a Producer/Consumer exists).
        unsafe { (*p).load(order) }
    }

    fn store(p: *const AtomicU32, v: u32) {
        // SAFETY: as in `load`.
        unsafe { (*p).store(v, Ordering::Release) }
    }

    fn slot(&self, index: u32) -> *mut T {
        // SAFETY: `index & (size - 1)` is below `size`, and `entries` has `size` entries.
        unsafe { self.entries.add((index & (self.size - 1)) as usize) }
    }
}

/// Flag in a ring's `flags` word: the kernel wants a wakeup (sendto/poll) to make progress.
pub const NEED_WAKEUP: u32 = 1;

/// The producing side of a ring (fill and TX rings in userspace).
#[derive(Debug)]
pub struct Producer<T> {
    mem: RingMem<T>,
    cached_prod: u32,
    cached_cons: u32,
}

impl<T: Copy> Producer<T> {
    /// A producer over `mem` whose entries are all free.
    ///
    /// `mem.size` must be a power of two.
    pub fn new(mem: RingMem<T>) -> Self {
        debug_assert!(mem.size.is_power_of_two());
        let prod = RingMem::<T>::load(mem.producer, Ordering::Relaxed);
        let cons = RingMem::<T>::load(mem.consumer, Ordering::Acquire);
        Self {
            mem,
            cached_prod: prod,
            cached_cons: cons,
        }
    }

    /// Ring size.
    pub fn size(&self) -> u32 {
        self.mem.size
    }

    /// Entries that can be produced now (refreshes from the consumer when needed).
    pub fn free(&mut self) -> u32 {
        let free = self.mem.size - self.cached_prod.wrapping_sub(self.cached_cons);
        if free > 0 {
            return free;
        }
        self.cached_cons = RingMem::<T>::load(self.mem.consumer, Ordering::Acquire);
        self.mem.size - self.cached_prod.wrapping_sub(self.cached_cons)
    }

    /// Entries produced but not yet consumed by the other side.
    pub fn in_flight(&mut self) -> u32 {
        self.cached_cons = RingMem::<T>::load(self.mem.consumer, Ordering::Acquire);
        self.cached_prod.wrapping_sub(self.cached_cons)
    }

    /// Produces as many of `items` as fit; returns how many. Publishes them at once.
    pub fn produce(&mut self, items: impl IntoIterator<Item = T>) -> u32 {
        let mut free = self.free();
        let mut n = 0;
        for item in items {
            if free == 0 {
                break;
            }
            // SAFETY: the slot is free (between producer and consumer + size), so the
            // other side does not read it until we publish.
            unsafe { self.mem.slot(self.cached_prod.wrapping_add(n)).write(item) };
            n += 1;
            free -= 1;
        }
        self.cached_prod = self.cached_prod.wrapping_add(n);
        if n > 0 {
            RingMem::<T>::store(self.mem.producer, self.cached_prod);
        }
        n
    }

    /// Whether the other side asked for a wakeup.
    pub fn needs_wakeup(&self) -> bool {
        RingMem::<T>::load(self.mem.flags, Ordering::Relaxed) & NEED_WAKEUP != 0
    }
}

/// The consuming side of a ring (RX and completion rings in userspace).
#[derive(Debug)]
pub struct Consumer<T> {
    mem: RingMem<T>,
    cached_cons: u32,
}

impl<T: Copy> Consumer<T> {
    /// A consumer over `mem`.
    pub fn new(mem: RingMem<T>) -> Self {
        debug_assert!(mem.size.is_power_of_two());
        Self {
            cached_cons: RingMem::<T>::load(mem.consumer, Ordering::Relaxed),
            mem,
        }
    }

    /// Entries ready to consume.
    pub fn available(&self) -> u32 {
        RingMem::<T>::load(self.mem.producer, Ordering::Acquire).wrapping_sub(self.cached_cons)
    }

    /// Consumes up to `max` entries into `out` (appended); returns how many. Frees them
    /// for the producer at once: the entries are copies.
    pub fn consume(&mut self, out: &mut Vec<T>, max: u32) -> u32 {
        let n = self.available().min(max);
        for i in 0..n {
            // SAFETY: entries between consumer and producer are published and not
            // rewritten until we advance `consumer`.
            out.push(unsafe { self.mem.slot(self.cached_cons.wrapping_add(i)).read() });
        }
        self.cached_cons = self.cached_cons.wrapping_add(n);
        if n > 0 {
            RingMem::<T>::store(self.mem.consumer, self.cached_cons);
        }
        n
    }

    /// Whether the other side asked for a wakeup.
    pub fn needs_wakeup(&self) -> bool {
        RingMem::<T>::load(self.mem.flags, Ordering::Relaxed) & NEED_WAKEUP != 0
    }
}
