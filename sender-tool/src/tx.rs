//! Transmit paths: an AF_XDP socket in copy mode on a chosen tx queue (frames are built
//! and sealed directly in its UMEM), kernel UDP with segmentation offload and `sendmmsg`,
//! or AF_PACKET as the fallback. The system calls live
//! behind `umem` (the workspace's kernel boundary): nothing here is `unsafe`.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use std::io::IoSlice;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;

use psp::frame::IpEndpoints;
use umem::packet::PacketSocket;
use umem::udp::{self, Datagram, GsoSocket};
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

    /// What the UDP path did (None on other paths).
    fn udp_stats(&self) -> Option<UdpStats> {
        None
    }
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

/// Frames built in ordinary buffers (AF_PACKET and UDP), allocated as needed up to a
/// limit.
struct BufferPool {
    frames: Vec<Vec<u8>>,
    free: Vec<u32>,
    limit: u32,
}

impl BufferPool {
    fn new(limit: u32) -> Self {
        Self {
            frames: Vec::new(),
            free: Vec::new(),
            limit: limit.max(1),
        }
    }

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

    /// The bytes of a prepared frame.
    fn bytes(&self, p: Prepared) -> Result<&[u8]> {
        self.frames
            .get(p.frame as usize)
            .and_then(|buf| buf.get(..p.len as usize))
            .with_context(|| format!("no prepared frame {} of {} bytes", p.frame, p.len))
    }

    fn release(&mut self, frame: u32) {
        self.free.push(frame);
    }

    /// Every frame is prepared or queued.
    fn exhausted(&self) -> bool {
        self.free.is_empty() && self.frames.len() >= self.limit as usize
    }
}

/// AF_PACKET transmit (raw socket), the fallback where AF_XDP is not available. The queue
/// is chosen by the kernel, not by us. Frames are built in ordinary buffers.
pub struct PacketTx {
    socket: PacketSocket,
    pool: BufferPool,
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
            pool: BufferPool::new(frames),
        })
    }
}

impl Transmit for PacketTx {
    fn prepare(
        &mut self,
        queue: u32,
        build: &mut dyn FnMut(&mut [u8]) -> Result<usize>,
    ) -> Result<Option<Prepared>> {
        self.pool.prepare(queue, build)
    }

    fn submit(&mut self, p: Prepared) -> Result<()> {
        let frame = self.pool.bytes(p)?;
        let sent = loop {
            match self.socket.send(frame) {
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => std::thread::yield_now(),
                // sendto copied the frame (or failed): it is free again.
                sent => break sent,
            }
        };
        self.pool.release(p.frame);
        sent.context("AF_PACKET sendto")
    }

    fn make_room(&mut self) -> Result<()> {
        // Frames come back as soon as they are submitted.
        if self.pool.exhausted() {
            bail!(
                "all {} frames are prepared and none was submitted",
                self.pool.limit
            );
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

/// A frame queued for the UDP path: its UDP payload (the PSP segment), where from and to.
struct Queued {
    frame: u32,
    payload: Range<usize>,
    socket: usize,
    dst: SocketAddr,
}

/// Kernel UDP transmit with segmentation offload: each frame's UDP payload is queued;
/// every `batch` frames, those from one source (a stream) go out as datagrams of up to
/// 64 equal segments (`UDP_SEGMENT`), many datagrams per `sendmmsg` call. One socket per
/// source address and port, as the frames name them; the route picks the interface and
/// the kernel the queue (as with AF_PACKET).
pub struct UdpTx {
    pool: BufferPool,
    sockets: Vec<(SocketAddr, GsoSocket)>,
    pending: Vec<Queued>,
    batch: usize,
    /// System calls and datagrams sent (reported).
    pub stats: UdpStats,
}

/// What the UDP path did.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct UdpStats {
    /// sendmmsg calls.
    pub sendmmsg_calls: u64,
    /// Datagrams handed to the kernel (each cut into segments).
    pub datagrams: u64,
    /// Segments (packets) in them.
    pub segments: u64,
}

impl UdpTx {
    /// A UDP path holding up to `frames` frames, sending every `batch` frames.
    pub fn open(frames: u32, batch: u32) -> Self {
        Self {
            pool: BufferPool::new(frames.max(batch)),
            sockets: Vec::new(),
            pending: Vec::new(),
            batch: batch.max(1) as usize,
            stats: UdpStats::default(),
        }
    }

    /// The socket bound to `src`, bound on first use.
    fn socket_for(&mut self, src: SocketAddr) -> Result<usize> {
        if let Some(i) = self.sockets.iter().position(|(a, _)| *a == src) {
            return Ok(i);
        }
        let socket = GsoSocket::bind(src).with_context(|| format!("UDP socket bound to {src}"))?;
        self.sockets.push((src, socket));
        Ok(self.sockets.len() - 1)
    }

    /// Sends every queued frame, source by source, and frees them.
    fn send_pending(&mut self) -> Result<()> {
        // Stable: each stream's frames keep their order.
        self.pending.sort_by_key(|q| q.socket);
        let mut start = 0;
        let mut sent = Ok(());
        while start < self.pending.len() && sent.is_ok() {
            let first = &self.pending[start];
            let len = self.pending[start..]
                .iter()
                .take_while(|q| q.socket == first.socket && q.dst == first.dst)
                .count();
            sent = self.send_run(start..start + len);
            start += len;
        }
        for q in self.pending.drain(..) {
            self.pool.release(q.frame);
        }
        sent
    }

    /// Sends queued frames `run`, all from one socket to one destination.
    fn send_run(&mut self, run: Range<usize>) -> Result<()> {
        let queued = &self.pending[run];
        let mut slices = Vec::with_capacity(queued.len());
        for q in queued {
            let frame = &self.pool.frames[q.frame as usize];
            let payload = frame.get(q.payload.clone()).context("queued frame")?;
            slices.push(IoSlice::new(payload));
        }
        let datagrams = cut_datagrams(&slices)?;
        let (_, socket) = &self.sockets[queued[0].socket];
        let dst = queued[0].dst;
        let mut next = 0;
        let mut progress = std::time::Instant::now();
        while next < datagrams.len() {
            let end = (next + udp::MAX_BATCH).min(datagrams.len());
            match socket.send(dst, &datagrams[next..end]) {
                Ok(n) if n > 0 => {
                    self.stats.sendmmsg_calls += 1;
                    self.stats.datagrams += n as u64;
                    next += n;
                    progress = std::time::Instant::now();
                    continue;
                }
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOBUFS | libc::EAGAIN)) => {}
                Err(e) => return Err(e).with_context(|| format!("UDP sendmmsg to {dst}")),
            }
            if progress.elapsed() > std::time::Duration::from_secs(5) {
                bail!("UDP sendmmsg to {dst} made no progress in 5 s");
            }
            std::thread::yield_now();
        }
        self.stats.segments += slices.len() as u64;
        Ok(())
    }
}

/// Cuts consecutive segments into datagrams: equal sizes, a shorter one only last, at
/// most [`udp::MAX_SEGMENTS`] and [`udp::MAX_DATAGRAM`] bytes each.
fn cut_datagrams<'a>(slices: &'a [IoSlice<'a>]) -> Result<Vec<Datagram<'a>>> {
    let mut datagrams = Vec::new();
    let mut i = 0;
    while i < slices.len() {
        let size = slices[i].len();
        let mut total = size;
        let mut j = i + 1;
        while j < slices.len()
            && j - i < udp::MAX_SEGMENTS
            && slices[j - 1].len() == size
            && slices[j].len() <= size
            && total + slices[j].len() <= udp::MAX_DATAGRAM
        {
            total += slices[j].len();
            j += 1;
        }
        datagrams.push(Datagram {
            segments: &slices[i..j],
            segment_size: u16::try_from(size.max(1)).context("segment longer than 64 KiB")?,
        });
        i = j;
    }
    Ok(datagrams)
}

impl Transmit for UdpTx {
    fn prepare(
        &mut self,
        queue: u32,
        build: &mut dyn FnMut(&mut [u8]) -> Result<usize>,
    ) -> Result<Option<Prepared>> {
        self.pool.prepare(queue, build)
    }

    fn submit(&mut self, p: Prepared) -> Result<()> {
        let located = psp::frame::locate(self.pool.bytes(p)?);
        let located = match located {
            Ok(l) => l,
            Err(e) => {
                self.pool.release(p.frame);
                return Err(e).context("a built frame is not PSP over UDP");
            }
        };
        let (src_ip, dst_ip): (IpAddr, IpAddr) = match located.ip {
            IpEndpoints::V4 { src, dst } => (src.into(), dst.into()),
            IpEndpoints::V6 { src, dst } => (src.into(), dst.into()),
        };
        let socket = match self.socket_for(SocketAddr::new(src_ip, located.udp_src_port)) {
            Ok(s) => s,
            Err(e) => {
                self.pool.release(p.frame);
                return Err(e);
            }
        };
        // The UDP payload: the UDP header precedes the PSP segment.
        self.pending.push(Queued {
            frame: p.frame,
            payload: located.segment,
            socket,
            dst: SocketAddr::new(dst_ip, psp::UDP_PORT),
        });
        if self.pending.len() >= self.batch {
            self.send_pending()?;
        }
        Ok(())
    }

    fn make_room(&mut self) -> Result<()> {
        if !self.pending.is_empty() {
            return self.send_pending();
        }
        if self.pool.exhausted() {
            bail!(
                "all {} frames are prepared and none was submitted",
                self.pool.limit
            );
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.send_pending()
    }

    fn udp_stats(&self) -> Option<UdpStats> {
        Some(self.stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(slices: &[IoSlice<'_>]) -> Vec<(usize, u16)> {
        cut_datagrams(slices)
            .unwrap()
            .iter()
            .map(|d| (d.segments.len(), d.segment_size))
            .collect()
    }

    #[test]
    fn datagrams_end_at_a_shorter_segment_and_at_the_limits() {
        let full = [0u8; 1468];
        let short = [0u8; 500];
        let mut slices = vec![IoSlice::new(&full); 3];
        slices.push(IoSlice::new(&short));
        slices.extend(vec![IoSlice::new(&full); 2]);
        assert_eq!(sizes(&slices), [(4, 1468), (2, 1468)]);
        // 44 segments of 1468 bytes fit 65,507 bytes; 64 of 100 bytes are the most.
        let many = vec![IoSlice::new(&full); 50];
        assert_eq!(sizes(&many), [(44, 1468), (6, 1468)]);
        let tiny = [0u8; 100];
        let many = vec![IoSlice::new(&tiny); 130];
        assert_eq!(sizes(&many), [(64, 100), (64, 100), (2, 100)]);
        // A longer segment after a shorter one starts a datagram.
        let up = [IoSlice::new(&short), IoSlice::new(&full)];
        assert_eq!(sizes(&up), [(1, 500), (1, 1468)]);
        assert!(sizes(&[]).is_empty());
    }
}
