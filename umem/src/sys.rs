//! The kernel boundary: every libxdp-sys call and socket option of the crate lives here.
//!
//! Minimum kernel: 5.10 for shared UMEMs with one fill ring per queue and need-wakeup;
//! unaligned chunks need 5.4.

use std::ffi::CString;
use std::os::fd::RawFd;
use std::ptr;
use std::sync::Arc;
use std::time::Duration;

use libxdp_sys as xdp;

use crate::memory::{Layout, UmemMemory};
use crate::ring::{Consumer, Producer, RingMem};
use crate::{Desc, Error, Result};

const SOL_XDP: libc::c_int = 283;

/// The kernel's UMEM object. Deleted when the last socket using it is gone.
#[derive(Debug)]
struct UmemHandle {
    raw: *mut xdp::xsk_umem,
    // Ring structs whose addresses libxdp remembers until the first socket takes them.
    first_rings: Box<(xdp::xsk_ring_prod, xdp::xsk_ring_cons)>,
    memory: Arc<UmemMemory>,
}

// SAFETY: the handle is only used under the Umem/Socket API, which never shares a ring
// between threads; libxdp's umem object itself is only touched at create/delete.
unsafe impl Send for UmemHandle {}
// SAFETY: as above; shared references only read `raw` to pass it to socket creation.
unsafe impl Sync for UmemHandle {}

impl Drop for UmemHandle {
    fn drop(&mut self) {
        // SAFETY: raw came from xsk_umem__create and every socket holding it is gone
        // (they hold an Arc to this handle).
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
    /// Entries of this socket's fill and completion rings.
    pub fill_size: u32,
    /// Bind mode. Use [`zero_copy_supported`] to choose: a failed zero-copy bind leaves
    /// the UMEM's first rings unmapped, so the mode is probed on a throwaway UMEM.
    pub mode: BindMode,
    /// Ask for need-wakeup flags (poll mode) instead of a kernel that always checks.
    pub need_wakeup: bool,
}

/// One AF_XDP socket bound to a queue, with its rings.
#[derive(Debug)]
pub struct Socket {
    raw: *mut xdp::xsk_socket,
    /// RX descriptors (payload frames).
    pub rx: Option<Consumer<Desc>>,
    /// TX descriptors.
    pub tx: Option<Producer<Desc>>,
    /// This socket's fill ring.
    pub fill: Producer<u64>,
    /// This socket's completion ring.
    pub comp: Consumer<u64>,
    /// Copy or zero-copy.
    pub mode: BindMode,
    /// The queue it is bound to.
    pub queue: u32,
    // Declared last: dropped after the socket is deleted.
    _umem: Arc<UmemHandle>,
}

// SAFETY: a Socket owns its rings; moving it to another thread moves them all.
unsafe impl Send for Socket {}

impl Drop for Socket {
    fn drop(&mut self) {
        // SAFETY: raw came from xsk_socket__create_shared; the rings die with self.
        unsafe { xdp::xsk_socket__delete(self.raw) };
    }
}

fn os_error(what: &'static str, r: libc::c_int) -> Error {
    Error::Io(what, std::io::Error::from_raw_os_error(-r))
}

fn prod_mem<T>(r: &xdp::xsk_ring_prod) -> RingMem<T> {
    RingMem {
        producer: r.producer.cast_const().cast(),
        consumer: r.consumer.cast_const().cast(),
        flags: r.flags.cast_const().cast(),
        entries: r.ring.cast(),
        size: r.size,
    }
}

fn cons_mem<T>(r: &xdp::xsk_ring_cons) -> RingMem<T> {
    RingMem {
        producer: r.producer.cast_const().cast(),
        consumer: r.consumer.cast_const().cast(),
        flags: r.flags.cast_const().cast(),
        entries: r.ring.cast(),
        size: r.size,
    }
}

impl Umem {
    /// Registers `memory` (laid out by `layout`) with the kernel in unaligned-chunk mode.
    ///
    /// # Errors
    /// [`Error::Io`] from `xsk_umem__create` (EPERM without CAP_NET_RAW/CAP_IPC_LOCK,
    /// ENOMEM when the memlock limit is too low).
    pub fn new(memory: Arc<UmemMemory>, layout: Layout, ring_size: u32) -> Result<Self> {
        let config = xdp::xsk_umem_config {
            fill_size: ring_size,
            comp_size: ring_size,
            frame_size: layout.chunk_size,
            frame_headroom: layout.headroom,
            flags: xdp::XDP_UMEM_UNALIGNED_CHUNK_FLAG,
        };
        // SAFETY: zeroed ring structs are valid "unset" values for libxdp to fill in.
        let mut first_rings: Box<(xdp::xsk_ring_prod, xdp::xsk_ring_cons)> =
            Box::new(unsafe { std::mem::zeroed() });
        let mut raw = ptr::null_mut();
        // SAFETY: the memory is a live mapping of `memory.len()` bytes, page aligned, kept
        // alive by the handle; the ring structs are boxed, so their addresses (which
        // libxdp keeps until the first socket) stay valid.
        let r = unsafe {
            xdp::xsk_umem__create(
                &mut raw,
                memory.as_mut_ptr().cast(),
                memory.len(),
                &mut first_rings.0,
                &mut first_rings.1,
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
    /// [`Error::Io`] from `xsk_socket__create_shared`.
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
        // SAFETY: zeroed ring structs are valid "unset" values for libxdp to fill in.
        let (mut rx, mut tx, mut fill, mut comp): (
            xdp::xsk_ring_cons,
            xdp::xsk_ring_prod,
            xdp::xsk_ring_prod,
            xdp::xsk_ring_cons,
        ) = unsafe { std::mem::zeroed() };
        let mut raw = ptr::null_mut();
        // SAFETY: every pointer is valid for the call; libxdp fills the ring structs with
        // pointers into mappings that live until xsk_socket__delete.
        let r = unsafe {
            xdp::xsk_socket__create_shared(
                &mut raw,
                ifname.as_ptr(),
                config.queue,
                self.handle.raw,
                if config.rx_size > 0 {
                    &mut rx
                } else {
                    ptr::null_mut()
                },
                if config.tx_size > 0 {
                    &mut tx
                } else {
                    ptr::null_mut()
                },
                &mut fill,
                &mut comp,
                &cfg,
            )
        };
        if r != 0 {
            return Err(r);
        }
        let _ = &self.handle.first_rings;
        Ok(Socket {
            raw,
            rx: (config.rx_size > 0).then(|| Consumer::new(cons_mem(&rx))),
            tx: (config.tx_size > 0).then(|| Producer::new(prod_mem(&tx))),
            fill: Producer::new(prod_mem(&fill)),
            comp: Consumer::new(cons_mem(&comp)),
            mode,
            queue: config.queue,
            _umem: Arc::clone(&self.handle),
        })
    }
}

/// Whether `ifname` queue `queue` accepts an XDP_ZEROCOPY bind, tried on a small
/// throwaway UMEM (veth refuses with EOPNOTSUPP).
pub fn zero_copy_supported(ifname: &str, queue: u32) -> bool {
    let probe = || -> Result<Socket> {
        let layout = Layout::new(&[], 64, 2048)?;
        let memory = Arc::new(UmemMemory::new(layout.len)?);
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
