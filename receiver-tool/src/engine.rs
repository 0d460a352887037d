//! The copy fallback's controls for live runs: backend, the decider's threshold (measured
//! at start-up unless given), engine channels, pinning of the engine's workers and of the
//! receive loop, and fault injection per channel.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use copy_fallback::VecTarget;
use copy_fallback::decider::{Decider, calibrate};
use copy_fallback::ioat::{ChannelFaults, IoatConfig, IoatModel};
use receive_core::report::{CalibrationPointReport, CalibrationReport};

/// Copy backend for payloads that did not land in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CopyBackend {
    /// Copy on the receive thread.
    Cpu,
    /// The I/OAT-class engine model (worker threads, bounded rings).
    Ioat,
}

/// Copy-engine options of `zc-recv live`.
#[derive(Debug, Clone, clap::Args)]
pub struct EngineArgs {
    /// Copy backend.
    #[arg(long, value_enum, default_value = "cpu")]
    pub engine: CopyBackend,
    /// With --engine ioat: copies of at least this many bytes go to the engine. Without
    /// it, the crossover is measured on this host at start-up (and reported).
    #[arg(long)]
    pub engine_threshold: Option<usize>,
    /// With --engine ioat: channels (worker threads), 1..=16.
    #[arg(long, default_value_t = 1,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=16))]
    pub engine_channels: usize,
    /// With --engine ioat: cores to pin the channels' workers to, in channel order
    /// (comma separated).
    #[arg(long, value_delimiter = ',')]
    pub engine_cpu: Vec<usize>,
    /// With --engine ioat: a fault to inject, CHANNEL:refuse-every=N (every Nth submission
    /// refused as if the ring were full), CHANNEL:fail-after=N (the channel fails for good
    /// after N copies: its queue moves to a healthy channel) or CHANNEL:error-at=N (its Nth
    /// copy completes with an error and is copied again by the CPU). Repeatable.
    #[arg(long)]
    pub engine_fault: Vec<String>,
    /// Core to pin the receive loop to.
    #[arg(long)]
    pub cpu: Option<usize>,
}

impl EngineArgs {
    /// Engine options given without the engine are an error, not silently ignored.
    ///
    /// # Errors
    /// --engine-threshold, --engine-channels, --engine-cpu or --engine-fault with --engine
    /// cpu.
    pub fn check(&self) -> Result<()> {
        let engine_only = self.engine_threshold.is_some()
            || self.engine_channels != 1
            || !self.engine_cpu.is_empty()
            || !self.engine_fault.is_empty();
        if self.engine == CopyBackend::Cpu && engine_only {
            bail!(
                "--engine-threshold, --engine-channels, --engine-cpu and --engine-fault need --engine ioat"
            );
        }
        Ok(())
    }

    /// The engine model's configuration.
    ///
    /// # Errors
    /// A bad --engine-fault, or a channel or core that does not exist.
    pub fn ioat_config(&self) -> Result<IoatConfig> {
        let mut faults = vec![ChannelFaults::default(); self.engine_channels];
        for spec in &self.engine_fault {
            let (channel, fault) = parse_fault(spec)?;
            let slot = faults.get_mut(channel).with_context(|| {
                format!(
                    "--engine-fault {spec}: no channel {channel} (--engine-channels {})",
                    self.engine_channels
                )
            })?;
            fault.apply(slot);
        }
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        for c in self.engine_cpu.iter().chain(self.cpu.iter()) {
            if !cores.iter().any(|id| id.id == *c) {
                bail!("core {c} does not exist here (cores {})", cores.len());
            }
        }
        Ok(IoatConfig {
            channels: self.engine_channels,
            ring_size: 256,
            pin_cores: self.engine_cpu.clone(),
            faults,
        })
    }

    /// Pins the calling thread (the receive loop) to --cpu, if given.
    ///
    /// # Errors
    /// The core does not exist, or the kernel refused.
    pub fn pin_receive_loop(&self) -> Result<()> {
        let Some(c) = self.cpu else { return Ok(()) };
        let core = core_affinity::get_core_ids()
            .unwrap_or_default()
            .into_iter()
            .find(|id| id.id == c)
            .with_context(|| format!("--cpu {c}: no such core"))?;
        anyhow::ensure!(
            core_affinity::set_for_current(core),
            "--cpu {c}: pinning refused"
        );
        Ok(())
    }

    /// The decider: --engine-threshold, or the crossover measured now on an engine of the
    /// same configuration (without its faults), with its calibration for the report.
    ///
    /// # Errors
    /// The calibration engine could not start.
    pub fn decider(&self, config: &IoatConfig) -> Result<(Decider, Option<CalibrationReport>)> {
        if let Some(t) = self.engine_threshold {
            return Ok((Decider::fixed(t), None));
        }
        let scratch = Arc::new(VecTarget::new(0, 64 << 10));
        let clean = IoatConfig {
            faults: Vec::new(),
            ..config.clone()
        };
        let mut engine = IoatModel::start(Arc::clone(&scratch), &clean)?;
        let sizes = [64, 256, 512, 1024, 1400, 2048, 4096, 8192, 16384];
        let c = calibrate(&scratch, &mut engine, 0, &sizes, 20);
        let threshold = Some(c.threshold).filter(|t| *t != usize::MAX);
        let report = CalibrationReport {
            threshold_bytes: threshold,
            points: c
                .points
                .iter()
                .map(|p| CalibrationPointReport {
                    size: p.size,
                    cpu_ns: p.cpu_ns,
                    engine_ns: p.engine_ns,
                })
                .collect(),
        };
        Ok((Decider::fixed(c.threshold), Some(report)))
    }
}

/// One injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    RefuseEvery(u64),
    FailAfter(u64),
    ErrorAt(u64),
}

impl Fault {
    fn apply(self, f: &mut ChannelFaults) {
        match self {
            Self::RefuseEvery(n) => f.refuse_every = Some(n),
            Self::FailAfter(n) => f.fail_after = Some(n),
            Self::ErrorAt(n) => f.error_at = Some(n),
        }
    }
}

/// One --engine-fault: its channel and fault.
fn parse_fault(spec: &str) -> Result<(usize, Fault)> {
    let bad = || {
        format!(
            "--engine-fault {spec}: expected CHANNEL:refuse-every=N (N > 0), CHANNEL:fail-after=N or CHANNEL:error-at=N"
        )
    };
    let (channel, rest) = spec.split_once(':').with_context(bad)?;
    let (kind, n) = rest.split_once('=').with_context(bad)?;
    let channel: usize = channel.parse().with_context(bad)?;
    let n: u64 = n.parse().with_context(bad)?;
    let fault = match kind {
        "refuse-every" if n > 0 => Fault::RefuseEvery(n),
        "fail-after" => Fault::FailAfter(n),
        "error-at" => Fault::ErrorAt(n),
        _ => bail!(bad()),
    };
    Ok((channel, fault))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(faults: &[&str]) -> EngineArgs {
        EngineArgs {
            engine: CopyBackend::Ioat,
            engine_threshold: Some(0),
            engine_channels: 2,
            engine_cpu: Vec::new(),
            engine_fault: faults.iter().map(|s| (*s).to_string()).collect(),
            cpu: None,
        }
    }

    #[test]
    fn faults_are_parsed_per_channel_and_bad_ones_refused() {
        let c = args(&["0:fail-after=100", "1:refuse-every=3", "1:error-at=7"])
            .ioat_config()
            .unwrap();
        assert_eq!(c.faults[0].fail_after, Some(100));
        assert_eq!(c.faults[1].refuse_every, Some(3));
        assert_eq!(c.faults[1].error_at, Some(7));
        for bad in [
            "2:fail-after=1",
            "0:explode=1",
            "x:fail-after=1",
            "0:refuse-every=0",
            "0",
        ] {
            let e = args(&[bad]).ioat_config().unwrap_err().to_string();
            assert!(e.contains("--engine-fault"), "{bad}: {e}");
        }
    }

    #[test]
    fn engine_options_without_the_engine_are_refused() {
        let cpu = EngineArgs {
            engine: CopyBackend::Cpu,
            engine_threshold: None,
            ..args(&[])
        };
        assert!(
            cpu.check()
                .unwrap_err()
                .to_string()
                .contains("need --engine ioat")
        );
        let plain = EngineArgs {
            engine_channels: 1,
            ..cpu.clone()
        };
        assert!(plain.check().is_ok());
        assert!(args(&["0:error-at=3"]).check().is_ok());
    }

    #[test]
    fn a_given_threshold_is_used_and_a_missing_one_is_measured() {
        let a = args(&[]);
        let (d, cal) = a.decider(&a.ioat_config().unwrap()).unwrap();
        assert_eq!((d.threshold, cal), (0, None));
        let measured = EngineArgs {
            engine_threshold: None,
            ..args(&[])
        };
        let (d, cal) = measured.decider(&measured.ioat_config().unwrap()).unwrap();
        let cal = cal.expect("calibration report");
        assert_eq!(cal.points.len(), 9);
        assert!(
            cal.points
                .iter()
                .all(|p| p.cpu_ns > 0.0 && p.engine_ns > 0.0)
        );
        assert_eq!(cal.threshold_bytes.unwrap_or(usize::MAX), d.threshold);
    }
}
