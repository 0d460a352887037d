//! `psp-pcap`: PSP-encrypt and decrypt pcap files, command-line compatible with google/psp's
//! reference programs `psp_encrypt` and `psp_decrypt`, plus this testbed's placement hint.

mod config;
mod decap;
mod encap;

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use psp::Hint;
use psp_pcap::pcapio;

use crate::encap::{Encryptor, Outcome};

#[derive(Parser)]
#[command(
    name = "psp-pcap",
    version,
    about = "PSP-encrypt or decrypt the packets of a pcap file"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Encrypt every IP packet of a cleartext pcap (as psp_encrypt).
    Encrypt {
        /// Configuration: master keys, SPI, mode, algorithm, crypt offsets, vc/no-vc.
        #[arg(short = 'c', long = "config", default_value = "psp_encrypt.cfg")]
        config: PathBuf,
        /// Cleartext input pcap.
        #[arg(short = 'i', long = "input", default_value = "cleartext.pcap")]
        input: PathBuf,
        /// Encrypted output pcap.
        #[arg(short = 'o', long = "output", default_value = "psp_encrypt.pcap")]
        output: PathBuf,
        /// Print the configuration and the derived key.
        #[arg(short = 'v', long)]
        verbose: bool,
        /// Flip a reserved bit in every output packet after sealing, so that decryption fails.
        #[arg(short = 'e', long = "error")]
        corrupt: bool,
        /// Add a placement hint to every packet: REGION:GENERATION:OFFSET:BASE_SEQ.
        #[arg(long, value_parser = parse_hint)]
        hint: Option<Hint>,
    },
    /// Decrypt every PSP packet of a pcap (as psp_decrypt).
    Decrypt {
        /// Configuration: the two master keys.
        #[arg(short = 'c', long = "config", default_value = "psp_decrypt.cfg")]
        config: PathBuf,
        /// Encrypted input pcap.
        #[arg(short = 'i', long = "input", default_value = "psp_encrypt.pcap")]
        input: PathBuf,
        /// Cleartext output pcap.
        #[arg(short = 'o', long = "output", default_value = "psp_decrypt.pcap")]
        output: PathBuf,
        /// Print each packet's SPI.
        #[arg(short = 'v', long)]
        verbose: bool,
        /// Print the placement hint of every packet that carries one.
        #[arg(long)]
        show_hints: bool,
    },
}

fn parse_hint(s: &str) -> Result<Hint, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let [region, generation, offset, base_seq] = parts[..] else {
        return Err("expected REGION:GENERATION:OFFSET:BASE_SEQ".into());
    };
    let num = |what: &str, v: &str| {
        v.parse::<u64>()
            .map_err(|_| format!("{what} '{v}' is not a number"))
    };
    let region_id = u32::try_from(num("region", region)?)
        .map_err(|_| "region does not fit 32 bits".to_string())?;
    let generation = u16::try_from(num("generation", generation)?)
        .map_err(|_| "generation does not fit 16 bits".to_string())?;
    let offset = num("offset", offset)?;
    if offset > psp::hint::MAX_OFFSET {
        return Err("offset does not fit 48 bits".into());
    }
    let base_tcp_seq = u32::try_from(num("base sequence", base_seq)?)
        .map_err(|_| "base sequence does not fit 32 bits".to_string())?;
    Ok(Hint {
        region_id,
        generation,
        offset,
        base_tcp_seq,
    })
}

/// The IPv4 header checksum over `header` (its checksum field zeroed by the caller).
pub(crate) fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !u16::try_from(sum & 0xffff).unwrap_or(0)
}

fn read_config(path: &PathBuf) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read config {}", path.display()))
}

fn encrypt(
    config: PathBuf,
    input: PathBuf,
    output: PathBuf,
    verbose: bool,
    corrupt: bool,
    hint: Option<Hint>,
) -> Result<()> {
    let cfg = config::parse_encrypt(&read_config(&config)?)
        .with_context(|| format!("config {}", config.display()))?;
    if verbose {
        println!(
            "SPI: {:08x}, mode: {:?}, algorithm: {}, vc: {}",
            cfg.spi, cfg.mode, cfg.version, cfg.include_vc
        );
        println!(
            "Derived Key: {}",
            hex::encode(cfg.keys.derive(cfg.spi, cfg.version).as_bytes())
        );
    }
    let packets = pcapio::read_all(&input)?;
    let mut enc = Encryptor::new(cfg, hint, corrupt)?;
    let mut writer = pcapio::Writer::create(&output)?;
    let (mut n, mut skipped) = (0, 0);
    for (i, p) in packets.iter().enumerate() {
        match enc
            .process(&p.data)
            .with_context(|| format!("packet {}", i + 1))?
        {
            Outcome::Sealed(frame) => {
                if frame.len() > pcapio::MAX_FRAME {
                    bail!(
                        "packet {}: encrypted frame of {} bytes exceeds {}",
                        i + 1,
                        frame.len(),
                        pcapio::MAX_FRAME
                    );
                }
                writer.write(p.ts_sec, p.ts_usec, &frame)?;
                n += 1;
            }
            Outcome::Skipped(why) => {
                eprintln!("packet {}: {why}", i + 1);
                skipped += 1;
            }
        }
    }
    writer.finish()?;
    println!(
        "encrypted {n} packets in {}, skipped {skipped} packets",
        output.display()
    );
    Ok(())
}

fn decrypt(
    config: PathBuf,
    input: PathBuf,
    output: PathBuf,
    verbose: bool,
    show_hints: bool,
) -> Result<()> {
    let keys = config::parse_decrypt(&read_config(&config)?)
        .with_context(|| format!("config {}", config.display()))?;
    let packets = pcapio::read_all(&input)?;
    let mut writer = pcapio::Writer::create(&output)?;
    let (mut n, mut skipped) = (0, 0);
    for (i, p) in packets.iter().enumerate() {
        let d = decap::process(&keys, &p.data).with_context(|| format!("packet {}", i + 1))?;
        match d.outcome {
            Outcome::Sealed(frame) => {
                if verbose {
                    println!("packet {}: SPI {:08x}", i + 1, d.spi);
                }
                if let (true, Some(h)) = (show_hints, d.hint) {
                    println!(
                        "packet {}: hint region={} generation={} offset={} base_seq={}",
                        i + 1,
                        h.region_id,
                        h.generation,
                        h.offset,
                        h.base_tcp_seq
                    );
                }
                writer.write(p.ts_sec, p.ts_usec, &frame)?;
                n += 1;
            }
            Outcome::Skipped(why) => {
                eprintln!("packet {}: {why}", i + 1);
                skipped += 1;
            }
        }
    }
    writer.finish()?;
    println!(
        "decrypted {n} packets in {}, skipped {skipped} packets",
        output.display()
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    let result = match Cli::parse().command {
        Command::Encrypt {
            config,
            input,
            output,
            verbose,
            corrupt,
            hint,
        } => encrypt(config, input, output, verbose, corrupt, hint),
        Command::Decrypt {
            config,
            input,
            output,
            verbose,
            show_hints,
        } => decrypt(config, input, output, verbose, show_hints),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("psp-pcap: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
