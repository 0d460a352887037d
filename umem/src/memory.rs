//! The UMEM area: one mapping holding the application's placement regions (each followed
//! by guard space) and a pool of bounce frames, addressed by UMEM offset. Placement
//! addresses *are* UMEM offsets.
//!
//! # Who may touch which bytes
//!
//! The bytes are shared with the kernel (frames posted to a fill or TX ring belong to it
//! until they come back; keeping them apart is the fill plan's job, as with any memory
//! handed to a device). Within the process, Rust references into the UMEM exist only
//! through the types below, and the safe copies cannot reach bytes a reference covers:
//!
//! - [`UmemMemory::read`] / [`UmemMemory::write`] copy through raw pointers and never
//!   make a reference. In the bounce pool they take the frames they touch for the copy:
//!   a write needs frames nobody holds, a read needs frames nobody holds exclusively.
//! - [`FrameMut`]: one bounce frame held exclusively (`&mut [u8]` through a borrow of
//!   it): building a TX frame, or a received payload before it is lent.
//! - [`LentFrame`]: one bounce frame held shared (`&[u8]`), owned (no lifetime: it is a
//!   copy source that may wait in a queue or move to a copy thread). While it lives
//!   writes to the frame are refused, and no [`FrameMut`] of it can be taken.
//! - [`SlotMut`]: region bytes held exclusively (`&mut [u8]` through a borrow of it): a
//!   payload that landed in a predicted slot, opened in place. While it lives, reads,
//!   writes and other slots refuse its bytes.
//!
//! The per-frame state is one atomic word; a read or write of a bounce frame costs two
//! atomic operations. Region bytes are checked against the held slots (at most one at a
//! time in the receiver) under a read lock.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use memmap2::{MmapOptions, MmapRaw};

use crate::{Error, Result};

/// Bytes the kernel leaves in front of a received frame in copy mode
/// (XDP_PACKET_HEADROOM).
pub const XDP_PACKET_HEADROOM: u64 = 256;
/// Space before the first region and after every region. At least one chunk, so that a
/// payload longer than its slot (the NIC writes up to a chunk) cannot reach the next
/// region, and so that the first slot's fill address (landing address − headroom) is
/// not negative.
pub const GUARD: u64 = 64 * 1024;
/// Largest UMEM: in unaligned-chunk mode a descriptor's address has 48 bits (bits 48..64
/// carry the data offset), so no byte of the UMEM may lie at 2^48 or beyond.
pub const MAX_UMEM_LEN: u64 = 1 << 48;
const PAGE: u64 = 4096;
const HUGE_PAGE: u64 = 2 << 20;

/// Where a region lives in the UMEM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionSpan {
    /// Region id (as in the placement engine).
    pub id: u32,
    /// UMEM offset of its first byte.
    pub base: u64,
    /// Its length.
    pub len: u64,
}

/// The layout of one UMEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Chunk size given to the kernel: the most a received frame may occupy, headroom
    /// included.
    pub chunk_size: u32,
    /// UMEM headroom (the kernel adds it to [`XDP_PACKET_HEADROOM`]).
    pub headroom: u32,
    /// Placement regions, in address order.
    pub regions: Vec<RegionSpan>,
    /// Offset of the first bounce frame.
    pub bounce_start: u64,
    /// Number of bounce frames.
    pub bounce_frames: u32,
    /// Total length (a multiple of 2 MiB, at most [`MAX_UMEM_LEN`]).
    pub len: u64,
}

/// `v` rounded up to a multiple of `to` (> 0), or None when that is not a `u64`.
fn align_up(v: u64, to: u64) -> Option<u64> {
    v.div_ceil(to).checked_mul(to)
}

impl Layout {
    /// Lays out `regions` (id, length) and `bounce_frames` frames of `chunk_size` bytes.
    ///
    /// # Errors
    /// [`Error::Layout`] for a chunk size outside 2048..=4096, a zero-length region, a
    /// duplicate region id, or a UMEM that would not fit in [`MAX_UMEM_LEN`] bytes.
    pub fn new(regions: &[(u32, u64)], bounce_frames: u32, chunk_size: u32) -> Result<Self> {
        if !(2048..=4096).contains(&chunk_size) {
            return Err(Error::Layout(format!(
                "chunk size {chunk_size} outside 2048..=4096"
            )));
        }
        let too_big = |what: String| {
            Error::Layout(format!(
                "{what} does not fit in the {MAX_UMEM_LEN}-byte (2^48) UMEM address space"
            ))
        };
        let mut spans = Vec::with_capacity(regions.len());
        let mut at = GUARD;
        for &(id, len) in regions {
            if len == 0 {
                return Err(Error::Layout(format!("region {id} has length 0")));
            }
            if spans.iter().any(|s: &RegionSpan| s.id == id) {
                return Err(Error::Layout(format!("region {id} given twice")));
            }
            // The region, its guard, page aligned: every step checked, and the end must
            // stay addressable.
            let end = at
                .checked_add(len)
                .and_then(|v| v.checked_add(GUARD))
                .and_then(|v| align_up(v, PAGE))
                .filter(|v| *v <= MAX_UMEM_LEN)
                .ok_or_else(|| too_big(format!("region {id} of {len} bytes")))?;
            spans.push(RegionSpan { id, base: at, len });
            at = end;
        }
        // At most 2^32 frames of 4 KiB: no overflow.
        let bounce_len = u64::from(bounce_frames) * u64::from(chunk_size);
        let len = at
            .checked_add(bounce_len)
            .and_then(|v| align_up(v, HUGE_PAGE))
            .filter(|v| *v <= MAX_UMEM_LEN)
            .ok_or_else(|| too_big(format!("{bounce_frames} bounce frames after the regions")))?;
        Ok(Self {
            chunk_size,
            headroom: 0,
            regions: spans,
            bounce_start: at,
            bounce_frames,
            len,
        })
    }

    /// Bytes between a fill address and where the payload lands.
    pub fn landing_shift(&self) -> u64 {
        XDP_PACKET_HEADROOM + u64::from(self.headroom)
    }

    /// Most payload bytes one received frame can carry.
    pub fn max_frame_payload(&self) -> u64 {
        u64::from(self.chunk_size).saturating_sub(self.landing_shift())
    }

    /// The fill address at which a payload lands at `landing`, if the kernel accepts it
    /// (`fill + chunk_size <= len`).
    pub fn fill_addr_for(&self, landing: u64) -> Option<u64> {
        let fill = landing.checked_sub(self.landing_shift())?;
        let end = fill.checked_add(u64::from(self.chunk_size))?;
        (end <= self.len).then_some(fill)
    }

    /// The fill address of bounce frame `i`.
    pub fn bounce_addr(&self, i: u32) -> u64 {
        self.bounce_start + u64::from(i) * u64::from(self.chunk_size)
    }

    /// The bounce frame whose fill address is `addr`, if any.
    pub fn bounce_index(&self, addr: u64) -> Option<u32> {
        let off = addr.checked_sub(self.bounce_start)?;
        let chunk = u64::from(self.chunk_size);
        if chunk == 0 || off % chunk != 0 {
            return None;
        }
        u32::try_from(off / chunk)
            .ok()
            .filter(|i| *i < self.bounce_frames)
    }

    /// The region span with id `id`.
    pub fn region(&self, id: u32) -> Option<RegionSpan> {
        self.regions.iter().copied().find(|r| r.id == id)
    }
}

/// How the UMEM memory was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backing {
    /// MAP_HUGETLB 2 MiB pages (reserved via vm.nr_hugepages).
    HugePages,
    /// Ordinary pages with MADV_HUGEPAGE (transparent huge pages).
    TransparentHugePages,
}

impl Backing {
    /// Name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Backing::HugePages => "hugetlb",
            Backing::TransparentHugePages => "thp",
        }
    }
}

/// Frame state bits: held exclusively (a [`FrameMut`] or a write in progress).
const EXCLUSIVE: u32 = 1 << 31;
/// Lent (a [`LentFrame`] lives).
const LENT: u32 = 1 << 30;
/// Reads in progress.
const READERS: u32 = LENT - 1;

/// The bounce pool and who holds each of its frames (offsets inside the mapping).
#[derive(Debug)]
struct FramePool {
    start: usize,
    chunk: usize,
    state: Box<[AtomicU32]>,
}

impl FramePool {
    fn none() -> Self {
        Self {
            start: 0,
            chunk: 1,
            state: Box::new([]),
        }
    }

    fn frames(&self) -> u32 {
        // At most u32::MAX entries (built from a u32).
        u32::try_from(self.state.len()).unwrap_or(u32::MAX)
    }

    /// The frames that bytes `start..start+len` of the mapping touch (empty when none).
    fn touched(&self, start: usize, len: usize) -> std::ops::Range<usize> {
        let end = start.saturating_add(len);
        // Inside the mapping (checked in with_layout).
        let pool_end = self.start + self.state.len() * self.chunk;
        if len == 0 || end <= self.start || start >= pool_end {
            return 0..0;
        }
        let first = (start.max(self.start) - self.start) / self.chunk;
        let last = (end.min(pool_end) - 1 - self.start) / self.chunk;
        first..last + 1
    }

    /// Mapping offset and length of frame `index` (below the frame count).
    fn span(&self, index: u32) -> (usize, usize) {
        (self.start + index as usize * self.chunk, self.chunk)
    }

    /// Takes `frames` for a read (shared) or a write (exclusive), all or none.
    fn acquire(&self, frames: std::ops::Range<usize>, write: bool) -> Result<()> {
        for i in frames.clone() {
            let ok = if write {
                self.state[i]
                    .compare_exchange(0, EXCLUSIVE, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            } else {
                self.state[i]
                    .fetch_update(Ordering::Acquire, Ordering::Relaxed, |s| {
                        (s & EXCLUSIVE == 0 && s & READERS != READERS).then_some(s + 1)
                    })
                    .is_ok()
            };
            if !ok {
                self.release(frames.start..i, write);
                return Err(Error::FrameHeld(u32::try_from(i).unwrap_or(u32::MAX)));
            }
        }
        Ok(())
    }

    fn release(&self, frames: std::ops::Range<usize>, write: bool) {
        for i in frames {
            if write {
                self.state[i].store(0, Ordering::Release);
            } else {
                self.state[i].fetch_sub(1, Ordering::Release);
            }
        }
    }
}

/// The UMEM's memory. Shared with the kernel: ranges posted to a fill ring belong to the
/// kernel until their RX descriptor comes back. See the module documentation for who may
/// touch which bytes.
#[derive(Debug)]
pub struct UmemMemory {
    map: MmapRaw,
    backing: Backing,
    frames: FramePool,
    /// Region ranges (mapping offset, length) held by [`SlotMut`]s. Copies and reads of
    /// region bytes run under the read lock and refuse held ranges; taking or releasing a
    /// slot takes the write lock, so no copy is under way into bytes a slot lends.
    slots: RwLock<Vec<(usize, usize)>>,
}

/// True when `a..a+al` and `b..b+bl` share a byte.
fn overlaps((a, al): (usize, usize), (b, bl): (usize, usize)) -> bool {
    a < b.saturating_add(bl) && b < a.saturating_add(al)
}

impl UmemMemory {
    /// Maps `len` zeroed bytes (a multiple of 2 MiB) without a bounce pool: only copies
    /// and [`SlotMut`]s reach it (no [`FrameMut`] or [`LentFrame`]).
    ///
    /// # Errors
    /// [`Error::Io`] when even the ordinary mapping fails.
    pub fn new(len: u64) -> Result<Self> {
        Self::map(len, FramePool::none())
    }

    /// Maps the memory `layout` describes (`layout.len` zeroed bytes), with its bounce
    /// pool: frames are lent through [`UmemMemory::frame_mut`] and [`LentFrame::new`].
    ///
    /// # Errors
    /// [`Error::Layout`] when the layout's bounce pool is not inside it (a layout not
    /// made by [`Layout::new`]); [`Error::Io`] when even the ordinary mapping fails.
    pub fn with_layout(layout: &Layout) -> Result<Self> {
        let chunk = u64::from(layout.chunk_size);
        let fits = chunk > 0
            && layout.len <= MAX_UMEM_LEN
            && (u64::from(layout.bounce_frames) * chunk)
                .checked_add(layout.bounce_start)
                .is_some_and(|end| end <= layout.len);
        let offset = |v: u64| usize::try_from(v).ok();
        let (Some(start), Some(chunk), Some(_)) = (
            offset(layout.bounce_start),
            offset(chunk),
            offset(layout.len),
        ) else {
            return Err(Error::Layout("UMEM too large".into()));
        };
        if !fits {
            return Err(Error::Layout(
                "the bounce pool lies outside the UMEM".into(),
            ));
        }
        let pool = FramePool {
            start,
            chunk,
            state: (0..layout.bounce_frames)
                .map(|_| AtomicU32::new(0))
                .collect(),
        };
        Self::map(layout.len, pool)
    }

    fn map(len: u64, frames: FramePool) -> Result<Self> {
        let len = usize::try_from(len).map_err(|_| Error::Layout("UMEM too large".into()))?;
        if let Ok(m) = MmapOptions::new().len(len).huge(Some(21)).map_anon() {
            return Ok(Self {
                map: m.into(),
                backing: Backing::HugePages,
                frames,
                slots: RwLock::new(Vec::new()),
            });
        }
        let m = MmapOptions::new()
            .len(len)
            .map_anon()
            .map_err(|e| Error::Io("mmap of the UMEM", e))?;
        // Best effort: without THP the mapping still works.
        let _ = m.advise(memmap2::Advice::HugePage);
        Ok(Self {
            map: m.into(),
            backing: Backing::TransparentHugePages,
            frames,
            slots: RwLock::new(Vec::new()),
        })
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.map.len() as u64
    }

    /// Never true (the length is a positive multiple of 2 MiB).
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    /// How the memory was obtained.
    pub fn backing(&self) -> Backing {
        self.backing
    }

    /// Whether this memory's bounce pool (if it has one) is `layout`'s.
    pub(crate) fn frames_match(&self, layout: &Layout) -> bool {
        self.frames.state.is_empty()
            || (self.frames.start as u64 == layout.bounce_start
                && self.frames.chunk as u64 == u64::from(layout.chunk_size)
                && self.frames.frames() == layout.bounce_frames)
    }

    pub(crate) fn as_mut_ptr(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    fn check(&self, addr: u64, len: usize) -> Result<usize> {
        let start = usize::try_from(addr).map_err(|_| Error::OutOfRange { addr, len })?;
        match start.checked_add(len) {
            Some(end) if end <= self.map.len() => Ok(start),
            _ => Err(Error::OutOfRange { addr, len }),
        }
    }

    /// Copies `src` to `addr`.
    ///
    /// Region bytes: the caller's protocol must own the range (not posted to a fill ring,
    /// not being read by another thread); the receiver guarantees it (see
    /// docs/design.md, "The prediction window"). Bounce frames are written only when
    /// nobody holds them.
    ///
    /// # Errors
    /// [`Error::OutOfRange`]; [`Error::FrameHeld`] when the range touches a bounce frame
    /// that is lent, held by a [`FrameMut`], or being read.
    pub fn write(&self, addr: u64, src: &[u8]) -> Result<()> {
        let start = self.check(addr, src.len())?;
        let slots = self.slots.read().unwrap_or_else(PoisonError::into_inner);
        if slots.iter().any(|s| overlaps(*s, (start, src.len()))) {
            return Err(Error::SlotHeld {
                addr,
                len: src.len(),
            });
        }
        let frames = self.frames.touched(start, src.len());
        self.frames.acquire(frames.clone(), true)?;
        // SAFETY: start..start+len is inside the mapping (checked). No reference covers
        // it: bounce frames in it are ours for the copy (acquired above), no SlotMut holds
        // any of its region bytes (checked under the read lock, held until the copy is
        // done), and region bytes are referenced only through SlotMuts.
        // `src` may itself be UMEM (a lent bounce frame: then not one we hold), so the
        // copy tolerates overlap.
        unsafe { std::ptr::copy(src.as_ptr(), self.as_mut_ptr().add(start), src.len()) };
        self.frames.release(frames, true);
        drop(slots);
        Ok(())
    }

    /// Copies `out.len()` bytes at `addr` into `out`.
    ///
    /// # Errors
    /// [`Error::OutOfRange`]; [`Error::FrameHeld`] when the range touches a bounce frame
    /// held by a [`FrameMut`].
    pub fn read(&self, addr: u64, out: &mut [u8]) -> Result<()> {
        let start = self.check(addr, out.len())?;
        let slots = self.slots.read().unwrap_or_else(PoisonError::into_inner);
        if slots.iter().any(|s| overlaps(*s, (start, out.len()))) {
            return Err(Error::SlotHeld {
                addr,
                len: out.len(),
            });
        }
        let frames = self.frames.touched(start, out.len());
        self.frames.acquire(frames.clone(), false)?;
        // SAFETY: inside the mapping (checked); bounce frames in it are held shared for
        // the copy (no `&mut` to them exists); `out` is a unique reference, so it is not
        // UMEM that anything else reads or writes.
        unsafe {
            std::ptr::copy_nonoverlapping(self.as_mut_ptr().add(start), out.as_mut_ptr(), out.len())
        };
        self.frames.release(frames, false);
        drop(slots);
        Ok(())
    }

    /// Takes the region bytes `addr..addr+len` exclusively: a payload that came back in an
    /// RX descriptor in a predicted slot, to open in place. While the [`SlotMut`] lives,
    /// [`UmemMemory::read`], [`UmemMemory::write`] (so every copy) and other slots refuse
    /// these bytes.
    ///
    /// The kernel side is the caller's protocol, as for every fill address: the range
    /// came back in an RX descriptor and is not posted again until the slot is dropped.
    ///
    /// # Errors
    /// [`Error::OutOfRange`]; [`Error::FrameHeld`] when the range touches the bounce pool
    /// (take bounce frames with [`UmemMemory::frame_mut`]); [`Error::SlotHeld`] when
    /// another slot holds some of the bytes.
    pub fn slot_mut(&self, addr: u64, len: usize) -> Result<SlotMut<'_>> {
        let start = self.check(addr, len)?;
        if let Some(i) = self.frames.touched(start, len).next() {
            return Err(Error::FrameHeld(u32::try_from(i).unwrap_or(u32::MAX)));
        }
        let mut slots = self.slots.write().unwrap_or_else(PoisonError::into_inner);
        if slots.iter().any(|s| overlaps(*s, (start, len))) {
            return Err(Error::SlotHeld { addr, len });
        }
        slots.push((start, len));
        Ok(SlotMut {
            memory: self,
            start,
            len,
        })
    }

    /// Takes bounce frame `index` exclusively, e.g. to build a frame to transmit in it.
    ///
    /// # Errors
    /// [`Error::OutOfRange`] when there is no such frame (or no bounce pool: see
    /// [`UmemMemory::with_layout`]); [`Error::FrameHeld`] when it is lent, held or being
    /// copied.
    pub fn frame_mut(self: &Arc<Self>, index: u32) -> Result<FrameMut<'_>> {
        let i = index as usize;
        if i >= self.frames.state.len() {
            return Err(Error::OutOfRange {
                addr: self.frames.start as u64 + u64::from(index) * self.frames.chunk as u64,
                len: self.frames.chunk,
            });
        }
        self.frames.acquire(i..i + 1, true)?;
        Ok(FrameMut {
            memory: self,
            index,
        })
    }

    /// Mapping offset and length of frame `index` (in the pool: checked by the callers).
    fn frame_span(&self, index: u32) -> (usize, usize) {
        self.frames.span(index)
    }
}

/// Region bytes held exclusively ([`UmemMemory::slot_mut`]): a received payload, opened in
/// place where it landed. Its bytes are reached only through this value until it is
/// dropped.
#[derive(Debug)]
pub struct SlotMut<'a> {
    memory: &'a UmemMemory,
    start: usize,
    len: usize,
}

impl SlotMut<'_> {
    /// The UMEM address of the first byte.
    pub fn addr(&self) -> u64 {
        self.start as u64
    }

    /// The bytes, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: inside the mapping (checked in slot_mut); held exclusively by this value
        // (registered in `slots`: reads, writes and other slots refuse it; it is not in the
        // bounce pool, so no FrameMut or LentFrame reaches it), and the slice borrows this
        // value mutably.
        unsafe {
            std::slice::from_raw_parts_mut(self.memory.as_mut_ptr().add(self.start), self.len)
        }
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: as in `as_mut_slice`; the slice borrows this value.
        unsafe { std::slice::from_raw_parts(self.memory.as_mut_ptr().add(self.start), self.len) }
    }
}

impl Drop for SlotMut<'_> {
    fn drop(&mut self) {
        let mut slots = self
            .memory
            .slots
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = slots.iter().position(|s| *s == (self.start, self.len)) {
            slots.swap_remove(i);
        }
    }
}

/// One bounce frame held exclusively ([`UmemMemory::frame_mut`]): its bytes are reached
/// only through this value (`&mut` through a borrow of it) until it is dropped or lent.
#[derive(Debug)]
pub struct FrameMut<'a> {
    memory: &'a Arc<UmemMemory>,
    index: u32,
}

impl FrameMut<'_> {
    /// The frame's number.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The frame's fill address (its first byte).
    pub fn addr(&self) -> u64 {
        self.memory.frame_span(self.index).0 as u64
    }

    /// The whole frame (one chunk).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let (at, len) = self.memory.frame_span(self.index);
        // SAFETY: inside the mapping (the pool was checked against it in with_layout);
        // the frame is held exclusively by this value (EXCLUSIVE: no read, write, other
        // FrameMut or LentFrame), and the slice borrows this value mutably.
        unsafe { std::slice::from_raw_parts_mut(self.memory.as_mut_ptr().add(at), len) }
    }

    /// The `len` bytes at `data` inside this frame: a payload received into it, opened in
    /// place before the frame is lent ([`FrameMut::lend`]).
    ///
    /// # Errors
    /// [`Error::OutOfRange`] when the bytes are not inside the frame.
    pub fn range_mut(&mut self, data: u64, len: usize) -> Result<&mut [u8]> {
        let (frame, chunk) = self.memory.frame_span(self.index);
        let at = inside(frame, chunk, data, len)? - frame;
        Ok(&mut self.as_mut_slice()[at..at + len])
    }

    /// The whole frame, read only.
    pub fn as_slice(&self) -> &[u8] {
        let (at, len) = self.memory.frame_span(self.index);
        // SAFETY: as in `as_mut_slice`; the slice borrows this value.
        unsafe { std::slice::from_raw_parts(self.memory.as_mut_ptr().add(at), len) }
    }

    /// Lends the `len` bytes at `data` (inside this frame) out as a copy source; `returns`
    /// gets the frame back when the [`LentFrame`] is dropped.
    ///
    /// # Errors
    /// [`Error::OutOfRange`] when the bytes are not inside the frame (the frame is then
    /// released, not lent).
    pub fn lend(self, data: u64, len: usize, returns: &FrameReturns) -> Result<LentFrame> {
        let (frame, chunk) = self.memory.frame_span(self.index);
        let start = inside(frame, chunk, data, len)?;
        let lent = LentFrame {
            memory: Arc::clone(self.memory),
            start,
            len,
            index: self.index,
            returns: returns.clone(),
        };
        // Exclusive to lent in one store: no one else changes a frame held exclusively.
        self.memory.frames.state[self.index as usize].store(LENT, Ordering::Release);
        std::mem::forget(self);
        Ok(lent)
    }
}

impl Drop for FrameMut<'_> {
    fn drop(&mut self) {
        let i = self.index as usize;
        self.memory.frames.release(i..i + 1, true);
    }
}

/// `data` as a mapping offset, if `data..data+len` lies inside the frame at mapping
/// offset `frame` of `chunk` bytes.
fn inside(frame: usize, chunk: usize, data: u64, len: usize) -> Result<usize> {
    let out = || Error::OutOfRange { addr: data, len };
    let start = usize::try_from(data).map_err(|_| out())?;
    let ok = start
        .checked_add(len)
        .is_some_and(|end| start >= frame && end <= frame + chunk);
    ok.then_some(start).ok_or_else(out)
}

/// Bounce frames whose [`LentFrame`] was dropped, waiting to go back to the fill plan
/// ([`crate::FillPlanner::release_bounce`]).
#[derive(Debug, Clone, Default)]
pub struct FrameReturns(Arc<Mutex<Vec<u32>>>);

impl FrameReturns {
    /// Moves the frames returned since the last call to `out` (both buffers keep their
    /// capacity: no allocation once warmed up).
    pub fn drain_into(&self, out: &mut Vec<u32>) {
        out.append(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner));
    }

    fn push(&self, index: u32) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(index);
    }
}

/// A bounce frame that came back in an RX descriptor, held exclusively: opened in place,
/// then lent as a copy source ([`ReceivedFrame::lend`]). Dropped without being lent
/// (an unpaired or malformed packet), it goes back through its [`FrameReturns`]: no path
/// leaks a bounce frame.
#[derive(Debug)]
pub struct ReceivedFrame<'a> {
    frame: Option<FrameMut<'a>>,
    returns: FrameReturns,
}

impl<'a> ReceivedFrame<'a> {
    /// Takes bounce frame `index` of `memory`, to go back through `returns`.
    ///
    /// # Errors
    /// As [`UmemMemory::frame_mut`] (nothing is taken then).
    pub fn take(memory: &'a Arc<UmemMemory>, index: u32, returns: &FrameReturns) -> Result<Self> {
        Ok(Self {
            frame: Some(memory.frame_mut(index)?),
            returns: returns.clone(),
        })
    }

    /// The `len` bytes at `data` inside the frame, mutable.
    ///
    /// # Errors
    /// [`Error::OutOfRange`] when the bytes are not inside the frame.
    pub fn range_mut(&mut self, data: u64, len: usize) -> Result<&mut [u8]> {
        match self.frame.as_mut() {
            Some(f) => f.range_mut(data, len),
            None => Err(Error::OutOfRange { addr: data, len }),
        }
    }

    /// Lends the `len` bytes at `data` as a copy source.
    ///
    /// # Errors
    /// [`Error::OutOfRange`] when the bytes are not inside the frame (it goes back then).
    pub fn lend(mut self, data: u64, len: usize) -> Result<LentFrame> {
        let Some(frame) = self.frame.take() else {
            return Err(Error::OutOfRange { addr: data, len });
        };
        let index = frame.index();
        frame
            .lend(data, len, &self.returns)
            .inspect_err(|_| self.returns.push(index))
    }
}

impl Drop for ReceivedFrame<'_> {
    fn drop(&mut self) {
        if let Some(frame) = self.frame.take() {
            let index = frame.index();
            drop(frame);
            self.returns.push(index);
        }
    }
}

/// A payload left in the bounce frame it landed in, lent out of the fill plan: the source
/// of a copy (or kept while its region is not active yet) instead of being copied out
/// first. It holds the frame (shared): while it lives the frame cannot be written
/// ([`UmemMemory::write`] refuses it) or taken by a [`FrameMut`]. Dropping it releases
/// the frame and returns it through its [`FrameReturns`], so no path can leak one.
#[derive(Debug)]
pub struct LentFrame {
    memory: Arc<UmemMemory>,
    start: usize,
    len: usize,
    index: u32,
    returns: FrameReturns,
}

impl LentFrame {
    /// Lends the `len` bytes at `data` inside bounce frame `index`.
    ///
    /// The frame should be the caller's (it came back in an RX descriptor and is on no
    /// ring): that keeps the kernel off it, which the fill plan ensures. Within the
    /// process the frame's state makes the lend exclusive: one lend per frame at a time,
    /// none while it is held by a [`FrameMut`].
    ///
    /// # Errors
    /// [`Error::OutOfRange`] when the bytes are not inside that frame; [`Error::Layout`]
    /// when `layout` is not the memory's ([`UmemMemory::with_layout`]);
    /// [`Error::FrameHeld`] when the frame is already lent or held.
    pub fn new(
        memory: &Arc<UmemMemory>,
        layout: &Layout,
        returns: &FrameReturns,
        index: u32,
        data: u64,
        len: usize,
    ) -> Result<Self> {
        if memory.frames.state.is_empty() || !memory.frames_match(layout) {
            return Err(Error::Layout(
                "lending a bounce frame of a memory without that bounce pool".into(),
            ));
        }
        if index >= layout.bounce_frames {
            return Err(Error::OutOfRange { addr: data, len });
        }
        let (frame, chunk) = memory.frame_span(index);
        let start = inside(frame, chunk, data, len)?;
        memory.frames.state[index as usize]
            .fetch_update(Ordering::Acquire, Ordering::Relaxed, |s| {
                (s & (EXCLUSIVE | LENT) == 0).then_some(s | LENT)
            })
            .map_err(|_| Error::FrameHeld(index))?;
        Ok(Self {
            memory: Arc::clone(memory),
            start,
            len,
            index,
            returns: returns.clone(),
        })
    }

    /// The bounce frame's number.
    pub fn index(&self) -> u32 {
        self.index
    }
}

impl Drop for LentFrame {
    fn drop(&mut self) {
        self.memory.frames.state[self.index as usize].fetch_and(!LENT, Ordering::Release);
        let mut returned = self
            .returns
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        returned.push(self.index);
    }
}

impl AsRef<[u8]> for LentFrame {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: inside the mapping (checked when lent). The frame is held LENT by this
        // value: writes and FrameMut are refused while it lives, so the bytes do not
        // change under the shared slice (reads may share them).
        unsafe { std::slice::from_raw_parts(self.memory.as_mut_ptr().add(self.start), self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn regions_are_guarded_and_bounce_frames_follow() {
        let l = Layout::new(&[(1, 10_000), (2, 4096)], 8, 2048).unwrap();
        assert_eq!(l.regions[0].base, GUARD);
        assert!(l.regions[1].base >= l.regions[0].base + 10_000 + GUARD);
        assert_eq!(l.regions[1].base % PAGE, 0);
        assert!(l.bounce_start >= l.regions[1].base + 4096 + GUARD);
        assert_eq!(l.len % HUGE_PAGE, 0);
        assert!(l.bounce_addr(7) + 2048 <= l.len);
        assert_eq!(l.bounce_index(l.bounce_addr(3)), Some(3));
        assert_eq!(l.bounce_index(l.bounce_addr(3) + 1), None);
        assert_eq!(l.bounce_index(l.bounce_addr(8)), None);
        assert_eq!(l.fill_addr_for(GUARD), Some(GUARD - 256));
        assert_eq!(l.fill_addr_for(100), None);
        assert_eq!(l.fill_addr_for(l.len - 100), None, "fill + chunk must fit");
        assert_eq!(l.fill_addr_for(u64::MAX), None, "no wrap-around");
        assert_eq!(l.max_frame_payload(), 2048 - 256);
    }

    #[test]
    fn bad_layouts_are_refused() {
        assert!(Layout::new(&[(1, 0)], 1, 2048).is_err());
        assert!(Layout::new(&[(1, 5), (1, 5)], 1, 2048).is_err());
        assert!(Layout::new(&[], 1, 1024).is_err());
        assert!(Layout::new(&[(1, u64::MAX - 10)], 1, 2048).is_err());
    }

    /// `--region 1:18446744073709420543`: the page alignment after the guard wrapped to 0,
    /// so the bounce pool started at offset 0, inside the region.
    #[test]
    fn a_region_whose_alignment_would_wrap_is_refused() {
        let len = 18_446_744_073_709_420_543;
        let e = Layout::new(&[(1, len)], 64, 2048).unwrap_err();
        assert!(
            e.to_string().contains("region 1") && e.to_string().contains("2^48"),
            "{e}"
        );
        // Every length from there to the end of u64 is refused the same way.
        for len in [
            u64::MAX,
            u64::MAX - GUARD,
            u64::MAX - 2 * GUARD - PAGE,
            1 << 63,
        ] {
            assert!(Layout::new(&[(1, len)], 0, 2048).is_err(), "{len}");
        }
    }

    /// The UMEM must stay below 2^48 (the unaligned descriptor's address bits); exactly at
    /// the limit is fine.
    #[test]
    fn the_layout_ends_at_the_descriptor_address_limit() {
        let fits = MAX_UMEM_LEN - 2 * GUARD - HUGE_PAGE;
        let l = Layout::new(&[(1, fits)], 0, 2048).unwrap();
        assert_eq!(l.len, MAX_UMEM_LEN - HUGE_PAGE);
        let l = Layout::new(&[(1, fits)], 1024, 2048).unwrap();
        assert_eq!(l.len, MAX_UMEM_LEN);
        assert!(
            Layout::new(&[(1, fits)], 1025, 2048).is_err(),
            "pool beyond 2^48"
        );
        assert!(Layout::new(&[(1, fits + HUGE_PAGE + 1)], 0, 2048).is_err());
        // Two regions that each fit but not together.
        assert!(Layout::new(&[(1, 1 << 47), (2, 1 << 47)], 0, 2048).is_err());
        assert!(
            Layout::new(&[], u32::MAX, 4096).is_ok(),
            "2^44 bytes of frames fit"
        );
    }

    proptest! {
        /// Whatever the lengths (any u64), a layout is refused or sound: regions in
        /// order, guarded, page aligned and disjoint, the bounce pool after the last one,
        /// everything inside `len`, and `len` at most 2^48.
        #[test]
        fn layouts_are_refused_or_disjoint_and_in_range(
            lens in proptest::collection::vec(
                prop_oneof![1u64..1 << 20, 1u64..1 << 40, (1u64 << 46)..=u64::MAX, Just(u64::MAX)],
                0..5,
            ),
            frames in prop_oneof![0u32..4096, Just(u32::MAX)],
            chunk in 2048u32..=4096,
        ) {
            let regions: Vec<(u32, u64)> =
                (0u32..).zip(lens.iter().copied()).collect();
            let Ok(l) = Layout::new(&regions, frames, chunk) else {
                // Refused only when it could not fit.
                let total: u128 = lens.iter().map(|l| u128::from(*l) + u128::from(GUARD)).sum::<u128>()
                    + u128::from(GUARD)
                    + u128::from(frames) * u128::from(chunk);
                prop_assert!(total > u128::from(MAX_UMEM_LEN) - u128::from(PAGE) * (lens.len() as u128 + 1) - u128::from(HUGE_PAGE));
                return Ok(());
            };
            prop_assert!(l.len <= MAX_UMEM_LEN);
            prop_assert_eq!(l.len % HUGE_PAGE, 0);
            let mut at = GUARD;
            for (r, (id, len)) in l.regions.iter().zip(&regions) {
                prop_assert_eq!((r.id, r.len), (*id, *len));
                prop_assert!(r.base >= at);
                prop_assert_eq!(r.base % PAGE, 0);
                at = r.base + r.len + GUARD;
            }
            prop_assert!(l.bounce_start >= at);
            let pool_end = l.bounce_start + u64::from(frames) * u64::from(chunk);
            prop_assert!(pool_end <= l.len);
            if frames > 0 {
                prop_assert!(l.bounce_addr(frames - 1) + u64::from(chunk) <= l.len);
            }
        }
    }

    #[test]
    fn memory_reads_what_was_written_and_checks_bounds() {
        let m = UmemMemory::new(HUGE_PAGE).unwrap();
        m.write(100, b"hello").unwrap();
        let mut out = [0u8; 5];
        m.read(100, &mut out).unwrap();
        assert_eq!(&out, b"hello");
        assert!(m.write(HUGE_PAGE - 2, b"abc").is_err());
        assert!(m.read(u64::MAX, &mut out).is_err());
    }

    #[test]
    fn memory_refuses_a_layout_whose_pool_is_outside_it() {
        let mut l = Layout::new(&[(1, 4096)], 4, 2048).unwrap();
        l.bounce_start = l.len - 2048;
        assert!(UmemMemory::with_layout(&l).is_err());
        l.bounce_start = u64::MAX;
        assert!(UmemMemory::with_layout(&l).is_err());
    }

    fn lendable() -> (Layout, Arc<UmemMemory>) {
        let l = Layout::new(&[(1, 4096)], 4, 2048).unwrap();
        let m = Arc::new(UmemMemory::with_layout(&l).unwrap());
        (l, m)
    }

    fn taken(r: &FrameReturns) -> Vec<u32> {
        let mut out = Vec::new();
        r.drain_into(&mut out);
        out
    }

    #[test]
    fn lent_frames_stay_inside_their_bounce_frame() {
        let (l, m) = lendable();
        let data = l.bounce_addr(2) + l.landing_shift();
        m.write(data, b"payload").unwrap();
        let returns = FrameReturns::default();
        let f = LentFrame::new(&m, &l, &returns, 2, data, 7).unwrap();
        assert_eq!(f.as_ref(), b"payload");
        assert_eq!(f.index(), 2);
        assert!(taken(&returns).is_empty());
        drop(f);
        assert_eq!(taken(&returns), vec![2], "dropping returns the frame");
        assert!(taken(&returns).is_empty());
        assert!(
            LentFrame::new(&m, &l, &returns, 2, data, 2048).is_err(),
            "runs into frame 3"
        );
        assert!(
            LentFrame::new(&m, &l, &returns, 1, data, 7).is_err(),
            "not inside frame 1"
        );
        assert!(
            LentFrame::new(&m, &l, &returns, 4, l.bounce_addr(3), 7).is_err(),
            "no frame 4"
        );
        assert!(taken(&returns).is_empty(), "refused lends return nothing");
        // A memory without the pool lends nothing.
        let bare = Arc::new(UmemMemory::new(l.len).unwrap());
        assert!(LentFrame::new(&bare, &l, &returns, 2, data, 7).is_err());
        assert!(bare.frame_mut(0).is_err());
    }

    /// The aliasing hole: a safe write used to reach the bytes a LentFrame lends (and a
    /// FrameMut's `&mut`). Now the copies respect the tokens.
    #[test]
    fn copies_cannot_reach_bytes_a_token_holds() {
        let (l, m) = lendable();
        let returns = FrameReturns::default();
        let data = l.bounce_addr(1) + l.landing_shift();
        m.write(data, b"payload").unwrap();
        let lent = LentFrame::new(&m, &l, &returns, 1, data, 7).unwrap();
        assert!(matches!(m.write(data, b"X"), Err(Error::FrameHeld(1))));
        // Any overlap counts, from a region-spanning write down to the frame's last byte.
        m.write(l.bounce_addr(1) - 1, b"X").unwrap(); // frame 0's last byte
        assert!(
            m.write(l.bounce_addr(1) - 1, b"XY").is_err(),
            "and frame 1's first"
        );
        assert!(
            m.write(l.bounce_addr(2) - 1, b"X").is_err(),
            "frame 1's last byte"
        );
        m.write(l.bounce_addr(2), b"X").unwrap(); // frame 2
        assert!(
            m.write(l.bounce_start, &vec![0; 4096]).is_err(),
            "frames 0 and 1"
        );
        assert!(matches!(m.frame_mut(1), Err(Error::FrameHeld(1))));
        assert!(
            LentFrame::new(&m, &l, &returns, 1, data, 7).is_err(),
            "lent once"
        );
        assert!(
            m.slot_mut(data, 7).is_err(),
            "bounce bytes are never a slot"
        );
        // Reads may share it.
        let mut out = [0u8; 7];
        m.read(data, &mut out).unwrap();
        assert_eq!(&out, b"payload");
        assert_eq!(lent.as_ref(), b"payload", "unchanged");
        drop(lent);
        m.write(data, b"X").unwrap();
        assert_eq!(taken(&returns), vec![1]);

        // An exclusive frame: neither read nor written nor lent while held.
        let mut f = m.frame_mut(3).unwrap();
        assert_eq!((f.index(), f.addr()), (3, l.bounce_addr(3)));
        f.as_mut_slice()[..5].copy_from_slice(b"built");
        assert!(matches!(
            m.read(l.bounce_addr(3), &mut out),
            Err(Error::FrameHeld(3))
        ));
        assert!(m.write(l.bounce_addr(3), b"x").is_err());
        assert!(m.frame_mut(3).is_err());
        assert!(LentFrame::new(&m, &l, &returns, 3, l.bounce_addr(3), 5).is_err());
        assert_eq!(&f.as_slice()[..5], b"built");
        drop(f);
        m.read(l.bounce_addr(3), &mut out[..5]).unwrap();
        assert_eq!(&out[..5], b"built");
        // A refused multi-frame copy leaves no frame taken behind it.
        let _hold = m.frame_mut(2).unwrap();
        assert!(m.write(l.bounce_start, &vec![1; 3 * 2048]).is_err());
        m.write(l.bounce_start, b"frame 0 is free again").unwrap();
        // Region bytes are untracked: copies go through.
        m.write(l.regions[0].base, b"region").unwrap();
    }

    #[test]
    fn a_held_frame_is_lent_in_place() {
        let (l, m) = lendable();
        let returns = FrameReturns::default();
        let mut f = m.frame_mut(0).unwrap();
        let data = f.addr() + l.landing_shift();
        f.as_mut_slice()[256..263].copy_from_slice(b"PAYLOAD");
        // Opened in place, then lent: the `&mut` ends before the frame is lent.
        f.range_mut(data, 7).unwrap().make_ascii_lowercase();
        assert!(f.range_mut(data, 2048).is_err(), "beyond the frame");
        assert!(f.range_mut(l.bounce_addr(1), 1).is_err(), "another frame");
        let lent = f.lend(data, 7, &returns).unwrap();
        assert_eq!(lent.as_ref(), b"payload");
        assert!(m.write(data, b"x").is_err(), "still held: lent");
        drop(lent);
        assert_eq!(taken(&returns), vec![0]);
        let f = m.frame_mut(0).unwrap();
        assert!(
            f.lend(l.bounce_addr(1), 7, &returns).is_err(),
            "outside the frame"
        );
        assert!(m.frame_mut(0).is_ok(), "a refused lend releases the frame");
        assert!(taken(&returns).is_empty());
    }

    /// Lent frames move to other threads (the copy engine) and come back from there.
    #[test]
    fn lent_frames_cross_threads() {
        let (l, m) = lendable();
        let returns = FrameReturns::default();
        let lent: Vec<LentFrame> = (0..4)
            .map(|i| LentFrame::new(&m, &l, &returns, i, l.bounce_addr(i), 64).unwrap())
            .collect();
        std::thread::spawn(move || {
            for f in lent {
                assert_eq!(f.as_ref(), [0u8; 64]);
            }
        })
        .join()
        .unwrap();
        let mut back = taken(&returns);
        back.sort_unstable();
        assert_eq!(back, [0, 1, 2, 3]);
        for i in 0..4 {
            assert!(m.frame_mut(i).is_ok());
        }
    }

    #[test]
    fn a_held_slot_is_reached_only_through_its_token() {
        let l = Layout::new(&[(1, 1 << 20)], 8, 2048).unwrap();
        let m = UmemMemory::with_layout(&l).unwrap();
        let at = l.region(1).unwrap().base + 1000;
        let mut slot = m.slot_mut(at, 100).unwrap();
        slot.as_mut_slice().copy_from_slice(&[7; 100]);
        // Copies and reads of any of its bytes are refused, others go on.
        assert!(matches!(
            m.write(at + 99, &[1, 2]),
            Err(Error::SlotHeld { .. })
        ));
        assert!(matches!(
            m.read(at - 1, &mut [0; 2]),
            Err(Error::SlotHeld { .. })
        ));
        assert!(matches!(
            m.slot_mut(at + 50, 10),
            Err(Error::SlotHeld { .. })
        ));
        m.write(at + 100, &[9]).unwrap();
        assert_eq!(slot.addr(), at);
        assert_eq!(slot.as_slice(), &[7; 100]);
        drop(slot);
        let mut out = [0; 3];
        m.read(at + 98, &mut out).unwrap();
        assert_eq!(out, [7, 7, 9]);
        // Bounce frames are taken with frame_mut, never as slots.
        assert!(matches!(
            m.slot_mut(l.bounce_addr(2) + 256, 10),
            Err(Error::FrameHeld(_))
        ));
    }

    #[test]
    fn a_received_frame_goes_back_whether_lent_or_not() {
        let l = Layout::new(&[(1, 1 << 20)], 8, 2048).unwrap();
        let m = Arc::new(UmemMemory::with_layout(&l).unwrap());
        let returns = FrameReturns::default();
        let data = l.bounce_addr(3) + 256;
        let taken = |r: &FrameReturns| {
            let mut out = Vec::new();
            r.drain_into(&mut out);
            out
        };
        // Unpaired or malformed: dropped unlent.
        let mut f = ReceivedFrame::take(&m, 3, &returns).unwrap();
        f.range_mut(data, 10).unwrap().fill(1);
        assert!(matches!(m.frame_mut(3), Err(Error::FrameHeld(3))));
        drop(f);
        assert_eq!(taken(&returns), vec![3]);
        // Lent: back when the lent payload is dropped.
        let f = ReceivedFrame::take(&m, 3, &returns).unwrap();
        let lent = f.lend(data, 10).unwrap();
        assert!(taken(&returns).is_empty());
        assert_eq!(lent.as_ref(), &[1; 10]);
        drop(lent);
        assert_eq!(taken(&returns), vec![3]);
        // A payload outside the frame: refused, and the frame goes back.
        let f = ReceivedFrame::take(&m, 3, &returns).unwrap();
        assert!(f.lend(data + 4000, 10).is_err());
        assert_eq!(taken(&returns), vec![3]);
    }
}
