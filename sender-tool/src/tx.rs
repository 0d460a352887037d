//! Transmit paths: an AF_XDP socket in copy mode on a chosen tx queue (frames are built
//! and sealed directly in its UMEM), or AF_PACKET as the fallback.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use umem::{Desc, Layout, Socket, SocketConfig, Umem, UmemMemory};

/// Largest frame the sender builds.
pub const FRAME_SIZE: u32 = 2048;

/// Something frames can be sent through.
pub trait Transmit {
    /// Builds one frame with `build` (which writes into the buffer and returns the frame
    /// length) and queues it on `queue`. Waits for room when the path is full.
    ///
    /// # Errors
    /// A failing build or send.
    fn send(
        &mut self,
        queue: u32,
        build: &mut dyn FnMut(&mut [u8]) -> Result<usize>,
    ) -> Result<()>;

    /// Pushes out what is queued and waits until it left.
    ///
    /// # Errors
    /// A failing send.
    fn flush(&mut self) -> Result<()>;
}

/// AF_XDP transmit: one socket per queue sharing one UMEM of frames.
pub struct XdpTx {
    umem: Umem,
    sockets: HashMap<u32, Socket>,
    free: Vec<u32>,
    /// Descriptors queued but not kicked.
    unkicked: usize,
    completions: Vec<u64>,
}

impl XdpTx {
    /// Opens sockets on `queues` of `ifname`.
    ///
    /// # Errors
    /// UMEM or socket creation failures (not root, no such interface or queue).
    pub fn open(ifname: &str, queues: &[u32]) -> Result<Self> {
        let frames = 4096;
        let layout = Layout::new(&[], frames, FRAME_SIZE)?;
        let memory = Arc::new(UmemMemory::new(layout.len)?);
        let umem = Umem::new(memory, layout, 2048).context("AF_XDP UMEM")?;
        let mut sockets = HashMap::new();
        for &q in queues {
            let s = umem
                .socket(&SocketConfig {
                    ifname: ifname.to_string(),
                    queue: q,
                    rx_size: 0,
                    tx_size: 2048,
                    fill_size: 2048,
                    mode: umem::BindMode::Copy,
                    need_wakeup: true,
                })
                .with_context(|| format!("AF_XDP socket on {ifname} queue {q}"))?;
            sockets.insert(q, s);
        }
        Ok(Self {
            umem,
            sockets,
            free: (0..frames).rev().collect(),
            unkicked: 0,
            completions: Vec::new(),
        })
    }

    fn reap(&mut self) {
        for s in self.sockets.values_mut() {
            self.completions.clear();
            s.comp.consume(&mut self.completions, u32::MAX);
            for addr in &self.completions {
                if let Some(i) = self.umem.layout().bounce_index(*addr) {
                    self.free.push(i);
                }
            }
        }
    }

    fn kick(&mut self) {
        for s in self.sockets.values() {
            s.wake_tx();
        }
        self.unkicked = 0;
    }
}

impl Transmit for XdpTx {
    fn send(
        &mut self,
        queue: u32,
        build: &mut dyn FnMut(&mut [u8]) -> Result<usize>,
    ) -> Result<()> {
        let frame = loop {
            if let Some(f) = self.free.pop() {
                break f;
            }
            self.kick();
            self.reap();
            if self.free.is_empty() {
                std::thread::yield_now();
            }
        };
        let addr = self.umem.layout().bounce_addr(frame);
        // SAFETY: frame `frame` is ours: it is on no TX ring (it came from the free list,
        // which only holds frames that were never queued or whose completion came back).
        let buf = unsafe { self.umem.memory().slice_mut(addr, FRAME_SIZE as usize)? };
        let len = match build(buf) {
            Ok(len) => len,
            Err(e) => {
                self.free.push(frame);
                return Err(e);
            }
        };
        let Some(socket) = self.sockets.get_mut(&queue) else {
            self.free.push(frame);
            bail!("no AF_XDP socket on queue {queue}");
        };
        let desc = Desc {
            addr,
            len: u32::try_from(len).context("frame too long")?,
            options: 0,
        };
        loop {
            let tx = socket.tx.as_mut().context("socket without TX ring")?;
            if tx.produce([desc]) == 1 {
                break;
            }
            socket.wake_tx();
            std::thread::yield_now();
        }
        self.unkicked += 1;
        if self.unkicked >= 32 {
            self.kick();
            self.reap();
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        let total = self.umem.layout().bounce_frames as usize;
        let start = std::time::Instant::now();
        while self.free.len() < total {
            self.kick();
            self.reap();
            if start.elapsed() > std::time::Duration::from_secs(5) {
                bail!("AF_XDP TX did not complete {} frames in 5 s", total - self.free.len());
            }
            std::thread::yield_now();
        }
        Ok(())
    }
}

/// AF_PACKET transmit (raw socket), the fallback where AF_XDP is not available. The queue
/// is chosen by the kernel, not by us.
pub struct PacketTx {
    fd: std::os::fd::OwnedFd,
    ifindex: i32,
    buf: Vec<u8>,
}

impl PacketTx {
    /// Opens a raw socket on `ifname`.
    ///
    /// # Errors
    /// Not root, or no such interface.
    pub fn open(ifname: &str) -> Result<Self> {
        use std::os::fd::FromRawFd;
        let name = std::ffi::CString::new(ifname)?;
        // SAFETY: a valid C string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            bail!("no interface {ifname}");
        }
        // SAFETY: plain socket(2) call.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("AF_PACKET socket");
        }
        Ok(Self {
            // SAFETY: fd is a fresh descriptor we own.
            fd: unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) },
            ifindex: i32::try_from(ifindex)?,
            buf: vec![0; FRAME_SIZE as usize],
        })
    }
}

impl Transmit for PacketTx {
    fn send(
        &mut self,
        _queue: u32,
        build: &mut dyn FnMut(&mut [u8]) -> Result<usize>,
    ) -> Result<()> {
        use std::os::fd::AsRawFd;
        let len = build(&mut self.buf)?;
        // SAFETY: zeroed sockaddr_ll is valid; we set the fields sendto needs.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = self.ifindex;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&self.buf[..6]);
        loop {
            // SAFETY: buf holds len bytes; sll is a valid sockaddr_ll.
            let r = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    self.buf.as_ptr().cast(),
                    len,
                    0,
                    (&raw const sll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                )
            };
            if r >= 0 {
                return Ok(());
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ENOBUFS) {
                return Err(e).context("AF_PACKET sendto");
            }
            std::thread::yield_now();
        }
    }

    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}
