//! `zc-send`: the testbed's sender. One stream per queue: each opens a control session,
//! asks for a grant per message, builds and seals PSP/TCP segments with placement hints
//! directly in its transmit memory, sends them through AF_XDP (copy mode) on its queue or
//! AF_PACKET, and retransmits what the receiver reports missing until every message
//! verifies.

mod check;
mod schedule;
mod tx;

use std::io::{BufReader, BufWriter};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use control::{Request, Response};
use indicatif::{ProgressBar, ProgressStyle};
use psp::{DerivedKey, FlowTemplate, FrameBuilder, Hint, IpEndpoints, Sa, SegmentSpec, Version};
use schedule::{Impairments, Order, Rng, schedule};
use serde::Serialize;
use tx::{PacketTx, Transmit, XdpTx};

/// Most frames `--prebuild` builds ahead (2 KiB each).
const MAX_PREBUILT_FRAMES: u32 = 262_144;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TxKind {
    /// AF_XDP socket in copy mode on each stream's queue.
    Xdp,
    /// AF_PACKET raw socket (the kernel picks the queue).
    Packet,
}

#[derive(Parser)]
#[command(name = "zc-send", version, about = "PSP sender with placement hints")]
struct Cli {
    /// Receiver's control address, IP:port.
    #[arg(long)]
    control: SocketAddr,
    /// Interface to send on.
    #[arg(long)]
    iface: String,
    /// Queues to send on, one stream per queue (comma separated, each once, at most
    /// 25535: the stream on queue q sends from UDP port 40000 + q).
    #[arg(long, value_delimiter = ',', default_value = "0",
          value_parser = clap::value_parser!(u32).range(..=i64::from(check::MAX_QUEUE)))]
    queues: Vec<u32>,
    /// Messages per stream (at least 1).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    messages: u32,
    /// Bytes per message: 1 to 2 GiB (2147483648), and at most 4 GiB for all streams'
    /// messages together (each stream holds its message in memory).
    #[arg(long, default_value_t = 16 << 20, value_parser = check::message_bytes)]
    message_bytes: u64,
    /// Payload bytes per segment, 1..=1800 (IP packets must also fit the interface's MTU).
    #[arg(long, default_value_t = 1400,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(check::MAX_MSS)))]
    mss: u32,
    /// Segment order.
    #[arg(long, value_enum, default_value = "ascending")]
    order: Order,
    /// Window of the shuffled order, in segments (at least 1).
    #[arg(long, default_value_t = 64,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    shuffle_window: usize,
    /// Probability that a segment is lost (first transmission only), 0..=1.
    #[arg(long, default_value_t = 0.0, value_parser = check::probability)]
    loss: f64,
    /// Probability that a segment is sent twice, 0..=1.
    #[arg(long, default_value_t = 0.0, value_parser = check::probability)]
    duplicate: f64,
    /// Probability that a segment swaps places with the next, 0..=1.
    #[arg(long, default_value_t = 0.0, value_parser = check::probability)]
    reorder: f64,
    /// Seed of message contents and impairments.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Limit in packets per second (all streams together; at least 1).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    rate_pps: Option<u64>,
    /// Transmit path.
    #[arg(long, value_enum, default_value = "xdp")]
    tx: TxKind,
    /// PSP version (0: AES-GCM-128, 1: AES-GCM-256, 2/3: GMAC).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=3))]
    psp_version: u8,
    /// Region to ask for, per stream in queue order (the receiver picks when absent; at
    /// most one per queue).
    #[arg(long, value_delimiter = ',')]
    regions: Vec<u32>,
    /// Make the stream on a queue lie: QUEUE:region=ID (a region it was not granted),
    /// QUEUE:outside (offset outside its window), QUEUE:stale (an older generation),
    /// QUEUE:forged-icv. Liars send each message once and do not retransmit.
    #[arg(long)]
    lie: Vec<String>,
    /// Build and seal every frame of a round (up to 262,144 frames, 512 MiB) before
    /// sending any, so that sending runs at the path's rate rather than at the rate of
    /// sealing; `send_seconds` then excludes building (`build_seconds`).
    #[arg(long)]
    prebuild: bool,
    /// Write the sender's report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Lie {
    Region(u32),
    Outside,
    Stale,
    ForgedIcv,
}

fn parse_lie(s: &str) -> Result<(u32, Lie)> {
    let (q, kind) = s
        .split_once(':')
        .with_context(|| format!("--lie {s}: expected QUEUE:KIND"))?;
    let q: u32 = q.parse().with_context(|| format!("--lie {s}: bad queue"))?;
    let lie = match kind {
        "outside" => Lie::Outside,
        "stale" => Lie::Stale,
        "forged-icv" => Lie::ForgedIcv,
        k => match k.strip_prefix("region=") {
            Some(id) => Lie::Region(
                id.parse()
                    .with_context(|| format!("--lie {s}: bad region"))?,
            ),
            None => bail!("--lie {s}: kind must be region=ID, outside, stale or forged-icv"),
        },
    };
    Ok((q, lie))
}

/// The `--lie` arguments: each names a queue that has a stream, at most once.
fn parse_lies(args: &[String], queues: &[u32]) -> Result<Vec<(u32, Lie)>> {
    let mut lies: Vec<(u32, Lie)> = Vec::new();
    for s in args {
        let (q, lie) = parse_lie(s)?;
        if !queues.contains(&q) {
            bail!("--lie {s}: there is no stream on queue {q} (see --queues)");
        }
        if lies.iter().any(|(lq, _)| *lq == q) {
            bail!("--lie {s}: queue {q} already has a --lie");
        }
        lies.push((q, lie));
    }
    Ok(lies)
}

/// The arguments, checked: what `run` needs, known before it touches the network.
struct Plan {
    lies: Vec<(u32, Lie)>,
    sizes: check::Sizes,
    /// The sending interface's MAC address.
    eth_src: [u8; 6],
}

impl Plan {
    /// Checks every argument, then the interface (its MAC address, and that frames fit its
    /// MTU), without opening a socket.
    fn new(cli: &Cli) -> Result<Self> {
        check::queues(&cli.queues)?;
        if cli.regions.len() > cli.queues.len() {
            bail!(
                "--regions names {} regions for {} queues (one region per stream at most)",
                cli.regions.len(),
                cli.queues.len()
            );
        }
        let lies = parse_lies(&cli.lie, &cli.queues)?;
        let sizes = check::sizes(cli.message_bytes, cli.mss, cli.messages, cli.queues.len())?;
        check::iface_name(&cli.iface)?;
        let eth_src = mac_of(&cli.iface)?;
        match mtu_of(&cli.iface) {
            Ok(mtu) => check::fits_mtu(cli.mss, cli.control.is_ipv6(), mtu, &cli.iface)?,
            Err(e) => tracing::debug!("MTU of {} unknown ({e:#}); not checked", cli.iface),
        }
        Ok(Self {
            lies,
            sizes,
            eth_src,
        })
    }
}

/// The control connection of one stream.
struct Control {
    reader: BufReader<TcpStream>,
    writer: BufWriter<TcpStream>,
}

impl Control {
    fn connect(addr: SocketAddr) -> Result<(Self, IpAddr)> {
        let start = Instant::now();
        let stream = loop {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                Ok(s) => break s,
                Err(e) if start.elapsed() < Duration::from_secs(10) => {
                    tracing::debug!("control connect: {e}; retrying");
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot reach receiver at {addr}"));
                }
            }
        };
        stream.set_nodelay(true)?;
        let local = stream.local_addr()?.ip();
        Ok((
            Self {
                reader: BufReader::new(stream.try_clone()?),
                writer: BufWriter::new(stream),
            },
            local,
        ))
    }

    fn call(&mut self, req: &Request) -> Result<Response> {
        control::write(&mut self.writer, req)?;
        match control::read::<Response>(&mut self.reader)? {
            Some(Response::Error { message }) => bail!("receiver refused {req:?}: {message}"),
            Some(r) => Ok(r),
            None => bail!("receiver closed the control connection"),
        }
    }
}

/// A granted window.
#[derive(Debug, Clone, Copy)]
struct Window {
    grant: u64,
    region: u32,
    generation: u16,
    offset: u64,
    len: u64,
    base_seq: u32,
}

/// One stream: a queue, a session, the message being sent.
struct Stream {
    queue: u32,
    control: Control,
    sa: Sa,
    flow: FlowTemplate,
    lie: Option<Lie>,
    iv: u64,
    next_seq: u32,
    region: Option<u32>,
    message: Vec<u8>,
    window: Option<Window>,
    verified: u32,
    failed: u32,
}

fn mac_of(ifname: &str) -> Result<[u8; 6]> {
    let text = std::fs::read_to_string(format!("/sys/class/net/{ifname}/address"))
        .with_context(|| format!("--iface: no interface {ifname}"))?;
    parse_mac(text.trim())
}

fn mtu_of(ifname: &str) -> Result<u32> {
    let text = std::fs::read_to_string(format!("/sys/class/net/{ifname}/mtu"))?;
    Ok(text.trim().parse()?)
}

fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        bail!("bad MAC address {s:?}");
    }
    for (m, p) in mac.iter_mut().zip(parts) {
        *m = u8::from_str_radix(p, 16).with_context(|| format!("bad MAC address {s:?}"))?;
    }
    Ok(mac)
}

impl Stream {
    fn open(
        cli: &Cli,
        eth_src: [u8; 6],
        queue: u32,
        region: Option<u32>,
        lie: Option<Lie>,
        seed: u64,
    ) -> Result<Self> {
        let version = Version::from_wire(cli.psp_version)
            .map_err(|e| anyhow::anyhow!("--psp-version: {e}"))?;
        let q16 = u16::try_from(queue).context("queue too large")?;
        let udp_src_port = check::UDP_PORT_BASE
            .checked_add(q16)
            .context("queue too large for a UDP source port")?;
        let (mut control, local) = Control::connect(cli.control)?;
        let Response::Session { spi, key, mac, .. } = control.call(&Request::Session {
            version: cli.psp_version,
        })?
        else {
            bail!("unexpected answer to session request");
        };
        let key = hex::decode(&key).context("session key is not hex")?;
        let key = match key.len() {
            16 => DerivedKey::Aes128(key.try_into().unwrap_or([0; 16])),
            32 => DerivedKey::Aes256(key.try_into().unwrap_or([0; 32])),
            n => bail!("session key of {n} bytes"),
        };
        let sa = Sa::new(spi, version, &key)?;
        let ip = match (local, cli.control.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => IpEndpoints::V4 {
                src: s.octets(),
                dst: d.octets(),
            },
            (IpAddr::V6(s), IpAddr::V6(d)) => IpEndpoints::V6 {
                src: s.octets(),
                dst: d.octets(),
            },
            _ => bail!("mixed IP families on the control connection"),
        };
        Ok(Self {
            queue,
            control,
            sa,
            flow: FlowTemplate {
                eth_src,
                eth_dst: parse_mac(&mac)?,
                ip,
                udp_src_port,
                tcp_src_port: 5000 + q16,
                tcp_dst_port: 80,
                vc: None,
                ttl: 64,
            },
            lie,
            iv: 1,
            next_seq: (Rng::new(seed).next_u64() >> 32) as u32,
            region,
            message: Vec::new(),
            window: None,
            verified: 0,
            failed: 0,
        })
    }

    fn start_message(&mut self, len: u64, mss: u32, seed: u64) -> Result<()> {
        let mut rng = Rng::new(seed);
        let bytes = usize::try_from(len)?;
        self.message.clear();
        self.message
            .try_reserve_exact(bytes)
            .with_context(|| format!("cannot allocate a message of {len} bytes"))?;
        self.message.resize(bytes, 0);
        for chunk in self.message.chunks_mut(8) {
            let word = rng.next_u64().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
        let Response::Granted {
            grant,
            region,
            generation,
            offset,
            len: granted_len,
            base_seq,
            mss: granted_mss,
        } = self.control.call(&Request::Grant {
            spi: self.sa.spi(),
            len,
            base_seq: self.next_seq,
            mss,
            queue: self.queue,
            region: self.region,
        })?
        else {
            bail!("unexpected answer to grant request");
        };
        check::grant(
            check::GrantCheck {
                len,
                base_seq: self.next_seq,
                mss,
                offset: 0,
            },
            check::GrantCheck {
                len: granted_len,
                base_seq,
                mss: granted_mss,
                offset,
            },
        )?;
        // Sequence numbers count modulo 2^32; a message is at most 2^31 bytes.
        let seq_len = u32::try_from(len).context("message longer than the sequence space")?;
        self.next_seq = self.next_seq.wrapping_add(seq_len);
        self.window = Some(Window {
            grant,
            region,
            generation,
            offset,
            len,
            base_seq,
        });
        Ok(())
    }

    /// Builds segment `j` of the current message into `buf`.
    fn build(&mut self, j: usize, mss: u32, buf: &mut [u8]) -> Result<usize> {
        let w = self.window.context("no window")?;
        let mss = mss as usize;
        let start = j.saturating_mul(mss);
        let end = start.saturating_add(mss).min(self.message.len());
        let payload = self
            .message
            .get(start..end)
            .with_context(|| format!("segment {j} lies outside the message"))?;
        let mut hint = Hint {
            region_id: w.region,
            generation: w.generation,
            offset: w.offset,
            base_tcp_seq: w.base_seq,
        };
        match self.lie {
            Some(Lie::Region(r)) => hint.region_id = r,
            Some(Lie::Outside) => hint.offset = w.offset + w.len,
            Some(Lie::Stale) => hint.generation = w.generation.wrapping_sub(1),
            Some(Lie::ForgedIcv) | None => {}
        }
        let spec = SegmentSpec {
            iv: self.iv,
            hint: Some(hint),
            seq: w
                .base_seq
                .wrapping_add(u32::try_from(start).context("segment beyond 2^32 bytes")?),
            ack: 0,
            psh: end == self.message.len(),
        };
        self.iv += 1;
        let len = FrameBuilder::new(self.flow, &self.sa).build(buf, &spec, payload)?;
        if self.lie == Some(Lie::ForgedIcv)
            && let Some(last) = len.checked_sub(1).and_then(|i| buf.get_mut(i))
        {
            *last ^= 0x5a;
        }
        Ok(len)
    }

    fn complete(&mut self) -> Result<(bool, Vec<(u64, u64)>)> {
        let w = self.window.context("no window")?;
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.message);
        let Response::Status {
            grant,
            complete,
            verified,
            missing,
        } = self.control.call(&Request::Complete {
            grant: w.grant,
            sha256: hex::encode(digest.as_ref()),
        })?
        else {
            bail!("unexpected answer to completion");
        };
        if grant != w.grant {
            bail!(
                "receiver answered the completion of grant {} for grant {grant}",
                w.grant
            );
        }
        if complete && !verified {
            bail!(
                "receiver says message of grant {} is complete but does not match its digest",
                w.grant
            );
        }
        Ok((verified, missing))
    }
}

/// The sender's report.
#[derive(Debug, Serialize)]
struct SendReport {
    tx: &'static str,
    streams: usize,
    messages_per_stream: u32,
    message_bytes: u64,
    segments_sent: u64,
    retransmitted_segments: u64,
    payload_bytes_sent: u64,
    /// Frames were built and sealed before sending (`--prebuild`).
    prebuilt: bool,
    seconds: f64,
    /// With `--prebuild`: time spent building and sealing frames ahead of sending.
    build_seconds: f64,
    /// Time spent sending (building and sealing too, unless prebuilt; transmitting),
    /// without message generation, digests and control round trips.
    send_seconds: f64,
    gbit_per_s: f64,
    packets_per_s: f64,
    verified_messages: u32,
    failed_messages: u32,
    /// Missing ranges in the receiver's status replies that were empty, inverted or outside
    /// the message (ignored or clamped to it).
    bad_missing_ranges: u64,
}

struct Pacer {
    rate: Option<u64>,
    start: Instant,
    sent: u64,
}

impl Pacer {
    /// Counts from now (after a pause for building, so that it does not burst).
    fn restart(&mut self) {
        self.start = Instant::now();
        self.sent = 0;
    }

    fn wait(&mut self) {
        self.sent += 1;
        let Some(rate) = self.rate else { return };
        let due = Duration::from_secs_f64(self.sent as f64 / rate as f64);
        while self.start.elapsed() < due {
            std::hint::spin_loop();
        }
    }
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    match run(&Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("zc-send: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<()> {
    // Every argument is checked before the first socket or control session.
    let plan = Plan::new(cli)?;
    let segments = plan.sizes.segments;
    let frames = if cli.prebuild {
        // A first round, with room for duplicates.
        let round = segments.saturating_mul(cli.queues.len()) as f64 * (1.0 + cli.duplicate);
        // A float-to-integer cast saturates; the clamp bounds it anyway.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let round = round.ceil() as u64;
        u32::try_from(round)
            .unwrap_or(u32::MAX)
            .clamp(4096, MAX_PREBUILT_FRAMES)
    } else {
        4096
    };
    let mut tx: Box<dyn Transmit> = match cli.tx {
        TxKind::Xdp => Box::new(XdpTx::open(&cli.iface, &cli.queues, frames)?),
        TxKind::Packet => Box::new(PacketTx::open(&cli.iface, frames)?),
    };
    let mut streams = Vec::new();
    for (i, &q) in cli.queues.iter().enumerate() {
        let lie = plan.lies.iter().find(|(lq, _)| *lq == q).map(|(_, l)| *l);
        let seed = cli.seed ^ (u64::from(q) << 32);
        streams.push(Stream::open(
            cli,
            plan.eth_src,
            q,
            cli.regions.get(i).copied(),
            lie,
            seed,
        )?);
    }
    let bar = if cli.no_progress {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(plan.sizes.total_bytes)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "zc-send {bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let imp = Impairments {
        loss: cli.loss,
        duplicate: cli.duplicate,
        reorder: cli.reorder,
    };
    let mut rng = Rng::new(cli.seed);
    let mut report = SendReport {
        tx: match cli.tx {
            TxKind::Xdp => "af_xdp",
            TxKind::Packet => "af_packet",
        },
        streams: streams.len(),
        messages_per_stream: cli.messages,
        message_bytes: cli.message_bytes,
        segments_sent: 0,
        retransmitted_segments: 0,
        payload_bytes_sent: 0,
        prebuilt: cli.prebuild,
        seconds: 0.0,
        build_seconds: 0.0,
        send_seconds: 0.0,
        gbit_per_s: 0.0,
        packets_per_s: 0.0,
        verified_messages: 0,
        failed_messages: 0,
        bad_missing_ranges: 0,
    };
    let start = Instant::now();
    let mut pacer = Pacer {
        rate: cli.rate_pps,
        start,
        sent: 0,
    };
    for m in 0..cli.messages {
        for (i, s) in streams.iter_mut().enumerate() {
            let seed = cli.seed ^ (u64::from(m) << 16) ^ (i as u64 + 1);
            s.start_message(cli.message_bytes, cli.mss, seed)?;
        }
        // First transmission: every stream's schedule, interleaved.
        let mut pending: Vec<Vec<usize>> = streams
            .iter()
            .map(|_| schedule(segments, cli.order, cli.shuffle_window, imp, &mut rng))
            .collect();
        for round in 0..50 {
            // Every stream's schedule, interleaved: (stream, segment).
            let longest = pending.iter().map(Vec::len).max().unwrap_or(0);
            let items: Vec<(usize, usize)> = (0..longest)
                .flat_map(|k| {
                    pending
                        .iter()
                        .enumerate()
                        .filter_map(move |(i, sc)| Some((i, *sc.get(k)?)))
                })
                .collect();
            let round_start = Instant::now();
            let mut round_build = 0.0;
            let mut next = 0;
            let mut batch = Vec::new();
            while next < items.len() {
                // Prepare one frame, or with --prebuild as many as there are frames for.
                let building = cli.prebuild.then(Instant::now);
                let want = if cli.prebuild { items.len() - next } else { 1 };
                while batch.len() < want {
                    let (i, j) = items[next + batch.len()];
                    let s = &mut streams[i];
                    match tx.prepare(s.queue, &mut |buf| s.build(j, cli.mss, buf))? {
                        Some(p) => batch.push(p),
                        None if batch.is_empty() => tx.make_room()?,
                        None => break,
                    }
                }
                if let Some(b) = building {
                    round_build += b.elapsed().as_secs_f64();
                    pacer.restart();
                }
                for p in batch.drain(..) {
                    tx.submit(p)?;
                    pacer.wait();
                    let j = items[next].1;
                    next += 1;
                    report.segments_sent += 1;
                    let bytes = cli
                        .message_bytes
                        .saturating_sub((j as u64).saturating_mul(u64::from(cli.mss)))
                        .min(u64::from(cli.mss));
                    report.payload_bytes_sent += bytes;
                    if round == 0 {
                        bar.inc(bytes);
                    } else {
                        report.retransmitted_segments += 1;
                    }
                }
            }
            tx.flush()?;
            report.build_seconds += round_build;
            report.send_seconds += round_start.elapsed().as_secs_f64() - round_build;
            let mut all_done = true;
            for (s, sched) in streams.iter_mut().zip(pending.iter_mut()) {
                sched.clear();
                if s.window.is_none() {
                    continue;
                }
                let (verified, missing) = s.complete()?;
                if verified {
                    s.verified += 1;
                    s.window = None;
                } else if s.lie.is_some() {
                    s.failed += 1;
                    s.window = None;
                } else {
                    all_done = false;
                    // Segments covering the missing ranges (each checked: the receiver
                    // is not trusted); later rounds lose nothing.
                    let resend = check::resend(&missing, cli.message_bytes, cli.mss);
                    if resend.bad_ranges > 0 {
                        tracing::warn!(
                            "queue {}: the receiver's status named {} bad missing ranges \
                             (empty, inverted or outside the message); ignored or clamped",
                            s.queue,
                            resend.bad_ranges
                        );
                        report.bad_missing_ranges += resend.bad_ranges as u64;
                    }
                    *sched = resend.segments;
                    bar.set_message(format!(
                        "round {}: {} segments missing",
                        round + 1,
                        sched.len()
                    ));
                }
            }
            if all_done {
                break;
            }
            if round == 49 {
                bail!("messages still incomplete after 50 rounds of retransmission");
            }
        }
    }
    bar.finish_and_clear();
    for s in &mut streams {
        let _ = s.control.call(&Request::Bye);
        report.verified_messages += s.verified;
        report.failed_messages += s.failed;
    }
    report.seconds = start.elapsed().as_secs_f64();
    let busy = report.send_seconds.max(1e-9);
    report.gbit_per_s = report.payload_bytes_sent as f64 * 8.0 / busy / 1e9;
    report.packets_per_s = report.segments_sent as f64 / busy;
    println!(
        "zc-send: {} streams, {} segments ({} retransmitted), {:.3} GB payload, {:.2} s sending ({:.2} s in all): {:.3} Gbit/s, {:.0} packets/s while sending; {} messages verified, {} refused (lying streams)",
        report.streams,
        report.segments_sent,
        report.retransmitted_segments,
        report.payload_bytes_sent as f64 / 1e9,
        report.send_seconds,
        report.seconds,
        report.gbit_per_s,
        report.packets_per_s,
        report.verified_messages,
        report.failed_messages
    );
    if let Some(path) = &cli.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
