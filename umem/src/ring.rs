//! AF_XDP rings: single-producer/single-consumer queues of `T` in memory shared with the
//! kernel (or, in tests, with a [`FakeRing`](crate::fake::FakeRing) playing the kernel).
//!
//! The protocol (Documentation/networking/af_xdp.rst): the producer writes entries at
//! `producer & mask`, then publishes them with a release store of `producer`; the consumer
//! reads entries up to an acquire load of `producer`, then frees them with a release
//! store of `consumer`. Indices are free-running `u32`s.
//!
//! Ownership: a ring's memory belongs to its owner (a [`Socket`](crate::Socket), which
//! unmaps it when deleted, or a [`FakeRing`](crate::fake::FakeRing)). The owner keeps
//! each side's state privately and lends it out as a [`Producer`] or [`Consumer`] that
//! borrows the owner (`&mut`), so a side can neither outlive the ring's memory nor be
//! moved or swapped into another owner.

use std::sync::atomic::{AtomicU32, Ordering};

/// Where one ring lives. Built by [`crate::sys`] from libxdp's ring structs, or by a fake.
///
/// Invariant (upheld by whoever builds one, inside this crate): the pointers are valid for
/// as long as the owner of the [`ProdState`]/[`ConsState`] holding it lives, `entries`
/// has `size` entries and `size` is a power of two.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RingMem<T> {
    pub(crate) producer: *const AtomicU32,
    pub(crate) consumer: *const AtomicU32,
    pub(crate) flags: *const AtomicU32,
    pub(crate) entries: *mut T,
    pub(crate) size: u32,
}

// SAFETY: the ring memory is shared by design; each side's state is owned by one owner
// and reached only through `&mut` (Producer/Consumer), and all index exchange with the
// other side goes through atomics.
unsafe impl<T: Send> Send for RingMem<T> {}

impl<T: Copy> RingMem<T> {
    fn load(p: *const AtomicU32, order: Ordering) -> u32 {
        // SAFETY: `p` points into the ring's memory, which outlives the side's state (the
        // RingMem invariant).
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

/// The producing side's state, kept by the ring's owner.
#[derive(Debug)]
pub(crate) struct ProdState<T> {
    mem: RingMem<T>,
    cached_prod: u32,
    cached_cons: u32,
}

impl<T: Copy> ProdState<T> {
    /// A producer over `mem` (see the [`RingMem`] invariant).
    pub(crate) fn new(mem: RingMem<T>) -> Self {
        debug_assert!(mem.size.is_power_of_two());
        let prod = RingMem::<T>::load(mem.producer, Ordering::Relaxed);
        let cons = RingMem::<T>::load(mem.consumer, Ordering::Acquire);
        Self {
            mem,
            cached_prod: prod,
            cached_cons: cons,
        }
    }
}

#[cfg(test)]
impl<T> ProdState<T> {
    /// Where the producer index lives (to check which mapping a ring is in).
    pub(crate) fn producer_addr(&self) -> usize {
        self.mem.producer as usize
    }
}

/// The consuming side's state, kept by the ring's owner.
#[derive(Debug)]
pub(crate) struct ConsState<T> {
    mem: RingMem<T>,
    cached_cons: u32,
}

impl<T: Copy> ConsState<T> {
    /// A consumer over `mem` (see the [`RingMem`] invariant).
    pub(crate) fn new(mem: RingMem<T>) -> Self {
        debug_assert!(mem.size.is_power_of_two());
        Self {
            cached_cons: RingMem::<T>::load(mem.consumer, Ordering::Relaxed),
            mem,
        }
    }
}

#[cfg(test)]
impl<T> ConsState<T> {
    /// Where the producer index lives (to check which mapping a ring is in).
    pub(crate) fn producer_addr(&self) -> usize {
        self.mem.producer as usize
    }
}

/// The producing side of a ring (fill and TX rings in userspace), borrowed from the ring's
/// owner for `'a` (e.g. [`Socket::fill_mut`](crate::Socket::fill_mut)).
#[derive(Debug)]
pub struct Producer<'a, T> {
    ring: &'a mut ProdState<T>,
}

impl<'a, T: Copy> Producer<'a, T> {
    pub(crate) fn new(ring: &'a mut ProdState<T>) -> Self {
        Self { ring }
    }

    /// Ring size.
    pub fn size(&self) -> u32 {
        self.ring.mem.size
    }

    /// Entries that can be produced now (refreshes from the consumer when needed).
    pub fn free(&mut self) -> u32 {
        let r = &mut *self.ring;
        let free = r.mem.size - r.cached_prod.wrapping_sub(r.cached_cons);
        if free > 0 {
            return free;
        }
        r.cached_cons = RingMem::<T>::load(r.mem.consumer, Ordering::Acquire);
        r.mem.size - r.cached_prod.wrapping_sub(r.cached_cons)
    }

    /// Entries produced but not yet consumed by the other side.
    pub fn in_flight(&mut self) -> u32 {
        let r = &mut *self.ring;
        r.cached_cons = RingMem::<T>::load(r.mem.consumer, Ordering::Acquire);
        r.cached_prod.wrapping_sub(r.cached_cons)
    }

    /// Produces as many of `items` as fit; returns how many. Publishes them at once.
    pub fn produce(&mut self, items: impl IntoIterator<Item = T>) -> u32 {
        let mut free = self.free();
        let r = &mut *self.ring;
        let mut n = 0;
        for item in items {
            if free == 0 {
                break;
            }
            // SAFETY: the slot is free (between producer and consumer + size), so the
            // other side does not read it until we publish.
            unsafe { r.mem.slot(r.cached_prod.wrapping_add(n)).write(item) };
            n += 1;
            free -= 1;
        }
        r.cached_prod = r.cached_prod.wrapping_add(n);
        if n > 0 {
            RingMem::<T>::store(r.mem.producer, r.cached_prod);
        }
        n
    }

    /// Whether the other side asked for a wakeup.
    pub fn needs_wakeup(&self) -> bool {
        RingMem::<T>::load(self.ring.mem.flags, Ordering::Relaxed) & NEED_WAKEUP != 0
    }
}

/// The consuming side of a ring (RX and completion rings in userspace), borrowed from the
/// ring's owner for `'a` (e.g. [`Socket::rx_mut`](crate::Socket::rx_mut)).
#[derive(Debug)]
pub struct Consumer<'a, T> {
    ring: &'a mut ConsState<T>,
}

impl<'a, T: Copy> Consumer<'a, T> {
    pub(crate) fn new(ring: &'a mut ConsState<T>) -> Self {
        Self { ring }
    }

    /// Ring size.
    pub fn size(&self) -> u32 {
        self.ring.mem.size
    }

    /// Entries ready to consume.
    pub fn available(&self) -> u32 {
        RingMem::<T>::load(self.ring.mem.producer, Ordering::Acquire)
            .wrapping_sub(self.ring.cached_cons)
    }

    /// Consumes up to `max` entries into `out` (appended); returns how many. Frees them
    /// for the producer at once: the entries are copies.
    pub fn consume(&mut self, out: &mut Vec<T>, max: u32) -> u32 {
        let n = self.available().min(max);
        let r = &mut *self.ring;
        for i in 0..n {
            // SAFETY: entries between consumer and producer are published and not
            // rewritten until we advance `consumer`.
            out.push(unsafe { r.mem.slot(r.cached_cons.wrapping_add(i)).read() });
        }
        r.cached_cons = r.cached_cons.wrapping_add(n);
        if n > 0 {
            RingMem::<T>::store(r.mem.consumer, r.cached_cons);
        }
        n
    }

    /// Whether the other side asked for a wakeup.
    pub fn needs_wakeup(&self) -> bool {
        RingMem::<T>::load(self.ring.mem.flags, Ordering::Relaxed) & NEED_WAKEUP != 0
    }
}
