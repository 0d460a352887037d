//! Reading and writing classic pcap files the way libpcap's dumper does: Ethernet link
//! type, snaplen 9014, microsecond timestamps, host byte order.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::Path;

use anyhow::{Context, Result, bail};
use pcap_file::pcap::{PcapHeader, PcapReader, PcapWriter, RawPcapPacket};
use pcap_file::{DataLink, Endianness, TsResolution};

/// The reference programs' snaplen and largest frame.
pub const MAX_FRAME: usize = 9014;

/// One input packet.
pub struct Packet {
    pub ts_sec: u32,
    pub ts_usec: u32,
    pub data: Vec<u8>,
}

/// Reads every packet of `path`; partial captures are an error, as in the reference.
pub fn read_all(path: &Path) -> Result<Vec<Packet>> {
    let file = File::open(path).with_context(|| format!("cannot open input {}", path.display()))?;
    let mut reader = PcapReader::new(BufReader::new(file))
        .with_context(|| format!("{} is not a pcap file", path.display()))?;
    let nanos = reader.header().ts_resolution == TsResolution::NanoSecond;
    let mut packets = Vec::new();
    while let Some(raw) = reader.next_raw_packet() {
        let raw = raw.with_context(|| {
            format!(
                "{}: packet {} is malformed",
                path.display(),
                packets.len() + 1
            )
        })?;
        if raw.incl_len != raw.orig_len {
            bail!(
                "{}: packet {}: partial packet captures are not supported",
                path.display(),
                packets.len() + 1
            );
        }
        let ts_usec = if nanos {
            raw.ts_frac / 1000
        } else {
            raw.ts_frac
        };
        packets.push(Packet {
            ts_sec: raw.ts_sec,
            ts_usec,
            data: raw.data.into_owned(),
        });
    }
    Ok(packets)
}

/// Writes pcap files like `pcap_dump` after `pcap_open_dead(DLT_EN10MB, 9014)`.
pub struct Writer {
    inner: PcapWriter<BufWriter<File>>,
}

impl Writer {
    pub fn create(path: &Path) -> Result<Self> {
        let file = File::create(path)
            .with_context(|| format!("cannot create output {}", path.display()))?;
        let header = PcapHeader {
            version_major: 2,
            version_minor: 4,
            ts_correction: 0,
            ts_accuracy: 0,
            snaplen: MAX_FRAME as u32,
            datalink: DataLink::ETHERNET,
            ts_resolution: TsResolution::MicroSecond,
            endianness: Endianness::native(),
        };
        let inner = PcapWriter::with_header(BufWriter::new(file), header)
            .context("cannot write the pcap header")?;
        Ok(Self { inner })
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

    pub fn finish(self) -> Result<()> {
        use std::io::Write;
        self.inner
            .into_writer()
            .flush()
            .context("cannot flush the output")
    }
}
