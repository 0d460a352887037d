//! `cargo xtask`: the testbed's orchestration. `cargo xtask test` installs what is missing
//! on a fresh machine and runs every test.

mod install;

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
    /// Run the criterion benchmarks.
    Bench,
    /// The main job: install what is missing, build, bring the test hosts up, move 1 GiB
    /// from zc-send to zc-recv over 2 queues (one region activated late), print the
    /// report, write target/testbed/demo-report.json, tear down. Needs root.
    Demo {
        /// Messages per stream (2 streams of 64 MiB messages: 8 moves 1 GiB).
        #[arg(long, default_value_t = 8)]
        messages: u32,
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
    install::run(cargo().args(["test", "--doc", "--locked"]))
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
    if !testbed::is_root() {
        anyhow::bail!(
            "the demo needs root: it creates network namespaces and a veth pair, attaches an XDP program and opens AF_XDP sockets (run it as root, e.g. sudo -E cargo xtask demo)"
        );
    }
    prepare()?;
    install::run(cargo().args([
        "build", "--release", "--locked", "-p", "receiver-tool", "-p", "sender-tool",
    ]))?;
    let bin = root().join("target/release");
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
    let listen = format!("{}:7000", testbed::RECEIVER_IP);
    let recv_bin = bin.join("zc-recv");
    let mut recv = testbed::Testbed::command_in(&tb.receiver_ns(), &recv_bin.to_string_lossy())
        .args(["live", "--iface", &tb.receiver_if(), "--queues", "2", "--listen", &listen])
        .args(["--region", "1:64M", "--region", "2:64M:late", "--activation-delay-ms", "300"])
        .args(["--no-progress", "--json"])
        .arg(&report)
        .spawn()
        .context("starting zc-recv")?;
    let send_bin = bin.join("zc-send");
    let send = testbed::Testbed::command_in(&tb.sender_ns(), &send_bin.to_string_lossy())
        .args(["--control", &listen, "--iface", &tb.sender_if(), "--queues", "0,1"])
        .args(["--regions", "1,2", "--message-bytes", "67108864", "--prebuild"])
        .args(["--messages", &messages.to_string()])
        .status()
        .context("running zc-send")?;
    let recv_status = if send.success() {
        recv.wait()?
    } else {
        let _ = recv.kill();
        recv.wait()?
    };
    drop(tb);
    eprintln!("xtask: test hosts removed");
    anyhow::ensure!(send.success(), "zc-send failed ({send})");
    anyhow::ensure!(recv_status.success(), "zc-recv failed ({recv_status})");
    eprintln!("xtask: receiver report written to {}", report.display());
    Ok(())
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
                let tb = testbed::Testbed {
                    name,
                    queues: 0,
                };
                tb.down();
                let gone = !tb.exists();
                std::mem::forget(tb);
                anyhow::ensure!(gone, "could not remove the test hosts");
                Ok(())
            }
        },
        Cmd::Test => test(),
        Cmd::Bench => {
            prepare()?;
            install::run(cargo().args(["bench"]))
        }
        Cmd::Fuzz { target, seconds } => fuzz(&target, seconds),
    }
}
