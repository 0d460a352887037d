//! `cargo xtask`: the testbed's orchestration. `cargo xtask test` installs what is missing
//! on a fresh machine and runs every test.

mod bench;
mod chart;
mod install;
mod live;

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Testbed orchestration")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what is missing, then run every test of the workspace.
    Test,
    /// Run the criterion benchmarks; with --live, the testbed's own benchmark instead:
    /// the sender/receiver pair on local test hosts, sealing in the send loop vs
    /// --prebuild, alternating trials, medians (needs root).
    Bench {
        /// Benchmark the live data path instead of running criterion.
        #[arg(long)]
        live: bool,
        /// Trials per mode (--live).
        #[arg(long, default_value_t = 5)]
        runs: u32,
        /// Modes to run (--live; comma-separated, all when not given): kernel-tcp,
        /// tcp-zerocopy, split, split-busy-poll, split-seal-in-loop, split-seal-thread,
        /// split-udp-gso, copy-all, whole-frame, whole-frame-no-icv, and split+inline,
        /// split-udp-gso+inline, copy-all+inline, whole-frame+inline (inline crypto).
        #[arg(long, value_delimiter = ',')]
        modes: Vec<String>,
        /// Bytes of each of the 2 messages a trial moves (--live).
        #[arg(long, default_value_t = 128 << 20,
              value_parser = clap::value_parser!(u64).range(1..=(1 << 30)))]
        message_bytes: u64,
    },
    /// The main job: install what is missing, build, bring the test hosts up, move 1 GiB
    /// from zc-send to zc-recv over 2 queues (one region activated late), print the
    /// report, write target/testbed/demo-report.json, tear down. Needs root.
    Demo {
        /// Messages per stream (2 streams of 64 MiB messages: 8 moves 1 GiB).
        #[arg(long, default_value_t = 8)]
        messages: u32,
    },
    /// Install the testbed's Wireshark dissector (PSP and the placement hint) into the
    /// personal Lua plugin folder, and print how to use it with tshark.
    Wireshark {
        /// Plugin folder (default: ~/.local/lib/wireshark/plugins).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Create or remove the test hosts (network namespaces + veth pair).
    Testbed {
        #[command(subcommand)]
        action: TestbedAction,
        /// Base name of the namespaces and links.
        #[arg(long, default_value = "zctb", global = true)]
        name: String,
    },
    /// Fuzz a cargo-fuzz target (installs nightly's cargo-fuzz when missing).
    Fuzz {
        /// Target name in fuzz/fuzz_targets.
        #[arg(default_value = "psp_segment")]
        target: String,
        /// How long to fuzz, in seconds.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
}

#[derive(Subcommand)]
enum TestbedAction {
    /// Create `<name>-snd` and `<name>-rcv` joined by veth `<name>s`/`<name>r`.
    Up {
        /// Queues on both veth ends.
        #[arg(long, default_value_t = 2)]
        queues: u32,
    },
    /// Remove exactly what `up` created (also after a crash).
    Down,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

/// Installs everything the build and the tests need.
fn prepare() -> Result<()> {
    install::debian_packages(install::TEST_PACKAGES)?;
    install::debian_packages(install::DATA_PATH_PACKAGES)?;
    install::ebpf_toolchain()
}

fn test() -> Result<()> {
    prepare()?;
    // The end-to-end tests run zc-send from the target directory.
    install::run(cargo().args(["build", "--bins", "--locked"]))?;
    // Default members only: xdp-prog is built for the BPF target by receiver-tool's build.rs.
    install::run(cargo().args(["test", "--all-targets", "--locked"]))?;
    install::run(cargo().args(["test", "--doc", "--locked"]))?;
    short_bench()
}

/// The live benchmark in its short form (1 run of every mode, 2 × 4 MiB), its report
/// checked for every mode and key (never timings). Root only; CI=true forbids skipping.
fn short_bench() -> Result<()> {
    if !testbed::is_root() {
        anyhow::ensure!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the short live benchmark needs root, and CI=true forbids skipping it"
        );
        eprintln!("xtask: skipping the short live benchmark (needs root)");
        return Ok(());
    }
    let modes = bench::all_modes();
    let bin = live::build_tools(&root(), &mut cargo())?;
    let out_dir = root().join("target/testbed/short-bench");
    std::fs::create_dir_all(&out_dir)?;
    let cfg = bench::BenchConfig {
        bin: &bin,
        runs: 1,
        message_bytes: 4 << 20,
        out_dir: &out_dir,
    };
    let report = bench::bench(&cfg, &modes)?;
    bench::check_report(&report, &modes)?;
    for ext in ["csv", "svg"] {
        let p = out_dir.join(format!("bench-live.{ext}"));
        anyhow::ensure!(p.exists(), "{} not written", p.display());
    }
    eprintln!("xtask: short live benchmark: every mode and key present");
    Ok(())
}

fn fuzz(target: &str, seconds: u64) -> Result<()> {
    let has_fuzz = Command::new("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !has_fuzz {
        install::run(Command::new("cargo").args([
            "+nightly",
            "install",
            "cargo-fuzz",
            "--locked",
        ]))?;
    }
    install::run(
        Command::new("cargo")
            .current_dir(root().join("fuzz"))
            .args([
                "+nightly",
                "fuzz",
                "run",
                target,
                "--",
                &format!("-max_total_time={seconds}"),
            ]),
    )
    .context("fuzzing found a failure or could not run")
}

fn demo(messages: u32) -> Result<()> {
    live::require_root("demo")?;
    prepare()?;
    let bin = live::build_tools(&root(), &mut cargo())?;
    let out_dir = root().join("target/testbed");
    std::fs::create_dir_all(&out_dir)?;
    let report = out_dir.join("demo-report.json");
    let _ = std::fs::remove_file(&report);
    let tb = testbed::Testbed::up("zcdemo", 2)?;
    eprintln!(
        "xtask: test hosts {} and {} up (veth {}/{}, 2 queues)",
        tb.sender_ns(),
        tb.receiver_ns(),
        tb.sender_if(),
        tb.receiver_if()
    );
    let messages = messages.to_string();
    let result = live::run_pair(
        &tb,
        &bin,
        &[
            "--queues",
            "2",
            "--region",
            "1:64M",
            "--region",
            "2:64M:late",
            "--activation-delay-ms",
            "300",
        ],
        &[
            "--queues",
            "0,1",
            "--regions",
            "1,2",
            "--message-bytes",
            "67108864",
            "--prebuild",
            "--messages",
            &messages,
        ],
        &report,
        false,
    );
    drop(tb);
    eprintln!("xtask: test hosts removed");
    result?;
    eprintln!("xtask: receiver report written to {}", report.display());
    Ok(())
}

/// Copies `wireshark/psp_hint.lua` into `dir` (or the personal plugin folder).
fn wireshark(dir: Option<PathBuf>) -> Result<()> {
    let script = root().join("wireshark/psp_hint.lua");
    let dir = match dir {
        Some(d) => d,
        None => {
            let home = std::env::var_os("HOME").context("HOME is not set: give --dir")?;
            PathBuf::from(home).join(".local/lib/wireshark/plugins")
        }
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dest = dir.join("psp_hint.lua");
    std::fs::copy(&script, &dest)
        .with_context(|| format!("cannot copy {} to {}", script.display(), dest.display()))?;
    println!("xtask: installed {}", dest.display());
    println!("Wireshark and tshark load it from there; or name the script explicitly:");
    println!(
        "  tshark -X lua_script:{} -r capture.pcap -V -O psp",
        script.display()
    );
    println!(
        "  tshark -X lua_script:{} -r capture.pcap -Y 'psp.hint.region == 1' -T fields -e psp.spi -e psp.hint.offset -e tcp.seq",
        script.display()
    );
    Ok(())
}

fn bench_live(runs: u32, modes: &[String], message_bytes: u64) -> Result<()> {
    live::require_root("bench --live")?;
    anyhow::ensure!(runs > 0, "--runs must be positive");
    let modes = bench::select_modes(modes)?;
    prepare()?;
    let bin = live::build_tools(&root(), &mut cargo())?;
    let out_dir = root().join("target/testbed");
    std::fs::create_dir_all(&out_dir)?;
    let cfg = bench::BenchConfig {
        bin: &bin,
        runs,
        message_bytes,
        out_dir: &out_dir,
    };
    bench::bench(&cfg, &modes).map(|_| ())
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Demo { messages } => demo(messages),
        Cmd::Testbed { action, name } => match action {
            TestbedAction::Up { queues } => {
                let tb = testbed::Testbed::up(&name, queues)?;
                println!(
                    "{} ({}) and {} ({}) joined by veth {}/{} with {queues} queues",
                    tb.sender_ns(),
                    testbed::SENDER_IP,
                    tb.receiver_ns(),
                    testbed::RECEIVER_IP,
                    tb.sender_if(),
                    tb.receiver_if()
                );
                std::mem::forget(tb);
                Ok(())
            }
            TestbedAction::Down => {
                let tb = testbed::Testbed { name, queues: 0 };
                tb.down();
                let gone = !tb.exists();
                std::mem::forget(tb);
                anyhow::ensure!(gone, "could not remove the test hosts");
                Ok(())
            }
        },
        Cmd::Test => test(),
        Cmd::Wireshark { dir } => wireshark(dir),
        Cmd::Bench {
            live: true,
            runs,
            modes,
            message_bytes,
        } => bench_live(runs, &modes, message_bytes),
        Cmd::Bench { live: false, .. } => {
            prepare()?;
            install::run(cargo().args(["bench"]))
        }
        Cmd::Fuzz { target, seconds } => fuzz(&target, seconds),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dissector_is_installed_where_asked() {
        let dir = std::env::temp_dir().join(format!("xtask-ws-{}", std::process::id()));
        wireshark(Some(dir.clone())).unwrap();
        let installed = std::fs::read_to_string(dir.join("psp_hint.lua")).unwrap();
        let shipped = std::fs::read_to_string(root().join("wireshark/psp_hint.lua")).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(installed, shipped);
        assert!(installed.contains("DissectorTable.get(\"udp.port\"):add(1000, psp)"));
    }
}
