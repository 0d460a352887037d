//! Loading and attaching the XDP program (built by build.rs from `xdp-prog`), and access
//! to its maps: the XSKMAP, the header ring and the per-CPU counters.

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;

use anyhow::{Context, Result};
use aya::Ebpf;
use aya::maps::{Array, MapData, PerCpuArray, RingBuf, XskMap};
use aya::programs::{Xdp, XdpMode};
use xdp_common::{CaptureExt, Counter, HeaderRecord, PROGRAM, landing, map};

/// The loaded and attached program with its maps. Detaches when dropped.
pub struct XdpProgram {
    // Kept alive: dropping it detaches the program.
    _ebpf: Ebpf,
    xsks: XskMap<MapData>,
    headers: RingBuf<MapData>,
    counters: PerCpuArray<MapData, u64>,
    landing: Array<MapData, u32>,
    /// "native" or "generic".
    pub mode: &'static str,
}

impl XdpProgram {
    /// Loads the program and attaches it to `ifname`, in native mode when the driver
    /// supports it, else generic.
    ///
    /// # Errors
    /// Not root (EPERM), no such interface, or the verifier refusing the program.
    pub fn attach(ifname: &str) -> Result<Self> {
        let mut ebpf = Ebpf::load(aya::include_bytes_aligned!(concat!(
            env!("OUT_DIR"),
            "/xdp-prog"
        )))
        .context("loading the XDP program (root needed)")?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .context("XDP program missing from the object")?
            .try_into()?;
        program
            .load()
            .context("the verifier refused the XDP program")?;
        let mode = match program.attach(ifname, XdpMode::Driver) {
            Ok(_) => "native",
            Err(native) => {
                tracing::warn!("native XDP on {ifname} refused ({native}); using generic XDP");
                program
                    .attach(ifname, XdpMode::Skb)
                    .with_context(|| format!("attaching XDP to {ifname}"))?;
                "generic"
            }
        };
        let take = |ebpf: &mut Ebpf, name: &str| {
            ebpf.take_map(name)
                .with_context(|| format!("map {name} missing from the XDP object"))
        };
        let xsks = XskMap::try_from(take(&mut ebpf, map::XSKS)?)?;
        let headers = RingBuf::try_from(take(&mut ebpf, map::HEADERS)?)?;
        let counters = PerCpuArray::try_from(take(&mut ebpf, map::COUNTERS)?)?;
        let landing = Array::try_from(take(&mut ebpf, map::LANDING)?)?;
        Ok(Self {
            _ebpf: ebpf,
            xsks,
            headers,
            counters,
            landing,
            mode,
        })
    }

    /// Lands whole frames of at most `frame_cap` bytes from now on: with their ICV (as a
    /// zero-copy NIC's DMA does), or without it (the PSP-offload model).
    ///
    /// # Errors
    /// The map update failing.
    pub fn land_whole_frames(&mut self, frame_cap: u32, with_icv: bool) -> Result<()> {
        let mode = if with_icv {
            landing::WHOLE
        } else {
            landing::WHOLE_WITHOUT_ICV
        };
        self.landing
            .set(landing::FRAME_CAP, frame_cap, 0)
            .and_then(|()| self.landing.set(landing::MODE, mode, 0))
            .context("LANDING map")
    }

    /// Makes every record carry the frame's outer headers and arrival time from now on
    /// (`--capture`).
    ///
    /// # Errors
    /// The map update failing.
    pub fn capture_outer_headers(&mut self) -> Result<()> {
        self.landing
            .set(landing::CAPTURE, 1, 0)
            .context("LANDING map")
    }

    /// Routes rx queue `queue` to socket `fd`.
    ///
    /// # Errors
    /// The map update failing.
    pub fn add_socket(&mut self, queue: u32, fd: impl AsRawFd) -> Result<()> {
        self.xsks
            .set(queue, fd, 0)
            .with_context(|| format!("XSKMAP entry for queue {queue}"))
    }

    /// Moves every header record available now into `out`, with its capture extension
    /// when it has one; returns how many were unreadable (shorter than a record).
    pub fn drain_headers(&mut self, mut out: impl FnMut(HeaderRecord, Option<CaptureExt>)) -> u64 {
        let mut bad = 0;
        while let Some(item) = self.headers.next() {
            match HeaderRecord::from_bytes(&item) {
                Some(r) => out(r, CaptureExt::from_record_bytes(&item)),
                None => bad += 1,
            }
        }
        bad
    }

    /// The program's counters, summed over CPUs.
    pub fn counters(&self) -> BTreeMap<&'static str, u64> {
        Counter::ALL
            .iter()
            .map(|c| {
                let n = self
                    .counters
                    .get(&(*c as u32), 0)
                    .map(|v| v.iter().sum())
                    .unwrap_or(0);
                (c.as_str(), n)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The receiver takes the program's maps by the names xdp-common declares; the program
    /// must carry exactly those (parsed from the object, no kernel needed).
    #[test]
    fn the_program_names_its_maps_as_xdp_common_does() {
        let object = aya_obj::Object::parse(aya::include_bytes_aligned!(concat!(
            env!("OUT_DIR"),
            "/xdp-prog"
        )))
        .expect("the XDP object parses");
        for name in [
            map::HEADERS,
            map::XSKS,
            map::COUNTERS,
            map::QUEUE_SEQ,
            map::LANDING,
        ] {
            assert!(
                object.maps.contains_key(name),
                "map {name} missing: {:?}",
                object.maps.keys().collect::<Vec<_>>()
            );
        }
        assert!(object.programs.contains_key(PROGRAM));
    }
}
