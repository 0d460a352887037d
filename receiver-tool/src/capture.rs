//! `zc-recv live --capture FILE`: a thread writes the frames the receive core rebuilt (as
//! they were on the wire) to a pcap file; at the end the replay configuration (keys,
//! regions, grants) goes beside it as `FILE.toml`, for `zc-recv replay`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TrySendError};
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use psp_pcap::pcapio::Writer;
use receive_core::capture::{CaptureLimit, CapturedBatch, GrantSpec};
use receive_core::report::CaptureReport;

use crate::replay::{Keys, PolicyConfig, RegionConfig, ReplayConfig};

/// Batches of frames waiting for the writer, at most; more are counted, not captured (the
/// receive loop never waits for the disk).
const QUEUED_BATCHES: usize = 4096;
/// Bytes of frames waiting for the writer, at most.
const MAX_QUEUED_BYTES: u64 = 64 << 20;

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
#[derive(Default)]
struct Written {
    frames: u64,
    bytes: u64,
    cpu_seconds: f64,
    /// Why it stopped early, if it did.
    error: Option<String>,
}

/// The writer thread and the file it writes.
pub struct CaptureWriter {
    path: PathBuf,
    frames: Option<SyncSender<CapturedBatch>>,
    /// Batches the writer is done with, to fill again.
    spares: Receiver<CapturedBatch>,
    /// A batch the writer had no room for: filled again rather than freed (fresh memory
    /// costs the loop page faults).
    kept: Option<CapturedBatch>,
    thread: Option<JoinHandle<Written>>,
    /// Bytes handed to the writer and not written yet.
    queued: Arc<AtomicU64>,
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
        let (done, spares) = mpsc::channel();
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .context("the clock is before 1970")?;
        // CLOCK_REALTIME less CLOCK_MONOTONIC: turns arrival times into wall-clock times.
        let wall_offset_ns =
            i128::try_from(wall.as_nanos()).unwrap_or(i128::MAX) - i128::from(umem::monotonic_ns());
        let queued = Arc::new(AtomicU64::new(0));
        let in_writer = Arc::clone(&queued);
        let thread = std::thread::Builder::new()
            .name("zc-recv-capture".into())
            .spawn(move || write_frames(writer, &queue, &done, &in_writer, wall_offset_ns))
            .context("starting the capture thread")?;
        Ok(Self {
            path: path.to_path_buf(),
            frames: Some(frames),
            spares,
            kept: None,
            thread: Some(thread),
            queued,
            writer_busy: 0,
        })
    }

    /// An empty batch to capture into (one the writer is done with, when there is one).
    pub fn spare(&mut self) -> CapturedBatch {
        self.kept
            .take()
            .or_else(|| self.spares.try_recv().ok())
            .unwrap_or_default()
    }

    /// Hands a batch to the writer without waiting: when it is behind (or stopped), its
    /// frames are counted instead.
    pub fn send(&mut self, batch: CapturedBatch) {
        if batch.is_empty() {
            return;
        }
        let bytes = batch.byte_len() as u64;
        let Some(tx) = &self.frames else { return };
        if self.queued.load(Ordering::Relaxed).saturating_add(bytes) > MAX_QUEUED_BYTES {
            self.writer_busy += batch.len() as u64;
            self.kept = Some(batch);
            return;
        }
        self.queued.fetch_add(bytes, Ordering::Relaxed);
        if let Err(TrySendError::Full(b) | TrySendError::Disconnected(b)) = tx.try_send(batch) {
            self.queued.fetch_sub(bytes, Ordering::Relaxed);
            self.writer_busy += b.len() as u64;
            self.kept = Some(b);
        }
    }

    /// Writes the last frames, closes the file, and writes the replay configuration. A
    /// capture that failed (a full disk) is reported, not an error: the run's report
    /// matters more.
    ///
    /// # Errors
    /// The replay configuration cannot be serialised.
    pub fn finish(
        mut self,
        keys: &Keys,
        regions: Vec<RegionConfig>,
        grants: &[GrantSpec],
        counts: receive_core::capture::CaptureCounts,
    ) -> Result<CaptureReport> {
        drop(self.frames.take());
        let written = match self.thread.take().map(JoinHandle::join) {
            Some(Ok(w)) => w,
            Some(Err(_)) => Written {
                error: Some("the capture thread panicked".into()),
                ..Written::default()
            },
            None => Written {
                error: Some("the capture thread was not started".into()),
                ..Written::default()
            },
        };
        let config_path = config_path(&self.path);
        let config = ReplayConfig {
            keys: keys.clone(),
            policy: PolicyConfig::default(),
            regions,
            grants: grants.to_vec(),
        };
        let not_replayable = replay_obstacle(&config, grants);
        if let Some(why) = &not_replayable {
            tracing::warn!("the captured grants cannot be replayed as one run: {why}");
        }
        let text = format!(
            "# Written by zc-recv live --capture: replay with\n#   zc-recv replay --pcap {} --config {}\n{}",
            self.path.display(),
            config_path.display(),
            toml::to_string(&config).context("the replay configuration")?
        );
        let mut error = written.error;
        if let Err(e) = write_private(&config_path, &text) {
            let e = format!("cannot write {}: {e}", config_path.display());
            tracing::warn!("--capture: {e}");
            error.get_or_insert(e);
        }
        Ok(CaptureReport {
            file: self.path.display().to_string(),
            config: config_path.display().to_string(),
            frames: written.frames,
            bytes: written.bytes,
            over_limit: counts.over_limit,
            without_outer: counts.without_outer,
            writer_busy: self.writer_busy,
            writer_cpu_seconds: written.cpu_seconds,
            not_replayable,
            error,
        })
    }
}

/// Why `config` cannot be replayed as one run, if it cannot: overlapping grants (a window
/// reused), or grants of one region for different generations (replay gives each region
/// one).
fn replay_obstacle(config: &ReplayConfig, grants: &[GrantSpec]) -> Option<String> {
    if let Err(e) = crate::replay::check_config(config) {
        return Some(format!("{e:#}"));
    }
    config.regions.iter().find_map(|r| {
        grants
            .iter()
            .find(|g| g.region == r.id && g.generation != r.generation)
            .map(|g| {
                format!(
                    "region {} has grants for generations {} and {}",
                    r.id, g.generation, r.generation
                )
            })
    })
}

/// Writes `text` to `path` readable by its owner only (it holds the run's master keys):
/// into a new file beside it, which is renamed over `path`, so that a link planted at
/// `path` is replaced, never followed.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut temp = path.as_os_str().to_owned();
    temp.push(format!(".{}.tmp", std::process::id()));
    let temp = PathBuf::from(temp);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&temp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}

/// Where the replay configuration of capture `path` goes: `path` with `.toml` appended.
pub fn config_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(".toml");
    PathBuf::from(name)
}

/// The writer thread: each batch in arrival order (the receiver handles queues in turn,
/// and whole frames that waited later, so batches may overlap in time), microsecond
/// wall-clock timestamps. A failing write stops it; what comes after is counted as
/// `writer_busy` by the sender side.
fn write_frames(
    mut writer: Writer,
    queue: &Receiver<CapturedBatch>,
    done: &Sender<CapturedBatch>,
    queued: &AtomicU64,
    wall_offset_ns: i128,
) -> Written {
    let mut w = Written::default();
    // Never in the receive loop's way: a capture that falls behind loses frames from the
    // file (counted), not placements.
    if let Err(e) = umem::run_only_when_idle() {
        tracing::warn!("capture writer at normal priority: {e}");
    }
    for batch in queue {
        let mut frames: Vec<_> = batch.frames().collect();
        frames.sort_by_key(|(ktime, _)| *ktime);
        for (ktime, bytes) in &frames {
            let wall = (i128::from(*ktime) + wall_offset_ns).max(0);
            let secs = u32::try_from(wall / 1_000_000_000).unwrap_or(u32::MAX);
            let micros = u32::try_from(wall % 1_000_000_000 / 1000).unwrap_or(0);
            if let Err(e) = writer.write(secs, micros, bytes) {
                w.error = Some(format!("{e:#}"));
                w.cpu_seconds = umem::thread_cpu_time().as_secs_f64();
                return w;
            }
            w.frames += 1;
            w.bytes += bytes.len() as u64;
        }
        drop(frames);
        queued.fetch_sub(batch.byte_len() as u64, Ordering::Relaxed);
        // The loop may have stopped taking spares: then the batch is dropped.
        let _ = done.send(batch);
    }
    if let Err(e) = writer.finish() {
        w.error = Some(format!("{e:#}"));
    }
    w.cpu_seconds = umem::thread_cpu_time().as_secs_f64();
    w
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

    #[test]
    fn the_key_file_replaces_a_planted_link_and_is_the_owners_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("zc-capture-link-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (target, path) = (dir.join("victim"), dir.join("run.pcap.toml"));
        std::fs::write(&target, "precious").unwrap();
        let _ = std::fs::remove_file(&path);
        std::os::unix::fs::symlink(&target, &path).unwrap();
        write_private(&path, "keys").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_file());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "keys");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn grants_of_two_generations_of_a_region_are_named_not_replayable() {
        let grant = |generation, offset| GrantSpec {
            spi: 1,
            region: 1,
            generation,
            offset,
            len: 100,
            base_seq: 0,
            sha256: None,
        };
        let grants = [grant(1, 0), grant(2, 8192)];
        let config = ReplayConfig {
            keys: Keys {
                master0: "00".repeat(32),
                master1: "11".repeat(32),
            },
            policy: PolicyConfig::default(),
            regions: vec![RegionConfig {
                id: 1,
                len: 1 << 20,
                generation: 2,
                active: true,
            }],
            grants: grants.to_vec(),
        };
        let why = replay_obstacle(&config, &grants).unwrap();
        assert!(why.contains("generations 1 and 2"), "{why}");
        assert_eq!(replay_obstacle(&config, &grants[1..]), None);
    }
}
