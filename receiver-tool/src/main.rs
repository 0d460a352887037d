//! `zc-recv`: the testbed's receiver: `live` receives through XDP + AF_XDP with direct
//! placement; `replay` runs a pcap through the same open-and-place path offline; `tcp` is
//! the kernel-TCP baseline.

mod capture;
mod cpu;
mod digest;
mod engine;
mod live;
mod replay;
mod serve;
mod tcp;
mod xdp;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "zc-recv",
    version,
    about = "Zero-copy PSP receiver of the placement testbed"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a capture's (pcap or pcapng) PSP frames through the open-and-place path into regions from a TOML file
    /// (no NIC, no root needed).
    Replay {
        /// Capture of Ethernet frames: pcap or pcapng (link type 1).
        #[arg(long)]
        pcap: PathBuf,
        /// TOML: [keys] master0/master1, [[region]] id/len/generation/active,
        /// [[grant]] spi/region/generation/offset/len/base_seq[/sha256], [policy] direct_spi_min.
        #[arg(long)]
        config: PathBuf,
        /// Also write the report as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Receive through XDP + AF_XDP, placing payloads directly where the hints say (root).
    Live {
        #[command(flatten)]
        args: Box<live::LiveArgs>,
        /// Also write the report as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// The kernel-TCP baseline: receive `zc-send --transport tcp`'s messages with recv
    /// into a region (one copy, the kernel's), checked by the same digests.
    Tcp {
        #[command(flatten)]
        args: tcp::TcpArgs,
        /// Also write the report as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("zc-recv: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    match Cli::parse().command {
        Command::Replay { pcap, config, json } => {
            let cfg = replay::load_config(&config)?;
            let report = replay::run(&pcap, &cfg)?;
            print!("{}", report.human());
            write_json(json.as_deref(), &report)
        }
        Command::Live { args, json } => {
            let report = live::run(&args)?;
            print!("{}", report.human());
            write_json(json.as_deref(), &report)
        }
        Command::Tcp { args, json } => {
            let report = tcp::run(&args)?;
            print!("{}", report.human());
            write_json(json.as_deref(), &report)?;
            anyhow::ensure!(report.verified, "not every message verified");
            Ok(())
        }
    }
}

/// Writes `report` as JSON to `path`, if given.
fn write_json(path: Option<&std::path::Path>, report: &impl serde::Serialize) -> Result<()> {
    if let Some(path) = path {
        let text = serde_json::to_string_pretty(report)?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
