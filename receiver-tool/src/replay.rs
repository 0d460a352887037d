//! `zc-recv replay`: runs a pcap's PSP frames through the receive path, into regions
//! described by a TOML file, with no NIC and no root. Frames land in bounce memory, so
//! replay exercises the copy path and every check.
//!
//! Regions with `active = false` get their generation pending until the last frame has been
//! processed; what arrived for them meanwhile is staged and copied in when they activate.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use pcap_file::pcap::PcapReader;
use placement::copy::VecTarget;
use placement::copy::cpu::CpuEngine;
use placement::copy::decider::Decider;
use placement::copy::pipeline::CopyPipeline;
use placement::{Grant, GrantId, PlacementEngine, Policy};
use psp::{MasterKey, MasterKeys};
use serde::Deserialize;

use crate::report::{GrantReport, Report, RunSummary, process_cpu_seconds};
use crate::rx::{OPEN_GATE, RxPath};

/// The replay configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayConfig {
    pub keys: Keys,
    #[serde(default)]
    pub policy: PolicyConfig,
    #[serde(default, rename = "region")]
    pub regions: Vec<RegionConfig>,
    #[serde(default, rename = "grant")]
    pub grants: Vec<GrantConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keys {
    pub master0: String,
    pub master1: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    pub direct_spi_min: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionConfig {
    pub id: u32,
    pub len: u64,
    pub generation: u16,
    pub active: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantConfig {
    pub spi: u32,
    pub region: u32,
    pub generation: u16,
    pub offset: u64,
    pub len: u64,
    pub base_seq: u32,
    /// SHA-256 of the window's expected contents (hex), to verify the transfer.
    pub sha256: Option<String>,
}

/// Space between regions in the replay's memory, so an overrun would be visible.
const GUARD: u64 = 4096;
/// Most bytes held while regions are not ready.
const MAX_STAGED: usize = 256 << 20;
/// Largest memory replay allocates for regions.
const MAX_MEMORY: u64 = 4 << 30;

fn master_key(hex_key: &str, which: &str) -> Result<MasterKey> {
    let mut key = [0u8; 32];
    hex::decode_to_slice(hex_key.trim(), &mut key)
        .with_context(|| format!("[keys] {which} is not 64 hex digits"))?;
    Ok(MasterKey(key))
}

/// Parses and checks the TOML configuration.
pub fn load_config(path: &Path) -> Result<ReplayConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    toml::from_str(&text)
        .with_context(|| format!("{} is not a valid replay configuration", path.display()))
}

/// Runs the replay and returns the report.
pub fn run(pcap: &Path, config: &ReplayConfig) -> Result<Report> {
    let keys = MasterKeys::new(
        master_key(&config.keys.master0, "master0")?,
        master_key(&config.keys.master1, "master1")?,
    );
    let mut policy = Policy::default();
    if let Some(min) = config.policy.direct_spi_min {
        policy.direct_spi_min = min;
    }
    let mut engine = PlacementEngine::new(policy);
    let mut base = GUARD;
    for r in &config.regions {
        engine
            .add_region(r.id, base, r.len)
            .with_context(|| format!("region {}", r.id))?;
        engine.configure_generation(r.id, r.generation, if r.active { 0 } else { u64::MAX })?;
        base = base
            .checked_add(r.len + GUARD)
            .context("regions too large")?;
    }
    if base > MAX_MEMORY {
        bail!("regions need {base} bytes; replay allocates at most {MAX_MEMORY}");
    }
    engine.advance(0, |_| {});
    let mut digests: HashMap<GrantId, Option<String>> = HashMap::new();
    for g in &config.grants {
        if !engine.has_sa(g.spi) {
            engine.add_sa(g.spi)?;
        }
        let id = engine
            .add_grant(Grant {
                spi: g.spi,
                region_id: g.region,
                generation: g.generation,
                offset: g.offset,
                len: g.len,
                base_seq: g.base_seq,
            })
            .with_context(|| format!("grant for SPI {:#x} in region {}", g.spi, g.region))?;
        digests.insert(id, g.sha256.clone());
    }

    let target = Arc::new(VecTarget::new(0, usize::try_from(base)?));
    let pipeline = CopyPipeline::new(
        Arc::clone(&target),
        CpuEngine::new(Arc::clone(&target)),
        Decider::CPU_ONLY,
    );
    let mut rx = RxPath::new(engine, keys, pipeline, MAX_STAGED);

    let file = File::open(pcap).with_context(|| format!("cannot open {}", pcap.display()))?;
    let mut reader = PcapReader::new(BufReader::new(file))
        .with_context(|| format!("{} is not a pcap file", pcap.display()))?;
    let (cpu0, t0) = (process_cpu_seconds(), Instant::now());
    let mut frames = 0u64;
    while let Some(packet) = reader.next_raw_packet() {
        frames += 1;
        let packet =
            packet.with_context(|| format!("{}: frame {frames} is malformed", pcap.display()))?;
        let mut frame = packet.data.into_owned();
        rx.on_frame(&mut frame, None, frames, OPEN_GATE)?;
    }
    rx.activate(u64::MAX, OPEN_GATE, usize::MAX)?;
    rx.finish()?;
    let (elapsed, cpu) = (t0.elapsed().as_secs_f64(), process_cpu_seconds() - cpu0);

    let mut grants_by_spi: HashMap<u32, Vec<GrantReport>> = HashMap::new();
    let mut verified = !digests.is_empty();
    let mut missing_bytes = 0;
    for id in rx.engine.grant_ids() {
        let (Some(g), Some(p)) = (rx.engine.grant(id), rx.progress.get(&id)) else {
            continue;
        };
        let region = rx
            .engine
            .region(g.region_id)
            .context("grant without region")?;
        let bytes = target.read(region.base + g.offset, usize::try_from(g.len)?)?;
        let digest_ok = digests.get(&id).cloned().flatten().map(|want| {
            hex::encode(ring::digest::digest(&ring::digest::SHA256, &bytes)) == want.to_lowercase()
        });
        verified &= p.is_complete() && digest_ok == Some(true);
        missing_bytes += p.missing_bytes();
        grants_by_spi
            .entry(g.spi)
            .or_default()
            .push(GrantReport::new(g, p, digest_ok));
    }
    let run = RunSummary {
        elapsed_seconds: elapsed,
        cpu_seconds: cpu,
        verified,
        missing_bytes,
    };
    Ok(rx.report("replay", "cpu", run, grants_by_spi))
}
