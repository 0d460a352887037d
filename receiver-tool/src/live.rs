//! `zc-recv live`: the AF_XDP receiver. Loads the XDP program, sets up one UMEM holding
//! the placement regions and the bounce frames, one socket per queue, and serves the
//! control plane; then pairs each RX descriptor with its header record, opens the segment
//! where it landed, and lets the placement engine decide.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver as EventReceiver, SyncSender, TryRecvError, channel};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use control::Response;
use copy_fallback::cpu::CpuEngine;
use copy_fallback::decider::Decider;
use copy_fallback::ioat::IoatModel;
use copy_fallback::pipeline::CopyPipeline;
use copy_fallback::{CopyEngine, CopyTarget};
use indicatif::{ProgressBar, ProgressStyle};
use placement::GrantId;
use psp::{MasterKey, MasterKeys};
use receive_core::capture::CapturedBatch;
use receive_core::grant_table::WholeFrame;
use receive_core::report::{CalibrationReport, CaptureReport, QueueReport};
use receive_core::{
    ConnId, CopyTag, Limits, Output, Payload, Receiver, ReceiverConfig, RegionSpec, Report,
    RunFacts, Timestamp, UmemTarget,
};
use umem::{BindMode, Desc, Layout, Socket, SocketConfig, Umem, UmemMemory};

use crate::capture::{CaptureArgs, CaptureWriter};
use crate::cpu::{CpuSnapshot, LoopCounts, accounting, cpu_now};
use crate::digest::{DigestJob, DigestWorker};
use crate::engine::{CopyBackend, EngineArgs};
use crate::replay::{Keys, RegionConfig};
use crate::serve::{self, ControlServer, Event};
use crate::xdp::XdpProgram;

/// A region on the command line: `ID:LEN[:late]`, LEN with an optional K/M/G suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionArg {
    pub id: u32,
    pub len: u64,
    pub late: bool,
}

impl std::str::FromStr for RegionArg {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let mut parts = s.split(':');
        let bad = || format!("region {s:?}: expected ID:LEN[:late], e.g. 1:64M");
        let id = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let len_text = parts.next().ok_or_else(bad)?;
        let (digits, unit) = match len_text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
            Some((i, _)) => len_text.split_at(i),
            None => (len_text, ""),
        };
        let mult: u64 = match unit {
            "" => 1,
            "K" | "k" => 1 << 10,
            "M" | "m" => 1 << 20,
            "G" | "g" => 1 << 30,
            _ => return Err(bad()),
        };
        let len = digits
            .parse::<u64>()
            .ok()
            .and_then(|d| d.checked_mul(mult))
            .filter(|l| *l > 0)
            .ok_or_else(bad)?;
        let late = match parts.next() {
            None => false,
            Some("late") => true,
            Some(_) => return Err(bad()),
        };
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Self { id, len, late })
    }
}

/// Whether to bind the AF_XDP sockets in zero-copy mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ZeroCopy {
    /// Copy mode (the kernel copies each frame into the UMEM).
    Off,
    /// Zero-copy (the NIC DMAs whole frames into the UMEM); refused when the driver cannot.
    On,
    /// Zero-copy when the driver offers it, copy mode otherwise.
    Auto,
}

/// The bind mode `zero_copy` asks for on `iface`.
fn bind_mode(zero_copy: ZeroCopy, iface: &str) -> Result<BindMode> {
    let supported = || umem::sys::zero_copy_supported(iface, 0);
    match zero_copy {
        ZeroCopy::Off => Ok(BindMode::Copy),
        ZeroCopy::On | ZeroCopy::Auto if supported() => {
            tracing::warn!(
                "zero-copy bind on {iface}: whole-frame landing has been validated on veth in copy mode only (docs/design.md, \"Whole-frame landing\")"
            );
            Ok(BindMode::ZeroCopy)
        }
        ZeroCopy::On => bail!("--zero-copy on: {iface} does not support AF_XDP zero-copy"),
        ZeroCopy::Auto => Ok(BindMode::Copy),
    }
}

/// What lands in the UMEM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Landing {
    /// The payload alone (the XDP program strips headers and ICV). Copy mode only.
    Split,
    /// Whole frames as a zero-copy NIC DMAs them (headers, payload, ICV), sent back to
    /// front; each head the ICV of the frame below covers is restored from its record.
    WholeFrame,
    /// Whole frames without their ICV (the PSP-offload NIC model: a NIC with inline PSP
    /// need not DMA it). Copy mode only: a model.
    WholeFrameNoIcv,
    /// whole-frame on a zero-copy bind, split otherwise.
    Auto,
}

/// The landing `landing` asks for under bind `mode`.
fn resolve_landing(landing: Landing, mode: BindMode) -> Result<Landing> {
    let zero_copy = mode == BindMode::ZeroCopy;
    match landing {
        Landing::Auto if zero_copy => Ok(Landing::WholeFrame),
        Landing::Auto => Ok(Landing::Split),
        Landing::Split if zero_copy => bail!(
            "--landing split on a zero-copy bind: the NIC DMAs whole frames (headers, payload, ICV), so no payload would land where predicted; use --landing whole-frame (or auto)"
        ),
        Landing::WholeFrameNoIcv if zero_copy => bail!(
            "--landing whole-frame-no-icv models a NIC with inline PSP that does not DMA the ICV; a zero-copy bind lands the ICV: use --landing whole-frame (or auto)"
        ),
        other => Ok(other),
    }
}

/// Live receiver options.
#[derive(Debug, Clone, clap::Args)]
pub struct LiveArgs {
    /// Interface to receive on.
    #[arg(long)]
    pub iface: String,
    /// Number of rx queues to serve (0..N).
    #[arg(long, default_value_t = 1)]
    pub queues: u32,
    /// Control-plane address to listen on.
    #[arg(long, default_value = "0.0.0.0:7000")]
    pub listen: SocketAddr,
    /// Placement regions: ID:LEN[:late] (repeatable). A late region's generation becomes
    /// active --activation-delay-ms after its first grant; until then its payloads wait in
    /// bounce memory.
    #[arg(long = "region", required = true)]
    pub regions: Vec<RegionArg>,
    /// Delay before a late region activates, from its first grant.
    #[arg(long, default_value_t = 200)]
    pub activation_delay_ms: u64,
    /// Most fill entries outstanding per queue while predicting (the fill ring is twice
    /// this). 4096 absorbs the loop stalls of ~8 ms seen on a shared 2-core VM at ~220 k
    /// packets/s per queue; under loss, up to this many segments are copied per loss.
    #[arg(long, default_value_t = 4096)]
    pub window: u32,
    /// Bounce frames in the UMEM (2 KiB each). Payloads for regions not active yet wait in
    /// them, so this bounds staging (all but `queues × (bounce depth + 512)` frames).
    #[arg(long, default_value_t = 65536)]
    pub bounce_frames: u32,
    /// Bounce frames kept posted on a queue with nothing to predict (the first segments
    /// of a new grant land in them: a small depth costs fewer copies per grant).
    #[arg(long, default_value_t = 64)]
    pub bounce_depth: u32,
    /// AF_XDP bind mode: never zero-copy (off, the default), always (on), or when the
    /// driver offers it (auto). Off by default: the zero-copy landing is validated in copy
    /// mode on veth only, and a zero-copy driver recycles the chunks of frames the XDP
    /// program passes or drops out of fill-ring order (docs/design.md).
    #[arg(long, value_enum, default_value = "off")]
    pub zero_copy: ZeroCopy,
    /// What lands in the UMEM: the payload alone (split: copy mode only), the whole frame
    /// as a zero-copy NIC DMAs it (whole-frame: headers, payload, ICV), or the whole frame
    /// without its ICV (whole-frame-no-icv: the PSP-offload NIC model, copy mode only).
    /// auto: whole-frame on a zero-copy bind, split otherwise. Whole frames are sent back
    /// to front, so each frame's headers land in the slot the next frame covers, and its
    /// ICV on the head of the slot above, restored from that frame's header record;
    /// frames longer than the link's MTU + 14 bytes are passed to the kernel
    /// (docs/design.md, "Whole-frame landing").
    #[arg(long, value_enum, default_value = "auto")]
    pub landing: Landing,
    /// Predict nothing: every payload lands in a bounce frame and is copied, hints still
    /// checked. The copy-everything baseline, the cost that placement saves.
    #[arg(long)]
    pub no_predict: bool,
    /// Let sessions agree on inline crypto (`zc-send --crypto inline`): the model of a NIC
    /// with inline PSP, whose segments are neither decrypted nor verified here. For
    /// measuring placement without crypto's cost; the report says so (`crypto`).
    #[arg(long)]
    pub allow_inline_crypto: bool,
    /// Wait with poll(2) and need-wakeup instead of busy polling.
    #[arg(long)]
    pub poll: bool,
    /// With --poll: keep polling the rings for this long after the last packet before
    /// sleeping in poll(2), trading spinning for wakeups. 0 (the default) sleeps at once:
    /// on the 2-core veth testbed 50 µs saved ~0.8 µs of wakeups per packet but spun
    /// ~1.2 µs more (docs/design.md, "Where the time goes").
    #[arg(long, default_value_t = 0)]
    pub poll_spin_us: u64,
    /// With --poll: after a turn that drained its rings (no ring gave a full batch of 256),
    /// refill them and sleep this long before looking again, so that packets come in
    /// fewer, larger batches (a NIC's interrupt coalescing, rx-usecs). 0 (the default)
    /// looks again at once. Packets wait up to this long; the fill ring must hold what
    /// arrives meanwhile. At most 10,000.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(..=10_000))]
    pub poll_coalesce_us: u64,
    /// The copy fallback: backend, threshold, channels, pinning, faults.
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Capture of the frames received, for replay.
    #[command(flatten)]
    pub capture: CaptureArgs,
    /// Stop after this many seconds (the report is written as usual).
    #[arg(long, default_value_t = 600)]
    pub max_seconds: u64,
    /// Stop once this many sessions have said goodbye after at least one window of
    /// theirs matched its digest (and nothing is left to check). Without it the receiver serves
    /// until --max-seconds or SIGINT/SIGTERM: no client can stop it.
    #[arg(long)]
    pub sessions: Option<u64>,
    /// Revoke a grant not completed this many seconds after it was granted.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub grant_timeout_seconds: u64,
    /// Most control connections open at once; more are refused (and logged).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub max_connections: u32,
    /// Close a control connection whose next request is not whole within this many
    /// seconds (silent, or trickling bytes).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub control_idle_seconds: u64,
    /// No progress display.
    #[arg(long)]
    pub no_progress: bool,
}

fn random_master() -> Result<MasterKey> {
    use ring::rand::SecureRandom;
    let mut k = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut k)
        .map_err(|_| anyhow::anyhow!("no system randomness"))?;
    Ok(MasterKey(k))
}

/// The sockets and program the loop polls.
struct Io {
    program: XdpProgram,
    sockets: Vec<Socket>,
    /// How whole frames land (`None`: split).
    whole_frame: Option<WholeFrame>,
}

/// Runs the live receiver until --max-seconds, a signal, or --sessions completed sessions.
pub fn run(args: &LiveArgs) -> Result<Report> {
    if !umem::is_root() {
        bail!(
            "zc-recv live needs root: loading XDP programs and AF_XDP sockets require CAP_NET_ADMIN, CAP_BPF and CAP_NET_RAW"
        );
    }
    if args.queues == 0 || args.queues > xdp_common::MAX_QUEUES {
        bail!("--queues must be 1..={}", xdp_common::MAX_QUEUES);
    }
    args.engine.check()?;
    let regions: Vec<(u32, u64)> = args.regions.iter().map(|r| (r.id, r.len)).collect();
    let layout = Layout::new(&regions, args.bounce_frames, 2048)?;
    let memory = Arc::new(UmemMemory::with_layout(&layout).context("UMEM memory")?);
    let fill_size = (args.window.max(args.bounce_depth) * 2)
        .next_power_of_two()
        .max(4096);
    let umem = Umem::new(Arc::clone(&memory), layout.clone(), fill_size)
        .context("registering the UMEM")?;
    let io = bring_up(args, &umem, fill_size)?;
    let zero_copy = io.sockets.iter().any(|s| s.mode == BindMode::ZeroCopy);
    if zero_copy && memory.backing() != umem::Backing::HugePages {
        // A NIC's DMA into an unaligned chunk that crosses a 4 KiB page needs the pages
        // physically contiguous: only hugetlb pages guarantee it.
        tracing::warn!(
            "zero-copy bind on {} memory: chunks that cross a page boundary may be DMA'd to the wrong physical page; reserve huge pages (vm.nr_hugepages) so the UMEM is hugetlb-backed",
            memory.backing().as_str()
        );
    }
    let target = Arc::new(UmemTarget(Arc::clone(&memory)));
    match args.engine.engine {
        CopyBackend::Cpu => {
            let copier = CpuEngine::new(Arc::clone(&target));
            let pipeline = CopyPipeline::new(target, copier, Decider::CPU_ONLY);
            serve(args, &layout, &memory, io, pipeline, ("cpu", None))
        }
        CopyBackend::Ioat => {
            let config = args.engine.ioat_config()?;
            let (decider, calibration) = args.engine.decider(&config)?;
            announce_calibration(calibration.as_ref());
            let copier = IoatModel::start(Arc::clone(&target), &config)?;
            let pipeline = CopyPipeline::new(target, copier, decider);
            let engine = ("ioat_model", calibration);
            serve(args, &layout, &memory, io, pipeline, engine)
        }
    }
}

/// Says what the start-up calibration measured.
fn announce_calibration(calibration: Option<&CalibrationReport>) {
    if let Some(c) = calibration {
        let crossover = c
            .threshold_bytes
            .map_or("never (CPU copies only)".to_string(), |t| {
                format!("{t} bytes")
            });
        eprintln!("zc-recv: copy engine crossover measured here: {crossover}");
    }
}

/// Attaches the XDP program and binds one socket per queue, landing frames as
/// `--landing` and the bind mode say.
fn bring_up(args: &LiveArgs, umem: &Umem, fill_size: u32) -> Result<Io> {
    let mut program = XdpProgram::attach(&args.iface)?;
    let mode = bind_mode(args.zero_copy, &args.iface)?;
    let landing = resolve_landing(args.landing, mode)?;
    let whole_frame = whole_frame(args, landing)?;
    if let Some(w) = whole_frame {
        program.land_whole_frames(w.frame_cap, w.trailer > 0)?;
    }
    let mut sockets: Vec<Socket> = Vec::new();
    for q in 0..args.queues {
        let s = umem.socket(&SocketConfig {
            ifname: args.iface.clone(),
            queue: q,
            rx_size: fill_size,
            tx_size: 0,
            fill_size,
            mode,
            need_wakeup: args.poll,
        })?;
        program.add_socket(q, s.fd())?;
        sockets.push(s);
    }
    Ok(Io {
        program,
        sockets,
        whole_frame,
    })
}

/// With whole-frame landing: the most bytes a frame may land with (the link's largest
/// frame, MTU + Ethernet header, less the ICV when it is trimmed), the back-to-front run
/// (--window) and the bytes after each payload.
fn whole_frame(args: &LiveArgs, landing: Landing) -> Result<Option<WholeFrame>> {
    let icv = u32::try_from(xdp_common::ICV_LEN)?;
    let trailer = match landing {
        Landing::WholeFrame => icv,
        Landing::WholeFrameNoIcv => 0,
        Landing::Split | Landing::Auto => return Ok(None),
    };
    let path = format!("/sys/class/net/{}/mtu", args.iface);
    let mtu: u32 = std::fs::read_to_string(&path)
        .with_context(|| format!("reading {path}"))?
        .trim()
        .parse()
        .with_context(|| format!("{path} is not a number"))?;
    let frame = u64::from(mtu) + xdp_common::wire::ETH_LEN as u64;
    let cap = frame.saturating_sub(u64::from(icv - trailer));
    Ok(Some(WholeFrame {
        frame_cap: u32::try_from(cap).unwrap_or(u32::MAX),
        descending_run: u64::from(args.window),
        trailer,
    }))
}

/// The receive core's configuration from the command line.
fn core_config(args: &LiveArgs, layout: &Layout, io: &Io) -> Result<ReceiverConfig> {
    let queues = io.sockets.len();
    let regions = args
        .regions
        .iter()
        .map(|r| {
            let span = layout.region(r.id).context("region missing from layout")?;
            Ok(RegionSpec {
                id: r.id,
                base: span.base,
                len: r.len,
                late: r.late,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let mac = std::fs::read_to_string(format!("/sys/class/net/{}/address", args.iface))
        .with_context(|| format!("no interface {}", args.iface))?
        .trim()
        .to_string();
    Ok(ReceiverConfig {
        regions,
        queues,
        window: args.window,
        bounce_depth: args.bounce_depth,
        predict: !args.no_predict,
        limits: Limits {
            grant_timeout: Duration::from_secs(args.grant_timeout_seconds),
            activation_delay: Duration::from_millis(args.activation_delay_ms),
            whole_frame: io.whole_frame,
            allow_inline_crypto: args.allow_inline_crypto,
            ..Limits::default()
        },
        max_staged_bytes: 64 << 20,
        mac,
    })
}

/// The thin I/O layer around the receive core: the clock, the control server's events
/// and answers, the digest worker, CPU sampling and the progress display.
struct Driver<'m, T: CopyTarget, E: CopyEngine<Payload>> {
    core: Receiver<'m, T, E>,
    events: EventReceiver<Event>,
    /// The reply channel of each connection's request that waits for an answer.
    waiting: HashMap<ConnId, SyncSender<Response>>,
    digests: DigestWorker<GrantId>,
    outputs: Vec<Output>,
    start: Instant,
    cpu_start: Option<f64>,
    cpu_end: f64,
    /// CPU counters at the first payload and at the last answer.
    snapshots: Option<(CpuSnapshot, CpuSnapshot)>,
    loop_counts: LoopCounts,
    /// `--capture`: the thread writing captured frames.
    capture: Option<CaptureWriter>,
    /// A ring gave [`MAX_RX_BATCH`] descriptors this turn: more may be waiting.
    full_batch: bool,
}

impl<T: CopyTarget, E: CopyEngine<Payload>> Driver<'_, T, E> {
    fn now(&self) -> Timestamp {
        Timestamp::since_start(self.start.elapsed())
    }

    /// Serves every control event waiting. Errors only if the server stopped.
    fn control_events(&mut self, io: &mut Io) -> Result<()> {
        loop {
            let event = match self.events.try_recv() {
                Ok(e) => e,
                Err(TryRecvError::Empty) => return Ok(()),
                Err(TryRecvError::Disconnected) => bail!("control server stopped"),
            };
            let now = self.now();
            match event {
                Event::Closed { conn } => {
                    self.waiting.remove(&ConnId(conn));
                    self.core.connection_closed(ConnId(conn));
                }
                Event::Request {
                    conn,
                    request,
                    reply,
                } => match self.core.handle_control(ConnId(conn), &request, now) {
                    Some(response) => {
                        // Slots before the answer: a granted sender starts at once, and a
                        // frame that finds no fill entry is dropped (and shifts every slot
                        // posted after it).
                        self.refill(io);
                        let _ = reply.send(response);
                    }
                    None => {
                        self.waiting.insert(ConnId(conn), reply);
                    }
                },
            }
        }
    }

    /// Posts what every queue's fill ring has room for.
    fn refill(&mut self, io: &mut Io) {
        for (q, s) in io.sockets.iter_mut().enumerate() {
            self.core.refill(q, &mut s.fill_mut());
        }
    }

    /// Fill rings, then RX descriptors, then the header records for them, into the core.
    /// Returns how many descriptors came back.
    fn receive(&mut self, io: &mut Io, poll: bool, descs: &mut [Vec<Desc>], now: Timestamp) -> u32 {
        let mut got = 0;
        for (q, s) in io.sockets.iter_mut().enumerate() {
            self.core.refill(q, &mut s.fill_mut());
            if poll && s.fill_mut().needs_wakeup() {
                s.wake_rx();
            }
            descs[q].clear();
            if let Some(mut r) = s.rx_mut() {
                let n = r.consume(&mut descs[q], MAX_RX_BATCH);
                self.full_batch |= n == MAX_RX_BATCH;
                got += n;
            }
        }
        let core = &mut self.core;
        let bad = io.program.drain_headers(|r, ext| match ext {
            Some(ext) => core.captured_record(r, ext),
            None => core.header_record(r),
        });
        core.bad_header_records(bad);
        for (q, batch) in descs.iter_mut().enumerate() {
            for d in batch.drain(..) {
                self.core.on_rx(q, d, now);
            }
        }
        if let (Some(writer), Some(tap)) = (self.capture.as_mut(), self.core.capture_mut())
            && tap.pending() > 0
        {
            let spare = writer.spare();
            writer.send(tap.take_batch(spare));
        }
        if got > 0 && self.cpu_start.is_none() && self.core.first_packet().is_some() {
            self.cpu_start = Some(cpu_now());
            let first = CpuSnapshot::take();
            self.snapshots = Some((first.clone(), first));
        }
        got
    }

    /// The core's work between packets; its outputs go to the digest worker and the
    /// control connections.
    fn poll(&mut self, now: Timestamp) {
        self.core.poll(now, &mut self.outputs);
        while let Some(verdict) = self.digests.try_verdict() {
            let matches = verdict.matches;
            self.core
                .digest_checked(verdict.job.context, matches, &mut self.outputs);
        }
        for output in self.outputs.drain(..) {
            match output {
                Output::Reply { conn, response } => {
                    if let Some(reply) = self.waiting.remove(&conn) {
                        let _ = reply.send(response);
                    }
                    self.cpu_end = cpu_now();
                    if let Some((_, end)) = &mut self.snapshots {
                        *end = CpuSnapshot::take();
                    }
                }
                Output::CheckDigest(c) => self.digests.submit(DigestJob {
                    addr: c.addr,
                    len: c.len,
                    expected: c.expected,
                    context: c.grant,
                }),
            }
        }
    }

    /// Nothing is being received or checked.
    fn idle(&self) -> bool {
        self.core.idle() && self.digests.in_flight() == 0
    }
}

fn serve<T: CopyTarget, E: CopyEngine<Payload>>(
    args: &LiveArgs,
    layout: &Layout,
    memory: &Arc<UmemMemory>,
    mut io: Io,
    pipeline: CopyPipeline<T, E, Payload, CopyTag>,
    (backend, calibration): (&'static str, Option<CalibrationReport>),
) -> Result<Report> {
    let (master0, master1) = (random_master()?, random_master()?);
    let replay_keys = Keys {
        master0: hex::encode(master0.0),
        master1: hex::encode(master1.0),
    };
    let keys = MasterKeys::new(master0, master1);
    let config = core_config(args, layout, &io)?;
    let mut core = Receiver::new(config, memory, layout.clone(), keys, pipeline)?;
    let capture = match &args.capture.capture {
        Some(path) => {
            io.program.capture_outer_headers()?;
            core.start_capture(args.capture.capture_limit);
            Some(CaptureWriter::start(path)?)
        }
        None => None,
    };
    let (events_tx, events) = channel();
    let server = serve::start(
        args.listen,
        events_tx,
        serve::Limits {
            max_connections: args.max_connections as usize,
            idle: Duration::from_secs(args.control_idle_seconds),
        },
    )?;
    announce(args, &io, &server, layout, memory);
    let mut driver = Driver {
        core,
        events,
        waiting: HashMap::new(),
        digests: DigestWorker::start(Arc::clone(memory)).context("digest thread")?,
        outputs: Vec::new(),
        start: Instant::now(),
        cpu_start: None,
        cpu_end: 0.0,
        snapshots: None,
        loop_counts: LoopCounts::default(),
        capture,
        full_batch: false,
    };
    let reached_goal = serve_loop(args, &mut driver, &mut io)?;
    let run_seconds = driver.start.elapsed().as_secs_f64();
    let Driver {
        mut core,
        cpu_start,
        cpu_end,
        snapshots,
        loop_counts,
        capture,
        ..
    } = driver;
    core.finish()?;
    let capture = match capture {
        Some(writer) => Some(finish_capture(args, &mut core, writer, &replay_keys)?),
        None => None,
    };
    let payload_bytes = core.progress().payload_bytes;
    let accounting = snapshots
        .map(|(start, end)| accounting(&start, &end, loop_counts, payload_bytes, run_seconds));
    let facts = RunFacts {
        backend,
        calibration,
        cpu_seconds: cpu_start.map_or(0.0, |s| (cpu_end - s).max(0.0)),
        refused_connections: server.refused(),
        goal_reached: reached_goal || args.sessions.is_none(),
        queues: queue_reports(&io)?,
        xdp_mode: io.program.mode,
        xdp_counters: io.program.counters(),
        accounting,
    };
    let mut report = core.report(facts);
    report.capture = capture;
    Ok(report)
}

/// Writes the last captured frames and the replay configuration.
fn finish_capture<T: CopyTarget, E: CopyEngine<Payload>>(
    args: &LiveArgs,
    core: &mut Receiver<'_, T, E>,
    mut writer: CaptureWriter,
    keys: &Keys,
) -> Result<CaptureReport> {
    let Some(tap) = core.capture_mut() else {
        bail!("capturing was not started");
    };
    writer.send(tap.take_batch(CapturedBatch::default()));
    let grants = tap.grants().to_vec();
    let regions = args
        .regions
        .iter()
        .map(|r| RegionConfig {
            id: r.id,
            len: r.len,
            // The generation its grants were made for (regions start at 1).
            generation: grants
                .iter()
                .filter(|g| g.region == r.id)
                .map(|g| g.generation)
                .max()
                .unwrap_or(1),
            active: true,
        })
        .collect();
    writer.finish(keys, regions, &grants, tap.counts())
}

fn announce(
    args: &LiveArgs,
    io: &Io,
    server: &ControlServer,
    layout: &Layout,
    memory: &UmemMemory,
) {
    eprintln!(
        "zc-recv: listening on {}, {} queue(s) on {} ({} XDP, {} AF_XDP), UMEM {} MiB ({})",
        server.local,
        io.sockets.len(),
        args.iface,
        io.program.mode,
        io.sockets.first().map_or("-", |s| s.mode.as_str()),
        layout.len >> 20,
        memory.backing().as_str()
    );
}

/// Most descriptors taken from one RX ring in a turn.
const MAX_RX_BATCH: u32 = 256;

/// Moves events between the kernel, the control server and the core until a stop
/// condition. Returns whether the --sessions goal was reached.
fn serve_loop<T: CopyTarget, E: CopyEngine<Payload>>(
    args: &LiveArgs,
    driver: &mut Driver<'_, T, E>,
    io: &mut Io,
) -> Result<bool> {
    // Pinned here, after every other thread (engine, digest, control) has started: threads
    // inherit the core set of the thread that starts them.
    args.engine.pin_receive_loop()?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).context("signal handler")?;
    }
    let bar = progress_bar(args.no_progress);
    let mut last_display = Instant::now();
    let mut last_packet = last_display;
    let mut descs: Vec<Vec<Desc>> = vec![Vec::new(); io.sockets.len()];
    let reached_goal = loop {
        // One clock read per turn (two when packets came): time was ~7 % of the loop.
        let turn = Instant::now();
        let elapsed = turn.duration_since(driver.start);
        if elapsed > Duration::from_secs(args.max_seconds) {
            tracing::warn!("stopping after {} s (--max-seconds)", args.max_seconds);
            break false;
        }
        if stop.load(Ordering::Relaxed) {
            eprintln!("zc-recv: stopping on a signal");
            break false;
        }
        driver.control_events(io)?;
        if args
            .sessions
            .is_some_and(|n| driver.core.completed_sessions() >= n && driver.idle())
        {
            break true;
        }
        let now = Timestamp::since_start(elapsed);
        let got = driver.receive(io, args.poll, &mut descs, now);
        driver.poll(now);
        let counts = &mut driver.loop_counts;
        counts.turns += 1;
        if got == 0 {
            counts.empty_polls += 1;
        } else {
            counts.packets += u64::from(got);
            counts.useful += turn.elapsed();
        }
        if turn.duration_since(last_display) > Duration::from_millis(100) {
            last_display = turn;
            let p = driver.core.progress();
            bar.set_position(p.payload_bytes);
            bar.set_message(format!(
                "direct {:.1}%, {} grants",
                p.direct_share * 100.0,
                p.open_grants
            ));
        }
        if got > 0 {
            last_packet = turn;
            // Only when the rings were drained: a full batch means more is waiting.
            let drained = !std::mem::take(&mut driver.full_batch);
            if args.poll && args.poll_coalesce_us > 0 && drained {
                // The fill rings full first: frames keep landing while the loop sleeps.
                driver.refill(io);
                std::thread::sleep(Duration::from_micros(args.poll_coalesce_us));
            }
        } else if !args.poll
            || turn.duration_since(last_packet) >= Duration::from_micros(args.poll_spin_us)
        {
            wait_for_packets(io, args.poll);
        }
    };
    bar.finish_and_clear();
    Ok(reached_goal)
}

/// Nothing came: sleep in poll(2) (need-wakeup mode) or yield the core.
fn wait_for_packets(io: &Io, poll: bool) {
    if poll {
        if let Some(s) = io.sockets.first() {
            s.poll_rx(Duration::from_millis(1));
        }
    } else {
        std::thread::yield_now();
    }
}

fn progress_bar(hidden: bool) -> ProgressBar {
    let bar = if hidden {
        ProgressBar::hidden()
    } else {
        ProgressBar::new_spinner()
    };
    bar.set_style(
        ProgressStyle::with_template("zc-recv {spinner} {bytes} {binary_bytes_per_sec} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar
}

/// The sockets' XDP_STATISTICS, per queue.
fn queue_reports(io: &Io) -> Result<BTreeMap<String, QueueReport>> {
    let mut queues = BTreeMap::new();
    for s in &io.sockets {
        let st = s.statistics()?;
        queues.insert(
            format!("queue{}", s.queue),
            QueueReport {
                mode: s.mode.as_str(),
                rx_dropped: st.rx_dropped,
                rx_invalid_descs: st.rx_invalid_descs,
                rx_ring_full: st.rx_ring_full,
                rx_fill_ring_empty_descs: st.rx_fill_ring_empty_descs,
            },
        );
    }
    Ok(queues)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_landing_follows_the_bind_and_models_are_refused_on_zero_copy() {
        let (copy, zc) = (BindMode::Copy, BindMode::ZeroCopy);
        assert_eq!(
            resolve_landing(Landing::Auto, copy).unwrap(),
            Landing::Split
        );
        assert_eq!(
            resolve_landing(Landing::Auto, zc).unwrap(),
            Landing::WholeFrame
        );
        for l in [
            Landing::Split,
            Landing::WholeFrame,
            Landing::WholeFrameNoIcv,
        ] {
            assert_eq!(resolve_landing(l, copy).unwrap(), l);
        }
        assert_eq!(
            resolve_landing(Landing::WholeFrame, zc).unwrap(),
            Landing::WholeFrame
        );
        let split = resolve_landing(Landing::Split, zc).unwrap_err().to_string();
        assert!(split.contains("whole frames"), "{split}");
        let model = resolve_landing(Landing::WholeFrameNoIcv, zc)
            .unwrap_err()
            .to_string();
        assert!(model.contains("does not DMA the ICV"), "{model}");
    }
}
