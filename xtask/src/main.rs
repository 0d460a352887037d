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

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Test => test(),
        Cmd::Bench => {
            prepare()?;
            install::run(cargo().args(["bench"]))
        }
        Cmd::Fuzz { target, seconds } => fuzz(&target, seconds),
    }
}
