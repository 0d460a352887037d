//! `zc-recv`: the testbed's receiver. This version offers the offline `replay` mode; live
//! AF_XDP receive arrives with the data path.

mod replay;
mod report;
mod rx;

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
    /// Run a pcap's PSP frames through the open-and-place path into regions from a TOML file
    /// (no NIC, no root needed).
    Replay {
        /// pcap of Ethernet frames.
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
}

fn main() -> std::process::ExitCode {
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
            if let Some(path) = json {
                let text = serde_json::to_string_pretty(&report)?;
                std::fs::write(&path, text + "\n")
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            Ok(())
        }
    }
}
