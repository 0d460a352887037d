//! `zc-recv tcp`: the kernel-TCP baseline's receiver. It accepts one connection per
//! stream of `zc-send --transport tcp` and `recv`s each message straight into its
//! window of a region in the same kind of memory the placement path uses (one copy: the
//! kernel's). Each message is checked against its SHA-256 and answered with one byte. The
//! report has the placement path's keys for what both have: payload, throughput from the
//! first to the last payload byte, CPU per GB, verified, accounting.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use receive_core::report::AccountingReport;
use serde::Serialize;
use umem::{Layout, SlotMut, UmemMemory};

use crate::cpu::{self, CpuSnapshot, LoopCounts};
use crate::live::RegionArg;

/// Magic of a message header (as `zc-send --transport tcp` writes it).
const MAGIC: [u8; 4] = *b"ZCT1";
/// Bytes of a message header: magic, length (u64 LE), SHA-256, zeros to a whole page, so
/// that each message starts page-aligned in the stream (`TCP_ZEROCOPY_RECEIVE` maps only
/// whole, aligned pages).
const HEADER_LEN: usize = 4096;

/// Options of the TCP baseline's receiver.
#[derive(Debug, Clone, clap::Args)]
pub struct TcpArgs {
    /// Address to accept the sender's connections on, IP:port.
    #[arg(long)]
    pub listen: SocketAddr,
    /// The region messages are received into, ID:LEN (K/M/G suffixes), split evenly
    /// between the connections.
    #[arg(long)]
    pub region: RegionArg,
    /// Connections to accept (one per sender stream), 1..=64.
    #[arg(long, default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub connections: u32,
    /// TCP maximum segment size, announced to the sender in the handshake (payload bytes
    /// per segment, less TCP options such as timestamps).
    #[arg(long, default_value_t = 1400,
          value_parser = clap::value_parser!(u32).range(88..=65_000))]
    pub mss: u32,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub max_seconds: u64,
    /// The kernel's own zero-copy receive (`TCP_ZEROCOPY_RECEIVE`): received pages are
    /// mapped, not copied, and hashed where they are mapped; what the kernel cannot map
    /// (payload not in whole, aligned pages: use an MSS of 4096 on a link whose MTU allows
    /// it) is read into the window. Mode `tcp-zerocopy`.
    #[arg(long)]
    pub zero_copy: bool,
}

/// One connection's outcome.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TcpStreamReport {
    pub payload_bytes: u64,
    pub messages: u64,
    pub verified_messages: u64,
    pub failed_messages: u64,
    /// The MSS the connection agreed on (`TCP_MAXSEG` after the handshake).
    pub mss: u32,
    /// `read` calls that returned payload.
    pub read_calls: u64,
    /// Bytes mapped by `TCP_ZEROCOPY_RECEIVE` (not copied).
    pub mapped_bytes: u64,
    /// CPU seconds this connection's thread spent on SHA-256 (the testbed's verification,
    /// not receive work: reported apart, as the placement path's digest thread is).
    pub digest_cpu_seconds: f64,
    #[serde(skip)]
    first_byte: Option<Instant>,
    #[serde(skip)]
    last_byte: Option<Instant>,
}

/// The TCP baseline's report: the placement path's keys where both have them.
#[derive(Debug, Clone, Serialize)]
pub struct TcpReport {
    /// `tcp`, or `tcp-zerocopy` (`TCP_ZEROCOPY_RECEIVE`).
    pub mode: &'static str,
    pub payload_bytes: u64,
    /// Bytes received without a copy (mapped by `TCP_ZEROCOPY_RECEIVE`; none with `recv`).
    pub direct_bytes: u64,
    /// Bytes the kernel copied from its buffers into the window.
    pub kernel_copy_bytes: u64,
    pub copies_avoided: f64,
    /// From the first to the last payload byte.
    pub gbit_per_s: f64,
    /// Process CPU plus the machine's softirq time, from the connections' acceptance to
    /// the last verdict, per GB (as the placement path's receiver reports it).
    pub rx_cpu_seconds_per_gb: f64,
    /// Every message of every connection arrived and matched its digest.
    pub verified: bool,
    pub messages: u64,
    pub verified_messages: u64,
    pub failed_messages: u64,
    /// Connections that sent something malformed (closed, counted).
    pub refused_connections: u64,
    /// CPU seconds spent on SHA-256 verification, all connections (inside
    /// `accounting.process_cpu_seconds`).
    pub digest_cpu_seconds: f64,
    pub accounting: AccountingReport,
    pub streams: Vec<TcpStreamReport>,
}

impl TcpReport {
    /// A few lines for people.
    pub fn human(&self) -> String {
        format!(
            "{} report: {} payload bytes, {} of {} messages verified, {} connections refused\n  {:.3} Gbit/s, {:.3} CPU s/GB (process {:.2} s over {:.2} s)\n",
            self.mode,
            self.payload_bytes,
            self.verified_messages,
            self.messages,
            self.refused_connections,
            self.gbit_per_s,
            self.rx_cpu_seconds_per_gb,
            self.accounting.process_cpu_seconds,
            self.accounting.seconds
        )
    }
}

/// Accepts `--connections` connections and receives their messages until each closes.
pub fn run(args: &TcpArgs) -> Result<TcpReport> {
    let layout = Layout::new(&[(args.region.id, args.region.len)], 1, 2048)?;
    let memory = Arc::new(UmemMemory::with_layout(&layout).context("region memory")?);
    let span = layout
        .region(args.region.id)
        .context("region missing from layout")?;
    let window = (span.len / u64::from(args.connections)) & !4095;
    if window == 0 {
        bail!(
            "--region {} is too small for {} connections",
            span.len,
            args.connections
        );
    }
    let listener = TcpListener::bind(args.listen)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    umem::tcp::set_max_segment(listener.as_fd(), args.mss)
        .with_context(|| format!("TCP_MAXSEG {}", args.mss))?;
    eprintln!(
        "zc-recv tcp: listening on {}, {} connection(s), MSS {}, {} MiB windows ({})",
        args.listen,
        args.connections,
        args.mss,
        window >> 20,
        memory.backing().as_str()
    );
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    let sockets = accept_all(&listener, args.connections, deadline)?;
    let start = CpuSnapshot::take();
    let cpu_start = cpu::cpu_now();
    let outcomes: Vec<Result<TcpStreamReport>> = std::thread::scope(|scope| {
        let handles: Vec<_> = sockets
            .into_iter()
            .enumerate()
            .map(|(i, socket)| {
                let slot = memory.slot_mut(span.base + i as u64 * window, to_usize(window)?);
                std::thread::Builder::new()
                    .name(format!("tcp-recv-{i}"))
                    .spawn_scoped(scope, move || {
                        receive_connection(socket, slot?, deadline, args.zero_copy)
                    })
                    .map_err(anyhow::Error::from)
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h?.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("receive thread panicked")))
            })
            .collect()
    });
    let end = CpuSnapshot::take();
    let cpu_seconds = cpu::cpu_now() - cpu_start;
    Ok(report(args.zero_copy, outcomes, &start, &end, cpu_seconds))
}

fn to_usize(n: u64) -> Result<usize> {
    usize::try_from(n).context("window larger than the address space")
}

/// Accepts `n` connections before `deadline`.
fn accept_all(listener: &TcpListener, n: u32, deadline: Instant) -> Result<Vec<TcpStream>> {
    listener.set_nonblocking(true)?;
    let mut sockets = Vec::new();
    while sockets.len() < n as usize {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false)?;
                sockets.push(s);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    bail!(
                        "{} of {n} connections came before --max-seconds",
                        sockets.len()
                    );
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e).context("accept"),
        }
    }
    Ok(sockets)
}

/// Receives one connection's messages into `window` until it closes (with `zero_copy`,
/// mapping what the kernel can map instead).
fn receive_connection(
    mut socket: TcpStream,
    mut window: SlotMut<'_>,
    deadline: Instant,
    zero_copy: bool,
) -> Result<TcpStreamReport> {
    let mut out = TcpStreamReport {
        mss: umem::tcp::max_segment(socket.as_fd()).unwrap_or(0),
        ..TcpStreamReport::default()
    };
    socket.set_read_timeout(Some(Duration::from_millis(500)))?;
    // A peer that never reads its verdicts cannot block this thread for good.
    socket.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mapping = socket.try_clone()?;
    let mut zc = if zero_copy {
        Some(
            umem::tcp::ZeroCopyReceive::new(mapping.as_fd(), 4 << 20)
                .context("TCP_ZEROCOPY_RECEIVE mapping")?,
        )
    } else {
        None
    };
    loop {
        let Some((len, digest)) = read_header(&mut socket, deadline)? else {
            return Ok(out);
        };
        let buf = window.as_mut_slice();
        let Some(dst) = usize::try_from(len).ok().and_then(|l| buf.get_mut(..l)) else {
            bail!(
                "a message of {len} bytes does not fit the {} B window",
                buf.len()
            );
        };
        let computed = match zc.as_mut() {
            Some(zc) => receive_mapped(&mut socket, zc, dst, deadline, &mut out)?,
            None => {
                read_into(&mut socket, dst, deadline, &mut out)?;
                let hashing = umem::thread_cpu_time();
                let d = ring::digest::digest(&ring::digest::SHA256, dst);
                out.digest_cpu_seconds += umem::thread_cpu_time()
                    .saturating_sub(hashing)
                    .as_secs_f64();
                d
            }
        };
        let matches = computed.as_ref() == digest;
        out.payload_bytes += len;
        out.messages += 1;
        if matches {
            out.verified_messages += 1;
        } else {
            out.failed_messages += 1;
        }
        socket.write_all(&[u8::from(matches)])?;
    }
}

/// One message through the kernel's zero-copy receive: mapped pages are hashed where
/// they are mapped; what the kernel cannot map is read into `dst` at its place, then
/// hashed. Returns the digest.
fn receive_mapped(
    socket: &mut TcpStream,
    zc: &mut umem::tcp::ZeroCopyReceive<'_>,
    dst: &mut [u8],
    deadline: Instant,
    out: &mut TcpStreamReport,
) -> Result<ring::digest::Digest> {
    let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
    let mut got = 0;
    while got < dst.len() {
        past(deadline)?;
        let m = zc
            .receive(dst.len() - got)
            .context("TCP_ZEROCOPY_RECEIVE")?;
        let (mapped, skip) = (m.bytes.len(), m.skip);
        if mapped > 0 {
            mark(out);
            let hashing = umem::thread_cpu_time();
            hash.update(m.bytes);
            out.digest_cpu_seconds += umem::thread_cpu_time()
                .saturating_sub(hashing)
                .as_secs_f64();
            got += mapped;
            out.mapped_bytes += mapped as u64;
        }
        if mapped == 0 && skip == 0 {
            wait_for_data(socket, deadline)?;
            continue;
        }
        // What could not be mapped is read, at its place.
        let end = (got + skip).min(dst.len());
        if end > got {
            let n = read_some(socket, &mut dst[got..end], deadline)?;
            let hashing = umem::thread_cpu_time();
            hash.update(&dst[got..got + n]);
            out.digest_cpu_seconds += umem::thread_cpu_time()
                .saturating_sub(hashing)
                .as_secs_f64();
            got += n;
            out.read_calls += 1;
            mark(out);
        }
    }
    Ok(hash.finish())
}

/// Waits until the socket has data, taking none (a byte read here would shift every later
/// page out of alignment).
fn wait_for_data(socket: &TcpStream, deadline: Instant) -> Result<()> {
    loop {
        past(deadline)?;
        match socket.peek(&mut [0u8; 1]) {
            Ok(0) => bail!("connection closed inside a message"),
            Ok(_) => return Ok(()),
            Err(e) if timed_out(&e) && Instant::now() < deadline => {}
            Err(e) => return Err(e).context("waiting for a message's bytes"),
        }
    }
}

/// Reads at least one byte into `dst` (all of it when it is queued).
fn read_some(socket: &mut TcpStream, dst: &mut [u8], deadline: Instant) -> Result<usize> {
    loop {
        past(deadline)?;
        match socket.read(dst) {
            Ok(0) => bail!("connection closed inside a message"),
            Ok(n) => return Ok(n),
            Err(e) if timed_out(&e) && Instant::now() < deadline => {}
            Err(e) => return Err(e).context("receiving a message"),
        }
    }
}

/// Payload arrived now.
fn mark(out: &mut TcpStreamReport) {
    let now = Instant::now();
    out.first_byte.get_or_insert(now);
    out.last_byte = Some(now);
}

/// The next message's length and digest; `None` when the sender closed.
fn read_header(socket: &mut TcpStream, deadline: Instant) -> Result<Option<(u64, [u8; 32])>> {
    let mut header = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        past(deadline)?;
        match socket.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => bail!("connection closed inside a message header"),
            Ok(n) => got += n,
            Err(e) if timed_out(&e) && Instant::now() < deadline => {}
            Err(e) => return Err(e).context("reading a message header"),
        }
    }
    if header[..4] != MAGIC {
        bail!("not a message header (bad magic)");
    }
    let len = u64::from_le_bytes(header[4..12].try_into()?);
    Ok(Some((len, header[12..44].try_into()?)))
}

/// Fills `dst` from the socket, counting reads and the first and last byte's time.
fn read_into(
    socket: &mut TcpStream,
    dst: &mut [u8],
    deadline: Instant,
    out: &mut TcpStreamReport,
) -> Result<()> {
    let mut got = 0;
    while got < dst.len() {
        past(deadline)?;
        match socket.read(&mut dst[got..]) {
            Ok(0) => bail!("connection closed after {got} of {} bytes", dst.len()),
            Ok(n) => {
                got += n;
                out.read_calls += 1;
                mark(out);
            }
            Err(e) if timed_out(&e) && Instant::now() < deadline => {}
            Err(e) => return Err(e).context("receiving a message"),
        }
    }
    Ok(())
}

/// Fails once `deadline` (--max-seconds) has passed, however slowly the peer trickles.
fn past(deadline: Instant) -> Result<()> {
    if Instant::now() >= deadline {
        bail!("--max-seconds reached inside a message");
    }
    Ok(())
}

fn timed_out(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// The report from each connection's outcome (a failed connection is counted, its bytes
/// are not).
fn report(
    zero_copy: bool,
    outcomes: Vec<Result<TcpStreamReport>>,
    start: &CpuSnapshot,
    end: &CpuSnapshot,
    cpu_seconds: f64,
) -> TcpReport {
    let mut streams = Vec::new();
    let mut refused = 0;
    for o in outcomes {
        match o {
            Ok(s) => streams.push(s),
            Err(e) => {
                tracing::warn!("connection refused: {e:#}");
                refused += 1;
            }
        }
    }
    let sum = |f: fn(&TcpStreamReport) -> u64| streams.iter().map(f).sum::<u64>();
    let payload = sum(|s| s.payload_bytes);
    let first = streams.iter().filter_map(|s| s.first_byte).min();
    let last = streams.iter().filter_map(|s| s.last_byte).max();
    let seconds = match (first, last) {
        (Some(f), Some(l)) => l.duration_since(f).as_secs_f64(),
        _ => 0.0,
    };
    let gb = payload as f64 / 1e9;
    let counts = LoopCounts {
        turns: sum(|s| s.read_calls),
        ..LoopCounts::default()
    };
    let accounting = cpu::accounting(start, end, counts, payload, end.seconds_since(start));
    let (messages, verified) = (sum(|s| s.messages), sum(|s| s.verified_messages));
    let mapped = sum(|s| s.mapped_bytes);
    TcpReport {
        mode: if zero_copy { "tcp-zerocopy" } else { "tcp" },
        payload_bytes: payload,
        direct_bytes: mapped,
        kernel_copy_bytes: payload.saturating_sub(mapped),
        copies_avoided: if payload > 0 {
            mapped as f64 / payload as f64
        } else {
            0.0
        },
        gbit_per_s: if seconds > 0.0 {
            gb * 8.0 / seconds
        } else {
            0.0
        },
        rx_cpu_seconds_per_gb: if gb > 0.0 { cpu_seconds / gb } else { 0.0 },
        verified: refused == 0 && messages > 0 && verified == messages,
        messages,
        verified_messages: verified,
        failed_messages: sum(|s| s.failed_messages),
        refused_connections: refused,
        digest_cpu_seconds: streams.iter().map(|s| s.digest_cpu_seconds).sum(),
        accounting,
        streams,
    }
}
