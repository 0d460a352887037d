//! The command line, checked: every argument, and the interface, before the network.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use serde::Serialize;

use crate::check;
use crate::schedule::Order;

/// Most frames `--prebuild` builds ahead (2 KiB each).
pub(crate) const MAX_PREBUILT_FRAMES: u32 = 262_144;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum TxKind {
    /// AF_XDP socket in copy mode on each stream's queue.
    Xdp,
    /// AF_PACKET raw socket (the kernel picks the queue).
    Packet,
    /// Kernel UDP socket per stream: `sendmmsg` of datagrams cut by the kernel
    /// (`UDP_SEGMENT`, GSO); the route picks the interface, the kernel the queue.
    Udp,
}

/// `--crypto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum CryptoArg {
    /// AES-GCM in software.
    Software,
    /// The inline-NIC model.
    Inline,
}

impl From<CryptoArg> for control::Crypto {
    fn from(c: CryptoArg) -> Self {
        match c {
            CryptoArg::Software => Self::Software,
            CryptoArg::Inline => Self::Inline,
        }
    }
}

/// What carries the messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Transport {
    /// PSP with placement hints.
    Psp,
    /// Kernel TCP (the baseline).
    Tcp,
}

#[derive(Parser)]
#[command(name = "zc-send", version, about = "PSP sender with placement hints")]
pub(crate) struct Cli {
    /// Receiver's control address, IP:port.
    #[arg(long)]
    pub(crate) control: SocketAddr,
    /// Interface to send on.
    #[arg(long)]
    pub(crate) iface: String,
    /// Queues to send on, one stream per queue (comma separated, each once, at most
    /// 25535: the stream on queue q sends from UDP port 40000 + q).
    #[arg(long, value_delimiter = ',', default_value = "0",
          value_parser = clap::value_parser!(u32).range(..=i64::from(check::MAX_QUEUE)))]
    pub(crate) queues: Vec<u32>,
    /// Messages per stream (at least 1).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) messages: u32,
    /// Bytes per message: 1 to 2 GiB (2147483648), and at most 4 GiB for all streams'
    /// messages together (each stream holds its message in memory).
    #[arg(long, default_value_t = 16 << 20, value_parser = check::message_bytes)]
    pub(crate) message_bytes: u64,
    /// Payload bytes per segment, 1..=1800 (IP packets must also fit the interface's MTU).
    #[arg(long, default_value_t = 1400,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(check::MAX_MSS)))]
    pub(crate) mss: u32,
    /// Segment order.
    #[arg(long, value_enum, default_value = "ascending")]
    pub(crate) order: Order,
    /// Window of the shuffled order, in segments (at least 1).
    #[arg(long, default_value_t = 64,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub(crate) shuffle_window: usize,
    /// Probability that a segment is lost (first transmission only), 0..=1.
    #[arg(long, default_value_t = 0.0, value_parser = check::probability)]
    pub(crate) loss: f64,
    /// Probability that a segment is sent twice, 0..=1.
    #[arg(long, default_value_t = 0.0, value_parser = check::probability)]
    pub(crate) duplicate: f64,
    /// Probability that a segment swaps places with the next, 0..=1.
    #[arg(long, default_value_t = 0.0, value_parser = check::probability)]
    pub(crate) reorder: f64,
    /// Seed of message contents and impairments.
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
    /// Limit in packets per second (all streams together; at least 1).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) rate_pps: Option<u64>,
    /// Transmit path.
    #[arg(long, value_enum, default_value = "xdp")]
    pub(crate) tx: TxKind,
    /// AF_XDP: descriptors queued per kick of the TX ring (sendto); UDP: frames queued
    /// per round of sendmmsg calls. 1..=2048.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=2048))]
    pub(crate) tx_batch: u32,
    /// psp: PSP segments with placement hints (the placement path). tcp: the kernel-TCP
    /// baseline: the same messages over one TCP connection per stream to `zc-recv tcp`
    /// at --control (its --mss sets the MSS).
    #[arg(long, value_enum, default_value = "psp")]
    pub(crate) transport: Transport,
    /// With --transport tcp: send each message with MSG_ZEROCOPY from page-aligned memory,
    /// so that its pages reach the receiver whole (what `zc-recv tcp --zero-copy` maps).
    #[arg(long)]
    pub(crate) zero_copy_send: bool,
    /// Who does the PSP crypto, agreed with the receiver in the session: software (seal
    /// here with AES-GCM, the default), or inline (the model of a NIC with inline PSP:
    /// frames go out unsealed, the receiver neither decrypts nor verifies; it must allow
    /// it). Refused with --lie: lies are caught by authentication.
    #[arg(long, value_enum, default_value = "software")]
    pub(crate) crypto: CryptoArg,
    /// PSP version (0: AES-GCM-128, 1: AES-GCM-256, 2/3: GMAC).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=3))]
    pub(crate) psp_version: u8,
    /// Region to ask for, per stream in queue order (the receiver picks when absent; at
    /// most one per queue).
    #[arg(long, value_delimiter = ',')]
    pub(crate) regions: Vec<u32>,
    /// Make the stream on a queue lie: QUEUE:region=ID (a region it was not granted),
    /// QUEUE:outside (offset outside its window), QUEUE:stale (an older generation),
    /// QUEUE:forged-icv. Liars send each message once and do not retransmit.
    #[arg(long)]
    pub(crate) lie: Vec<String>,
    /// Build and seal every frame of a round (up to 262,144 frames, 512 MiB) before
    /// sending any, so that sending runs at the path's rate rather than at the rate of
    /// sealing; `send_seconds` then excludes building (`build_seconds`).
    #[arg(long)]
    pub(crate) prebuild: bool,
    /// Build and seal frames in a second thread while this one transmits them (each frame
    /// copied once into the transmit path). Not with --prebuild.
    #[arg(long, conflicts_with = "prebuild")]
    pub(crate) seal_thread: bool,
    /// Write the sender's report as JSON here.
    #[arg(long)]
    pub(crate) json: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub(crate) no_progress: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Lie {
    Region(u32),
    Outside,
    Stale,
    ForgedIcv,
}

pub(crate) fn parse_lie(s: &str) -> Result<(u32, Lie)> {
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
pub(crate) fn parse_lies(args: &[String], queues: &[u32]) -> Result<Vec<(u32, Lie)>> {
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
pub(crate) struct Plan {
    pub(crate) lies: Vec<(u32, Lie)>,
    pub(crate) sizes: check::Sizes,
    /// The sending interface's MAC address.
    pub(crate) eth_src: [u8; 6],
}

impl Plan {
    /// Checks every argument, then the interface (its MAC address, and that frames fit its
    /// MTU), without opening a socket.
    pub(crate) fn new(cli: &Cli) -> Result<Self> {
        check::queues(&cli.queues)?;
        if cli.regions.len() > cli.queues.len() {
            bail!(
                "--regions names {} regions for {} queues (one region per stream at most)",
                cli.regions.len(),
                cli.queues.len()
            );
        }
        let lies = parse_lies(&cli.lie, &cli.queues)?;
        if cli.crypto == CryptoArg::Inline && !lies.is_empty() {
            bail!(
                "--crypto inline with --lie: lies are caught by authentication, which inline crypto leaves out"
            );
        }
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

pub(crate) fn mac_of(ifname: &str) -> Result<[u8; 6]> {
    let text = std::fs::read_to_string(format!("/sys/class/net/{ifname}/address"))
        .with_context(|| format!("--iface: no interface {ifname}"))?;
    parse_mac(text.trim())
}

pub(crate) fn mtu_of(ifname: &str) -> Result<u32> {
    let text = std::fs::read_to_string(format!("/sys/class/net/{ifname}/mtu"))?;
    Ok(text.trim().parse()?)
}

pub(crate) fn parse_mac(s: &str) -> Result<[u8; 6]> {
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
