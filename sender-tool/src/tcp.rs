//! `--transport tcp`: the kernel-TCP baseline. The same messages (same seeds and sizes) as
//! the placement path, one TCP connection per stream to `zc-recv tcp`, whose listening
//! socket sets the MSS (`TCP_MAXSEG`). Per message: a header ([`HEADER_LEN`] bytes: magic, length, SHA-256),
//! then its bytes; the receiver answers one byte, [`VERDICT_OK`] when its digest matched.
//! Each stream runs in its own thread; the streams send at once.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::cli::Cli;
use crate::report::SendReport;
use crate::stream::{fill_bytes, fill_message, message_seed};

/// Magic of a message header.
pub(crate) const MAGIC: [u8; 4] = *b"ZCT1";
/// Bytes of a message header: magic, length (u64, little-endian), SHA-256, zeros to a
/// whole page (each message starts page-aligned in the stream, as the receiver's
/// `TCP_ZEROCOPY_RECEIVE` needs).
pub(crate) const HEADER_LEN: usize = 4096;
/// The receiver's answer when the message's digest matched.
pub(crate) const VERDICT_OK: u8 = 1;

/// What one stream did.
#[derive(Debug, Default)]
struct StreamOutcome {
    bytes: u64,
    /// Segments: the bytes over the connection's agreed MSS (the kernel segments).
    segments: u64,
    verified: u32,
    failed: u32,
    /// Seconds spent writing messages and waiting for their verdicts.
    send_seconds: f64,
    /// `MSG_ZEROCOPY` sends the kernel copied after all.
    copied_sends: u64,
}

/// Sends every stream's messages over TCP; the report has the same keys as the placement
/// path's (segments are the message bytes over the connection's MSS: the kernel segments).
pub(crate) fn run(cli: &Cli) -> Result<SendReport> {
    if cli.zero_copy_send && !cli.message_bytes.is_multiple_of(HEADER_LEN as u64) {
        bail!(
            "--zero-copy-send: --message-bytes must be a multiple of 4096, so that every message starts page-aligned in the stream"
        );
    }
    let start = Instant::now();
    let outcomes: Vec<Result<StreamOutcome>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..cli.queues.len())
            .map(|i| {
                std::thread::Builder::new()
                    .name(format!("tcp-send-{i}"))
                    .spawn_scoped(scope, move || send_stream(cli, i))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| match h {
                Ok(h) => h
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("stream thread panicked"))),
                Err(e) => Err(anyhow::Error::from(e).context("cannot start a stream thread")),
            })
            .collect()
    });
    let mut report = SendReport::new(cli, cli.queues.len());
    report.tx = "tcp";
    report.crypto = "none";
    let mut send_seconds: f64 = 0.0;
    for o in outcomes {
        let o = o?;
        report.payload_bytes_sent += o.bytes;
        report.segments_sent += o.segments;
        report.zerocopy_copied_sends += o.copied_sends;
        report.verified_messages += o.verified;
        report.failed_messages += o.failed;
        send_seconds = send_seconds.max(o.send_seconds);
    }
    report.send_seconds = send_seconds;
    report.seconds = start.elapsed().as_secs_f64();
    report.finish_rates();
    if report.failed_messages > 0 {
        bail!(
            "{} of {} messages did not verify",
            report.failed_messages,
            u64::from(cli.messages) * cli.queues.len() as u64
        );
    }
    Ok(report)
}

/// Connects stream `i` and sends its messages, each after the previous one's verdict.
fn send_stream(cli: &Cli, i: usize) -> Result<StreamOutcome> {
    let mut socket = connect(cli)?;
    let mss = umem::tcp::max_segment(socket.as_fd())
        .unwrap_or(cli.mss)
        .max(1);
    let mut out = StreamOutcome::default();
    let pages = if cli.zero_copy_send {
        Some(PageMemory::new(cli.message_bytes)?)
    } else {
        None
    };
    let mut buffer = MessageBuffer::new(cli.message_bytes, pages.as_ref())?;
    // A stalled receiver fails the run instead of hanging it.
    socket.set_read_timeout(Some(std::time::Duration::from_secs(120)))?;
    // The same socket through a second descriptor: the kernel counts zero-copy sends per
    // socket, so one sender for the connection's life.
    let zc_fd = socket.try_clone()?;
    let mut zc = if cli.zero_copy_send {
        Some(umem::tcp::ZeroCopySender::new(zc_fd.as_fd()).context("SO_ZEROCOPY")?)
    } else {
        None
    };
    for m in 0..cli.messages {
        let message = buffer.fill(message_seed(cli.seed, m, i))?;
        let digest = ring::digest::digest(&ring::digest::SHA256, message);
        let mut header = [0u8; HEADER_LEN];
        header[..4].copy_from_slice(&MAGIC);
        header[4..12].copy_from_slice(&cli.message_bytes.to_le_bytes());
        header[12..44].copy_from_slice(digest.as_ref());
        let sending = Instant::now();
        socket
            .write_all(&header)
            .context("sending a message header")?;
        match zc.as_mut() {
            Some(zc) => zc
                .send(message)
                .context("sending a message (MSG_ZEROCOPY)")?,
            None => socket.write_all(message).context("sending a message")?,
        }
        let mut verdict = [0u8; 1];
        socket
            .read_exact(&mut verdict)
            .context("waiting for the receiver's verdict")?;
        out.send_seconds += sending.elapsed().as_secs_f64();
        out.bytes += cli.message_bytes;
        out.segments += cli.message_bytes.div_ceil(u64::from(mss));
        if verdict[0] == VERDICT_OK {
            out.verified += 1;
        } else {
            out.failed += 1;
        }
    }
    out.copied_sends = zc.as_ref().map_or(0, umem::tcp::ZeroCopySender::copied);
    Ok(out)
}

/// Page-aligned memory for a message sent with `MSG_ZEROCOPY` (the kernel sends whole pages
/// of it, which the receiver can map).
struct PageMemory {
    memory: umem::UmemMemory,
    base: u64,
    len: usize,
}

impl PageMemory {
    fn new(len: u64) -> Result<Self> {
        let layout = umem::Layout::new(&[(1, len)], 1, 2048)?;
        let base = layout.region(1).context("message region")?.base;
        let memory = umem::UmemMemory::with_layout(&layout).context("message memory")?;
        Ok(Self {
            memory,
            base,
            len: usize::try_from(len)?,
        })
    }
}

/// Where a stream's message is built: a vector, or page-aligned memory held for the run.
enum MessageBuffer<'m> {
    Vec(Vec<u8>, u64),
    Pages(umem::SlotMut<'m>),
}

impl<'m> MessageBuffer<'m> {
    fn new(len: u64, pages: Option<&'m PageMemory>) -> Result<Self> {
        Ok(match pages {
            None => Self::Vec(Vec::new(), len),
            Some(p) => Self::Pages(p.memory.slot_mut(p.base, p.len)?),
        })
    }

    /// The bytes of message `seed`.
    fn fill(&mut self, seed: u64) -> Result<&[u8]> {
        Ok(match self {
            Self::Vec(v, len) => {
                fill_message(v, *len, seed)?;
                v
            }
            Self::Pages(slot) => {
                fill_bytes(slot.as_mut_slice(), seed);
                slot.as_slice()
            }
        })
    }
}

/// A connection to the receiver. The MSS is the receiver's: `zc-recv tcp --mss` sets it on
/// its listening socket, which announces it in the handshake (std connects in one call,
/// so the sender cannot set its own before); --mss is not used.
fn connect(cli: &Cli) -> Result<TcpStream> {
    // The receiver may still be starting: retry a refused connection for a few seconds.
    let give_up = Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match TcpStream::connect(cli.control) {
            Ok(socket) => return Ok(socket),
            Err(e)
                if e.kind() == std::io::ErrorKind::ConnectionRefused
                    && Instant::now() < give_up =>
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot connect to zc-recv tcp at {}", cli.control));
            }
        }
    }
}
