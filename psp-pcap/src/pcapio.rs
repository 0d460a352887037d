//! Reading captures (pcap or pcapng, through [`crate::capture`]) and writing classic
//! pcap files the way libpcap's dumper does: Ethernet link type, snaplen 9014, microsecond
//! timestamps, host byte order.
//!
//! Only Ethernet captures are read. Output goes to a temporary file beside the destination
//! that [`Writer::finish`] renames over it, so a failed run leaves no truncated file and
//! `-i X -o X` cannot destroy its input.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::capture::Capture;
use anyhow::{Context, Result, bail};
use pcap_file::pcap::{PcapHeader, PcapWriter, RawPcapPacket};
use pcap_file::{DataLink, Endianness, TsResolution};

/// The reference programs' snaplen and largest frame.
pub const MAX_FRAME: usize = 9014;

/// One input packet.
pub struct Packet {
    pub ts_sec: u32,
    pub ts_usec: u32,
    pub data: Vec<u8>,
}

/// Reads every packet of `path` (pcap or pcapng, Ethernet); partial captures are an
/// error, as in the reference.
pub fn read_all(path: &Path) -> Result<Vec<Packet>> {
    let mut capture = Capture::open(path)?;
    let mut packets = Vec::new();
    while let Some(frame) = capture.next_frame() {
        let frame = frame?;
        if frame.data.len() != frame.orig_len as usize {
            bail!(
                "{}: packet {}: partial packet captures are not supported",
                path.display(),
                packets.len() + 1
            );
        }
        packets.push(Packet {
            ts_sec: u32::try_from(frame.timestamp.as_secs()).unwrap_or(u32::MAX),
            ts_usec: frame.timestamp.subsec_micros(),
            data: frame.data,
        });
    }
    Ok(packets)
}

/// A temporary file beside its destination, removed unless [`TempFile::persist`] renamed
/// it into place.
struct TempFile {
    path: PathBuf,
    dest: PathBuf,
    persisted: bool,
}

impl TempFile {
    /// Creates `.NAME.PID.N.tmp` in the destination's directory (a rename there is atomic),
    /// with the destination's permissions when it exists.
    fn create_beside(dest: &Path) -> Result<(File, Self)> {
        let name = dest
            .file_name()
            .with_context(|| format!("output {} names no file", dest.display()))?;
        let dir = match dest.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        for n in 0..100 {
            let mut tmp_name = std::ffi::OsString::from(".");
            tmp_name.push(name);
            tmp_name.push(format!(".{}.{n}.tmp", std::process::id()));
            let path = dir.join(tmp_name);
            match File::options().write(true).create_new(true).open(&path) {
                Ok(file) => {
                    if let Ok(meta) = std::fs::metadata(dest) {
                        // Best effort: the output keeps the permissions of what it replaces.
                        let _ = file.set_permissions(meta.permissions());
                    }
                    let temp = Self {
                        path,
                        dest: dest.to_path_buf(),
                        persisted: false,
                    };
                    return Ok((file, temp));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!(
                            "cannot create output {} (temporary file {})",
                            dest.display(),
                            path.display()
                        )
                    });
                }
            }
        }
        bail!(
            "cannot create output {}: no free temporary file name in {}",
            dest.display(),
            dir.display()
        )
    }

    /// Renames the file over its destination.
    fn persist(mut self) -> Result<()> {
        std::fs::rename(&self.path, &self.dest).with_context(|| {
            format!(
                "cannot rename {} to {}",
                self.path.display(),
                self.dest.display()
            )
        })?;
        self.persisted = true;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.persisted {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Writes pcap files like `pcap_dump` after `pcap_open_dead(DLT_EN10MB, 9014)`.
pub struct Writer {
    inner: PcapWriter<BufWriter<File>>,
    /// None when writing straight into a destination that is not a regular file.
    temp: Option<TempFile>,
}

/// Where output for `path` goes: its temporary file, or `path` itself when it exists and
/// is not a regular file (`/dev/null`, a FIFO: a rename cannot replace those). A symbolic
/// link is followed, so the link stays and its target is replaced.
fn open_output(path: &Path) -> Result<(File, Option<TempFile>)> {
    let dest = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    if std::fs::metadata(&dest).is_ok_and(|m| !m.is_file()) {
        let file = File::create(&dest)
            .with_context(|| format!("cannot create output {}", path.display()))?;
        return Ok((file, None));
    }
    let (file, temp) = TempFile::create_beside(&dest)?;
    Ok((file, Some(temp)))
}

impl Writer {
    pub fn create(path: &Path) -> Result<Self> {
        let (file, temp) = open_output(path)?;
        let header = PcapHeader {
            version_major: 2,
            version_minor: 4,
            ts_correction: 0,
            ts_accuracy: 0,
            snaplen: u32::try_from(MAX_FRAME).unwrap_or(u32::MAX),
            datalink: DataLink::ETHERNET,
            ts_resolution: TsResolution::MicroSecond,
            endianness: Endianness::native(),
        };
        let inner = PcapWriter::with_header(BufWriter::new(file), header)
            .context("cannot write the pcap header")?;
        Ok(Self { inner, temp })
    }

    pub fn write(&mut self, ts_sec: u32, ts_usec: u32, data: &[u8]) -> Result<()> {
        let len = u32::try_from(data.len()).context("frame too long")?;
        let raw = RawPcapPacket {
            ts_sec,
            ts_frac: ts_usec,
            incl_len: len,
            orig_len: len,
            data: data.into(),
        };
        self.inner
            .write_raw_packet(&raw)
            .context("cannot write a packet")?;
        Ok(())
    }

    /// Flushes the output and, when it went to a temporary file, syncs it and renames it
    /// over the destination. Without this call (a failed run), the temporary file is
    /// removed and the destination is left as it was.
    pub fn finish(self) -> Result<()> {
        let mut out = self.inner.into_writer();
        out.flush().context("cannot flush the output")?;
        if let Some(temp) = self.temp {
            let file = out.into_inner().context("cannot flush the output")?;
            file.sync_all().context("cannot sync the output")?;
            temp.persist()?;
        }
        Ok(())
    }
}
