//! Transmit paths: an AF_XDP socket in copy mode on a chosen tx queue (frames are built
//! and sealed directly in its UMEM), or AF_PACKET as the fallback. The system calls live
//! behind `umem` (the workspace's kernel boundary): nothing here is `unsafe`.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use umem::packet::PacketSocket;
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
    /// Descriptors queued per kick (`sendto`) of the TX ring.
    batch: usize,
    completions: Vec<u64>,
}

impl XdpTx {
    /// Opens sockets on `queues` of `ifname`, sharing a UMEM of `frames` frames; the TX
    /// ring is kicked every `batch` descriptors.
    ///
    /// # Errors
    /// UMEM or socket creation failures (not root, no such interface or queue).
    pub fn open(ifname: &str, queues: &[u32], frames: u32, batch: u32) -> Result<Self> {
        let layout = Layout::new(&[], frames, FRAME_SIZE)?;
        let memory = Arc::new(UmemMemory::with_layout(&layout)?);
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
            batch: batch.max(1) as usize,
            completions: Vec::new(),
        })
    }

    fn reap(&mut self) {
        for s in self.sockets.values_mut() {
            self.completions.clear();
            s.comp_mut().consume(&mut self.completions, u32::MAX);
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
        // The free list holds frames on no TX ring (never queued, or completed): the
        // kernel is done with this one. The token makes it ours within the process.
        let mut buf = self.umem.memory().frame_mut(frame)?;
        let prepared = build_into(queue, frame, buf.as_mut_slice(), build);
        drop(buf);
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
            let mut tx = socket.tx_mut().context("socket without TX ring")?;
            if tx.produce([desc]) == 1 {
                break;
            }
            socket.wake_tx();
            std::thread::yield_now();
        }
        self.unkicked += 1;
        if self.unkicked >= self.batch {
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
    socket: PacketSocket,
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
        let socket =
            PacketSocket::open(ifname).with_context(|| format!("AF_PACKET socket on {ifname}"))?;
        Ok(Self {
            socket,
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
            None if self.frames.len() < self.limit as usize => {
                let index = u32::try_from(self.frames.len()).unwrap_or(u32::MAX);
                self.frames.push(vec![0; FRAME_SIZE as usize]);
                index
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
        let Some(frame) = self
            .frames
            .get(p.frame as usize)
            .and_then(|buf| buf.get(..p.len as usize))
        else {
            bail!("no prepared frame {} of {} bytes", p.frame, p.len);
        };
        loop {
            let Err(e) = self.socket.send(frame) else {
                // sendto copied the frame: it is free again.
                self.free.push(p.frame);
                return Ok(());
            };
            if e.raw_os_error() != Some(libc::ENOBUFS) {
                self.free.push(p.frame);
                return Err(e).context("AF_PACKET sendto");
            }
            std::thread::yield_now();
        }
    }

    fn make_room(&mut self) -> Result<()> {
        // Frames come back as soon as they are submitted.
        if self.free.is_empty() && self.frames.len() >= self.limit as usize {
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
