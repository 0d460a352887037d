//! `cargo xtask bench --live`: what placement is worth. Every mode moves the same
//! messages (one stream, `--messages 2` of `--message-bytes`) between the test hosts, in
//! alternating trials of one run: kernel TCP (`zc-recv tcp`), and the placement path in
//! its landings (split, whole-frame with and without the ICV), copying everything, busy
//! polling and sealing in the send loop, each PSP mode with software crypto and with the
//! inline-NIC model (`+inline`). TSO/GSO are off on the sender's link; PSP receivers run
//! with `--poll` except in `split-busy-poll`.
//!
//! Per mode: medians with min and max of every [`METRICS`] entry, and ratios against
//! kernel TCP. Written to `target/testbed/bench-live.json` (schema in docs/design.md,
//! "The live benchmark"), `bench-live.csv` and `bench-live.svg`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::{Map, Value, json};
use testbed::Testbed;

use crate::chart;
use crate::live::{read_json, run_pair, run_tcp_pair};

/// How a mode moves its messages.
#[derive(Debug, Clone)]
pub enum Transport {
    /// zc-send → zc-recv live, with these extra arguments.
    Psp {
        send: Vec<&'static str>,
        recv: Vec<&'static str>,
    },
    /// zc-send --transport tcp → zc-recv tcp (`zero_copy`: `TCP_ZEROCOPY_RECEIVE` from a
    /// `MSG_ZEROCOPY` sender, on a 9000-byte MTU with a page of payload per segment).
    Tcp { zero_copy: bool },
}

/// A mode of the benchmark.
#[derive(Debug, Clone)]
pub struct Mode {
    pub name: String,
    /// software, inline (the inline-NIC model) or none (TCP).
    pub crypto: &'static str,
    pub transport: Transport,
}

/// The PSP modes: name, sender's and receiver's arguments (software crypto).
const PSP_MODES: [(&str, &[&str], &[&str]); 10] = [
    ("split", &["--prebuild"], &["--poll"]),
    (
        "split-coalesce",
        &["--prebuild"],
        &["--poll", "--poll-coalesce-us", "200"],
    ),
    ("split-busy-poll", &["--prebuild"], &[]),
    ("split-seal-in-loop", &[], &["--poll"]),
    ("split-seal-thread", &["--seal-thread"], &["--poll"]),
    (
        "split-udp-gso",
        &["--prebuild", "--tx", "udp", "--tx-batch", "256"],
        &["--poll"],
    ),
    (
        "split-udp-gso-coalesce",
        &["--prebuild", "--tx", "udp", "--tx-batch", "256"],
        &["--poll", "--poll-coalesce-us", "200"],
    ),
    ("copy-all", &["--prebuild"], &["--poll", "--no-predict"]),
    (
        "whole-frame",
        &["--prebuild", "--mss", "1404"],
        &["--poll", "--landing", "whole-frame"],
    ),
    (
        "whole-frame-no-icv",
        &["--prebuild", "--mss", "1404"],
        &["--poll", "--landing", "whole-frame-no-icv"],
    ),
];

/// The link's MTU for `tcp-zerocopy`: MSS 4096 plus headers and options fit.
const ZERO_COPY_MTU: u32 = 9000;

/// PSP modes also run with inline crypto.
const WITH_INLINE_CRYPTO: [&str; 6] = [
    "split",
    "split-coalesce",
    "split-udp-gso",
    "split-udp-gso-coalesce",
    "copy-all",
    "whole-frame",
];

/// Every mode, in the order trials alternate.
pub fn all_modes() -> Vec<Mode> {
    let mut modes = vec![
        Mode {
            name: "kernel-tcp".into(),
            crypto: "none",
            transport: Transport::Tcp { zero_copy: false },
        },
        Mode {
            name: "tcp-zerocopy".into(),
            crypto: "none",
            transport: Transport::Tcp { zero_copy: true },
        },
    ];
    for (name, send, recv) in PSP_MODES {
        modes.push(Mode {
            name: name.into(),
            crypto: "software",
            transport: Transport::Psp {
                send: send.to_vec(),
                recv: recv.to_vec(),
            },
        });
    }
    for (name, send, recv) in PSP_MODES {
        if !WITH_INLINE_CRYPTO.contains(&name) {
            continue;
        }
        let mut send = send.to_vec();
        send.extend(["--crypto", "inline"]);
        let mut recv = recv.to_vec();
        recv.push("--allow-inline-crypto");
        modes.push(Mode {
            name: format!("{name}+inline"),
            crypto: "inline",
            transport: Transport::Psp { send, recv },
        });
    }
    modes
}

/// The modes named in `names` (all when empty), in the benchmark's order.
///
/// # Errors
/// A name that is no mode.
pub fn select_modes(names: &[String]) -> Result<Vec<Mode>> {
    let all = all_modes();
    for n in names {
        anyhow::ensure!(
            all.iter().any(|m| &m.name == n),
            "--modes: no mode {n:?} (modes: {})",
            all.iter()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(all
        .into_iter()
        .filter(|m| names.is_empty() || names.contains(&m.name))
        .collect())
}

/// The figures of a trial, each summarised per mode: key, what it is.
pub const METRICS: [(&str, &str); 10] = [
    (
        "gbit_per_s",
        "receiver's throughput, first to last payload byte (Gbit/s)",
    ),
    (
        "whole_run_gbit_per_s",
        "receiver's throughput over its whole run (Gbit/s)",
    ),
    (
        "packets_per_s",
        "sender's segments per second while sending",
    ),
    (
        "rx_process_cpu_s_per_gb",
        "receiving process user+sys CPU seconds per GB",
    ),
    (
        "rx_cpu_s_per_gb_without_digest",
        "the same without the SHA-256 verification (the digest thread, or TCP's hashing)",
    ),
    (
        "machine_cpu_s_per_gb",
        "the machine's busy CPU seconds (all cores) per GB",
    ),
    (
        "useful_ns_per_packet",
        "receive loop's useful time per packet (ns; 0 for TCP)",
    ),
    (
        "packets_per_busy_turn",
        "receive loop's packets per turn that had any (its batch; 0 for TCP)",
    ),
    (
        "copies_avoided",
        "share of payload bytes placed without a copy",
    ),
    ("rx_dropped", "frames the receiver's sockets dropped"),
];

/// The figures compared with kernel TCP's (ratios of medians).
const RATIO_KEYS: [&str; 4] = [
    "gbit_per_s",
    "rx_process_cpu_s_per_gb",
    "rx_cpu_s_per_gb_without_digest",
    "machine_cpu_s_per_gb",
];

/// The benchmark's settings.
pub struct BenchConfig<'a> {
    pub bin: &'a Path,
    pub runs: u32,
    pub message_bytes: u64,
    pub out_dir: &'a Path,
}

/// Runs `runs` alternating trials of each of `modes`; writes JSON, CSV and SVG.
///
/// # Errors
/// A trial failed to run or verify, or an output could not be written.
pub fn bench(cfg: &BenchConfig<'_>, modes: &[Mode]) -> Result<Value> {
    let tb = Testbed::up("zcbench", 1)?;
    tb.sender_offloads_off()
        .context("turning TSO/GSO off on the sender's link")?;
    let mut trials = Vec::new();
    let total = modes.len() * cfg.runs as usize;
    for run in 1..=cfg.runs {
        for (k, mode) in modes.iter().enumerate() {
            let done = (run as usize - 1) * modes.len() + k + 1;
            let trial = run_trial(&tb, cfg, mode, run)
                .with_context(|| format!("trial {run} of {}", mode.name))?;
            println!("[{done:>3}/{total}] {}", one_line(&trial));
            trials.push(trial);
        }
    }
    drop(tb);
    let report = summarise(cfg, modes, trials);
    write_outputs(cfg.out_dir, &report)?;
    print_summary(&report);
    anyhow::ensure!(
        report["all_verified"] == true,
        "a trial did not verify (see bench-live.json)"
    );
    Ok(report)
}

/// One trial of `mode`: its figures as [`METRICS`] keys, plus mode, run and verified.
fn run_trial(tb: &Testbed, cfg: &BenchConfig<'_>, mode: &Mode, run: u32) -> Result<Value> {
    let dir = cfg.out_dir;
    let (recv_json, send_json) = (dir.join("bench-recv.json"), dir.join("bench-send.json"));
    let _ = std::fs::remove_file(&recv_json);
    let bytes = cfg.message_bytes.to_string();
    let send_path = send_json.to_str().context("path")?;
    let mut send = vec![
        "--messages",
        "2",
        "--message-bytes",
        &bytes,
        "--no-progress",
    ];
    send.extend(["--json", send_path]);
    match &mode.transport {
        Transport::Tcp { zero_copy: false } => {
            run_tcp_pair(tb, cfg.bin, &["--mss", "1400"], &send, &recv_json)?;
        }
        Transport::Tcp { zero_copy: true } => {
            tb.set_mtu(ZERO_COPY_MTU)?;
            send.push("--zero-copy-send");
            // A page of payload per segment, plus the 12-byte timestamp option.
            let recv = ["--mss", "4108", "--zero-copy"];
            let ran = run_tcp_pair(tb, cfg.bin, &recv, &send, &recv_json);
            tb.set_mtu(1500)?;
            ran?;
        }
        Transport::Psp {
            send: extra,
            recv: recv_extra,
        } => {
            send.extend(extra.iter().copied());
            let mut recv = vec!["--queues", "1", "--region", "1:512M"];
            recv.extend(recv_extra.iter().copied());
            run_pair(tb, cfg.bin, &recv, &send, &recv_json, true)?;
        }
    }
    let (r, s) = (read_json(&recv_json)?, read_json(&send_json)?);
    Ok(trial_figures(mode, run, &r, &s))
}

/// A trial's figures from the receiver's and the sender's reports.
fn trial_figures(mode: &Mode, run: u32, r: &Value, s: &Value) -> Value {
    let payload_gb = r["payload_bytes"].as_f64().unwrap_or(0.0) / 1e9;
    let per_gb = |seconds: f64| {
        if payload_gb > 0.0 {
            seconds / payload_gb
        } else {
            f64::NAN
        }
    };
    let a = &r["accounting"];
    let machine_busy: f64 = a["machine_cpu_seconds"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "idle" | "iowait"))
                .filter_map(|(_, v)| v.as_f64())
                .sum()
        })
        .unwrap_or(f64::NAN);
    let drops: u64 = r["xsk_stats"]
        .as_object()
        .map(|q| q.values().filter_map(|v| v["rx_dropped"].as_u64()).sum())
        .unwrap_or(0);
    let process = a["process_cpu_seconds"].as_f64().unwrap_or(f64::NAN);
    // The digest check is the testbed's verification, not receive work: TCP's hashing is
    // timed in its thread, the placement path's runs in its own thread.
    let digest = r["digest_cpu_seconds"]
        .as_f64()
        .or_else(|| a["thread_cpu_seconds"]["zc-recv-digest"].as_f64())
        .unwrap_or(0.0);
    json!({
        "mode": mode.name,
        "crypto": mode.crypto,
        "run": run,
        "rx_cpu_s_per_gb_without_digest": per_gb(process - digest),
        "gbit_per_s": r["gbit_per_s"],
        "whole_run_gbit_per_s": a["whole_run_gbit_per_s"],
        "packets_per_s": s["packets_per_s"],
        "rx_process_cpu_s_per_gb": per_gb(process),
        "machine_cpu_s_per_gb": per_gb(machine_busy),
        "useful_ns_per_packet": a["useful_ns_per_packet"],
        "packets_per_busy_turn": a["packets_per_busy_turn"],
        "copies_avoided": r["copies_avoided"],
        "rx_dropped": drops,
        "verified": r["verified"],
    })
}

fn one_line(t: &Value) -> String {
    let f = |k: &str| t[k].as_f64().unwrap_or(f64::NAN);
    format!(
        "run {} {:>22}: {:>6.2} Gbit/s, {:>6.2} rx CPU s/GB, {:>6.2} machine CPU s/GB, {:>6.0} ns/packet, {:>6.2}% direct, verified {}",
        t["run"],
        t["mode"].as_str().unwrap_or("?"),
        f("gbit_per_s"),
        f("rx_process_cpu_s_per_gb"),
        f("machine_cpu_s_per_gb"),
        f("useful_ns_per_packet"),
        f("copies_avoided") * 100.0,
        t["verified"]
    )
}

/// Median, min and max of `values` (NaN when empty).
fn spread(mut values: Vec<f64>) -> Value {
    values.retain(|v| v.is_finite());
    values.sort_by(f64::total_cmp);
    let median = match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    };
    json!({
        "median": median,
        "min": values.first().copied().unwrap_or(f64::NAN),
        "max": values.last().copied().unwrap_or(f64::NAN),
    })
}

/// Per mode, every metric's spread; ratios against kernel TCP; every trial.
fn summarise(cfg: &BenchConfig<'_>, modes: &[Mode], trials: Vec<Value>) -> Value {
    let mut per_mode = Map::new();
    for mode in modes {
        let of_mode: Vec<&Value> = trials.iter().filter(|t| t["mode"] == mode.name).collect();
        let mut m = Map::new();
        m.insert("crypto".into(), mode.crypto.into());
        for (key, _) in METRICS {
            let values = of_mode.iter().filter_map(|t| t[key].as_f64()).collect();
            m.insert(key.into(), spread(values));
        }
        m.insert(
            "verified".into(),
            of_mode.iter().all(|t| t["verified"] == true).into(),
        );
        per_mode.insert(mode.name.clone(), Value::Object(m));
    }
    let ratios = ratios_to_tcp(&per_mode);
    let all_verified = trials.iter().all(|t| t["verified"] == true);
    json!({
        "runs": cfg.runs,
        "message_bytes": cfg.message_bytes,
        "messages": 2,
        "metrics": METRICS.iter().map(|(k, what)| (k.to_string(), Value::from(*what))).collect::<Map<_, _>>(),
        "modes": per_mode,
        "ratios_to_kernel_tcp": ratios,
        "all_verified": all_verified,
        "trials": trials,
    })
}

/// Per mode: its median throughput and receiver CPU/GB over kernel TCP's.
fn ratios_to_tcp(per_mode: &Map<String, Value>) -> Value {
    let median = |m: &Value, k: &str| m[k]["median"].as_f64().unwrap_or(f64::NAN);
    let Some(tcp) = per_mode.get("kernel-tcp") else {
        return json!({});
    };
    let ratios: BTreeMap<&String, Value> = per_mode
        .iter()
        .map(|(name, m)| {
            (
                name,
                json!({
                    "gbit_per_s": median(m, "gbit_per_s") / median(tcp, "gbit_per_s"),
                    "rx_process_cpu_s_per_gb": median(m, "rx_process_cpu_s_per_gb")
                        / median(tcp, "rx_process_cpu_s_per_gb"),
                    "rx_cpu_s_per_gb_without_digest": median(m, "rx_cpu_s_per_gb_without_digest")
                        / median(tcp, "rx_cpu_s_per_gb_without_digest"),
                    "machine_cpu_s_per_gb": median(m, "machine_cpu_s_per_gb")
                        / median(tcp, "machine_cpu_s_per_gb"),
                }),
            )
        })
        .collect();
    json!(ratios)
}

/// bench-live.json, .csv and .svg in `dir`.
fn write_outputs(dir: &Path, report: &Value) -> Result<()> {
    let path = |ext: &str| -> PathBuf { dir.join(format!("bench-live.{ext}")) };
    let write = |p: PathBuf, text: String| {
        std::fs::write(&p, text).with_context(|| format!("cannot write {}", p.display()))
    };
    write(path("json"), serde_json::to_string_pretty(report)? + "\n")?;
    write(path("csv"), csv(report))?;
    chart::draw(&path("svg"), report)?;
    println!(
        "xtask: live benchmark written to {} (.csv, .svg beside it)",
        path("json").display()
    );
    Ok(())
}

/// One row per mode: crypto, verified, then median/min/max of every metric, then the
/// ratios to kernel TCP.
pub fn csv(report: &Value) -> String {
    let mut header = vec!["mode".to_string(), "crypto".into(), "verified".into()];
    for (k, _) in METRICS {
        header.extend(["median", "min", "max"].map(|s| format!("{k}_{s}")));
    }
    header
        .extend(["gbit_per_s", "rx_process_cpu_s_per_gb"].map(|k| format!("{k}_over_kernel_tcp")));
    let mut out = header.join(",") + "\n";
    let empty = Map::new();
    for (name, m) in report["modes"].as_object().unwrap_or(&empty) {
        let mut row = vec![
            name.clone(),
            m["crypto"].as_str().unwrap_or("").to_string(),
            m["verified"].to_string(),
        ];
        for (k, _) in METRICS {
            row.extend(["median", "min", "max"].map(|s| number(&m[k][s])));
        }
        let r = &report["ratios_to_kernel_tcp"][name];
        row.extend(RATIO_KEYS.map(|k| number(&r[k])));
        out += &(row.join(",") + "\n");
    }
    out
}

fn number(v: &Value) -> String {
    v.as_f64().map_or_else(String::new, |f| format!("{f:.4}"))
}

fn print_summary(report: &Value) {
    let empty = Map::new();
    println!(
        "{:>22} {:>18} {:>18} {:>18} {:>18} {:>8}   ratios to kernel TCP",
        "mode", "Gbit/s", "rx CPU s/GB", "  w/o digest", "machine CPU s/GB", "direct"
    );
    for (name, m) in report["modes"].as_object().unwrap_or(&empty) {
        let s = |k: &str| {
            let f = |x: &str| m[k][x].as_f64().unwrap_or(f64::NAN);
            format!("{:.2} [{:.2}, {:.2}]", f("median"), f("min"), f("max"))
        };
        let r = &report["ratios_to_kernel_tcp"][name];
        let ratio = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
        println!(
            "{name:>22} {:>18} {:>18} {:>18} {:>18} {:>7.2}%   {:.2}x Gbit/s, {:.2}x rx CPU/GB ({:.2}x w/o digest)",
            s("gbit_per_s"),
            s("rx_process_cpu_s_per_gb"),
            s("rx_cpu_s_per_gb_without_digest"),
            s("machine_cpu_s_per_gb"),
            m["copies_avoided"]["median"].as_f64().unwrap_or(f64::NAN) * 100.0,
            ratio("gbit_per_s"),
            ratio("rx_process_cpu_s_per_gb"),
            ratio("rx_cpu_s_per_gb_without_digest"),
        );
    }
    println!("(median [min, max] over the runs; CPU per GB of payload)");
}

/// Checks that a benchmark report has every mode of `modes` with every metric (median,
/// min and max), its crypto and verdict, and the ratios: the short CI run's check. Keys
/// only, never timings.
///
/// # Errors
/// The first key missing.
pub fn check_report(report: &Value, modes: &[Mode]) -> Result<()> {
    for key in [
        "runs",
        "message_bytes",
        "metrics",
        "modes",
        "trials",
        "all_verified",
    ] {
        anyhow::ensure!(!report[key].is_null(), "bench-live.json lacks {key}");
    }
    for mode in modes {
        let m = &report["modes"][&mode.name];
        anyhow::ensure!(m.is_object(), "bench-live.json lacks mode {}", mode.name);
        anyhow::ensure!(m["crypto"] == mode.crypto, "{}: crypto", mode.name);
        anyhow::ensure!(m["verified"].is_boolean(), "{}: verified", mode.name);
        for (k, _) in METRICS {
            for s in ["median", "min", "max"] {
                anyhow::ensure!(
                    m[k][s].is_number(),
                    "{}: {k}.{s} is not a number",
                    mode.name
                );
            }
        }
        let r = &report["ratios_to_kernel_tcp"][&mode.name];
        for k in RATIO_KEYS {
            anyhow::ensure!(
                r[k].is_number(),
                "{}: no {k} ratio to kernel TCP",
                mode.name
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_psp_mode_and_the_inline_crypto_variants_follow_kernel_tcp() {
        let names: Vec<String> = all_modes().into_iter().map(|m| m.name).collect();
        assert_eq!(names[0], "kernel-tcp");
        for n in [
            "split",
            "split-busy-poll",
            "copy-all",
            "whole-frame",
            "split+inline",
        ] {
            assert!(names.iter().any(|m| m == n), "{n} missing: {names:?}");
        }
        let picked = select_modes(&["split+inline".into(), "kernel-tcp".into()]).unwrap();
        let picked: Vec<&str> = picked.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(picked, ["kernel-tcp", "split+inline"]);
        let err = select_modes(&["tcp".into()]).unwrap_err().to_string();
        assert!(
            err.contains("no mode \"tcp\"") && err.contains("copy-all"),
            "{err}"
        );
        let inline = all_modes()
            .into_iter()
            .find(|m| m.name == "split+inline")
            .unwrap();
        let Transport::Psp { send, recv } = inline.transport else {
            panic!("not PSP");
        };
        assert!(send.windows(2).any(|w| w == ["--crypto", "inline"]));
        assert!(recv.contains(&"--allow-inline-crypto") && recv.contains(&"--poll"));
    }

    fn fake_trial(mode: &Mode, run: u32, gbit: f64) -> Value {
        let mut t = json!({"mode": mode.name, "crypto": mode.crypto, "run": run, "verified": true});
        for (k, _) in METRICS {
            t[k] = json!(gbit);
        }
        t
    }

    #[test]
    fn the_summary_has_every_key_the_check_wants_and_the_csv_a_row_per_mode() {
        let modes = select_modes(&["kernel-tcp".into(), "split".into()]).unwrap();
        let trials = vec![
            fake_trial(&modes[0], 1, 4.0),
            fake_trial(&modes[1], 1, 1.0),
            fake_trial(&modes[0], 2, 6.0),
            fake_trial(&modes[1], 2, 3.0),
        ];
        let cfg = BenchConfig {
            bin: Path::new("."),
            runs: 2,
            message_bytes: 1,
            out_dir: Path::new("."),
        };
        let report = summarise(&cfg, &modes, trials);
        check_report(&report, &modes).unwrap();
        let split = &report["modes"]["split"]["gbit_per_s"];
        assert_eq!(
            (split["median"].as_f64(), split["min"].as_f64()),
            (Some(2.0), Some(1.0))
        );
        let ratio = report["ratios_to_kernel_tcp"]["split"]["gbit_per_s"].as_f64();
        assert_eq!(ratio, Some(0.4));
        let csv = csv(&report);
        assert_eq!(csv.lines().count(), 3, "{csv}");
        assert!(
            csv.lines()
                .nth(2)
                .unwrap()
                .starts_with("split,software,true,2.0000"),
            "{csv}"
        );
        // A report without a mode fails the check.
        let all = select_modes(&[]).unwrap();
        assert!(check_report(&report, &all).is_err());
    }
}
