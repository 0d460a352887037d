//! `zc-recv live`: the AF_XDP receiver. Loads the XDP program, sets up one UMEM holding
//! the placement regions and the bounce frames, one socket per queue, and serves the
//! control plane; then pairs each RX descriptor with its header record, opens the segment
//! where it landed, and lets the placement engine decide.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TryRecvError, channel};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use control::Response;
use copy_fallback::cpu::CpuEngine;
use copy_fallback::decider::Decider;
use copy_fallback::ioat::{IoatConfig, IoatModel};
use copy_fallback::pipeline::CopyPipeline;
use copy_fallback::{CopyEngine, CopyTarget};
use indicatif::{ProgressBar, ProgressStyle};
use placement::{Decision, GrantId, PlacementEngine, Policy};
use psp::{MasterKey, MasterKeys};
use receive_core::{Action, ConnId, GrantTable, Limits, Pairing, RegionSpec, engine_time};
use umem::{
    BindMode, Desc, FillPlanner, FrameReturns, Layout, Posted, Prediction, ReceivedFrame, Socket,
    SocketConfig, Umem, UmemMemory,
};
use xdp_common::HeaderRecord;

use crate::digest::{DigestJob, DigestVerdict, DigestWorker};
use crate::report::{
    ControlReport, GrantReport, QueueReport, ReceiverReport, RegionReport, Report, RunSummary,
    XskReport, process_cpu_seconds,
};
use crate::rx::{Payload, Received, RxPath};
use crate::serve::{self, Event};
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
    /// Copy mode (the kernel copies each frame's payload into the UMEM).
    Off,
    /// Zero-copy (the NIC DMAs whole frames into the UMEM); refused when the driver cannot.
    On,
}

/// The bind mode `zero_copy` asks for on `iface`.
///
/// Zero-copy is never chosen on its own: on a zero-copy NIC every frame lands whole
/// (headers first, ICV after), so each payload sits a header's length after its slot and
/// reaches into the next one. Until the receiver places whole frames (the zero-copy landing
/// issue), `--zero-copy on` is for experiments only and says so.
fn bind_mode(zero_copy: ZeroCopy, iface: &str) -> Result<BindMode> {
    match zero_copy {
        ZeroCopy::Off => Ok(BindMode::Copy),
        ZeroCopy::On if umem::sys::zero_copy_supported(iface, 0) => {
            tracing::warn!(
                "zero-copy bind: whole frames land in the UMEM, so payloads land a header's length after their slots and are copied; slots may be overrun (experimental)"
            );
            Ok(BindMode::ZeroCopy)
        }
        ZeroCopy::On => bail!("--zero-copy on: {iface} does not support AF_XDP zero-copy"),
    }
}

/// Copy backend for payloads that did not land in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineKind {
    /// Copy on the receive thread.
    Cpu,
    /// The I/OAT-class engine model (worker threads, bounded rings).
    Ioat,
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
    /// AF_XDP bind mode. Off (copy mode) by default: zero-copy NICs land whole frames,
    /// which direct placement does not handle yet.
    #[arg(long, value_enum, default_value = "off")]
    pub zero_copy: ZeroCopy,
    /// Wait with poll(2) and need-wakeup instead of busy polling.
    #[arg(long)]
    pub poll: bool,
    /// Copy backend.
    #[arg(long, value_enum, default_value = "cpu")]
    pub engine: EngineKind,
    /// With --engine ioat: copies of at least this many bytes go to the engine.
    #[arg(long, default_value_t = 0)]
    pub engine_threshold: usize,
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

/// Copies into the UMEM.
#[derive(Debug)]
struct UmemTarget(Arc<UmemMemory>);

impl CopyTarget for UmemTarget {
    fn write(&self, addr: u64, src: &[u8]) -> copy_fallback::Result<()> {
        self.0
            .write(addr, src)
            .map_err(|_| copy_fallback::Error::CopyOutOfRange {
                addr,
                len: src.len(),
            })
    }
}

/// A grant's prediction state on its queue.
#[derive(Debug, Clone, Copy)]
struct Predicted {
    queue: u32,
    mss: u32,
    first_landing: u64,
    segments: u64,
    /// Highest segment index seen so far (+1).
    next_index: u64,
    /// Slots are being predicted (its region is active).
    predicting: bool,
}

impl Predicted {
    fn prediction(&self, grant: GrantId) -> Prediction {
        Prediction {
            key: grant.to_wire(),
            first_landing: self.first_landing,
            mss: self.mss,
            segments: self.segments,
        }
    }
}

/// A completion request waiting for the window to fill or its deadline.
struct PendingCompletion {
    conn: u64,
    grant: GrantId,
    sha256: String,
    reply: SyncSender<Response>,
    /// Answer "incomplete" (with the missing ranges) after this.
    deadline: Instant,
}

/// A window whose digest is being checked, and what to do with the verdict.
struct Checking {
    grant: GrantId,
    spi: u32,
    report: GrantReport,
    reply: SyncSender<Response>,
}

/// Counters of the loop's own checks.
#[derive(Debug, Default, Clone, Copy)]
struct LoopCounters {
    bad_records: u64,
    /// Segments, activations or copies that failed on bad input: counted and logged, the
    /// receiver goes on.
    input_errors: u64,
    /// Bytes received for grants revoked before they completed (connection closed, timeout).
    abandoned_bytes: u64,
}

/// How long a completion waits for the window to fill before answering with what is
/// missing.
const COMPLETION_WAIT: Duration = Duration::from_millis(300);

fn softirq_seconds() -> f64 {
    // /proc/stat "cpu" line: user nice system idle iowait irq softirq ... (1/100 s).
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            s.lines().next().and_then(|l| {
                l.split_whitespace()
                    .nth(7)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |t| t / 100.0)
}

fn cpu_now() -> f64 {
    process_cpu_seconds() + softirq_seconds()
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
    let regions: Vec<(u32, u64)> = args.regions.iter().map(|r| (r.id, r.len)).collect();
    let layout = Layout::new(&regions, args.bounce_frames, 2048)?;
    let memory = Arc::new(UmemMemory::with_layout(&layout).context("UMEM memory")?);
    let fill_size = (args.window.max(args.bounce_depth) * 2)
        .next_power_of_two()
        .max(4096);
    let umem = Umem::new(Arc::clone(&memory), layout.clone(), fill_size)
        .context("registering the UMEM")?;
    let mut program = XdpProgram::attach(&args.iface)?;
    let mode = bind_mode(args.zero_copy, &args.iface)?;
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
    let io = Io { program, sockets };
    let target = Arc::new(UmemTarget(Arc::clone(&memory)));
    match args.engine {
        EngineKind::Cpu => {
            let engine = CpuEngine::new(Arc::clone(&target));
            let pipeline = CopyPipeline::new(target, engine, Decider::CPU_ONLY);
            serve(args, &layout, &memory, io, pipeline, "cpu")
        }
        EngineKind::Ioat => {
            let engine = IoatModel::start(Arc::clone(&target), &IoatConfig::default())?;
            let decider = Decider::fixed(args.engine_threshold);
            let pipeline = CopyPipeline::new(target, engine, decider);
            serve(args, &layout, &memory, io, pipeline, "ioat_model")
        }
    }
}

/// The receiver's state between the kernel and the control plane.
struct Receiver<'a, T: CopyTarget, E: CopyEngine<Payload>> {
    args: &'a LiveArgs,
    layout: &'a Layout,
    memory: &'a Arc<UmemMemory>,
    rx: RxPath<T, E>,
    table: GrantTable,
    planner: FillPlanner,
    keys: MasterKeys,
    mac: String,
    predicted: HashMap<GrantId, Predicted>,
    pending: Vec<PendingCompletion>,
    /// Revoked grants whose copies are still in flight: their windows stay reserved.
    draining: Vec<GrantId>,
    finished: HashMap<u32, Vec<GrantReport>>,
    digests: DigestWorker<Checking>,
    pairing: Pairing,
    counters: LoopCounters,
    returns: FrameReturns,
    returned: Vec<u32>,
    first_packet: Option<Instant>,
    last_packet: Option<Instant>,
    cpu_start: Option<f64>,
    cpu_end: f64,
}

fn serve<T: CopyTarget, E: CopyEngine<Payload>>(
    args: &LiveArgs,
    layout: &Layout,
    memory: &Arc<UmemMemory>,
    mut io: Io,
    pipeline: CopyPipeline<T, E, Payload, crate::rx::CopyTag>,
    backend: &'static str,
) -> Result<Report> {
    let mut r = Receiver::new(args, layout, memory, io.sockets.len(), pipeline)?;
    let (events_tx, events) = channel();
    let server = serve::start(
        args.listen,
        events_tx,
        serve::Limits {
            max_connections: args.max_connections as usize,
            idle: Duration::from_secs(args.control_idle_seconds),
        },
    )?;
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
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).context("signal handler")?;
    }
    let start = Instant::now();
    let bar = progress_bar(args.no_progress);
    let mut last_tick = start;
    let mut descs: Vec<Vec<Desc>> = vec![Vec::new(); io.sockets.len()];
    let reached_goal = loop {
        let now_i = Instant::now();
        let now = now_i.duration_since(start);
        if now > Duration::from_secs(args.max_seconds) {
            tracing::warn!("stopping after {} s (--max-seconds)", args.max_seconds);
            break false;
        }
        if stop.load(Ordering::Relaxed) {
            eprintln!("zc-recv: stopping on a signal");
            break false;
        }
        loop {
            match events.try_recv() {
                Ok(e) => r.on_event(e, now, now_i),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => bail!("control server stopped"),
            }
        }
        if args
            .sessions
            .is_some_and(|n| r.table.stats().completed_sessions >= n && r.idle())
        {
            break true;
        }
        r.activate(now);
        let got = r.receive(&mut io, &mut descs, now_i, now);
        if let Err(e) = r.rx.poll_copies() {
            r.input_error(format_args!("copies: {e:#}"));
        }
        r.complete_pending(now_i);
        r.collect_verdicts();
        if now_i.duration_since(last_tick) > Duration::from_millis(100) {
            last_tick = now_i;
            r.tick(now);
            bar.set_position(r.rx.counters.payload.bytes);
            bar.set_message(format!(
                "direct {:.1}%, {} grants",
                r.rx.counters.copies_avoided() * 100.0,
                r.predicted.len()
            ));
        }
        if got == 0 {
            if args.poll {
                if let Some(s) = io.sockets.first() {
                    s.poll_rx(Duration::from_millis(1));
                }
            } else {
                std::thread::yield_now();
            }
        }
    };
    bar.finish_and_clear();
    r.rx.finish()?;
    r.report(
        &io,
        backend,
        server.refused(),
        reached_goal || args.sessions.is_none(),
    )
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

impl<'a, T: CopyTarget, E: CopyEngine<Payload>> Receiver<'a, T, E> {
    fn new(
        args: &'a LiveArgs,
        layout: &'a Layout,
        memory: &'a Arc<UmemMemory>,
        queues: usize,
        pipeline: CopyPipeline<T, E, Payload, crate::rx::CopyTag>,
    ) -> Result<Self> {
        let keys = MasterKeys::new(random_master()?, random_master()?);
        let mut engine = PlacementEngine::new(Policy::default());
        let specs = args
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
        let limits = Limits {
            queues: u32::try_from(queues).unwrap_or(u32::MAX),
            grant_timeout: Duration::from_secs(args.grant_timeout_seconds),
            activation_delay: Duration::from_millis(args.activation_delay_ms),
            ..Limits::default()
        };
        let table = GrantTable::new(&mut engine, &specs, limits)?;
        let mut rx = RxPath::new(engine, keys.clone(), pipeline, 64 << 20);
        // Staged payloads stay in their bounce frames; keep enough of the pool for the
        // queues' bounce depth and the copies in flight.
        let reserve = queues * (args.bounce_depth as usize + 512);
        rx.limit_staged_frames((layout.bounce_frames as usize).saturating_sub(reserve));
        let mac = std::fs::read_to_string(format!("/sys/class/net/{}/address", args.iface))
            .with_context(|| format!("no interface {}", args.iface))?
            .trim()
            .to_string();
        Ok(Self {
            args,
            layout,
            memory,
            rx,
            table,
            planner: FillPlanner::new(layout, queues, args.window, args.bounce_depth),
            keys,
            mac,
            predicted: HashMap::new(),
            pending: Vec::new(),
            draining: Vec::new(),
            finished: HashMap::new(),
            digests: DigestWorker::start(Arc::clone(memory)).context("digest thread")?,
            pairing: Pairing::new(queues),
            counters: LoopCounters::default(),
            returns: FrameReturns::default(),
            returned: Vec::new(),
            first_packet: None,
            last_packet: None,
            cpu_start: None,
            cpu_end: 0.0,
        })
    }

    /// Nothing is being received or checked: no open or draining grant, no completion or
    /// digest waiting.
    fn idle(&self) -> bool {
        self.pending.is_empty()
            && self.digests.in_flight() == 0
            && self.predicted.is_empty()
            && self.draining.is_empty()
    }

    /// Serves one control-plane event.
    fn on_event(&mut self, event: Event, now: Duration, now_i: Instant) {
        let (conn, request, reply) = match event {
            Event::Closed { conn } => {
                for g in self.table.close(&mut self.rx.placement, ConnId(conn)) {
                    self.retire(g);
                }
                // Their answers would go nowhere.
                self.pending.retain(|c| c.conn != conn);
                return;
            }
            Event::Request {
                conn,
                request,
                reply,
            } => (conn, request, reply),
        };
        let response = match self
            .table
            .handle(&mut self.rx.placement, ConnId(conn), &request, now)
        {
            Action::Reply(r) => r,
            Action::SessionOpened { spi, version } => Response::Session {
                spi,
                version: version.wire(),
                key: hex::encode(self.keys.derive(spi, version).as_bytes()),
                mac: self.mac.clone(),
            },
            Action::Granted { grant, reply } => {
                self.granted(grant);
                reply
            }
            Action::Complete { grant, sha256 } => {
                self.pending.push(PendingCompletion {
                    conn,
                    grant,
                    sha256,
                    reply,
                    deadline: now_i + COMPLETION_WAIT,
                });
                return;
            }
        };
        let _ = reply.send(response);
    }

    /// A new grant: track it, and predict its slots if its region is active.
    fn granted(&mut self, id: GrantId) {
        let Some(entry) = self.table.grant(id).copied() else {
            return;
        };
        let g = entry.grant;
        self.rx.track_grant(id, g.len);
        let base = self.rx.placement.region(g.region_id).map_or(0, |r| r.base);
        let active =
            self.rx.placement.region(g.region_id).and_then(|r| r.active) == Some(g.generation);
        let p = Predicted {
            queue: entry.queue,
            mss: entry.mss,
            first_landing: base + g.offset,
            // Full segments only: a frame landing in the slot of a short last segment would
            // reach past the window's end (into the gap). That segment is copied.
            segments: g.len / u64::from(entry.mss),
            next_index: 0,
            predicting: active,
        };
        if active {
            self.planner.predict(p.queue as usize, p.prediction(id), 0);
        }
        self.predicted.insert(id, p);
    }

    /// A grant left the engine without completing: stop predicting it, drop its copies
    /// that did not start, and keep its window until the ones in flight finish.
    fn retire(&mut self, id: GrantId) {
        if let Some(p) = self.rx.progress.get(&id) {
            let len = self.table.grant(id).map_or(0, |g| g.grant.len);
            self.counters.abandoned_bytes += len.saturating_sub(p.missing_bytes());
        }
        self.planner.forget(id.to_wire());
        self.rx.drop_grant(id);
        self.predicted.remove(&id);
        self.draining.push(id);
    }

    /// Late regions whose time has come: copy in what waited, start predicting.
    fn activate(&mut self, now: Duration) {
        let planner = &self.planner;
        let gate = |d: u64, l: u64| planner.blocking_slot(d, l);
        // A few hundred staged payloads per turn: ~0.1 ms of copying.
        let activated = match self.rx.activate(engine_time(now), &gate, 256) {
            Ok(a) => a,
            Err(e) => {
                self.input_error(format_args!("activating staged payloads: {e:#}"));
                return;
            }
        };
        for region in activated {
            let grants: Vec<GrantId> = self
                .table
                .open_grants_of(region)
                .map(|(id, _)| id)
                .collect();
            for id in grants {
                if let Some(p) = self.predicted.get_mut(&id)
                    && !p.predicting
                {
                    p.predicting = true;
                    let (queue, prediction, next) = (p.queue, p.prediction(id), p.next_index);
                    self.planner.predict(queue as usize, prediction, next);
                }
            }
        }
    }

    fn input_error(&mut self, what: std::fmt::Arguments<'_>) {
        self.counters.input_errors += 1;
        tracing::warn!("{what}");
    }

    /// Fill rings, then RX descriptors, then the header records for them. Returns how
    /// many descriptors came back.
    fn receive(
        &mut self,
        io: &mut Io,
        descs: &mut [Vec<Desc>],
        now_i: Instant,
        now: Duration,
    ) -> u32 {
        self.returns.drain_into(&mut self.returned);
        for i in self.returned.drain(..) {
            self.planner.release_bounce(i);
        }
        let mut got = 0;
        for (q, s) in io.sockets.iter_mut().enumerate() {
            let (rx, predicted) = (&self.rx, &self.predicted);
            self.planner.refill(q, &mut s.fill_mut(), |key, index| {
                let id = GrantId::from_wire(key);
                predicted
                    .get(&id)
                    .is_some_and(|g| rx.is_claimed(id, index * u64::from(g.mss), u64::from(g.mss)))
            });
            if self.args.poll && s.fill_mut().needs_wakeup() {
                s.wake_rx();
            }
            descs[q].clear();
            if let Some(mut r) = s.rx_mut() {
                got += r.consume(&mut descs[q], 256);
            }
        }
        let pairing = &mut self.pairing;
        self.counters.bad_records += io.program.drain_headers(|r| pairing.push(r));
        for (q, batch) in descs.iter_mut().enumerate() {
            for d in batch.drain(..) {
                self.on_descriptor(q, d, now_i, now);
            }
        }
        got
    }

    /// Takes the bytes an RX descriptor brought, exclusively: the bounce frame (the plan
    /// gets it back only when the lent payload is dropped), or the slot's range.
    fn take_received(&self, posted: Option<Posted>, data: u64, len: usize) -> Result<Received<'a>> {
        let memory: &'a Arc<UmemMemory> = self.memory;
        Ok(match posted {
            Some(Posted::Bounce(i)) => Received::Bounce {
                frame: ReceivedFrame::take(memory, i, &self.returns)?,
                data,
                len,
            },
            _ => Received::Slot(memory.slot_mut(data, len)?),
        })
    }

    /// One RX descriptor: take its bytes, pair them, open them where they landed, decide,
    /// account, return the slot.
    fn on_descriptor(&mut self, q: usize, d: Desc, now_i: Instant, now: Duration) {
        let posted = self.planner.consumed(q, d.base());
        let (data, len) = (d.data_addr(), d.len as usize);
        match self.take_received(posted, data, len) {
            Ok(mut received) => {
                let pairing = &mut self.pairing;
                let record = received
                    .bytes_mut()
                    .ok()
                    .and_then(|payload| pairing.pair(q, payload));
                // Unpaired: dropping `received` returns a bounce frame to the plan.
                if let Some(r) = record
                    && let Err(e) = self.on_segment(q, &r, received, now_i, now)
                {
                    self.input_error(format_args!("queue {q}: segment not handled: {e:#}"));
                }
            }
            Err(e) => {
                // A frame that cannot be taken is held by someone: it is not posted again
                // (a lost frame rather than one written under a reader).
                self.input_error(format_args!("queue {q}: descriptor {data:#x}+{len}: {e:#}"));
            }
        }
        if let Some(Posted::Slot { .. }) = posted {
            let planner = &self.planner;
            let gate = |d: u64, l: u64| planner.blocking_slot(d, l);
            if let Err(e) = self
                .rx
                .slot_returned(d.base() + self.layout.landing_shift(), &gate)
            {
                self.input_error(format_args!("queue {q}: parked copies: {e:#}"));
            }
        }
    }

    fn on_segment(
        &mut self,
        q: usize,
        r: &HeaderRecord,
        received: Received<'_>,
        now_i: Instant,
        now: Duration,
    ) -> Result<()> {
        if self.first_packet.is_none() {
            self.first_packet = Some(now_i);
            self.cpu_start = Some(cpu_now());
        }
        self.last_packet = Some(now_i);
        let planner = &self.planner;
        let gate = |d: u64, l: u64| planner.blocking_slot(d, l);
        let decision =
            self.rx
                .on_split(r.header_bytes(), &r.icv, received, engine_time(now), &gate)?;
        if let Some(Decision::Direct(p) | Decision::Copy(p, _)) = decision
            && let Some(gid) = p.grant
        {
            self.observed(q, gid, p.region_offset);
        }
        Ok(())
    }

    /// Moves the plan's cursor after segment at `region_offset` of grant `gid` arrived.
    fn observed(&mut self, q: usize, gid: GrantId, region_offset: u64) {
        let (Some(g), Some(window)) = (self.predicted.get_mut(&gid), self.rx.placement.grant(gid))
        else {
            return;
        };
        let Some(index) = region_offset
            .checked_sub(window.offset)
            .map(|o| o / u64::from(g.mss))
        else {
            return;
        };
        g.next_index = g.next_index.max(index + 1);
        self.planner.observed(q, gid.to_wire(), index);
    }

    /// Completions whose window filled (and whose copies all landed), or whose deadline
    /// passed.
    fn complete_pending(&mut self, now_i: Instant) {
        let mut i = 0;
        while i < self.pending.len() {
            let c = &self.pending[i];
            let complete = self
                .rx
                .progress
                .get(&c.grant)
                .is_some_and(|p| p.is_complete());
            let copying = self.rx.copies_in_flight(c.grant) > 0;
            let open = self.table.is_open_grant_of(ConnId(c.conn), c.grant);
            // A complete window is checked only once every copy into it landed.
            if open && (copying || (!complete && now_i < c.deadline)) {
                i += 1;
                continue;
            }
            let c = self.pending.swap_remove(i);
            if let Some(job) = self.complete_grant(c) {
                self.digests.submit(job);
            } else {
                self.cpu_end = cpu_now();
            }
        }
    }

    /// Answers a completion: an incomplete window gets its missing ranges now; a complete
    /// one leaves the engine (nothing lands in it any more) and is returned as a job for
    /// the digest worker. Its window is released only after the verdict.
    fn complete_grant(&mut self, c: PendingCompletion) -> Option<DigestJob<Checking>> {
        let gid = c.grant;
        let (Some(entry), Some(p)) = (self.table.grant(gid).copied(), self.rx.progress.get(&gid))
        else {
            let _ = c.reply.send(Response::Error {
                message: format!("no open grant {gid}"),
            });
            return None;
        };
        if !p.is_complete() {
            let _ = c.reply.send(Response::Status {
                grant: gid.to_wire(),
                complete: false,
                verified: false,
                missing: p.missing().into_iter().map(|r| (r.start, r.end)).collect(),
            });
            return None;
        }
        let report = GrantReport::new(&entry.grant, p, None);
        if self.table.finish(&mut self.rx.placement, gid).is_none() {
            let _ = c.reply.send(Response::Error {
                message: format!("grant {gid} is no longer open"),
            });
            return None;
        }
        self.planner.forget(gid.to_wire());
        self.rx.drop_grant(gid);
        self.predicted.remove(&gid);
        let w = entry.grant;
        let base = self.rx.placement.region(w.region_id).map_or(0, |r| r.base) + w.offset;
        Some(DigestJob {
            addr: base,
            len: w.len,
            expected: c.sha256,
            context: Checking {
                grant: gid,
                spi: w.spi,
                report,
                reply: c.reply,
            },
        })
    }

    /// Records digest verdicts, releases their windows and answers the senders.
    fn collect_verdicts(&mut self) {
        while let Some(verdict) = self.digests.try_verdict() {
            self.on_verdict(verdict);
            self.cpu_end = cpu_now();
        }
    }

    fn on_verdict(&mut self, verdict: DigestVerdict<Checking>) {
        let c = verdict.job.context;
        let mut report = c.report;
        report.digest_ok = Some(verdict.matches);
        self.finished.entry(c.spi).or_default().push(report);
        // Every copy into the window landed before the check began (complete_pending).
        if verdict.matches {
            self.table.verified(c.grant);
        }
        self.table.release(c.grant);
        let _ = c.reply.send(Response::Status {
            grant: c.grant.to_wire(),
            complete: true,
            verified: verdict.matches,
            missing: Vec::new(),
        });
    }

    /// Every ~100 ms: revoke grants past their timeout, release drained windows.
    fn tick(&mut self, now: Duration) {
        for g in self.table.expire(&mut self.rx.placement, now) {
            self.retire(g);
        }
        self.release_drained();
    }

    /// Releases the windows of revoked grants whose copies have all landed.
    /// A revoked window is also kept while a slot its grant posted may still be written
    /// (the queue saw no traffic since): a grant given those bytes could have them
    /// overwritten, or wait behind slots that never return.
    fn release_drained(&mut self) {
        let (rx, table, planner) = (&self.rx, &mut self.table, &self.planner);
        self.draining.retain(|g| {
            let posted = table.grant(*g).is_some_and(|e| {
                let base = rx.placement.region(e.grant.region_id).map_or(0, |r| r.base);
                planner
                    .blocking_slot(base + e.grant.offset, e.grant.len)
                    .is_some()
            });
            if rx.copies_in_flight(*g) > 0 || posted {
                return true;
            }
            table.release(*g);
            false
        });
    }

    /// The run's report.
    fn report(
        mut self,
        io: &Io,
        backend: &'static str,
        refused_connections: u64,
        goal_reached: bool,
    ) -> Result<Report> {
        self.release_drained();
        let cpu = self.cpu_start.map_or(0.0, |s| (self.cpu_end - s).max(0.0));
        let elapsed = match (self.first_packet, self.last_packet) {
            (Some(f), Some(l)) => l.duration_since(f).as_secs_f64(),
            _ => 0.0,
        };
        let xsk = self.xsk_stats(io)?;
        let counters = io.program.counters();
        let c = self.counters;
        // Grants still open at the end count as unverified.
        let mut missing_bytes = 0;
        let open: Vec<GrantId> = self.predicted.keys().copied().collect();
        for gid in &open {
            if let (Some(w), Some(p)) = (self.table.grant(*gid), self.rx.progress.get(gid)) {
                missing_bytes += p.missing_bytes();
                self.finished
                    .entry(w.grant.spi)
                    .or_default()
                    .push(GrantReport::new(&w.grant, p, None));
            }
        }
        let stats = self.table.stats();
        let verified = goal_reached
            && open.is_empty()
            && c.abandoned_bytes == 0
            && stats.abandoned_completions == 0
            && !self.finished.is_empty()
            && self
                .finished
                .values()
                .flatten()
                .all(|g| g.digest_ok == Some(true));
        let run = RunSummary {
            elapsed_seconds: elapsed,
            cpu_seconds: cpu,
            verified,
            missing_bytes,
        };
        let regions = self.region_reports();
        let mut report = self.rx.report("live", backend, run, self.finished);
        report.xsk_stats = Some(xsk);
        report.xdp_counters = Some(counters);
        report.regions = regions;
        report.control = Some(ControlReport {
            sessions: stats.sessions,
            completed_sessions: stats.completed_sessions,
            refused_requests: stats.refused_requests,
            refused_connections,
            revoked_on_close: stats.revoked_on_close,
            grants_timed_out: stats.timed_out,
            abandoned_bytes: c.abandoned_bytes,
            abandoned_completions: stats.abandoned_completions,
            input_errors: c.input_errors,
        });
        Ok(report)
    }

    /// The sockets' XDP_STATISTICS and the receiver's own counters.
    fn xsk_stats(&self, io: &Io) -> Result<XskReport> {
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
        let plan = self.planner.stats();
        let pairing = self.pairing.stats();
        Ok(XskReport {
            queues,
            receiver: ReceiverReport {
                xdp_mode: io.program.mode,
                umem_backing: self.memory.backing().as_str(),
                unpaired_descriptors: pairing.unpaired_descriptors,
                unpaired_header_records: pairing.unpaired_records,
                header_seq_gaps: pairing.seq_gaps,
                foreign_header_records: pairing.foreign_records,
                bad_header_records: self.counters.bad_records,
                slots_posted: plan.slots_posted,
                slots_not_posted_near_posted: plan.not_posted_near_posted,
                slots_not_posted_near_received: plan.not_posted_near_received,
                bounce_frames_posted: plan.bounces_posted,
                resyncs: plan.resyncs,
                skipped_fill_entries: plan.skipped,
                parked_bytes_at_end: self.rx.parked_bytes() as u64,
                rescued_bytes: self.rx.rescued_bytes,
            },
        })
    }

    /// Counts non-zero bytes outside every window ever granted, per region.
    fn region_reports(&self) -> Vec<RegionReport> {
        self.table
            .region_ids()
            .filter_map(|id| {
                let windows = self.table.windows(id)?;
                let span = self.layout.region(id)?;
                Some(RegionReport {
                    id,
                    len: windows.len(),
                    granted_bytes: windows.granted_bytes(),
                    stray_bytes: stray_bytes(self.memory, span.base, windows),
                })
            })
            .collect()
    }
}

/// Non-zero bytes of the region at `base` outside every window ever granted.
fn stray_bytes(memory: &UmemMemory, base: u64, windows: &receive_core::RegionWindows) -> u64 {
    let mut buf = vec![0u8; 1 << 20];
    let mut stray = 0u64;
    for gap in windows.never_granted() {
        let mut at = gap.start;
        while at < gap.end {
            let n = usize::try_from(gap.end - at).map_or(buf.len(), |left| left.min(buf.len()));
            if memory.read(base + at, &mut buf[..n]).is_err() {
                break;
            }
            stray += buf[..n].iter().filter(|b| **b != 0).count() as u64;
            at += n as u64;
        }
    }
    stray
}
