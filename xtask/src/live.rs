//! Runs of the sender/receiver pair on the local test hosts: the demo, and the live
//! benchmark (`cargo xtask bench --live`), which compares sending with sealing in the loop
//! against `--prebuild`, and split against whole-frame landing, in one run of alternating
//! trials, and reports medians.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use testbed::{RECEIVER_IP, Testbed};

/// Fails with a clear message when not root.
pub fn require_root(what: &str) -> Result<()> {
    if !testbed::is_root() {
        bail!(
            "{what} needs root: it creates network namespaces and a veth pair, attaches an XDP program and opens AF_XDP sockets (run it as root, e.g. sudo -E cargo xtask {what})"
        );
    }
    Ok(())
}

/// One receiver and one sender on `tb`, the receiver writing its JSON report to
/// `recv_json`. Output goes to the terminal unless `quiet`.
pub fn run_pair(
    tb: &Testbed,
    bin: &Path,
    recv_args: &[&str],
    send_args: &[&str],
    recv_json: &Path,
    quiet: bool,
) -> Result<()> {
    let listen = format!("{RECEIVER_IP}:7000");
    let out = || {
        if quiet {
            Stdio::null()
        } else {
            Stdio::inherit()
        }
    };
    let sessions = testbed::sender_sessions(send_args).to_string();
    let mut recv = Testbed::command_in(&tb.receiver_ns(), &bin.join("zc-recv").to_string_lossy())
        .args(["live", "--iface", &tb.receiver_if(), "--listen", &listen])
        .args(["--sessions", &sessions])
        .args(recv_args)
        .args(["--no-progress", "--json"])
        .arg(recv_json)
        .stdout(out())
        .spawn()
        .context("starting zc-recv")?;
    let send = Testbed::command_in(&tb.sender_ns(), &bin.join("zc-send").to_string_lossy())
        .args(["--control", &listen, "--iface", &tb.sender_if()])
        .args(send_args)
        .stdout(out())
        .status()
        .context("running zc-send");
    let sent_ok = send.as_ref().is_ok_and(ExitStatus::success);
    if !sent_ok {
        // The receiver would wait for its sessions until --max-seconds.
        let _ = recv.kill();
    }
    let recv_status = recv.wait()?;
    let send = send?;
    anyhow::ensure!(send.success(), "zc-send failed ({send})");
    anyhow::ensure!(recv_status.success(), "zc-recv failed ({recv_status})");
    Ok(())
}

fn read_json(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("no report {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// A mode of the benchmark: its name, the sender's and the receiver's extra arguments.
#[derive(Debug)]
pub struct Mode {
    name: &'static str,
    send: &'static [&'static str],
    recv: &'static [&'static str],
}

/// The modes compared: sealing inline or before the round (`--prebuild`), split landing;
/// copy everything (`--no-predict`, prebuilt: the cost placement saves); whole-frame
/// landing as a zero-copy NIC DMAs it (ICV included, heads repaired from records) and in
/// the PSP-offload model (no ICV), both prebuilt with MSS 1404, which fills a 1514-byte
/// frame of a 1500 MTU after 94 header bytes and the ICV.
pub const MODES: [Mode; 5] = [
    Mode {
        name: "inline",
        send: &[],
        recv: &[],
    },
    Mode {
        name: "prebuild",
        send: &["--prebuild"],
        recv: &[],
    },
    Mode {
        name: "copy-all",
        send: &["--prebuild"],
        recv: &["--no-predict"],
    },
    Mode {
        name: "whole-frame",
        send: &["--prebuild", "--mss", "1404"],
        recv: &["--landing", "whole-frame"],
    },
    Mode {
        name: "whole-frame-no-icv",
        send: &["--prebuild", "--mss", "1404"],
        recv: &["--landing", "whole-frame-no-icv"],
    },
];

/// The modes named in `names` (all when empty), in the benchmark's order.
///
/// # Errors
/// A name that is no mode.
pub fn select_modes(names: &[String]) -> Result<Vec<&'static Mode>> {
    for n in names {
        anyhow::ensure!(
            MODES.iter().any(|m| m.name == n),
            "--modes: no mode {n:?} (modes: {})",
            MODES.map(|m| m.name).join(", ")
        );
    }
    Ok(MODES
        .iter()
        .filter(|m| names.is_empty() || names.iter().any(|n| n == m.name))
        .collect())
}

/// `runs` trials of each mode, alternating, one stream of 2 × 128 MiB on one queue.
/// Prints a table and medians; writes every trial and the medians to `out`.
pub fn bench(bin: &Path, runs: u32, modes: &[&Mode], out: &Path) -> Result<()> {
    let tb = Testbed::up("zcbench", 1)?;
    let dir = out.parent().map(PathBuf::from).unwrap_or_default();
    let (recv_json, send_json) = (dir.join("bench-recv.json"), dir.join("bench-send.json"));
    let mut trials = Vec::new();
    println!(
        "{:>3} {:>18} {:>12} {:>8} {:>9} {:>10} {:>9}",
        "run", "mode", "packets/s", "drops", "direct", "CPU s/GB", "verified"
    );
    for run in 1..=runs {
        for &&Mode {
            name: mode,
            send: extra,
            recv: recv_extra,
        } in modes
        {
            let mut send_args = vec![
                "--messages",
                "2",
                "--message-bytes",
                "134217728",
                "--no-progress",
            ];
            send_args.extend_from_slice(extra);
            send_args.extend(["--json", send_json.to_str().context("path")?]);
            let mut recv_args = vec!["--queues", "1", "--region", "1:512M"];
            recv_args.extend_from_slice(recv_extra);
            run_pair(&tb, bin, &recv_args, &send_args, &recv_json, true)?;
            let (r, s) = (read_json(&recv_json)?, read_json(&send_json)?);
            let drops: u64 = r["xsk_stats"]
                .as_object()
                .map(|q| q.values().filter_map(|v| v["rx_dropped"].as_u64()).sum())
                .unwrap_or(0);
            let trial = json!({
                "run": run,
                "mode": mode,
                "packets_per_s": s["packets_per_s"],
                "gbit_per_s": s["gbit_per_s"],
                "rx_dropped": drops,
                "retransmitted_segments": s["retransmitted_segments"],
                "copies_avoided": r["copies_avoided"],
                "rx_cpu_seconds_per_gb": r["rx_cpu_seconds_per_gb"],
                "head_repaired_bytes": r["xsk_stats"]["receiver"]["head_repair"]["repaired_bytes"],
                "verified": r["verified"],
            });
            println!(
                "{run:>3} {mode:>18} {:>12.0} {drops:>8} {:>8.2}% {:>10.2} {:>9}",
                s["packets_per_s"].as_f64().unwrap_or(f64::NAN),
                r["copies_avoided"].as_f64().unwrap_or(f64::NAN) * 100.0,
                r["rx_cpu_seconds_per_gb"].as_f64().unwrap_or(f64::NAN),
                r["verified"]
            );
            trials.push(trial);
        }
    }
    drop(tb);
    let mut medians = serde_json::Map::new();
    for &&Mode { name: mode, .. } in modes {
        let of = |key: &str| {
            median(
                trials
                    .iter()
                    .filter(|t| t["mode"] == mode)
                    .filter_map(|t| t[key].as_f64())
                    .collect(),
            )
        };
        medians.insert(
            mode.into(),
            json!({
                "packets_per_s": of("packets_per_s"),
                "rx_dropped": of("rx_dropped"),
                "copies_avoided": of("copies_avoided"),
                "rx_cpu_seconds_per_gb": of("rx_cpu_seconds_per_gb"),
            }),
        );
    }
    let of = |m: &str, key: &str| {
        medians
            .get(m)
            .and_then(|v| v[key].as_f64())
            .unwrap_or(f64::NAN)
    };
    let pps = |m: &str| of(m, "packets_per_s");
    let ratio = pps("prebuild") / pps("inline");
    let whole_over_split = pps("whole-frame") / pps("prebuild");
    let cpu = |m: &str| of(m, "rx_cpu_seconds_per_gb");
    let placed_over_copied_cpu = cpu("prebuild") / cpu("copy-all");
    for &&Mode { name: mode, .. } in modes {
        let m = &medians[mode];
        println!(
            "median {mode:>18}: {:.0} packets/s, {} drops, {:.2}% direct, {:.2} CPU s/GB",
            m["packets_per_s"].as_f64().unwrap_or(f64::NAN),
            m["rx_dropped"],
            m["copies_avoided"].as_f64().unwrap_or(f64::NAN) * 100.0,
            m["rx_cpu_seconds_per_gb"].as_f64().unwrap_or(f64::NAN)
        );
    }
    println!("prebuild / inline packets/s: {ratio:.2}");
    println!("whole-frame / prebuild (split) packets/s: {whole_over_split:.2}");
    let repair_pps = pps("whole-frame") / pps("whole-frame-no-icv");
    let repair_cpu = cpu("whole-frame") / cpu("whole-frame-no-icv");
    println!(
        "whole-frame (ICV, heads repaired) / whole-frame-no-icv: packets/s {repair_pps:.2}, receiver CPU s/GB {repair_cpu:.2}"
    );
    println!(
        "split placement / copy everything: packets/s {:.2}, receiver CPU s/GB {placed_over_copied_cpu:.2}",
        pps("prebuild") / pps("copy-all")
    );
    let all_verified = trials.iter().all(|t| t["verified"] == true);
    let report = json!({
        "runs": runs,
        "trials": trials,
        "medians": medians,
        "prebuild_over_inline": ratio,
        "whole_frame_over_split": whole_over_split,
        "whole_frame_over_no_icv_packets_per_s": repair_pps,
        "whole_frame_over_no_icv_cpu_per_gb": repair_cpu,
        "placed_over_copy_all_cpu_per_gb": placed_over_copied_cpu,
        "all_verified": all_verified,
    });
    std::fs::write(out, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("cannot write {}", out.display()))?;
    println!("xtask: live benchmark written to {}", out.display());
    anyhow::ensure!(all_verified, "a trial did not verify");
    Ok(())
}

/// Builds the tools in release mode; returns their directory.
pub fn build_tools(root: &Path, cargo: &mut Command) -> Result<PathBuf> {
    crate::install::run(cargo.args([
        "build",
        "--release",
        "--locked",
        "-p",
        "receiver-tool",
        "-p",
        "sender-tool",
    ]))?;
    Ok(root.join("target/release"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_selected_by_name_in_the_benchmarks_order_and_unknown_ones_refused() {
        assert_eq!(select_modes(&[]).unwrap().len(), MODES.len());
        let picked = select_modes(&["whole-frame-no-icv".into(), "prebuild".into()]).unwrap();
        let names: Vec<&str> = picked.iter().map(|m| m.name).collect();
        assert_eq!(names, ["prebuild", "whole-frame-no-icv"]);
        let err = select_modes(&["tcp".into()]).unwrap_err().to_string();
        assert!(
            err.contains("no mode \"tcp\"") && err.contains("copy-all"),
            "{err}"
        );
    }
}
