//! `zc-recv live`: the AF_XDP receiver. Loads the XDP program, sets up one UMEM holding
//! the placement regions and the bounce frames, one socket per queue, and serves the
//! control plane; then pairs each RX descriptor with its header record, opens the segment
//! where it landed, and lets the placement engine decide.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc::{TryRecvError, channel};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use control::{Request, Response};
use indicatif::{ProgressBar, ProgressStyle};
use placement::copy::cpu::CpuEngine;
use placement::copy::decider::Decider;
use placement::copy::ioat::{IoatConfig, IoatModel};
use placement::copy::pipeline::CopyPipeline;
use placement::copy::{CopyEngine, CopyTarget};
use placement::{Decision, Grant, GrantId, PlacementEngine, Policy};
use psp::{MasterKey, MasterKeys, Version};
use umem::{
    BindMode, Desc, FillPlanner, FrameReturns, Layout, LentFrame, Posted, Prediction, Socket,
    SocketConfig, Umem, UmemMemory,
};
use xdp_common::HeaderRecord;

use crate::digest::{DigestJob, DigestVerdict, DigestWorker};
use crate::report::{GrantReport, RegionReport, Report, RunSummary, process_cpu_seconds};
use crate::rx::{Landing, Payload, RxPath};
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
    /// Wait with poll(2) and need-wakeup instead of busy polling.
    #[arg(long)]
    pub poll: bool,
    /// Copy backend.
    #[arg(long, value_enum, default_value = "cpu")]
    pub engine: EngineKind,
    /// With --engine ioat: copies of at least this many bytes go to the engine.
    #[arg(long, default_value_t = 0)]
    pub engine_threshold: usize,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub max_seconds: u64,
    /// No progress display.
    #[arg(long)]
    pub no_progress: bool,
}

/// Copies into the UMEM.
#[derive(Debug)]
struct UmemTarget(Arc<UmemMemory>);

impl CopyTarget for UmemTarget {
    fn write(&self, addr: u64, src: &[u8]) -> placement::Result<()> {
        self.0
            .write(addr, src)
            .map_err(|_| placement::Error::CopyOutOfRange {
                addr,
                len: src.len(),
            })
    }
}

/// A grant as the live receiver tracks it.
#[derive(Debug, Clone, Copy)]
struct LiveGrant {
    spi: u32,
    queue: u32,
    mss: u32,
    first_landing: u64,
    segments: u64,
    /// Highest segment index seen so far (+1).
    next_index: u64,
    predicted: bool,
}

/// A completion request waiting for the window to fill or its deadline.
struct PendingCompletion {
    grant: u32,
    sha256: String,
    reply: std::sync::mpsc::SyncSender<Response>,
    deadline: Instant,
}

/// Per-region allocation of windows.
#[derive(Debug)]
struct RegionState {
    late: bool,
    scheduled: bool,
    generation: u16,
    windows: Vec<(u64, u64)>,
    len: u64,
    /// Every window ever granted (for the stray-write check at the end).
    history: Vec<(u64, u64)>,
}

/// Space left between windows of one region, so that a frame longer than its slot
/// (up to a chunk) never reaches the next window.
const WINDOW_GAP: u64 = 4096;

impl RegionState {
    fn allocate(&mut self, len: u64) -> Option<u64> {
        let mut at = 0;
        self.windows.sort_unstable();
        for &(o, l) in &self.windows {
            if at + len + WINDOW_GAP <= o {
                break;
            }
            at = o + l + WINDOW_GAP;
        }
        (at + len <= self.len).then(|| {
            self.windows.push((at, len));
            self.history.push((at, len));
            at
        })
    }

    fn free(&mut self, offset: u64) {
        self.windows.retain(|(o, _)| *o != offset);
    }
}

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

fn random_master() -> Result<MasterKey> {
    use ring::rand::SecureRandom;
    let mut k = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut k)
        .map_err(|_| anyhow::anyhow!("no system randomness"))?;
    Ok(MasterKey(k))
}

/// Runs the live receiver until every control session said goodbye.
pub fn run(args: &LiveArgs) -> Result<Report> {
    if !testbed::is_root() {
        bail!(
            "zc-recv live needs root: loading XDP programs and AF_XDP sockets require CAP_NET_ADMIN, CAP_BPF and CAP_NET_RAW"
        );
    }
    if args.queues == 0 || args.queues > xdp_common::MAX_QUEUES {
        bail!("--queues must be 1..={}", xdp_common::MAX_QUEUES);
    }
    let regions: Vec<(u32, u64)> = args.regions.iter().map(|r| (r.id, r.len)).collect();
    let layout = Layout::new(&regions, args.bounce_frames, 2048)?;
    let memory = Arc::new(UmemMemory::new(layout.len).context("UMEM memory")?);
    let fill_size = (args.window.max(args.bounce_depth) * 2)
        .next_power_of_two()
        .max(4096);
    let umem = Umem::new(Arc::clone(&memory), layout.clone(), fill_size)
        .context("registering the UMEM")?;
    let mut program = XdpProgram::attach(&args.iface)?;
    // Zero-copy where the driver supports it (probed first: see SocketConfig::mode).
    let mode = if umem::sys::zero_copy_supported(&args.iface, 0) {
        BindMode::ZeroCopy
    } else {
        BindMode::Copy
    };
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
    let target = Arc::new(UmemTarget(Arc::clone(&memory)));
    match args.engine {
        EngineKind::Cpu => {
            let engine = CpuEngine::new(Arc::clone(&target));
            serve(
                args,
                &layout,
                &memory,
                program,
                sockets,
                target,
                engine,
                Decider::CPU_ONLY,
                "cpu",
            )
        }
        EngineKind::Ioat => {
            let engine = IoatModel::start(Arc::clone(&target), &IoatConfig::default())?;
            let decider = Decider::fixed(args.engine_threshold);
            serve(
                args,
                &layout,
                &memory,
                program,
                sockets,
                target,
                engine,
                decider,
                "ioat_model",
            )
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn serve<E: CopyEngine<Payload>>(
    args: &LiveArgs,
    layout: &Layout,
    memory: &Arc<UmemMemory>,
    mut program: XdpProgram,
    mut sockets: Vec<Socket>,
    target: Arc<UmemTarget>,
    copy_engine: E,
    decider: Decider,
    backend: &'static str,
) -> Result<Report> {
    let keys = MasterKeys::new(random_master()?, random_master()?);
    let policy = Policy::default();
    let mut engine = PlacementEngine::new(policy);
    let mut region_state = HashMap::new();
    for r in &args.regions {
        let span = layout.region(r.id).context("region missing from layout")?;
        engine.add_region(r.id, span.base, r.len)?;
        engine.configure_generation(r.id, 1, if r.late { u64::MAX } else { 0 })?;
        region_state.insert(
            r.id,
            RegionState {
                late: r.late,
                scheduled: !r.late,
                generation: 1,
                windows: Vec::new(),
                len: r.len,
                history: Vec::new(),
            },
        );
    }
    engine.advance(0, |_| {});
    let pipeline = CopyPipeline::new(target, copy_engine, decider);
    let mut rx = RxPath::new(engine, keys.clone(), pipeline, 64 << 20);
    // Staged payloads stay in their bounce frames; keep enough of the pool for the queues'
    // bounce depth and the copies in flight.
    let reserve = sockets.len() * (args.bounce_depth as usize + 512);
    rx.limit_staged_frames((layout.bounce_frames as usize).saturating_sub(reserve));
    let returns = FrameReturns::default();
    let mut returned = Vec::new();
    let mut planner = FillPlanner::new(layout, sockets.len(), args.window, args.bounce_depth);
    let (events_tx, events) = channel();
    let listen = serve::start(args.listen, events_tx)?;
    let mac = std::fs::read_to_string(format!("/sys/class/net/{}/address", args.iface))
        .with_context(|| format!("no interface {}", args.iface))?
        .trim()
        .to_string();
    eprintln!(
        "zc-recv: listening on {listen}, {} queue(s) on {} ({} XDP, {} AF_XDP), UMEM {} MiB ({})",
        sockets.len(),
        args.iface,
        program.mode,
        sockets.first().map_or("-", |s| s.mode.as_str()),
        layout.len >> 20,
        memory.backing().as_str()
    );

    let start = Instant::now();
    // CPU is measured from the first packet to the last completion answered.
    let mut cpu_start = None::<f64>;
    let mut cpu_end = 0.0;
    let mut grants: HashMap<GrantId, LiveGrant> = HashMap::new();
    let mut finished: HashMap<u32, Vec<GrantReport>> = HashMap::new();
    let mut pending: Vec<PendingCompletion> = Vec::new();
    let mut records: Vec<VecDeque<HeaderRecord>> = vec![VecDeque::new(); sockets.len()];
    let mut expected_seq = vec![None::<u32>; sockets.len()];
    let (mut unpaired_desc, mut unpaired_records, mut seq_gaps, mut bad_records) =
        (0u64, 0u64, 0u64, 0u64);
    let mut next_spi = policy.direct_spi_min | 1;
    let (mut sessions_seen, mut open_conns) = (0u64, std::collections::HashSet::new());
    let mut descs: Vec<Vec<Desc>> = vec![Vec::new(); sockets.len()];
    let (mut first_packet, mut last_packet) = (None::<Instant>, start);
    let bar = if args.no_progress {
        ProgressBar::hidden()
    } else {
        ProgressBar::new_spinner()
    };
    bar.set_style(
        ProgressStyle::with_template("zc-recv {spinner} {bytes} {binary_bytes_per_sec} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let mut last_draw = start;
    let mut all_verified = true;
    let mut digests = DigestWorker::start(Arc::clone(memory)).context("digest thread")?;

    loop {
        let now_i = Instant::now();
        let now = u64::try_from(now_i.duration_since(start).as_millis()).unwrap_or(u64::MAX);
        if now_i.duration_since(start) > Duration::from_secs(args.max_seconds) {
            tracing::error!("giving up after {} s", args.max_seconds);
            all_verified = false;
            break;
        }
        // Control plane.
        loop {
            let event = match events.try_recv() {
                Ok(e) => e,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => bail!("control server stopped"),
            };
            match event {
                Event::Closed { conn } => {
                    open_conns.remove(&conn);
                }
                Event::Request {
                    conn,
                    request,
                    reply,
                } => {
                    open_conns.insert(conn);
                    let response = match request {
                        Request::Session { version } => {
                            sessions_seen += 1;
                            match Version::from_wire(version) {
                                Ok(v) => {
                                    let spi = next_spi;
                                    next_spi += 1;
                                    rx.engine.add_sa(spi)?;
                                    Response::Session {
                                        spi,
                                        version,
                                        key: hex::encode(keys.derive(spi, v).as_bytes()),
                                        mac: mac.clone(),
                                    }
                                }
                                Err(e) => Response::Error {
                                    message: e.to_string(),
                                },
                            }
                        }
                        Request::Grant {
                            spi,
                            len,
                            base_seq,
                            mss,
                            queue,
                            region,
                        } => grant(
                            &mut rx,
                            &mut planner,
                            &mut region_state,
                            &mut grants,
                            (spi, len, base_seq, mss, queue, region),
                            sockets.len(),
                            now + args.activation_delay_ms,
                        )
                        .unwrap_or_else(|e| Response::Error {
                            message: format!("{e:#}"),
                        }),
                        Request::Complete { grant, sha256 } => {
                            pending.push(PendingCompletion {
                                grant,
                                sha256,
                                reply,
                                deadline: now_i + Duration::from_millis(300),
                            });
                            continue;
                        }
                        Request::Bye => {
                            open_conns.remove(&conn);
                            Response::Bye
                        }
                    };
                    let _ = reply.send(response);
                }
            }
        }
        if sessions_seen > 0
            && open_conns.is_empty()
            && pending.is_empty()
            && digests.in_flight() == 0
        {
            break;
        }

        // Late regions whose time has come: copy in what waited, start predicting.
        let gate = |d: u64, l: u64| planner.blocking_slot(d, l);
        // A few hundred staged payloads per turn: ~0.1 ms of copying.
        let activated = rx.activate(now, &gate, 256)?;
        for region in activated {
            for (id, g) in grants.iter_mut() {
                let in_region = rx.engine.grant(*id).is_some_and(|x| x.region_id == region);
                if in_region && !g.predicted {
                    g.predicted = true;
                    planner.predict(
                        g.queue as usize,
                        Prediction {
                            key: u64::from(id.0),
                            first_landing: g.first_landing,
                            mss: g.mss,
                            segments: g.segments,
                        },
                        g.next_index,
                    );
                }
            }
        }

        // Fill rings, then RX descriptors, then the header records for them.
        returns.drain_into(&mut returned);
        for i in returned.drain(..) {
            planner.release_bounce(i);
        }
        let mut got = 0;
        for (q, s) in sockets.iter_mut().enumerate() {
            planner.refill(q, &mut s.fill, |key, index| {
                grants.get(&GrantId(key as u32)).is_some_and(|g| {
                    rx.is_claimed(
                        GrantId(key as u32),
                        index * u64::from(g.mss),
                        u64::from(g.mss),
                    )
                })
            });
            if args.poll && s.fill.needs_wakeup() {
                s.wake_rx();
            }
            descs[q].clear();
            if let Some(r) = s.rx.as_mut() {
                got += r.consume(&mut descs[q], 256);
            }
        }
        bad_records += program.drain_headers(|r| {
            if let Some(q) = records.get_mut(r.queue as usize) {
                q.push_back(r);
            }
        });
        for q in 0..sockets.len() {
            for d in std::mem::take(&mut descs[q]) {
                let posted = planner.consumed(q, d.base());
                let data = d.data_addr();
                let len = d.len as usize;
                // Pair with the header record: same length, same first payload bytes.
                let mut tag = [0u8; xdp_common::TAG_LEN];
                let mut record = None;
                while let Some(r) = records[q].pop_front() {
                    let t = &mut tag[..r.tag_bytes().len()];
                    let tag_ok = memory.read(data, t).is_ok() && *t == *r.tag_bytes();
                    if r.payload_len as usize == len && tag_ok {
                        record = Some(r);
                        break;
                    }
                    unpaired_records += 1;
                }
                if let Some(r) = record {
                    if let Some(e) = expected_seq[q]
                        && r.seq != e
                    {
                        seq_gaps += u64::from(r.seq.wrapping_sub(e));
                    }
                    expected_seq[q] = Some(r.seq.wrapping_add(1));
                    if first_packet.is_none() {
                        first_packet = Some(now_i);
                        cpu_start = Some(process_cpu_seconds() + softirq_seconds());
                    }
                    last_packet = now_i;
                    // SAFETY: the descriptor came back from the kernel, so its frame is
                    // ours until we post it again; nothing else reads or writes it while
                    // this slice lives (a lent bounce frame is read only after the payload
                    // was opened, and is posted again only after it is dropped).
                    let payload = unsafe { memory.slice_mut(data, len)? };
                    let landed = match posted {
                        // SAFETY: as above; the plan gets bounce frame `i` back only
                        // through `returns`, when the lent frame is dropped.
                        Some(Posted::Bounce(i)) => Landing::Bounce(unsafe {
                            LentFrame::new(memory, layout, &returns, i, data, len)?
                        }),
                        _ => Landing::Slot(data),
                    };
                    let gate = |d: u64, l: u64| planner.blocking_slot(d, l);
                    let decision =
                        rx.on_split(r.header_bytes(), &r.icv, payload, landed, now, &gate)?;
                    let placed = match decision {
                        Some(Decision::Direct(p) | Decision::Copy(p, _)) => Some(p),
                        _ => None,
                    };
                    if let Some(p) = placed
                        && let Some(gid) = p.grant
                        && let Some(g) = grants.get_mut(&gid)
                        && let Some(window) = rx.engine.grant(gid)
                    {
                        let index = (p.region_offset - window.offset) / u64::from(g.mss);
                        g.next_index = g.next_index.max(index + 1);
                        planner.observed(q, u64::from(gid.0), index);
                    }
                } else {
                    unpaired_desc += 1;
                    if let Some(Posted::Bounce(i)) = posted {
                        planner.release_bounce(i);
                    }
                }
                match posted {
                    Some(Posted::Bounce(_)) => {}
                    Some(Posted::Slot { .. }) => {
                        let gate = |d: u64, l: u64| planner.blocking_slot(d, l);
                        rx.slot_returned(d.base() + layout.landing_shift(), &gate)?;
                    }
                    None => {}
                }
            }
        }

        // Completions whose window filled, or whose deadline passed.
        let mut i = 0;
        while i < pending.len() {
            let c = &pending[i];
            let gid = GrantId(c.grant);
            let complete = rx.progress.get(&gid).is_some_and(|p| p.is_complete());
            if !complete && now_i < c.deadline {
                i += 1;
                continue;
            }
            let c = pending.swap_remove(i);
            match complete_grant(&mut rx, &mut planner, &mut grants, c) {
                Some(job) => digests.submit(job),
                None => cpu_end = process_cpu_seconds() + softirq_seconds(),
            }
        }
        while let Some(verdict) = digests.try_verdict() {
            finish_check(verdict, &mut region_state, &mut finished);
            cpu_end = process_cpu_seconds() + softirq_seconds();
        }

        if now_i.duration_since(last_draw) > Duration::from_millis(100) {
            last_draw = now_i;
            bar.set_position(rx.counters.payload.bytes);
            bar.set_message(format!(
                "direct {:.1}%, {} grants open",
                rx.counters.copies_avoided() * 100.0,
                grants.len()
            ));
        }
        if got == 0 {
            if args.poll {
                if let Some(s) = sockets.first() {
                    s.poll_rx(Duration::from_millis(1));
                }
            } else {
                std::thread::yield_now();
            }
        }
    }
    bar.finish_and_clear();
    rx.finish()?;
    let cpu = cpu_start.map_or(0.0, |s| (cpu_end - s).max(0.0));
    let elapsed = first_packet.map_or(0.0, |f| last_packet.duration_since(f).as_secs_f64());
    let mut xsk = serde_json::Map::new();
    for s in &sockets {
        let st = s.statistics()?;
        xsk.insert(
            format!("queue{}", s.queue),
            serde_json::json!({
                "mode": s.mode.as_str(),
                "rx_dropped": st.rx_dropped,
                "rx_invalid_descs": st.rx_invalid_descs,
                "rx_ring_full": st.rx_ring_full,
                "rx_fill_ring_empty_descs": st.rx_fill_ring_empty_descs,
            }),
        );
    }
    let plan = planner.stats();
    xsk.insert(
        "receiver".into(),
        serde_json::json!({
            "xdp_mode": program.mode,
            "umem_backing": memory.backing().as_str(),
            "unpaired_descriptors": unpaired_desc,
            "unpaired_header_records": unpaired_records,
            "header_seq_gaps": seq_gaps,
            "bad_header_records": bad_records,
            "slots_posted": plan.slots_posted,
            "bounce_frames_posted": plan.bounces_posted,
            "resyncs": plan.resyncs,
            "skipped_fill_entries": plan.skipped,
            "parked_bytes_at_end": rx.parked_bytes(),
            "rescued_bytes": rx.rescued_bytes,
        }),
    );
    let counters: serde_json::Map<String, serde_json::Value> = program
        .counters()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.into()))
        .collect();
    // Grants never completed count as unverified.
    let mut missing_bytes = 0;
    for (gid, g) in &grants {
        all_verified = false;
        if let (Some(w), Some(p)) = (rx.engine.grant(*gid), rx.progress.get(gid)) {
            missing_bytes += p.missing_bytes();
            finished
                .entry(g.spi)
                .or_default()
                .push(GrantReport::new(w, p, None));
        }
    }
    let verified = all_verified
        && !finished.is_empty()
        && finished
            .values()
            .flatten()
            .all(|g| g.digest_ok == Some(true));
    let run = RunSummary {
        elapsed_seconds: elapsed,
        cpu_seconds: cpu,
        verified,
        missing_bytes,
    };
    let mut report = rx.report("live", backend, run, finished);
    report.xsk_stats = Some(serde_json::Value::Object(xsk));
    report.xdp_counters = Some(serde_json::Value::Object(counters));
    report.regions = region_reports(layout, memory, &region_state);
    Ok(report)
}

/// Counts non-zero bytes outside every window ever granted, per region.
fn region_reports(
    layout: &Layout,
    memory: &UmemMemory,
    regions: &HashMap<u32, RegionState>,
) -> Vec<RegionReport> {
    let mut out: Vec<RegionReport> = regions
        .iter()
        .filter_map(|(id, st)| {
            let span = layout.region(*id)?;
            let mut buf = vec![0u8; 1 << 20];
            let (mut stray, mut at) = (0u64, 0u64);
            while at < st.len {
                let n = (st.len - at).min(buf.len() as u64) as usize;
                memory.read(span.base + at, &mut buf[..n]).ok()?;
                for (i, b) in buf[..n].iter().enumerate() {
                    let off = at + i as u64;
                    if *b != 0 && !st.history.iter().any(|(o, l)| (*o..o + l).contains(&off)) {
                        stray += 1;
                    }
                }
                at += n as u64;
            }
            Some(RegionReport {
                id: *id,
                len: st.len,
                granted_bytes: st.history.iter().map(|(_, l)| l).sum(),
                stray_bytes: stray,
            })
        })
        .collect();
    out.sort_by_key(|r| r.id);
    out
}

/// Serves a grant request.
fn grant<T: CopyTarget, E: CopyEngine<Payload>>(
    rx: &mut RxPath<T, E>,
    planner: &mut FillPlanner,
    regions: &mut HashMap<u32, RegionState>,
    grants: &mut HashMap<GrantId, LiveGrant>,
    (spi, len, base_seq, mss, queue, region): (u32, u64, u32, u32, u32, Option<u32>),
    queues: usize,
    activate_at: u64,
) -> Result<Response> {
    if !rx.engine.has_sa(spi) {
        bail!("unknown SPI {spi:#x}: open a session first");
    }
    if mss == 0 || mss > 1792 || len == 0 {
        bail!("MSS must be 1..=1792 and the length positive");
    }
    if queue as usize >= queues {
        bail!("queue {queue} is not served (0..{queues})");
    }
    let mut ids: Vec<u32> = regions.keys().copied().collect();
    ids.sort_unstable();
    let candidates: Vec<u32> = match region {
        Some(r) => vec![r],
        None => ids,
    };
    let (region_id, offset) = candidates
        .iter()
        .find_map(|id| Some((*id, regions.get_mut(id)?.allocate(len)?)))
        .with_context(|| format!("no room for {len} bytes in region(s) {candidates:?}"))?;
    let state = regions.get_mut(&region_id).context("region vanished")?;
    let generation = state.generation;
    let gid = rx.engine.add_grant(Grant {
        spi,
        region_id,
        generation,
        offset,
        len,
        base_seq,
    })?;
    rx.track_grant(gid, len);
    if state.late && !state.scheduled {
        state.scheduled = true;
        rx.engine
            .configure_generation(region_id, generation, activate_at)?;
    }
    let base = rx.engine.region(region_id).context("region vanished")?.base;
    let active = rx.engine.region(region_id).and_then(|r| r.active) == Some(generation);
    let g = LiveGrant {
        spi,
        queue,
        mss,
        first_landing: base + offset,
        segments: len.div_ceil(u64::from(mss)),
        next_index: 0,
        predicted: active,
    };
    if active {
        planner.predict(
            queue as usize,
            Prediction {
                key: u64::from(gid.0),
                first_landing: g.first_landing,
                mss,
                segments: g.segments,
            },
            0,
        );
    }
    grants.insert(gid, g);
    Ok(Response::Granted {
        grant: gid.0,
        region: region_id,
        generation,
        offset,
        len,
        base_seq,
        mss,
    })
}

/// A window whose digest is being checked, and what to do with the verdict.
struct Checking {
    grant: u32,
    spi: u32,
    region: u32,
    offset: u64,
    report: GrantReport,
    reply: std::sync::mpsc::SyncSender<Response>,
}

/// Answers a completion: an incomplete window gets its missing ranges now; a complete
/// one is revoked (nothing lands in it any more) and returned as a job for the digest
/// worker. Its space is reused only after the verdict ([`finish_check`]).
fn complete_grant<T: CopyTarget, E: CopyEngine<Payload>>(
    rx: &mut RxPath<T, E>,
    planner: &mut FillPlanner,
    grants: &mut HashMap<GrantId, LiveGrant>,
    c: PendingCompletion,
) -> Option<DigestJob<Checking>> {
    let gid = GrantId(c.grant);
    let (Some(w), Some(p)) = (rx.engine.grant(gid).copied(), rx.progress.get(&gid)) else {
        let _ = c.reply.send(Response::Error {
            message: format!("no open grant {}", gid.0),
        });
        return None;
    };
    if !p.is_complete() {
        let _ = c.reply.send(Response::Status {
            grant: gid.0,
            complete: false,
            verified: false,
            missing: p.missing().into_iter().map(|r| (r.start, r.end)).collect(),
        });
        return None;
    }
    let report = GrantReport::new(&w, p, None);
    let base = rx.engine.region(w.region_id).map_or(0, |r| r.base) + w.offset;
    planner.forget(u64::from(gid.0));
    let _ = rx.engine.revoke_grant(gid);
    rx.forget_grant(gid);
    grants.remove(&gid);
    Some(DigestJob {
        addr: base,
        len: w.len,
        expected: c.sha256,
        context: Checking {
            grant: gid.0,
            spi: w.spi,
            region: w.region_id,
            offset: w.offset,
            report,
            reply: c.reply,
        },
    })
}

/// Records a digest verdict, frees the window and answers the sender.
fn finish_check(
    verdict: DigestVerdict<Checking>,
    regions: &mut HashMap<u32, RegionState>,
    finished: &mut HashMap<u32, Vec<GrantReport>>,
) {
    let c = verdict.job.context;
    let mut report = c.report;
    report.digest_ok = Some(verdict.matches);
    finished.entry(c.spi).or_default().push(report);
    if let Some(r) = regions.get_mut(&c.region) {
        r.free(c.offset);
    }
    let _ = c.reply.send(Response::Status {
        grant: c.grant,
        complete: true,
        verified: verdict.matches,
        missing: Vec::new(),
    });
}
