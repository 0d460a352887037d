//! Reading captures: classic pcap and pcapng, told apart by their first bytes. Every frame
//! is parsed as Ethernet, so only link type 1 (Ethernet, `LINKTYPE_ETHERNET`) is accepted:
//! in pcap from the file header, in pcapng from the interface each packet names.
//!
//! pcapng timestamps are scaled by their interface's `if_tsresol` (microseconds when it
//! is absent), as the format says.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use pcap_file::DataLink;
use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgReader};

/// What the readers accept, for messages and help texts.
pub const ACCEPTED: &str = "Ethernet (link type 1) in pcap or pcapng";

/// The two formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Classic pcap (libpcap).
    Pcap,
    /// pcapng.
    PcapNg,
}

/// One captured frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Since the Unix epoch.
    pub timestamp: Duration,
    /// Bytes on the wire (more than `data` when the capture was cut short).
    pub orig_len: u32,
    /// The captured bytes.
    pub data: Vec<u8>,
}

enum Inner {
    Pcap(PcapReader<BufReader<File>>),
    PcapNg {
        reader: PcapNgReader<BufReader<File>>,
        /// Per interface: Ethernet, and seconds per timestamp unit as (numerator, divisor).
        interfaces: Vec<(bool, u64)>,
    },
}

/// Frames of a capture, in order.
pub struct Capture {
    inner: Inner,
    path: String,
    frames: u64,
}

/// pcapng's Section Header Block type.
const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

impl Capture {
    /// Opens `path`, a pcap or pcapng capture of Ethernet frames.
    ///
    /// # Errors
    /// Not readable, neither format, or (pcap) not Ethernet.
    pub fn open(path: &Path) -> Result<Self> {
        let shown = path.display().to_string();
        let mut file = File::open(path).with_context(|| format!("cannot open {shown}"))?;
        let mut magic = [0u8; 4];
        // A file shorter than a magic number is neither format: the pcap reader says so.
        let _ = file.read_exact(&mut magic);
        let file = File::open(path).with_context(|| format!("cannot open {shown}"))?;
        let inner = if magic == PCAPNG_MAGIC {
            let reader = PcapNgReader::new(BufReader::new(file))
                .with_context(|| format!("{shown} is not a pcapng file"))?;
            Inner::PcapNg {
                reader,
                interfaces: Vec::new(),
            }
        } else {
            let reader = PcapReader::new(BufReader::new(file)).with_context(|| {
                format!("{shown} is not a pcap file, nor pcapng (this reads {ACCEPTED})")
            })?;
            check_ethernet(&shown, reader.header().datalink)?;
            Inner::Pcap(reader)
        };
        Ok(Self {
            inner,
            path: shown,
            frames: 0,
        })
    }

    /// The capture's format.
    pub fn format(&self) -> Format {
        match self.inner {
            Inner::Pcap(_) => Format::Pcap,
            Inner::PcapNg { .. } => Format::PcapNg,
        }
    }

    /// The next frame; `None` at the end.
    ///
    /// # Errors
    /// A malformed block or packet, or a packet of an interface that is not Ethernet.
    pub fn next_frame(&mut self) -> Option<Result<Frame>> {
        let frame = match &mut self.inner {
            Inner::Pcap(reader) => {
                let nanos = reader.header().ts_resolution == pcap_file::TsResolution::NanoSecond;
                reader.next_raw_packet().map(|raw| {
                    raw.map(|raw| Frame {
                        timestamp: Duration::from_secs(u64::from(raw.ts_sec))
                            + if nanos {
                                Duration::from_nanos(u64::from(raw.ts_frac))
                            } else {
                                Duration::from_micros(u64::from(raw.ts_frac))
                            },
                        orig_len: raw.orig_len,
                        data: raw.data.into_owned(),
                    })
                    .map_err(anyhow::Error::from)
                })
            }
            Inner::PcapNg { reader, interfaces } => next_pcapng(reader, interfaces, &self.path),
        }?;
        self.frames += 1;
        let n = self.frames;
        Some(frame.with_context(|| format!("{}: frame {n} is malformed", self.path)))
    }
}

/// The next packet block of a pcapng file, keeping track of its interfaces.
fn next_pcapng(
    reader: &mut PcapNgReader<BufReader<File>>,
    interfaces: &mut Vec<(bool, u64)>,
    path: &str,
) -> Option<Result<Frame>> {
    loop {
        let block = match reader.next_block()? {
            Ok(b) => b,
            Err(e) => return Some(Err(e.into())),
        };
        match block {
            Block::SectionHeader(_) => interfaces.clear(),
            Block::InterfaceDescription(idb) => {
                let resolution = idb.options.iter().find_map(|o| match o {
                    InterfaceDescriptionOption::IfTsResol(r) => Some(*r),
                    _ => None,
                });
                interfaces.push((
                    idb.linktype == DataLink::ETHERNET,
                    units_per_second(resolution),
                ));
            }
            Block::EnhancedPacket(epb) => {
                let Some(&(ethernet, per_second)) = interfaces.get(epb.interface_id as usize)
                else {
                    return Some(Err(anyhow::anyhow!(
                        "{path}: a packet names interface {} that was never described",
                        epb.interface_id
                    )));
                };
                if !ethernet {
                    return Some(Err(anyhow::anyhow!(
                        "{path}: a packet of interface {} is not Ethernet; this reads {ACCEPTED}",
                        epb.interface_id
                    )));
                }
                // pcap-file reads the raw 64-bit timestamp as nanoseconds: rescale it.
                let units = u64::try_from(epb.timestamp.as_nanos()).unwrap_or(u64::MAX);
                return Some(Ok(Frame {
                    timestamp: scale(units, per_second),
                    orig_len: epb.original_len,
                    data: epb.data.into_owned(),
                }));
            }
            Block::SimplePacket(spb) => {
                if !interfaces.first().is_some_and(|(ethernet, _)| *ethernet) {
                    return Some(Err(anyhow::anyhow!(
                        "{path}: a simple packet block without an Ethernet interface 0; this reads {ACCEPTED}"
                    )));
                }
                return Some(Ok(Frame {
                    timestamp: Duration::ZERO,
                    orig_len: spb.original_len,
                    data: spb.data.into_owned(),
                }));
            }
            _ => {}
        }
    }
}

/// Timestamp units per second from `if_tsresol`: 10^n, or 2^n when its top bit is set;
/// microseconds when absent. Absurd resolutions saturate.
fn units_per_second(resolution: Option<u8>) -> u64 {
    match resolution {
        None => 1_000_000,
        Some(r) if r & 0x80 != 0 => 1u64.checked_shl(u32::from(r & 0x7f)).unwrap_or(u64::MAX),
        Some(r) => 10u64.checked_pow(u32::from(r)).unwrap_or(u64::MAX),
    }
}

/// `units` of 1/`per_second` s as a duration.
fn scale(units: u64, per_second: u64) -> Duration {
    let per_second = per_second.max(1);
    let secs = units / per_second;
    let rest = u128::from(units % per_second);
    let nanos = rest * 1_000_000_000 / u128::from(per_second);
    Duration::new(secs, u32::try_from(nanos).unwrap_or(0))
}

fn check_ethernet(path: &str, link: DataLink) -> Result<()> {
    if link != DataLink::ETHERNET {
        bail!(
            "{path}: link type {link:?} ({}) is not Ethernet (1); this reads {ACCEPTED}",
            u32::from(link)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_resolutions_follow_if_tsresol() {
        assert_eq!(units_per_second(None), 1_000_000);
        assert_eq!(units_per_second(Some(9)), 1_000_000_000);
        assert_eq!(units_per_second(Some(0x80 | 10)), 1024);
        assert_eq!(units_per_second(Some(200)), u64::MAX);
        assert_eq!(scale(1_500_000, 1_000_000), Duration::from_millis(1500));
        assert_eq!(scale(3, 0), Duration::from_secs(3));
    }
}
