//! `zc-recv live --capture FILE`: a thread writes the frames the receive core rebuilt (as
//! they were on the wire) to a pcap file; at the end the replay configuration (keys,
//! regions, grants) goes beside it as `FILE.toml`, for `zc-recv replay`.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;

use anyhow::{Context, Result, bail};
use psp_pcap::pcapio::Writer;
use receive_core::capture::{CaptureLimit, CapturedFrame, CapturedGrant};
use receive_core::report::CaptureReport;

use crate::replay::{GrantConfig, Keys, PolicyConfig, RegionConfig, ReplayConfig};

/// Batches of frames waiting for the writer, at most; more are counted, not captured (the
/// receive loop never waits for the disk).
const QUEUED_BATCHES: usize = 4096;

/// `--capture` and `--capture-limit`.
#[derive(Debug, Clone, clap::Args)]
pub struct CaptureArgs {
    /// Write the frames received, as they were on the wire (rebuilt from their header
    /// records and their payloads before opening), to this pcap file with their arrival
    /// times, and beside it FILE.toml (mode 0600: it holds the run's master keys): the
    /// keys, regions and grants `zc-recv replay` needs. Software crypto only (inline frames
    /// are not sealed).
    #[arg(long, conflicts_with = "allow_inline_crypto")]
    pub capture: Option<PathBuf>,
    /// Stop capturing after this many bytes (suffix K, M or G: powers of 1024) or frames
    /// (suffix "frames", e.g. 10000frames).
    #[arg(long, value_parser = parse_limit, requires = "capture")]
    pub capture_limit: Option<CaptureLimit>,
}

/// Parses `--capture-limit`.
///
/// # Errors
/// Not a number with an optional K/M/G or "frames" suffix, zero, or too large.
pub fn parse_limit(s: &str) -> Result<CaptureLimit, String> {
    let s = s.trim();
    let bad = || format!("{s:?} is not BYTES (e.g. 64M) or FRAMES (e.g. 10000frames)");
    if let Some(n) = s.strip_suffix("frames") {
        let n: u64 = n.trim().parse().map_err(|_| bad())?;
        return if n == 0 {
            Err("the limit must be at least 1 frame".into())
        } else {
            Ok(CaptureLimit::Frames(n))
        };
    }
    let (digits, shift) = match s.char_indices().last() {
        Some((i, 'K' | 'k')) => (&s[..i], 10),
        Some((i, 'M' | 'm')) => (&s[..i], 20),
        Some((i, 'G' | 'g')) => (&s[..i], 30),
        _ => (s, 0),
    };
    let n: u64 = digits.trim().parse().map_err(|_| bad())?;
    match n.checked_mul(1 << shift) {
        Some(0) => Err("the limit must be at least 1 byte".into()),
        Some(b) => Ok(CaptureLimit::Bytes(b)),
        None => Err(format!("{s:?} is more bytes than 2^64")),
    }
}

/// What the writer thread did.
struct Written {
    frames: u64,
    cpu_seconds: f64,
}

/// The writer thread and the file it writes.
pub struct CaptureWriter {
    path: PathBuf,
    frames: Option<SyncSender<Vec<CapturedFrame>>>,
    thread: Option<JoinHandle<Result<Written>>>,
    /// Frames the writer could not take in time.
    writer_busy: u64,
}

impl CaptureWriter {
    /// Creates the file (written under a temporary name, renamed at the end) and starts
    /// the writer.
    ///
    /// # Errors
    /// The file cannot be created, or the thread not started.
    pub fn start(path: &Path) -> Result<Self> {
        let writer = Writer::create(path)
            .with_context(|| format!("--capture: cannot create {}", path.display()))?;
        let (frames, queue) = mpsc::sync_channel(QUEUED_BATCHES);
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .context("the clock is before 1970")?;
        // CLOCK_REALTIME less CLOCK_MONOTONIC: turns arrival times into wall-clock times.
        let wall_offset_ns =
            i128::try_from(wall.as_nanos()).unwrap_or(i128::MAX) - i128::from(umem::monotonic_ns());
        let thread = std::thread::Builder::new()
            .name("zc-recv-capture".into())
            .spawn(move || write_frames(writer, &queue, wall_offset_ns))
            .context("starting the capture thread")?;
        Ok(Self {
            path: path.to_path_buf(),
            frames: Some(frames),
            thread: Some(thread),
            writer_busy: 0,
        })
    }

    /// Hands frames to the writer without waiting: when it is behind, they are counted.
    pub fn send(&mut self, frames: Vec<CapturedFrame>) {
        if frames.is_empty() {
            return;
        }
        let Some(tx) = &self.frames else { return };
        match tx.try_send(frames) {
            Ok(()) => {}
            Err(TrySendError::Full(f) | TrySendError::Disconnected(f)) => {
                self.writer_busy += f.len() as u64;
            }
        }
    }

    /// Writes the last frames, closes the file, and writes the replay configuration.
    ///
    /// # Errors
    /// Writing either file failed.
    pub fn finish(
        mut self,
        keys: &Keys,
        regions: Vec<RegionConfig>,
        grants: &[CapturedGrant],
        counts: receive_core::capture::CaptureCounts,
    ) -> Result<CaptureReport> {
        drop(self.frames.take());
        let written = match self.thread.take().map(JoinHandle::join) {
            Some(Ok(w)) => w?,
            Some(Err(_)) => bail!("the capture thread panicked"),
            None => bail!("the capture thread was not started"),
        };
        let config_path = config_path(&self.path);
        let config = ReplayConfig {
            keys: keys.clone(),
            policy: PolicyConfig::default(),
            regions,
            grants: grants.iter().map(grant_config).collect(),
        };
        let replayable = crate::replay::check_config(&config)
            .map_err(|e| format!("{e:#}"))
            .err();
        if let Some(why) = &replayable {
            tracing::warn!("the captured grants cannot be replayed as one run: {why}");
        }
        let text = format!(
            "# Written by zc-recv live --capture: replay with\n#   zc-recv replay --pcap {} --config {}\n{}",
            self.path.display(),
            config_path.display(),
            toml::to_string(&config).context("the replay configuration")?
        );
        write_private(&config_path, &text)
            .with_context(|| format!("cannot write {}", config_path.display()))?;
        Ok(CaptureReport {
            file: self.path.display().to_string(),
            config: config_path.display().to_string(),
            frames: written.frames,
            bytes: counts.bytes,
            over_limit: counts.over_limit,
            without_outer: counts.without_outer,
            writer_busy: self.writer_busy,
            writer_cpu_seconds: written.cpu_seconds,
            not_replayable: replayable,
        })
    }
}

/// Writes `text` to `path` readable by its owner only: it holds the run's master keys.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // An existing file keeps its mode on open: narrow it too.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(text.as_bytes())
}

/// Where the replay configuration of capture `path` goes: `path` with `.toml` appended.
pub fn config_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(".toml");
    PathBuf::from(name)
}

fn grant_config(g: &CapturedGrant) -> GrantConfig {
    GrantConfig {
        spi: g.spi,
        region: g.region,
        generation: g.generation,
        offset: g.offset,
        len: g.len,
        base_seq: g.base_seq,
        sha256: g.sha256.clone(),
    }
}

/// The writer thread: frames in arrival order, microsecond wall-clock timestamps.
fn write_frames(
    mut writer: Writer,
    queue: &Receiver<Vec<CapturedFrame>>,
    wall_offset_ns: i128,
) -> Result<Written> {
    let mut frames = 0u64;
    for batch in queue {
        for f in batch {
            let wall = (i128::from(f.ktime_ns) + wall_offset_ns).max(0);
            let secs = u32::try_from(wall / 1_000_000_000).unwrap_or(u32::MAX);
            let micros = u32::try_from(wall % 1_000_000_000 / 1000).unwrap_or(0);
            writer.write(secs, micros, &f.bytes)?;
            frames += 1;
        }
    }
    writer.finish()?;
    Ok(Written {
        frames,
        cpu_seconds: umem::thread_cpu_time().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_as_bytes_or_frames_and_bad_ones_are_named() {
        assert_eq!(parse_limit("64M"), Ok(CaptureLimit::Bytes(64 << 20)));
        assert_eq!(parse_limit("2g"), Ok(CaptureLimit::Bytes(2 << 30)));
        assert_eq!(parse_limit("1000"), Ok(CaptureLimit::Bytes(1000)));
        assert_eq!(parse_limit("10000frames"), Ok(CaptureLimit::Frames(10_000)));
        for bad in [
            "",
            "M",
            "-1",
            "0",
            "0frames",
            "12X",
            "99999999999999999999G",
            "x frames",
        ] {
            assert!(parse_limit(bad).is_err(), "{bad}");
        }
        assert_eq!(
            config_path(Path::new("/tmp/a.pcap")),
            PathBuf::from("/tmp/a.pcap.toml")
        );
    }
}
