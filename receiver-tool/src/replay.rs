//! `zc-recv replay`: runs a pcap's PSP frames through the receive path, into regions
//! described by a TOML file, with no NIC and no root. Frames land in bounce memory, so
//! replay exercises the copy path and every check.
//!
//! Regions with `active = false` get their generation pending until the last frame has been
//! processed; what arrived for them meanwhile is staged and copied in when they activate.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use copy_fallback::VecTarget;
use copy_fallback::cpu::CpuEngine;
use copy_fallback::decider::Decider;
use copy_fallback::pipeline::CopyPipeline;
use placement::{Grant, GrantId, PlacementEngine, Policy};
use psp::{MasterKey, MasterKeys};
use psp_pcap::capture::Capture;
use serde::{Deserialize, Serialize};

use receive_core::report::{GrantReport, Report, RunSummary};
use receive_core::{OpenGate, Payload, RxPath, Timestamp};

use crate::cpu::process_cpu_seconds;

/// The replay configuration file.
#[derive(Debug, Deserialize, Serialize)]
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

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Keys {
    pub master0: String,
    pub master1: String,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    pub direct_spi_min: Option<u32>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegionConfig {
    pub id: u32,
    pub len: u64,
    pub generation: u16,
    pub active: bool,
}

/// A `[[grant]]` of the file.
pub use receive_core::capture::GrantSpec as GrantConfig;

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
    let config: ReplayConfig = toml::from_str(&text)
        .with_context(|| format!("{} is not a valid replay configuration", path.display()))?;
    check_config(&config).with_context(|| format!("{}", path.display()))?;
    Ok(config)
}

/// Checks what the TOML types do not: regions and grants of at least one byte, grants that
/// fit their region and do not overlap (replay's region memory is one buffer, so
/// overlapping windows would write the same bytes and could not both verify), and digests
/// of 64 hex digits. Errors name the table entry (1-based) and the field.
pub fn check_config(config: &ReplayConfig) -> Result<()> {
    for (i, r) in config.regions.iter().enumerate() {
        let at = format!("[[region]] {} (id {})", i + 1, r.id);
        if r.len == 0 {
            bail!("{at}: len must be at least 1");
        }
        if config.regions[..i].iter().any(|o| o.id == r.id) {
            bail!("{at}: id {} is used by an earlier region", r.id);
        }
    }
    for (i, g) in config.grants.iter().enumerate() {
        check_grant(&grant_name(i, g), g, &config.regions)?;
    }
    check_overlaps(&config.grants)
}

/// How errors name grant `i` (0-based) of the file.
fn grant_name(i: usize, g: &GrantConfig) -> String {
    format!(
        "[[grant]] {} (SPI {:#x}, region {})",
        i + 1,
        g.spi,
        g.region
    )
}

fn check_grant(at: &str, g: &GrantConfig, regions: &[RegionConfig]) -> Result<()> {
    if g.len == 0 {
        bail!("{at}: len must be at least 1");
    }
    let region = regions
        .iter()
        .find(|r| r.id == g.region)
        .with_context(|| format!("{at}: region: no region {}", g.region))?;
    let end = g.offset.checked_add(g.len);
    if end.is_none_or(|e| e > region.len) {
        bail!(
            "{at}: offset {} + len {} does not fit region {} ({} bytes)",
            g.offset,
            g.len,
            region.id,
            region.len
        );
    }
    if let Some(digest) = &g.sha256 {
        let hex_digits = digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex_digits {
            bail!("{at}: sha256 {digest:?} is not 64 hex digits");
        }
    }
    Ok(())
}

/// Refuses grants whose windows share a byte of a region (any SPI, any generation).
/// Expects every grant to fit its region (so that `offset + len` does not overflow).
fn check_overlaps(grants: &[GrantConfig]) -> Result<()> {
    let mut windows: Vec<(u32, u64, u64, usize)> = grants
        .iter()
        .enumerate()
        .map(|(i, g)| (g.region, g.offset, g.offset.saturating_add(g.len), i))
        .collect();
    windows.sort_unstable();
    // Sorted by start: if any two windows overlap, two neighbours do.
    for pair in windows.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if a.0 == b.0 && b.1 < a.2 {
            let (first, second) = if a.3 < b.3 { (a, b) } else { (b, a) };
            bail!(
                "{}: bytes {}..{} overlap bytes {}..{} of [[grant]] {}",
                grant_name(second.3, &grants[second.3]),
                second.1,
                second.2,
                first.1,
                first.2,
                first.3 + 1
            );
        }
    }
    Ok(())
}

/// The run's verdict: verified only when something was accepted (placed, copied or staged)
/// and every grant was checked, complete and matched its digest.
fn verdict(accepted_bytes: u64, grants_ok: &[bool]) -> bool {
    accepted_bytes > 0 && !grants_ok.is_empty() && grants_ok.iter().all(|ok| *ok)
}

/// Runs the replay and returns the report.
/// The placement engine the configuration describes, the memory it needs, and each
/// grant's expected digest.
type Digests = HashMap<GrantId, Option<String>>;

fn configure(config: &ReplayConfig) -> Result<(PlacementEngine, u64, Digests)> {
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
        engine
            .configure_generation(r.id, r.generation, if r.active { 0 } else { u64::MAX })
            .with_context(|| format!("region {}", r.id))?;
        base = base
            .checked_add(r.len)
            .and_then(|b| b.checked_add(GUARD))
            .context("regions too large")?;
    }
    if base > MAX_MEMORY {
        bail!("regions need {base} bytes; replay allocates at most {MAX_MEMORY}");
    }
    engine.advance(0, |_| {});
    let mut digests = Digests::new();
    for g in &config.grants {
        if !engine.has_sa(g.spi) {
            engine
                .add_sa(g.spi)
                .with_context(|| format!("SA {:#x}", g.spi))?;
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
    Ok((engine, base, digests))
}

type ReplayPath = RxPath<VecTarget, CpuEngine<VecTarget, Payload>>;

/// Every frame of the capture through the receive path, on the capture's own clock;
/// regions configured inactive activate after the last frame.
fn play(pcap: &Path, rx: &mut ReplayPath) -> Result<()> {
    let mut capture = Capture::open(pcap)?;
    let mut first_ts = None;
    while let Some(frame) = capture.next_frame() {
        let frame = frame?;
        // The capture's own clock, from its first frame (a timestamp before it counts as 0).
        let first = *first_ts.get_or_insert(frame.timestamp);
        let now = Timestamp::since_start(frame.timestamp.saturating_sub(first));
        let mut data = frame.data;
        rx.on_frame(&mut data, None, now, &OpenGate)?;
    }
    rx.activate(Timestamp::since_start(Duration::MAX), &OpenGate, usize::MAX)?;
    rx.finish()?;
    Ok(())
}

/// The grants at the end of a replay.
struct GrantOutcome {
    /// Reports per SPI.
    by_spi: HashMap<u32, Vec<GrantReport>>,
    /// Per grant: complete and matching its digest.
    ok: Vec<bool>,
    missing_bytes: u64,
}

/// Each grant's report, with its digest checked against `target`.
fn grant_reports(rx: &ReplayPath, target: &VecTarget, digests: &Digests) -> Result<GrantOutcome> {
    let mut by_spi: HashMap<u32, Vec<GrantReport>> = HashMap::new();
    let mut grants_ok = Vec::new();
    let mut missing_bytes = 0;
    for id in rx.placement.grant_ids() {
        let Some(g) = rx.placement.grant(id) else {
            continue;
        };
        let Some(p) = rx.progress.get(&id) else {
            grants_ok.push(false);
            continue;
        };
        let region = rx
            .placement
            .region(g.region_id)
            .context("grant without region")?;
        let bytes = target.read(region.base + g.offset, usize::try_from(g.len)?)?;
        let digest_ok = digests.get(&id).cloned().flatten().map(|want| {
            hex::encode(ring::digest::digest(&ring::digest::SHA256, &bytes)) == want.to_lowercase()
        });
        grants_ok.push(p.is_complete() && digest_ok == Some(true));
        missing_bytes += p.missing_bytes();
        by_spi
            .entry(g.spi)
            .or_default()
            .push(GrantReport::new(g, p, digest_ok));
    }
    Ok(GrantOutcome {
        by_spi,
        ok: grants_ok,
        missing_bytes,
    })
}

pub fn run(pcap: &Path, config: &ReplayConfig) -> Result<Report> {
    let keys = MasterKeys::new(
        master_key(&config.keys.master0, "master0")?,
        master_key(&config.keys.master1, "master1")?,
    );
    let (engine, memory_len, digests) = configure(config)?;
    let target = Arc::new(VecTarget::new(0, usize::try_from(memory_len)?));
    let pipeline = CopyPipeline::new(
        Arc::clone(&target),
        CpuEngine::new(Arc::clone(&target)),
        Decider::CPU_ONLY,
    );
    let mut rx = RxPath::new(engine, keys, pipeline, MAX_STAGED);
    let (cpu0, t0) = (process_cpu_seconds(), Instant::now());
    play(pcap, &mut rx)?;
    let (elapsed, cpu) = (t0.elapsed().as_secs_f64(), process_cpu_seconds() - cpu0);
    let grants = grant_reports(&rx, &target, &digests)?;
    let c = &rx.counters;
    let accepted_bytes = c.direct.bytes + c.cpu_copy.bytes + c.engine_copy.bytes + c.staged.bytes;
    let run = RunSummary {
        elapsed_seconds: elapsed,
        cpu_seconds: cpu,
        verified: verdict(accepted_bytes, &grants.ok),
        missing_bytes: grants.missing_bytes,
    };
    Ok(rx.report("replay", "cpu", run, grants.by_spi))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_accepted_is_never_verified() {
        assert!(verdict(1, &[true, true]));
        assert!(!verdict(0, &[true]), "nothing accepted");
        assert!(!verdict(1, &[]), "no grant");
        assert!(!verdict(1, &[true, false]));
    }
}
