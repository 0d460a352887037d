//! The receiver's report: JSON (schema in docs/design.md) and a human-readable summary.

use std::collections::BTreeMap;

use placement::{Counters, Reason};
use serde::Serialize;

use crate::repair::RepairCounts;

/// Numbers of one stream or of the whole run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Numbers {
    pub payload_bytes: u64,
    pub payload_packets: u64,
    pub direct_bytes: u64,
    pub cpu_copy_bytes: u64,
    pub engine_copy_bytes: u64,
    pub staged_bytes: u64,
    pub rejected_bytes: u64,
    /// Reason name → packets.
    pub rejects: BTreeMap<&'static str, u64>,
    /// direct_bytes / payload_bytes.
    pub copies_avoided: f64,
}

impl From<&Counters> for Numbers {
    fn from(c: &Counters) -> Self {
        Self {
            payload_bytes: c.payload.bytes,
            payload_packets: c.payload.packets,
            direct_bytes: c.direct.bytes,
            cpu_copy_bytes: c.cpu_copy.bytes,
            engine_copy_bytes: c.engine_copy.bytes,
            staged_bytes: c.staged.bytes,
            rejected_bytes: c.rejected_total().bytes,
            rejects: Reason::ALL
                .iter()
                .map(|r| (r.as_str(), c.rejected[r.index()].packets))
                .filter(|(_, n)| *n > 0)
                .collect(),
            copies_avoided: c.copies_avoided(),
        }
    }
}

/// One grant's completion.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GrantReport {
    pub region: u32,
    pub generation: u16,
    pub offset: u64,
    pub len: u64,
    pub complete: bool,
    pub missing_bytes: u64,
    /// Missing ranges, relative to the grant's window.
    pub missing: Vec<(u64, u64)>,
    /// Digest check: None when no digest was given.
    pub digest_ok: Option<bool>,
    /// Whole frames with their ICV: heads restored, frames that waited, failures.
    pub head_repair: RepairCounts,
}

impl GrantReport {
    /// The report of grant `g` with progress `p`.
    pub fn new(
        g: &placement::Grant,
        p: &placement::GrantProgress,
        digest_ok: Option<bool>,
    ) -> Self {
        Self {
            region: g.region_id,
            generation: g.generation,
            offset: g.offset,
            len: g.len,
            complete: p.is_complete(),
            missing_bytes: p.missing_bytes(),
            missing: p.missing().into_iter().map(|r| (r.start, r.end)).collect(),
            digest_ok,
            head_repair: RepairCounts::default(),
        }
    }
}

/// One stream (SPI).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StreamReport {
    pub spi: u32,
    #[serde(flatten)]
    pub numbers: Numbers,
    pub grants: Vec<GrantReport>,
}

/// Copy-engine facts.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CopyEngineReport {
    pub backend: &'static str,
    /// Copies of at least this many bytes went to the engine (null: never).
    pub threshold_bytes: Option<usize>,
    pub refused_to_cpu: u64,
    pub errors_to_cpu: u64,
    /// Copies held back until an earlier copy to overlapping bytes had landed.
    pub held_for_order: u64,
    /// Copies no backend could write (their bytes stay missing).
    pub failed_copies: u64,
    /// How the threshold was chosen at start-up, when it was measured (`--engine ioat`
    /// without `--engine-threshold`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calibration: Option<CalibrationReport>,
    /// Per engine channel (empty for the CPU backend).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<ChannelReport>,
}

/// The decider's calibration: per size, what a copy cost the receive thread each way.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CalibrationReport {
    /// The measured crossover (null: the engine never cost less).
    pub threshold_bytes: Option<usize>,
    /// Per size: bytes, CPU copy ns, engine hand-off ns (medians).
    pub points: Vec<CalibrationPointReport>,
}

/// One calibration size.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct CalibrationPointReport {
    pub size: usize,
    pub cpu_ns: f64,
    pub engine_ns: f64,
}

/// One copy-engine channel over the run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChannelReport {
    pub copies: u64,
    pub bytes: u64,
    /// Submissions refused (ring full, or an injected refusal).
    pub refusals: u64,
    /// Descriptors that failed on it (errors, or left on it when it failed).
    pub failures: u64,
    pub healthy: bool,
    pub max_depth: u64,
    pub depth_at_end: u64,
    /// Submission to completion (HDR histogram), nanoseconds.
    pub latency_ns: LatencyReport,
}

/// Latency percentiles.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct LatencyReport {
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub count: u64,
}

impl From<&copy_fallback::ChannelStats> for ChannelReport {
    fn from(c: &copy_fallback::ChannelStats) -> Self {
        let l = c.latency_ns;
        Self {
            copies: c.copies,
            bytes: c.bytes,
            refusals: c.refusals,
            failures: c.failures,
            healthy: c.healthy,
            max_depth: c.max_depth,
            depth_at_end: c.depth,
            latency_ns: LatencyReport {
                p50: l.p50,
                p99: l.p99,
                p999: l.p999,
                max: l.max,
                count: l.count,
            },
        }
    }
}

/// One AF_XDP socket at the end of a live run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct QueueReport {
    /// Bind mode: copy or zero-copy.
    pub mode: &'static str,
    pub rx_dropped: u64,
    pub rx_invalid_descs: u64,
    pub rx_ring_full: u64,
    pub rx_fill_ring_empty_descs: u64,
}

/// The receiver's own data-path counters (live runs).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReceiverReport {
    /// native or generic.
    pub xdp_mode: &'static str,
    /// hugetlb, thp.
    pub umem_backing: &'static str,
    /// split (payloads alone land), whole-frame (headers first, ICV after, back to front:
    /// a zero-copy NIC's DMA) or whole-frame-no-icv (the PSP-offload NIC model).
    pub landing: &'static str,
    /// Slots were predicted (false: `--no-predict`, every payload copied).
    pub predict: bool,
    /// Who did the PSP crypto: software (every session), inline (every session agreed on
    /// the inline-NIC model: nothing decrypted or verified in software), or mixed.
    pub crypto: &'static str,
    pub unpaired_descriptors: u64,
    pub unpaired_header_records: u64,
    pub header_seq_gaps: u64,
    pub foreign_header_records: u64,
    pub bad_header_records: u64,
    pub slots_posted: u64,
    pub slots_not_posted_near_posted: u64,
    pub slots_not_posted_near_received: u64,
    pub bounce_frames_posted: u64,
    pub resyncs: u64,
    pub skipped_fill_entries: u64,
    /// Copies that waited for a slot posted to the kernel to return.
    pub parked_copies: u64,
    pub parked_bytes_at_end: u64,
    pub rescued_bytes: u64,
    /// Whole frames with their ICV: heads restored from records, frames that waited for
    /// the frame below, failures (all grants).
    pub head_repair: RepairCounts,
}

/// `xsk_stats`: per queue (`queueN`), and the receiver's counters (`receiver`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct XskReport {
    #[serde(flatten)]
    pub queues: BTreeMap<String, QueueReport>,
    pub receiver: ReceiverReport,
}

/// The control plane's side of a live run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ControlReport {
    /// Sessions opened.
    pub sessions: u64,
    /// Sessions that said goodbye after at least one window of theirs matched its digest.
    pub completed_sessions: u64,
    /// Requests answered with an error (hostile or mistaken).
    pub refused_requests: u64,
    /// Connections refused because too many were open.
    pub refused_connections: u64,
    /// Grants revoked because their connection closed first.
    pub revoked_on_close: u64,
    /// Grants revoked because they outlived --grant-timeout-seconds.
    pub grants_timed_out: u64,
    /// Bytes that had arrived for grants revoked before completing.
    pub abandoned_bytes: u64,
    /// Grants revoked after their owner had asked to complete them.
    pub abandoned_completions: u64,
    /// Segments, activations or copies that failed on bad input (counted, logged, served on).
    pub input_errors: u64,
}

/// Where the CPU went in a live run, and the loop's own counts (docs/design.md, "What the
/// figures include").
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AccountingReport {
    /// The unit of /proc's CPU times (`sysconf(_SC_CLK_TCK)`).
    pub clock_ticks_per_second: u64,
    /// Wall time measured: from the first payload to the last answer.
    pub seconds: f64,
    /// The receiving process's user + system CPU seconds over it.
    pub process_cpu_seconds: f64,
    /// Per thread name (the receive loop is `zc-recv`, the digest worker `zc-recv-digest`,
    /// copy-engine workers by their names): user + system CPU seconds over it.
    pub thread_cpu_seconds: BTreeMap<String, f64>,
    /// The machine's CPU seconds by /proc/stat category over it, all cores (on veth both
    /// ends share the machine).
    pub machine_cpu_seconds: BTreeMap<&'static str, f64>,
    /// Receive-loop turns.
    pub loop_turns: u64,
    /// Turns in which no descriptor came back (busy polling).
    pub empty_polls: u64,
    /// Wall time of the turns that handled descriptors, per descriptor: the loop's useful
    /// work per packet, beside the core it burns polling.
    pub useful_ns_per_packet: f64,
    /// Descriptors per turn that handled any: the loop's batch size (`--poll-coalesce-us`
    /// raises it).
    pub packets_per_busy_turn: f64,
    /// Payload over the receiver's whole run (start to end), not only first to last byte.
    pub whole_run_gbit_per_s: f64,
}

/// One placement region at the end of a live run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RegionReport {
    pub id: u32,
    pub len: u64,
    /// Bytes inside windows ever granted.
    pub granted_bytes: u64,
    /// Non-zero bytes outside every window ever granted: writes where nothing was allowed
    /// (0 unless something went wrong).
    pub stray_bytes: u64,
}

/// The whole report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub mode: &'static str,
    #[serde(flatten)]
    pub numbers: Numbers,
    pub duplicate_bytes: u64,
    pub gbit_per_s: f64,
    pub rx_cpu_seconds_per_gb: f64,
    /// XDP_STATISTICS of the AF_XDP sockets and the receiver's own counters (null in
    /// replay).
    pub xsk_stats: Option<XskReport>,
    /// The XDP program's counters, summed over CPUs (null in replay).
    pub xdp_counters: Option<BTreeMap<&'static str, u64>>,
    /// True only if every grant is complete and matched its digest.
    pub verified: bool,
    pub missing_bytes: u64,
    pub not_psp_frames: u64,
    pub still_staged_bytes: u64,
    pub copy_engine: CopyEngineReport,
    pub streams: Vec<StreamReport>,
    /// Regions (live runs only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<RegionReport>,
    /// The control plane (live runs only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control: Option<ControlReport>,
    /// Where the CPU went (live runs only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accounting: Option<AccountingReport>,
    /// What `--capture` wrote (live runs that capture).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture: Option<CaptureReport>,
}

/// What `zc-recv live --capture` wrote, and what it cost.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CaptureReport {
    /// The pcap file.
    pub file: String,
    /// The replay configuration beside it.
    pub config: String,
    /// Frames written.
    pub frames: u64,
    /// Bytes of the frames written.
    pub bytes: u64,
    /// Frames not captured: `--capture-limit` was reached.
    pub over_limit: u64,
    /// Frames not captured: no outer headers in their record.
    pub without_outer: u64,
    /// Frames not captured: the writer thread was behind.
    pub writer_busy: u64,
    /// CPU seconds of the writer thread (the receive loop's share shows in its
    /// `useful_ns_per_packet`).
    pub writer_cpu_seconds: f64,
    /// Why the configuration cannot be replayed as one run (grants that reused a window
    /// overlap, or a region's grants for different generations), when it cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_replayable: Option<String>,
    /// Why the capture stopped early or its configuration was not written (a full disk):
    /// reported, the run goes on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Report {
    /// A few lines for people.
    pub fn human(&self) -> String {
        let n = &self.numbers;
        let mut s = format!(
            "{} report: {} payload bytes in {} packets\n  direct {} B, CPU copy {} B, engine copy {} B, staged {} B, rejected {} B\n  copies avoided {:.2}%, {:.3} Gbit/s, {:.3} CPU s/GB\n  verified: {}, missing {} B, duplicates {} B\n",
            self.mode,
            n.payload_bytes,
            n.payload_packets,
            n.direct_bytes,
            n.cpu_copy_bytes,
            n.engine_copy_bytes,
            n.staged_bytes,
            n.rejected_bytes,
            n.copies_avoided * 100.0,
            self.gbit_per_s,
            self.rx_cpu_seconds_per_gb,
            self.verified,
            self.missing_bytes,
            self.duplicate_bytes
        );
        for (reason, packets) in &n.rejects {
            s.push_str(&format!("  rejected {reason}: {packets} packets\n"));
        }
        if let Some(xsk) = &self.xsk_stats {
            let sum = |f: fn(&QueueReport) -> u64| -> u64 { xsk.queues.values().map(f).sum() };
            s.push_str(&format!(
                "  kernel drops: {} (fill ring empty {}, rx ring full {})\n",
                sum(|q| q.rx_dropped),
                sum(|q| q.rx_fill_ring_empty_descs),
                sum(|q| q.rx_ring_full)
            ));
            let mode = xsk.queues.values().next().map_or("-", |q| q.mode);
            let r = &xsk.receiver;
            s.push_str(&format!(
                "  landing {} ({} bind), crypto {}: heads repaired {} B, {} frames waited, {} repair failures\n",
                r.landing,
                mode,
                r.crypto,
                r.head_repair.repaired_bytes,
                r.head_repair.waited_frames,
                r.head_repair.failures
            ));
        }
        let ce = &self.copy_engine;
        if let Some(c) = &ce.calibration {
            s.push_str(&format!(
                "  copy engine crossover measured at start-up: {}\n",
                c.threshold_bytes
                    .map_or("never".to_string(), |t| format!("{t} bytes"))
            ));
        }
        for (i, c) in ce.channels.iter().enumerate() {
            let l = c.latency_ns;
            s.push_str(&format!(
                "  engine channel {i}{}: {} copies, {} B, {} refusals, {} failures, depth max {}, latency p50 {} ns p99 {} ns p99.9 {} ns\n",
                if c.healthy { "" } else { " (failed)" },
                c.copies,
                c.bytes,
                c.refusals,
                c.failures,
                c.max_depth,
                l.p50,
                l.p99,
                l.p999
            ));
        }
        if let Some(a) = &self.accounting {
            let busy = |k: &str| a.machine_cpu_seconds.get(k).copied().unwrap_or(0.0);
            s.push_str(&format!(
                "  CPU over {:.2} s: process {:.2} s, machine user {:.2} s, system {:.2} s, softirq {:.2} s; loop {:.0} ns/packet useful, {:.1} packets per busy turn, {} of {} polls empty; whole run {:.3} Gbit/s\n",
                a.seconds,
                a.process_cpu_seconds,
                busy("user"),
                busy("system"),
                busy("softirq"),
                a.useful_ns_per_packet,
                a.packets_per_busy_turn,
                a.empty_polls,
                a.loop_turns,
                a.whole_run_gbit_per_s
            ));
        }
        if let Some(c) = &self.control {
            s.push_str(&format!(
                "  control: {} sessions ({} completed), {} requests and {} connections refused, grants revoked: {} on close, {} timed out; {} input errors\n",
                c.sessions,
                c.completed_sessions,
                c.refused_requests,
                c.refused_connections,
                c.revoked_on_close,
                c.grants_timed_out,
                c.input_errors
            ));
        }
        for st in &self.streams {
            let complete = st.grants.iter().filter(|g| g.complete).count();
            s.push_str(&format!(
                "  stream SPI {:#010x}: {} B, direct {} B, {} of {} grants complete\n",
                st.spi,
                st.numbers.payload_bytes,
                st.numbers.direct_bytes,
                complete,
                st.grants.len()
            ));
        }
        s
    }
}

/// What a run adds to the receive path's counters for its report.
#[derive(Debug, Clone, Copy)]
pub struct RunSummary {
    /// From the first packet to the end.
    pub elapsed_seconds: f64,
    /// CPU time spent meanwhile.
    pub cpu_seconds: f64,
    /// Every grant complete and matching its digest.
    pub verified: bool,
    pub missing_bytes: u64,
}

/// One report per stream: every SPI with counters or grants, in SPI order.
pub fn stream_reports(
    counters: &crate::receive_path::Streams,
    mut grants: std::collections::HashMap<u32, Vec<GrantReport>>,
) -> Vec<StreamReport> {
    let mut streams: Vec<StreamReport> = counters
        .iter()
        .map(|(spi, c)| StreamReport {
            spi: *spi,
            numbers: Numbers::from(c),
            grants: grants.remove(spi).unwrap_or_default(),
        })
        .collect();
    streams.extend(grants.into_iter().map(|(spi, grants)| StreamReport {
        spi,
        numbers: Numbers::from(&Counters::default()),
        grants,
    }));
    streams.sort_by_key(|s| s.spi);
    streams
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(xsk_stats: Option<XskReport>) -> Report {
        Report {
            mode: "live",
            numbers: Numbers::from(&Counters::default()),
            duplicate_bytes: 0,
            gbit_per_s: 0.0,
            rx_cpu_seconds_per_gb: 0.0,
            xsk_stats,
            xdp_counters: None,
            verified: true,
            missing_bytes: 0,
            not_psp_frames: 0,
            still_staged_bytes: 0,
            copy_engine: CopyEngineReport {
                backend: "cpu",
                threshold_bytes: None,
                refused_to_cpu: 0,
                errors_to_cpu: 0,
                held_for_order: 0,
                failed_copies: 0,
                calibration: None,
                channels: Vec::new(),
            },
            streams: Vec::new(),
            regions: Vec::new(),
            control: None,
            accounting: None,
            capture: None,
        }
    }

    #[test]
    fn human_report_shows_the_control_plane_when_live() {
        let mut r = report(None);
        assert!(!r.human().contains("control:"));
        r.control = Some(ControlReport {
            sessions: 3,
            completed_sessions: 1,
            refused_requests: 574,
            refused_connections: 136,
            revoked_on_close: 1,
            grants_timed_out: 0,
            abandoned_bytes: 0,
            abandoned_completions: 0,
            input_errors: 2,
        });
        let text = r.human();
        assert!(
            text.contains("3 sessions (1 completed), 574 requests and 136 connections refused"),
            "{text}"
        );
    }

    #[test]
    fn human_report_sums_kernel_drops_over_queues() {
        let queue = |dropped, empty, full| QueueReport {
            mode: "copy",
            rx_dropped: dropped,
            rx_invalid_descs: 0,
            rx_ring_full: full,
            rx_fill_ring_empty_descs: empty,
        };
        let stats = XskReport {
            queues: [
                ("queue0".into(), queue(3, 2, 1)),
                ("queue1".into(), queue(4, 4, 0)),
            ]
            .into_iter()
            .collect(),
            receiver: ReceiverReport {
                xdp_mode: "native",
                umem_backing: "thp",
                landing: "split",
                crypto: "software",
                predict: true,
                unpaired_descriptors: 0,
                unpaired_header_records: 0,
                header_seq_gaps: 0,
                foreign_header_records: 0,
                bad_header_records: 0,
                slots_posted: 0,
                slots_not_posted_near_posted: 0,
                slots_not_posted_near_received: 0,
                bounce_frames_posted: 0,
                resyncs: 9,
                skipped_fill_entries: 0,
                parked_copies: 0,
                parked_bytes_at_end: 0,
                rescued_bytes: 0,
                head_repair: RepairCounts::default(),
            },
        };
        let json = serde_json::to_value(&stats).unwrap();
        assert_eq!(
            json["queue1"]["rx_dropped"], 4,
            "queues flatten into xsk_stats: {json}"
        );
        assert_eq!(json["receiver"]["resyncs"], 9);
        let text = report(Some(stats)).human();
        assert!(
            text.contains("kernel drops: 7 (fill ring empty 6, rx ring full 1)"),
            "{text}"
        );
        assert!(
            !report(None).human().contains("kernel drops"),
            "replay has no sockets"
        );
    }
}
