//! `zc-send`: the testbed's sender. One stream per queue: each opens a control session,
//! asks for a grant per message, builds and seals PSP/TCP segments with placement hints
//! directly in its transmit memory, sends them through AF_XDP (copy mode) on its queue or
//! AF_PACKET, and retransmits what the receiver reports missing until every message
//! verifies.

mod check;
mod cli;
mod control_client;
mod pace;
mod report;
mod schedule;
mod stream;
mod tcp;
mod tx;

use std::sync::mpsc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;
use control::Request;
use indicatif::{ProgressBar, ProgressStyle};
use schedule::{Impairments, Rng, schedule};
use tx::{PacketTx, Transmit, UdpTx, XdpTx};

use crate::cli::{Cli, MAX_PREBUILT_FRAMES, Plan, Transport, TxKind};
use crate::pace::Pacer;
use crate::report::SendReport;
use crate::stream::Stream;

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
    let report = match cli.transport {
        Transport::Psp => send_psp(cli)?,
        Transport::Tcp => tcp::run(cli)?,
    };
    println!("{}", report.summary());
    if let Some(path) = &cli.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// The placement path: PSP with hints over AF_XDP or AF_PACKET.
fn send_psp(cli: &Cli) -> Result<SendReport> {
    // Every argument is checked before the first socket or control session.
    let plan = Plan::new(cli)?;
    let tx = open_tx(cli, plan.sizes.segments)?;
    let mut streams = Vec::new();
    for (i, &q) in cli.queues.iter().enumerate() {
        let lie = plan.lies.iter().find(|(lq, _)| *lq == q).map(|(_, l)| *l);
        let seed = cli.seed ^ (u64::from(q) << 32);
        let region = cli.regions.get(i).copied();
        streams.push(Stream::open(cli, plan.eth_src, q, region, lie, seed)?);
    }
    let mut sender = Sender::new(cli, tx, streams, plan.sizes.total_bytes);
    for m in 0..cli.messages {
        sender.send_message(m, plan.sizes.segments)?;
    }
    Ok(sender.finish())
}

/// The transmit path, with room for a first round (and its duplicates) with --prebuild.
fn open_tx(cli: &Cli, segments: usize) -> Result<Box<dyn Transmit>> {
    let frames = if cli.prebuild {
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
    Ok(match cli.tx {
        TxKind::Xdp => Box::new(XdpTx::open(&cli.iface, &cli.queues, frames, cli.tx_batch)?),
        TxKind::Packet => Box::new(PacketTx::open(&cli.iface, frames)?),
        TxKind::Udp => Box::new(UdpTx::open(frames, cli.tx_batch)),
    })
}

fn progress_bar(hidden: bool, total: u64) -> ProgressBar {
    let bar = if hidden {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "zc-send {bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// Counts segment `j` as sent in `round`.
fn count_sent(cli: &Cli, report: &mut SendReport, bar: &ProgressBar, round: usize, j: usize) {
    let mss = u64::from(cli.mss);
    report.segments_sent += 1;
    let bytes = cli
        .message_bytes
        .saturating_sub((j as u64).saturating_mul(mss))
        .min(mss);
    report.payload_bytes_sent += bytes;
    if round == 0 {
        bar.inc(bytes);
    } else {
        report.retransmitted_segments += 1;
    }
}

/// Frames `--seal-thread` builds ahead of the transmitting thread.
const SEAL_AHEAD: usize = 1024;

/// The send and retransmit rounds of every stream.
struct Sender<'a> {
    cli: &'a Cli,
    tx: Box<dyn Transmit>,
    streams: Vec<Stream>,
    bar: ProgressBar,
    report: SendReport,
    pacer: Pacer,
    rng: Rng,
    start: Instant,
}

/// Most rounds of retransmission per message.
const MAX_ROUNDS: usize = 50;

impl<'a> Sender<'a> {
    fn new(cli: &'a Cli, tx: Box<dyn Transmit>, streams: Vec<Stream>, total: u64) -> Self {
        let start = Instant::now();
        Self {
            cli,
            tx,
            bar: progress_bar(cli.no_progress, total),
            report: SendReport::new(cli, streams.len()),
            streams,
            pacer: Pacer {
                rate: cli.rate_pps,
                start,
                sent: 0,
            },
            rng: Rng::new(cli.seed),
            start,
        }
    }

    /// Message `m` of every stream: a grant each, the first transmission, then rounds of
    /// retransmission until every stream's message verified (or its lie was refused).
    fn send_message(&mut self, m: u32, segments: usize) -> Result<()> {
        let cli = self.cli;
        for (i, s) in self.streams.iter_mut().enumerate() {
            let seed = stream::message_seed(cli.seed, m, i);
            s.start_message(cli.message_bytes, cli.mss, seed)?;
        }
        let imp = Impairments {
            loss: cli.loss,
            duplicate: cli.duplicate,
            reorder: cli.reorder,
        };
        let runs: Vec<Option<usize>> = self.streams.iter().map(Stream::descending_run).collect();
        let mut pending: Vec<Vec<usize>> = runs
            .into_iter()
            .map(|run| {
                schedule(
                    segments,
                    cli.order,
                    cli.shuffle_window,
                    run,
                    imp,
                    &mut self.rng,
                )
            })
            .collect();
        for round in 0..MAX_ROUNDS {
            self.send_round(round, &pending)?;
            if self.collect_status(round, &mut pending)? {
                return Ok(());
            }
        }
        bail!("messages still incomplete after {MAX_ROUNDS} rounds of retransmission")
    }

    /// Sends every stream's schedule, interleaved.
    fn send_round(&mut self, round: usize, pending: &[Vec<usize>]) -> Result<()> {
        let cli = self.cli;
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
        if cli.seal_thread {
            self.send_sealed_aside(round, &items)?;
            self.tx.flush()?;
            self.report.send_seconds += round_start.elapsed().as_secs_f64();
            return Ok(());
        }
        let mut round_build = 0.0;
        let mut next = 0;
        let mut batch = Vec::new();
        while next < items.len() {
            // Prepare one frame, or with --prebuild as many as there are frames for.
            let building = cli.prebuild.then(Instant::now);
            let want = if cli.prebuild { items.len() - next } else { 1 };
            while batch.len() < want {
                let (i, j) = items[next + batch.len()];
                let s = &mut self.streams[i];
                match self
                    .tx
                    .prepare(s.queue, &mut |buf| s.build(j, cli.mss, buf))?
                {
                    Some(p) => batch.push(p),
                    None if batch.is_empty() => self.tx.make_room()?,
                    None => break,
                }
            }
            if let Some(b) = building {
                round_build += b.elapsed().as_secs_f64();
                self.pacer.restart();
            }
            for p in batch.drain(..) {
                self.tx.submit(p)?;
                self.pacer.wait();
                self.count_sent(round, items[next].1);
                next += 1;
            }
        }
        self.tx.flush()?;
        self.report.build_seconds += round_build;
        self.report.send_seconds += round_start.elapsed().as_secs_f64() - round_build;
        Ok(())
    }

    /// `--seal-thread`: a second thread builds and seals `items` (stream, segment) into
    /// buffers, up to [`SEAL_AHEAD`] ahead; this one copies each into the transmit path
    /// and submits it, in order.
    fn send_sealed_aside(&mut self, round: usize, items: &[(usize, usize)]) -> Result<()> {
        let Self {
            cli,
            tx,
            streams,
            bar,
            report,
            pacer,
            ..
        } = self;
        let mss = cli.mss;
        let queues: Vec<u32> = streams.iter().map(|s| s.queue).collect();
        let (built_tx, built_rx) = mpsc::sync_channel::<Result<Vec<u8>>>(SEAL_AHEAD);
        let (spare_tx, spare_rx) = mpsc::channel::<Vec<u8>>();
        std::thread::scope(|scope| {
            let builder = std::thread::Builder::new()
                .name("zc-send-seal".into())
                .spawn_scoped(scope, move || {
                    for &(i, j) in items {
                        let mut buf = spare_rx
                            .try_recv()
                            .unwrap_or_else(|_| vec![0; tx::FRAME_SIZE as usize]);
                        let built = streams[i].build(j, mss, &mut buf).map(|len| {
                            buf.truncate(len);
                            buf
                        });
                        let failed = built.is_err();
                        // The transmitting side stopped (it failed), or building did.
                        if built_tx.send(built).is_err() || failed {
                            return;
                        }
                    }
                })
                .context("starting the sealing thread")?;
            let mut sent = Ok(());
            // Consumed here: dropped on an error, which stops the builder.
            for (&(i, j), built) in items.iter().zip(built_rx) {
                sent = built.and_then(|mut frame| {
                    let len = frame.len();
                    let mut copy = |buf: &mut [u8]| {
                        buf.get_mut(..len)
                            .context("frame longer than the transmit buffer")?
                            .copy_from_slice(&frame);
                        Ok(len)
                    };
                    let p = loop {
                        match tx.prepare(queues[i], &mut copy)? {
                            Some(p) => break p,
                            None => tx.make_room()?,
                        }
                    };
                    tx.submit(p)?;
                    pacer.wait();
                    count_sent(cli, report, bar, round, j);
                    frame.resize(tx::FRAME_SIZE as usize, 0);
                    // The builder may have finished: then the buffer is dropped.
                    let _ = spare_tx.send(frame);
                    Ok(())
                });
                if sent.is_err() {
                    break;
                }
            }
            anyhow::ensure!(builder.join().is_ok(), "the sealing thread panicked");
            sent
        })
    }

    /// Counts segment `j` as sent in `round`.
    fn count_sent(&mut self, round: usize, j: usize) {
        count_sent(self.cli, &mut self.report, &self.bar, round, j);
    }

    /// Asks each stream's receiver whether its message arrived; what is missing becomes
    /// that stream's next schedule. True when every stream is done.
    fn collect_status(&mut self, round: usize, pending: &mut [Vec<usize>]) -> Result<bool> {
        let cli = self.cli;
        let mut all_done = true;
        for (s, sched) in self.streams.iter_mut().zip(pending.iter_mut()) {
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
                // Segments covering the missing ranges (each checked: the receiver is not
                // trusted); later rounds lose nothing.
                let resend = check::resend(&missing, cli.message_bytes, cli.mss);
                if resend.bad_ranges > 0 {
                    tracing::warn!(
                        "queue {}: the receiver's status named {} bad missing ranges \
                         (empty, inverted or outside the message); ignored or clamped",
                        s.queue,
                        resend.bad_ranges
                    );
                    self.report.bad_missing_ranges += resend.bad_ranges as u64;
                }
                *sched = resend.segments;
                self.bar.set_message(format!(
                    "round {}: {} segments missing",
                    round + 1,
                    sched.len()
                ));
            }
        }
        Ok(all_done)
    }

    /// Says goodbye on every control connection and completes the report.
    fn finish(mut self) -> SendReport {
        self.bar.finish_and_clear();
        for s in &mut self.streams {
            let _ = s.control.call(&Request::Bye);
            self.report.verified_messages += s.verified;
            self.report.failed_messages += s.failed;
        }
        self.report.seconds = self.start.elapsed().as_secs_f64();
        self.report.udp = self.tx.udp_stats();
        self.report.finish_rates();
        self.report
    }
}
