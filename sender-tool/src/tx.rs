//! Transmit paths: an AF_XDP socket in copy mode on a chosen tx queue (frames are built
//! and sealed directly in its UMEM), or AF_PACKET as the fallback.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use umem::{Desc, Layout, Socket, SocketConfig, Umem, UmemMemory};

/// Largest frame the sender builds.
pub const FRAME_SIZE: u32 = 2048;

/// A frame built in transmit memory and not queued yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prepared {
    queue: u32,
    frame: u32,
    len: u32,
}

/// Something frames can be sent through: frames are built first ([`Transmit::prepare`])
/// and queued later ([`Transmit::submit`]), one at a time or, with `--prebuild`, a whole
/// round built and sealed before any is sent.
pub trait Transmit {
    /// Builds one frame for `queue` with `build` (which writes into the buffer and returns
    /// the frame length). Returns None when every frame is in use (send what is
    /// prepared, then try again).
    ///
    /// # Errors
    /// A failing build, or no socket on `queue`.
    fn prepare(
        &mut self,
        queue: u32,
        build: &mut dyn FnMut(&mut [u8]) -> Result<usize>,
    ) -> Result<Option<Prepared>>;

    /// Queues a prepared frame. Waits for room when the path is full.
    ///
    /// # Errors
    /// A failing send.
    fn submit(&mut self, frame: Prepared) -> Result<()>;

    /// Waits until a frame can be prepared again (frames in flight complete).
    ///
    /// # Errors
    /// Nothing completes within 5 s, or every frame is prepared and none was submitted.
    fn make_room(&mut self) -> Result<()>;

    /// Pushes out what is queued and waits until it left.
    ///
    /// # Errors
    /// A failing send.
    fn flush(&mut self) -> Result<()>;
}

/// Builds into `frame` with `build`, checking the length.
fn build_into(
    queue: u32,
    frame: u32,
    buf: &mut [u8],
    build: &mut dyn FnMut(&mut [u8]) -> Result<usize>,
) -> Result<Prepared> {
    let len = build(buf)?;
    Ok(Prepared {
        queue,
        frame,
        len: u32::try_from(len).context("frame too long")?,
    })
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
    /// Opens sockets on `queues` of `ifname`, sharing a UMEM of `frames` frames.
    ///
    /// # Errors
    /// UMEM or socket creation failures (not root, no such interface or queue).
    pub fn open(ifname: &str, queues: &[u32], frames: u32) -> Result<Self> {
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
    fn prepare(
        &mut self,
        queue: u32,
        build: &mut dyn FnMut(&mut [u8]) -> Result<usize>,
    ) -> Result<Option<Prepared>> {
        if !self.sockets.contains_key(&queue) {
            bail!("no AF_XDP socket on queue {queue}");
        }
        if self.free.is_empty() {
            self.reap();
        }
        let Some(frame) = self.free.pop() else {
            return Ok(None);
        };
        let addr = self.umem.layout().bounce_addr(frame);
        // SAFETY: frame `frame` is ours: it is on no TX ring (it came from the free list,
        // which only holds frames that were never queued or whose completion came back).
        let buf = unsafe { self.umem.memory().slice_mut(addr, FRAME_SIZE as usize)? };
        let prepared = build_into(queue, frame, buf, build);
        if prepared.is_err() {
            self.free.push(frame);
        }
        prepared.map(Some)
    }

    fn submit(&mut self, p: Prepared) -> Result<()> {
        let desc = Desc {
            addr: self.umem.layout().bounce_addr(p.frame),
            len: p.len,
            options: 0,
        };
        let socket = self.sockets.get_mut(&p.queue).context("no AF_XDP socket")?;
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

    fn make_room(&mut self) -> Result<()> {
        let start = std::time::Instant::now();
        while self.free.is_empty() {
            self.kick();
            self.reap();
            if start.elapsed() > std::time::Duration::from_secs(5) {
                bail!("AF_XDP TX completed no frame in 5 s");
            }
            std::thread::yield_now();
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
                bail!(
                    "AF_XDP TX did not complete {} frames in 5 s",
                    total - self.free.len()
                );
            }
            std::thread::yield_now();
        }
        Ok(())
    }
}

/// AF_PACKET transmit (raw socket), the fallback where AF_XDP is not available. The queue
/// is chosen by the kernel, not by us. Frames are built in ordinary buffers.
pub struct PacketTx {
    fd: std::os::fd::OwnedFd,
    ifindex: i32,
    frames: Vec<Vec<u8>>,
    free: Vec<u32>,
    limit: u32,
}

impl PacketTx {
    /// Opens a raw socket on `ifname`, with up to `frames` frames prepared at a time.
    ///
    /// # Errors
    /// Not root, or no such interface.
    pub fn open(ifname: &str, frames: u32) -> Result<Self> {
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
            frames: Vec::new(),
            free: Vec::new(),
            limit: frames.max(1),
        })
    }
}

impl Transmit for PacketTx {
    fn prepare(
        &mut self,
        queue: u32,
        build: &mut dyn FnMut(&mut [u8]) -> Result<usize>,
    ) -> Result<Option<Prepared>> {
        let frame = match self.free.pop() {
            Some(f) => f,
            None if (self.frames.len() as u32) < self.limit => {
                self.frames.push(vec![0; FRAME_SIZE as usize]);
                self.frames.len() as u32 - 1
            }
            None => return Ok(None),
        };
        let prepared = build_into(queue, frame, &mut self.frames[frame as usize], build);
        if prepared.is_err() {
            self.free.push(frame);
        }
        prepared.map(Some)
    }

    fn submit(&mut self, p: Prepared) -> Result<()> {
        use std::os::fd::AsRawFd;
        let buf = &self.frames[p.frame as usize];
        let len = p.len as usize;
        // SAFETY: zeroed sockaddr_ll is valid; we set the fields sendto needs.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = self.ifindex;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&buf[..6]);
        loop {
            // SAFETY: buf holds len bytes; sll is a valid sockaddr_ll.
            let r = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    buf.as_ptr().cast(),
                    len,
                    0,
                    (&raw const sll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                )
            };
            if r >= 0 {
                // sendto copied the frame: it is free again.
                self.free.push(p.frame);
                return Ok(());
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ENOBUFS) {
                self.free.push(p.frame);
                return Err(e).context("AF_PACKET sendto");
            }
            std::thread::yield_now();
        }
    }

    fn make_room(&mut self) -> Result<()> {
        // Frames come back as soon as they are submitted.
        if self.free.is_empty() && self.frames.len() as u32 >= self.limit {
            bail!(
                "all {} frames are prepared and none was submitted",
                self.limit
            );
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}
