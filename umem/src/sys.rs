//! The kernel boundary: every libxdp-sys call and socket option of the crate lives here.
//!
//! Minimum kernel: 5.10 for shared UMEMs with one fill ring per queue and need-wakeup;
//! unaligned chunks need 5.4.

use std::ffi::CString;
use std::os::fd::RawFd;
use std::ptr::{self, NonNull};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use libxdp_sys as xdp;

use crate::memory::{Layout, UmemMemory};
use crate::ring::{ConsState, Consumer, ProdState, Producer, RingMem};
use crate::{Desc, Error, Result};

const SOL_XDP: libc::c_int = 283;

/// A value at a fixed heap address that libxdp keeps a pointer to (a ring struct: libxdp
/// reads it again in `xsk_socket__delete` / `xsk_umem__delete` to unmap the ring). It is
/// freed only when this handle drops, and its owner drops it only after deleting the
/// libxdp object that points at it.
///
/// A raw allocation rather than a `Box`: moving a `Box` asserts exclusive access to its
/// contents, which the pointer kept by libxdp would contradict.
struct Pinned<T>(NonNull<T>);

impl<T> Pinned<T> {
    fn new(value: T) -> Self {
        Self(NonNull::from(Box::leak(Box::new(value))))
    }

    fn as_ptr(&self) -> *mut T {
        self.0.as_ptr()
    }

    /// A copy of the value (libxdp writes it only inside the call that fills it in).
    fn get(&self) -> T
    where
        T: Copy,
    {
        // SAFETY: the allocation is live (freed only in Drop) and initialized; nothing
        // writes it concurrently (libxdp only writes it during the create call, under the
        // umem lock, and only reads it afterwards).
        unsafe { self.0.as_ptr().read() }
    }
}

impl<T> Drop for Pinned<T> {
    fn drop(&mut self) {
        // SAFETY: the pointer came from Box::leak in `new` and is freed only here, once.
        drop(unsafe { Box::from_raw(self.0.as_ptr()) });
    }
}

impl<T> std::fmt::Debug for Pinned<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Pinned").field(&self.0).finish()
    }
}

fn empty_prod() -> xdp::xsk_ring_prod {
    xdp::xsk_ring_prod {
        cached_prod: 0,
        cached_cons: 0,
        mask: 0,
        size: 0,
        producer: ptr::null_mut(),
        consumer: ptr::null_mut(),
        ring: ptr::null_mut(),
        flags: ptr::null_mut(),
    }
}

fn empty_cons() -> xdp::xsk_ring_cons {
    xdp::xsk_ring_cons {
        cached_prod: 0,
        cached_cons: 0,
        mask: 0,
        size: 0,
        producer: ptr::null_mut(),
        consumer: ptr::null_mut(),
        ring: ptr::null_mut(),
        flags: ptr::null_mut(),
    }
}

/// The ring structs of one socket: libxdp keeps `xsk->rx`, `xsk->tx` and (for the
/// socket's queue context) `ctx->fill`, `ctx->comp` pointing here until
/// `xsk_socket__delete`.
#[derive(Debug, Clone, Copy)]
struct SocketRings {
    rx: xdp::xsk_ring_cons,
    tx: xdp::xsk_ring_prod,
    fill: xdp::xsk_ring_prod,
    comp: xdp::xsk_ring_cons,
}

/// What libxdp's umem object needs serialized: socket creation and deletion change its
/// reference count and its list of queue contexts.
#[derive(Debug, Default)]
struct UmemState {
    /// A socket took the fill and completion rings created with the UMEM.
    first_rings_taken: bool,
}

/// The kernel's UMEM object. Deleted when the last socket using it is gone.
#[derive(Debug)]
struct UmemHandle {
    raw: *mut xdp::xsk_umem,
    /// The fill and completion rings created with the UMEM: libxdp keeps pointers to
    /// them (`umem->fill_save`), and the first socket's queue context keeps pointing
    /// here (we pass these very structs to its creation), until that socket is deleted.
    first_rings: Pinned<(xdp::xsk_ring_prod, xdp::xsk_ring_cons)>,
    /// Held around every libxdp call that touches `raw` (socket create and delete).
    state: Mutex<UmemState>,
    /// Entries of every fill and completion ring (libxdp sizes them all from the UMEM).
    ring_size: u32,
    memory: Arc<UmemMemory>,
}

// SAFETY: `raw` is only used under `state`'s lock (socket create/delete) or in Drop, when
// no socket is left; the ring structs are only read after libxdp filled them in.
unsafe impl Send for UmemHandle {}
// SAFETY: as above: shared references only reach `raw` under the lock.
unsafe impl Sync for UmemHandle {}

impl UmemHandle {
    fn lock(&self) -> std::sync::MutexGuard<'_, UmemState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for UmemHandle {
    fn drop(&mut self) {
        // SAFETY: raw came from xsk_umem__create and every socket holding it is gone
        // (they hold an Arc to this handle). `first_rings` and `memory` are fields, so
        // they are freed only after this call returns.
        let r = unsafe { xdp::xsk_umem__delete(self.raw) };
        if r != 0 {
            tracing::warn!(
                "xsk_umem__delete: {}",
                std::io::Error::from_raw_os_error(-r)
            );
        }
    }
}

/// A registered UMEM.
#[derive(Debug, Clone)]
pub struct Umem {
    handle: Arc<UmemHandle>,
    layout: Layout,
}

/// Whether a socket copies frames or shares pages with the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindMode {
    /// XDP_ZEROCOPY: the driver DMAs into the UMEM.
    ZeroCopy,
    /// XDP_COPY: the kernel copies each frame into the UMEM.
    Copy,
}

impl BindMode {
    /// Name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            BindMode::ZeroCopy => "zero-copy",
            BindMode::Copy => "copy",
        }
    }
}

/// How to open a socket.
#[derive(Debug, Clone)]
pub struct SocketConfig {
    /// Interface name.
    pub ifname: String,
    /// Queue id.
    pub queue: u32,
    /// Entries of the RX ring (0: no RX ring).
    pub rx_size: u32,
    /// Entries of the TX ring (0: no TX ring).
    pub tx_size: u32,
    /// Entries of this socket's fill and completion rings. libxdp sizes them from the
    /// UMEM (`ring_size` of [`Umem::new`]), so this must be the same.
    pub fill_size: u32,
    /// Bind mode. Use [`zero_copy_supported`] to choose: it probes on a throwaway UMEM,
    /// so that a refused bind leaves nothing behind on the real one.
    pub mode: BindMode,
    /// Ask for need-wakeup flags (poll mode) instead of a kernel that always checks.
    pub need_wakeup: bool,
}

/// One AF_XDP socket bound to a queue, with its rings.
///
/// The rings are private: [`Socket::rx_mut`], [`Socket::tx_mut`], [`Socket::fill_mut`]
/// and [`Socket::comp_mut`] lend them out for a borrow of the socket, so no ring can be
/// used after the socket (and with it the ring mappings) is gone.
#[derive(Debug)]
pub struct Socket {
    raw: *mut xdp::xsk_socket,
    rx: Option<ConsState<Desc>>,
    tx: Option<ProdState<Desc>>,
    fill: ProdState<u64>,
    comp: ConsState<u64>,
    /// Copy or zero-copy.
    pub mode: BindMode,
    /// The queue it is bound to.
    pub queue: u32,
    // libxdp points at these until xsk_socket__delete, which Drop::drop calls before any
    // field is dropped; so they are freed after the socket is deleted, whatever the
    // field order.
    _rings: Pinned<SocketRings>,
    _umem: Arc<UmemHandle>,
}

// SAFETY: a Socket owns its rings' states and the libxdp socket; moving it to another
// thread moves them all. Deletion takes the umem lock.
unsafe impl Send for Socket {}

impl Drop for Socket {
    fn drop(&mut self) {
        let _lock = self._umem.lock();
        // SAFETY: raw came from xsk_socket__create_shared and is deleted once, here. The
        // ring structs it points at (`_rings`, or the umem's `first_rings`) are still
        // allocated: they are freed only after this function returns. No ring side is
        // borrowed (they borrow `self`).
        unsafe { xdp::xsk_socket__delete(self.raw) };
    }
}

fn os_error(what: &'static str, r: libc::c_int) -> Error {
    Error::Io(what, std::io::Error::from_raw_os_error(-r))
}

/// The ring memory described by one of libxdp's ring structs, if libxdp filled it in
/// with `size` entries.
fn ring_mem<T>(
    producer: *mut u32,
    consumer: *mut u32,
    flags: *mut u32,
    ring: *mut libc::c_void,
    size: u32,
    expected: u32,
) -> Option<RingMem<T>> {
    let filled = !producer.is_null() && !consumer.is_null() && !flags.is_null();
    (filled && !ring.is_null() && size == expected && size.is_power_of_two()).then(|| RingMem {
        producer: producer.cast_const().cast(),
        consumer: consumer.cast_const().cast(),
        flags: flags.cast_const().cast(),
        entries: ring.cast(),
        size,
    })
}

fn prod_mem<T>(r: &xdp::xsk_ring_prod, expected: u32) -> Option<RingMem<T>> {
    ring_mem(r.producer, r.consumer, r.flags, r.ring, r.size, expected)
}

fn cons_mem<T>(r: &xdp::xsk_ring_cons, expected: u32) -> Option<RingMem<T>> {
    ring_mem(r.producer, r.consumer, r.flags, r.ring, r.size, expected)
}

impl Umem {
    /// Registers `memory` (laid out by `layout`) with the kernel in unaligned-chunk mode.
    ///
    /// # Errors
    /// [`Error::Layout`] when `layout` does not describe `memory`; [`Error::Io`] from
    /// `xsk_umem__create` (EPERM without CAP_NET_RAW/CAP_IPC_LOCK, ENOMEM when the
    /// memlock limit is too low).
    pub fn new(memory: Arc<UmemMemory>, layout: Layout, ring_size: u32) -> Result<Self> {
        if layout.len > memory.len() || !memory.frames_match(&layout) {
            return Err(Error::Layout(
                "the layout does not describe the UMEM memory".into(),
            ));
        }
        let config = xdp::xsk_umem_config {
            fill_size: ring_size,
            comp_size: ring_size,
            frame_size: layout.chunk_size,
            frame_headroom: layout.headroom,
            flags: xdp::XDP_UMEM_UNALIGNED_CHUNK_FLAG,
        };
        let first_rings = Pinned::new((empty_prod(), empty_cons()));
        let (fill, comp) = (
            first_rings.as_ptr().cast::<xdp::xsk_ring_prod>(),
            // SAFETY: a field of the live allocation (no dereference).
            unsafe { &raw mut (*first_rings.as_ptr()).1 },
        );
        let mut raw = ptr::null_mut();
        // SAFETY: the memory is a live mapping of `memory.len()` bytes, page aligned, kept
        // alive by the handle (and unmapped only after xsk_umem__delete); the ring structs
        // are pinned, so the addresses libxdp keeps stay valid for the handle's life.
        let r = unsafe {
            xdp::xsk_umem__create(
                &mut raw,
                memory.as_mut_ptr().cast(),
                memory.len(),
                fill,
                comp,
                &config,
            )
        };
        if r != 0 {
            return Err(os_error("xsk_umem__create", r));
        }
        Ok(Self {
            handle: Arc::new(UmemHandle {
                raw,
                first_rings,
                state: Mutex::new(UmemState::default()),
                ring_size,
                memory,
            }),
            layout,
        })
    }

    /// The layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The memory.
    pub fn memory(&self) -> &Arc<UmemMemory> {
        &self.handle.memory
    }

    /// Opens a socket on `config.queue` sharing this UMEM, with its own fill ring. Our XDP
    /// program stays in charge (INHIBIT_PROG_LOAD): the caller puts the socket into its
    /// XSKMAP. Retries EBUSY (a queue closed moments ago) for up to a second.
    ///
    /// # Errors
    /// [`Error::Io`] from `xsk_socket__create_shared`; EEXIST when this UMEM already has
    /// a socket on that interface and queue (it would share that socket's fill ring).
    pub fn socket(&self, config: &SocketConfig) -> Result<Socket> {
        let mut last = -libc::EINVAL;
        for _attempt in 0..50 {
            match self.try_socket(config, config.mode) {
                Ok(s) => return Ok(s),
                Err(e) if e == -libc::EBUSY => {
                    std::thread::sleep(Duration::from_millis(20));
                    last = e;
                }
                Err(e) => return Err(os_error("xsk_socket__create_shared", e)),
            }
        }
        Err(os_error("xsk_socket__create_shared", last))
    }

    fn try_socket(
        &self,
        config: &SocketConfig,
        mode: BindMode,
    ) -> std::result::Result<Socket, i32> {
        let ifname = CString::new(config.ifname.as_str()).map_err(|_| -libc::EINVAL)?;
        let mut bind_flags = match mode {
            BindMode::ZeroCopy => xdp::XDP_ZEROCOPY,
            BindMode::Copy => xdp::XDP_COPY,
        };
        if config.need_wakeup {
            bind_flags |= xdp::XDP_USE_NEED_WAKEUP;
        }
        let cfg = xdp::xsk_socket_config {
            rx_size: config.rx_size,
            tx_size: config.tx_size,
            __bindgen_anon_1: xdp::xsk_socket_config__bindgen_ty_1 {
                libxdp_flags: xdp::XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD,
            },
            xdp_flags: 0,
            bind_flags: u16::try_from(bind_flags).unwrap_or(0),
        };
        let rings = Pinned::new(SocketRings {
            rx: empty_cons(),
            tx: empty_prod(),
            fill: empty_prod(),
            comp: empty_cons(),
        });
        let p = rings.as_ptr();
        // libxdp creates, copies or shares each queue's fill and completion rings; the
        // socket reads them back from the structs it passed.
        let mut state = self.handle.lock();
        let first = !state.first_rings_taken;
        let first_rings = self.handle.first_rings.as_ptr();
        // The first socket passes the UMEM's own ring structs: libxdp then uses them in
        // place (no copy), and on failure leaves them mapped for the next attempt.
        // SAFETY: field addresses of live allocations, nothing is dereferenced.
        let (rx, tx, fill, comp) = unsafe {
            (
                &raw mut (*p).rx,
                &raw mut (*p).tx,
                if first {
                    &raw mut (*first_rings).0
                } else {
                    &raw mut (*p).fill
                },
                if first {
                    &raw mut (*first_rings).1
                } else {
                    &raw mut (*p).comp
                },
            )
        };
        let mut raw = ptr::null_mut();
        // SAFETY: every pointer is valid for the call. The ring structs are pinned
        // allocations that outlive the socket (`rings` moves into it; `first_rings`
        // lives in the umem handle it holds), since libxdp keeps pointers to them until
        // xsk_socket__delete. The umem lock is held.
        let r = unsafe {
            xdp::xsk_socket__create_shared(
                &mut raw,
                ifname.as_ptr(),
                config.queue,
                self.handle.raw,
                if config.rx_size > 0 {
                    rx
                } else {
                    ptr::null_mut()
                },
                if config.tx_size > 0 {
                    tx
                } else {
                    ptr::null_mut()
                },
                fill,
                comp,
                &cfg,
            )
        };
        if r != 0 {
            return Err(r);
        }
        if first {
            // libxdp handed the UMEM's rings to this socket's queue context (and forgot
            // them: umem->fill_save is NULL now), whatever becomes of the socket.
            state.first_rings_taken = true;
        }
        let made = rings.get();
        let (fill_ring, comp_ring) = if first {
            self.handle.first_rings.get()
        } else {
            (made.fill, made.comp)
        };
        // libxdp sizes every queue's fill and completion rings from the UMEM's config.
        let fill_size = self.handle.ring_size;
        let parts = (
            (config.rx_size > 0).then(|| cons_mem::<Desc>(&made.rx, config.rx_size)),
            (config.tx_size > 0).then(|| prod_mem::<Desc>(&made.tx, config.tx_size)),
            prod_mem::<u64>(&fill_ring, fill_size),
            cons_mem::<u64>(&comp_ring, fill_size),
        );
        let (Some(rx), Some(tx), Some(fill), Some(comp)) = (
            parts.0.map_or(Some(None), |m| m.map(Some)),
            parts.1.map_or(Some(None), |m| m.map(Some)),
            parts.2,
            parts.3,
        ) else {
            // libxdp left a ring struct unset (or not as configured). The case we know:
            // this UMEM already has a socket on this interface and queue, whose fill and
            // completion rings (and ring structs) the new one would share. Refuse it.
            // SAFETY: raw was just created and is deleted once; the ring structs it
            // points at are still allocated (`rings` drops after this).
            unsafe { xdp::xsk_socket__delete(raw) };
            return Err(-libc::EEXIST);
        };
        drop(state);
        Ok(Socket {
            raw,
            rx: rx.map(ConsState::new),
            tx: tx.map(ProdState::new),
            fill: ProdState::new(fill),
            comp: ConsState::new(comp),
            mode,
            queue: config.queue,
            _rings: rings,
            _umem: Arc::clone(&self.handle),
        })
    }
}

/// Whether `ifname` queue `queue` accepts an XDP_ZEROCOPY bind, tried on a small
/// throwaway UMEM (veth refuses with EOPNOTSUPP).
pub fn zero_copy_supported(ifname: &str, queue: u32) -> bool {
    let probe = || -> Result<Socket> {
        let layout = Layout::new(&[], 64, 2048)?;
        let memory = Arc::new(UmemMemory::with_layout(&layout)?);
        let umem = Umem::new(memory, layout, 64)?;
        umem.socket(&SocketConfig {
            ifname: ifname.to_string(),
            queue,
            rx_size: 64,
            tx_size: 0,
            fill_size: 64,
            mode: BindMode::ZeroCopy,
            need_wakeup: false,
        })
    };
    probe().is_ok()
}

/// XDP_STATISTICS of one socket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XskStats {
    /// Frames dropped for reasons other than invalid descriptors (e.g. frame too long).
    pub rx_dropped: u64,
    /// Invalid RX descriptors.
    pub rx_invalid_descs: u64,
    /// Invalid TX descriptors.
    pub tx_invalid_descs: u64,
    /// Frames dropped because the RX ring was full.
    pub rx_ring_full: u64,
    /// Times the fill ring was empty when a frame arrived.
    pub rx_fill_ring_empty_descs: u64,
    /// Times the TX ring was empty when the kernel looked.
    pub tx_ring_empty_descs: u64,
}

impl Socket {
    /// The RX ring (None when opened with `rx_size` 0), for a borrow of the socket.
    pub fn rx_mut(&mut self) -> Option<Consumer<'_, Desc>> {
        self.rx.as_mut().map(Consumer::new)
    }

    /// The TX ring (None when opened with `tx_size` 0), for a borrow of the socket.
    pub fn tx_mut(&mut self) -> Option<Producer<'_, Desc>> {
        self.tx.as_mut().map(Producer::new)
    }

    /// This socket's fill ring, for a borrow of the socket.
    pub fn fill_mut(&mut self) -> Producer<'_, u64> {
        Producer::new(&mut self.fill)
    }

    /// This socket's completion ring, for a borrow of the socket.
    pub fn comp_mut(&mut self) -> Consumer<'_, u64> {
        Consumer::new(&mut self.comp)
    }

    /// The socket's file descriptor (for the XSKMAP and poll).
    pub fn fd(&self) -> RawFd {
        // SAFETY: raw is a live socket.
        unsafe { xdp::xsk_socket__fd(self.raw) }
    }

    /// XDP_STATISTICS.
    ///
    /// # Errors
    /// [`Error::Io`] from getsockopt.
    pub fn statistics(&self) -> Result<XskStats> {
        let mut s = xdp::xdp_statistics {
            rx_dropped: 0,
            rx_invalid_descs: 0,
            tx_invalid_descs: 0,
            rx_ring_full: 0,
            rx_fill_ring_empty_descs: 0,
            tx_ring_empty_descs: 0,
        };
        #[allow(clippy::cast_possible_truncation, reason = "a 48-byte struct")]
        let mut len = std::mem::size_of::<xdp::xdp_statistics>() as libc::socklen_t;
        // SAFETY: s and len are valid for writes of the sizes given.
        let r = unsafe {
            libc::getsockopt(
                self.fd(),
                SOL_XDP,
                xdp::XDP_STATISTICS as libc::c_int,
                (&raw mut s).cast(),
                &mut len,
            )
        };
        if r != 0 {
            return Err(Error::Io(
                "getsockopt(XDP_STATISTICS)",
                std::io::Error::last_os_error(),
            ));
        }
        Ok(XskStats {
            rx_dropped: s.rx_dropped,
            rx_invalid_descs: s.rx_invalid_descs,
            tx_invalid_descs: s.tx_invalid_descs,
            rx_ring_full: s.rx_ring_full,
            rx_fill_ring_empty_descs: s.rx_fill_ring_empty_descs,
            tx_ring_empty_descs: s.tx_ring_empty_descs,
        })
    }

    /// Kicks the kernel's RX processing (needed when the fill ring asks for a wakeup).
    pub fn wake_rx(&self) {
        // SAFETY: a zero-length non-blocking recvfrom on our own socket.
        unsafe {
            libc::recvfrom(
                self.fd(),
                ptr::null_mut(),
                0,
                libc::MSG_DONTWAIT,
                ptr::null_mut(),
                ptr::null_mut(),
            )
        };
    }

    /// Kicks the kernel's TX processing.
    pub fn wake_tx(&self) {
        // SAFETY: a zero-length non-blocking sendto on our own socket.
        unsafe {
            libc::sendto(
                self.fd(),
                ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                ptr::null(),
                0,
            )
        };
    }

    /// Waits up to `timeout` for RX descriptors.
    pub fn poll_rx(&self, timeout: Duration) {
        let mut pfd = libc::pollfd {
            fd: self.fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, ms) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Root (CAP_NET_RAW, CAP_IPC_LOCK) opens AF_XDP sockets; without it these tests skip,
    /// unless CI=true, which forbids skipping (as the end-to-end tests do).
    fn may_run() -> bool {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            return true;
        }
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "AF_XDP tests need root, and CI=true forbids skipping them"
        );
        eprintln!("skipping: AF_XDP sockets need root");
        false
    }

    /// One test at a time on lo's queue 0.
    static LO: Mutex<()> = Mutex::new(());

    /// The page offset (XDP_PGOFF_RX_RING 0, XDP_UMEM_PGOFF_FILL_RING 0x100000000,
    /// XDP_UMEM_PGOFF_COMPLETION_RING 0x180000000) of the socket mapping holding `addr`.
    fn ring_mapping(addr: usize) -> Option<u64> {
        let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
        maps.lines().find_map(|l| {
            let mut f = l.split_whitespace();
            let (lo, hi) = f.next()?.split_once('-')?;
            let (lo, hi) = (
                usize::from_str_radix(lo, 16).ok()?,
                usize::from_str_radix(hi, 16).ok()?,
            );
            let offset = u64::from_str_radix(f.nth(1)?, 16).ok()?;
            let path = f.nth(2)?;
            ((lo..hi).contains(&addr) && path.starts_with("socket:")).then_some(offset)
        })
    }

    fn umem() -> Umem {
        let layout = Layout::new(&[(1, 1 << 20)], 64, 2048).unwrap();
        let memory = Arc::new(UmemMemory::with_layout(&layout).unwrap());
        Umem::new(memory, layout, 64).unwrap()
    }

    fn config(mode: BindMode, rx: u32, tx: u32) -> SocketConfig {
        SocketConfig {
            ifname: "lo".into(),
            queue: 0,
            rx_size: rx,
            tx_size: tx,
            fill_size: 64,
            mode,
            need_wakeup: false,
        }
    }

    /// Sockets on the loopback interface, opened, used and dropped many times over, with
    /// the paths that used to leave libxdp pointing at dead memory: the ring structs
    /// were stack locals (xsk_socket__delete then unmapped whatever it read there: rc 139
    /// on ordinary exits), and a refused first bind unmapped the UMEM's own rings, which
    /// the next socket then used. The rings are touched after every open, and the socket
    /// is dropped before, after or while the umem handle goes.
    #[test]
    fn sockets_open_use_and_drop_cleanly() {
        if !may_run() {
            return;
        }
        let _lo = LO.lock().unwrap_or_else(PoisonError::into_inner);
        for round in 0..20 {
            let umem = umem();
            // lo refuses zero-copy; the same UMEM then binds in copy mode, and its first
            // rings are still mapped.
            assert!(umem.socket(&config(BindMode::ZeroCopy, 64, 0)).is_err());
            let mut s = umem.socket(&config(BindMode::Copy, 64, 64)).unwrap();
            // Each side reads the kernel's ring of its kind.
            assert_eq!(ring_mapping(s.fill.producer_addr()), Some(0x1_0000_0000));
            assert_eq!(ring_mapping(s.comp.producer_addr()), Some(0x1_8000_0000));
            let rx = s.rx.as_ref().map(ConsState::producer_addr);
            assert_eq!(rx.and_then(ring_mapping), Some(0));
            assert_eq!(s.fill_mut().free(), 64);
            let frames: Vec<u64> = (0..8).map(|i| umem.layout().bounce_addr(i)).collect();
            assert_eq!(s.fill_mut().produce(frames), 8);
            assert!(s.fill_mut().in_flight() <= 8);
            assert_eq!(s.rx_mut().map(|r| r.size()), Some(64));
            assert_eq!(s.comp_mut().available(), 0);
            let desc = Desc {
                addr: umem.layout().bounce_addr(9),
                len: 60,
                options: 0,
            };
            assert_eq!(s.tx_mut().map(|mut t| t.produce([desc])), Some(1));
            s.wake_tx();
            s.statistics().unwrap();
            // A second socket on the same queue would share the first one's fill ring:
            // refused, and the first one still works.
            let e = umem
                .socket(&config(BindMode::Copy, 64, 0))
                .expect_err("second socket on one queue");
            assert!(e.to_string().contains("exists"), "{e}");
            assert_eq!(s.comp_mut().size(), 64);
            if round % 2 == 0 {
                drop(umem);
                drop(s);
            } else {
                drop(s);
                drop(umem);
            }
        }
    }

    #[test]
    fn zero_copy_probe_on_loopback_says_no() {
        if !may_run() {
            return;
        }
        let _lo = LO.lock().unwrap_or_else(PoisonError::into_inner);
        for _ in 0..5 {
            assert!(!zero_copy_supported("lo", 0));
        }
        assert!(!zero_copy_supported("no-such-if0", 0));
    }
}
