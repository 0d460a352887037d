//! The UMEM area: one mapping holding the application's placement regions (each followed
//! by guard space) and a pool of bounce frames, addressed by UMEM offset. Placement
//! addresses *are* UMEM offsets.

use std::sync::{Arc, Mutex, PoisonError};

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
    /// Total length (a multiple of 2 MiB).
    pub len: u64,
}

fn align_up(v: u64, to: u64) -> u64 {
    v.div_ceil(to) * to
}

impl Layout {
    /// Lays out `regions` (id, length) and `bounce_frames` frames of `chunk_size` bytes.
    ///
    /// # Errors
    /// [`Error::Layout`] for a chunk size outside 2048..=4096, a zero-length region, a
    /// duplicate region id, or a total beyond the address space.
    pub fn new(regions: &[(u32, u64)], bounce_frames: u32, chunk_size: u32) -> Result<Self> {
        if !(2048..=4096).contains(&chunk_size) {
            return Err(Error::Layout(format!(
                "chunk size {chunk_size} outside 2048..=4096"
            )));
        }
        let mut spans = Vec::with_capacity(regions.len());
        let mut at = GUARD;
        for &(id, len) in regions {
            if len == 0 {
                return Err(Error::Layout(format!("region {id} has length 0")));
            }
            if spans.iter().any(|s: &RegionSpan| s.id == id) {
                return Err(Error::Layout(format!("region {id} given twice")));
            }
            spans.push(RegionSpan { id, base: at, len });
            at = at
                .checked_add(len)
                .and_then(|v| v.checked_add(GUARD))
                .map(|v| align_up(v, PAGE))
                .ok_or_else(|| Error::Layout("regions exceed the address space".into()))?;
        }
        let bounce_len = u64::from(bounce_frames) * u64::from(chunk_size);
        Ok(Self {
            chunk_size,
            headroom: 0,
            regions: spans,
            bounce_start: at,
            bounce_frames,
            len: align_up(at + bounce_len, HUGE_PAGE),
        })
    }

    /// Bytes between a fill address and where the payload lands.
    pub fn landing_shift(&self) -> u64 {
        XDP_PACKET_HEADROOM + u64::from(self.headroom)
    }

    /// Most payload bytes one received frame can carry.
    pub fn max_frame_payload(&self) -> u64 {
        u64::from(self.chunk_size) - self.landing_shift()
    }

    /// The fill address at which a payload lands at `landing`, if the kernel accepts it
    /// (`fill + chunk_size <= len`).
    pub fn fill_addr_for(&self, landing: u64) -> Option<u64> {
        let fill = landing.checked_sub(self.landing_shift())?;
        (fill + u64::from(self.chunk_size) <= self.len).then_some(fill)
    }

    /// The fill address of bounce frame `i`.
    pub fn bounce_addr(&self, i: u32) -> u64 {
        self.bounce_start + u64::from(i) * u64::from(self.chunk_size)
    }

    /// The bounce frame whose fill address is `addr`, if any.
    pub fn bounce_index(&self, addr: u64) -> Option<u32> {
        let off = addr.checked_sub(self.bounce_start)?;
        let chunk = u64::from(self.chunk_size);
        if off % chunk != 0 {
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

/// The UMEM's memory. Shared with the kernel: ranges posted to a fill ring belong to the
/// kernel until their RX descriptor comes back.
#[derive(Debug)]
pub struct UmemMemory {
    map: MmapRaw,
    backing: Backing,
}

impl UmemMemory {
    /// Maps `len` zeroed bytes (a multiple of 2 MiB): huge pages when reserved, else
    /// transparent huge pages.
    ///
    /// # Errors
    /// [`Error::Io`] when even the ordinary mapping fails.
    pub fn new(len: u64) -> Result<Self> {
        let len = usize::try_from(len).map_err(|_| Error::Layout("UMEM too large".into()))?;
        if let Ok(m) = MmapOptions::new().len(len).huge(Some(21)).map_anon() {
            return Ok(Self {
                map: m.into(),
                backing: Backing::HugePages,
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
    /// The caller's protocol must own the range: not posted to a fill ring, not being
    /// read by another thread. The receiver guarantees it (see docs/design.md, "The
    /// prediction window").
    ///
    /// # Errors
    /// [`Error::OutOfRange`].
    pub fn write(&self, addr: u64, src: &[u8]) -> Result<()> {
        let start = self.check(addr, src.len())?;
        // SAFETY: start..start+len is inside the mapping (checked). `src` may itself be
        // UMEM (a lent bounce frame), so the copy tolerates overlap.
        unsafe { std::ptr::copy(src.as_ptr(), self.as_mut_ptr().add(start), src.len()) };
        Ok(())
    }

    /// Copies `out.len()` bytes at `addr` into `out`.
    ///
    /// # Errors
    /// [`Error::OutOfRange`].
    pub fn read(&self, addr: u64, out: &mut [u8]) -> Result<()> {
        let start = self.check(addr, out.len())?;
        // SAFETY: inside the mapping (checked); out is ordinary memory.
        unsafe {
            std::ptr::copy_nonoverlapping(self.as_mut_ptr().add(start), out.as_mut_ptr(), out.len())
        };
        Ok(())
    }

    /// The bytes at `addr..addr+len`, mutable.
    ///
    /// # Errors
    /// [`Error::OutOfRange`].
    ///
    /// # Safety
    /// The range must belong to the caller for the lifetime of the slice: it came back in
    /// an RX descriptor (or is a region range no fill ring holds) and no other slice or
    /// copy engine touches it meanwhile.
    pub unsafe fn slice_mut(&self, addr: u64, len: usize) -> Result<&mut [u8]> {
        let start = self.check(addr, len)?;
        // SAFETY: inside the mapping (checked); exclusivity is the caller's contract.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.as_mut_ptr().add(start), len) })
    }
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
}

/// A payload left in the bounce frame it landed in, lent out of the fill plan: the source
/// of a copy (or kept while its region is not active yet) instead of being copied out
/// first. Dropping it returns the frame through its [`FrameReturns`], so no path can leak
/// one.
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
    /// # Errors
    /// [`Error::OutOfRange`] when the bytes are not inside that frame.
    ///
    /// # Safety
    /// The frame must be the caller's (it came back in an RX descriptor and is on no
    /// ring) and stay unposted and unwritten until this value is dropped.
    pub unsafe fn new(
        memory: &Arc<UmemMemory>,
        layout: &Layout,
        returns: &FrameReturns,
        index: u32,
        data: u64,
        len: usize,
    ) -> Result<Self> {
        let frame = layout.bounce_addr(index);
        let inside = data
            .checked_add(len as u64)
            .is_some_and(|end| data >= frame && end <= frame + u64::from(layout.chunk_size));
        if index >= layout.bounce_frames || !inside {
            return Err(Error::OutOfRange { addr: data, len });
        }
        let start = memory.check(data, len)?;
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
        // SAFETY: inside the mapping (checked in `new`), and by `new`'s contract no ring
        // and no writer touches the frame while this value lives.
        unsafe { std::slice::from_raw_parts(self.memory.as_mut_ptr().add(self.start), self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(l.max_frame_payload(), 2048 - 256);
    }

    #[test]
    fn bad_layouts_are_refused() {
        assert!(Layout::new(&[(1, 0)], 1, 2048).is_err());
        assert!(Layout::new(&[(1, 5), (1, 5)], 1, 2048).is_err());
        assert!(Layout::new(&[], 1, 1024).is_err());
        assert!(Layout::new(&[(1, u64::MAX - 10)], 1, 2048).is_err());
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
    fn lent_frames_stay_inside_their_bounce_frame() {
        let l = Layout::new(&[(1, 4096)], 4, 2048).unwrap();
        let m = Arc::new(UmemMemory::new(l.len).unwrap());
        let data = l.bounce_addr(2) + l.landing_shift();
        m.write(data, b"payload").unwrap();
        let returns = FrameReturns::default();
        // SAFETY: nothing else uses this memory in the test.
        let f = unsafe { LentFrame::new(&m, &l, &returns, 2, data, 7) }.unwrap();
        assert_eq!(f.as_ref(), b"payload");
        assert_eq!(f.index(), 2);
        let taken = |r: &FrameReturns| {
            let mut out = Vec::new();
            r.drain_into(&mut out);
            out
        };
        assert!(taken(&returns).is_empty());
        drop(f);
        assert_eq!(taken(&returns), vec![2], "dropping returns the frame");
        assert!(taken(&returns).is_empty());
        // SAFETY: as above; each call is refused before lending anything.
        unsafe {
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
        }
        assert!(taken(&returns).is_empty(), "refused lends return nothing");
    }
}
