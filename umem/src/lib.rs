//! AF_XDP for the placement testbed, through libxdp-sys.
//!
//! - [`memory`]: one UMEM holds the placement regions (with guard space) and a pool of
//!   bounce frames; huge pages when reserved, else transparent huge pages. Bounce frames
//!   are reached through owned tokens ([`FrameMut`], [`LentFrame`]).
//! - [`sys`]: the kernel boundary: UMEM registration in unaligned-chunk mode, one socket
//!   per rx queue sharing it (each with its own fill ring), INHIBIT_PROG_LOAD so that our
//!   XDP program stays in charge, zero-copy tried before copy mode, XDP_STATISTICS.
//! - [`ring`]: the ring protocol, over kernel memory or [`fake`] in-memory rings.
//! - [`plan`]: what each fill ring gets (predicted slots or bounce frames) and what each
//!   RX descriptor's fill entry was for.
//! - [`packet`]: an AF_PACKET raw socket for sending whole frames (the sender's fallback).
//! - [`tcp`]: the TCP socket options of the kernel-TCP baselines (MSS, zero-copy receive).
//!
//! With `xdp-prog`, this crate is the workspace's kernel boundary: the only place with
//! `unsafe` code. Its safe API is meant to be sound on its own: ring sides borrow their
//! owner, ring structs handed to libxdp are pinned for the socket's life, and UMEM bytes
//! are referenced only through tokens that the copies respect (see [`memory`]).

pub mod fake;
pub mod memory;
pub mod packet;
pub mod plan;
pub mod ring;
pub mod slots;
pub mod sys;
pub mod tcp;
pub mod udp;

pub use memory::{
    Backing, FrameMut, FrameReturns, GUARD, Layout, LentFrame, MAX_UMEM_LEN, ReceivedFrame,
    RegionSpan, SlotMut, UmemMemory, XDP_PACKET_HEADROOM,
};
pub use plan::{FillPlanner, FrameLanding, Order, PlanStats, Posted, Prediction};
pub use ring::{Consumer, Producer};
pub use sys::{BindMode, Socket, SocketConfig, Umem, XskStats};

/// True when the process runs as root (owns its /proc entry as uid 0), which AF_XDP
/// sockets, XDP programs and packet sockets need.
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The kernel's clock ticks per second (`sysconf(_SC_CLK_TCK)`), the unit of the CPU times
/// in /proc; 100 if the call fails.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf reads a constant of the C library; it takes no pointers.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|t| *t > 0).unwrap_or(100)
}

/// Makes the calling thread run only when a core would otherwise be idle (`SCHED_IDLE`):
/// for helper threads (a capture writer) that must never take a core from the receive
/// loop.
///
/// # Errors
/// [`Error::Io`] when the scheduler refuses.
pub fn run_only_when_idle() -> Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param read during the call; pid 0 is this thread.
    let r = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &raw const param) };
    if r != 0 {
        return Err(Error::Io(
            "sched_setscheduler",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// CLOCK_MONOTONIC in nanoseconds (the clock of `bpf_ktime_get_ns`); 0 if it cannot be read.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is valid for writes; the clock id is a constant.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    if r != 0 {
        return 0;
    }
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

/// CPU time the calling thread has used so far (`CLOCK_THREAD_CPUTIME_ID`); zero if the
/// clock is unavailable.
pub fn thread_cpu_time() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is valid for writes; the clock id is a constant.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut ts) };
    if r != 0 {
        return std::time::Duration::ZERO;
    }
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u32::try_from(ts.tv_nsec).unwrap_or(0);
    std::time::Duration::new(secs, nanos)
}

/// An RX/TX descriptor (struct xdp_desc).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Desc {
    /// UMEM address; in unaligned mode bits 48..64 carry the data offset.
    pub addr: u64,
    /// Bytes of data.
    pub len: u32,
    /// Options (0).
    pub options: u32,
}

const _: () = assert!(std::mem::size_of::<Desc>() == 16);

const OFFSET_SHIFT: u32 = 48;

impl Desc {
    /// The fill address the frame was posted at (bits 0..48).
    pub fn base(&self) -> u64 {
        self.addr & ((1 << OFFSET_SHIFT) - 1)
    }

    /// Where the data starts: base plus the offset in bits 48..64.
    pub fn data_addr(&self) -> u64 {
        self.base() + (self.addr >> OFFSET_SHIFT)
    }
}

/// Errors of the crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call or libxdp call failed.
    #[error("{0}: {1}")]
    Io(&'static str, #[source] std::io::Error),
    /// A layout that cannot work.
    #[error("UMEM layout: {0}")]
    Layout(String),
    /// A bounce frame that is lent, held by a [`FrameMut`] or being copied.
    #[error("bounce frame {0} is held")]
    FrameHeld(u32),
    /// Region bytes held by a [`SlotMut`] (a received payload being opened in place).
    #[error("UMEM bytes {addr:#x}+{len} are held by a received slot")]
    SlotHeld {
        /// Address.
        addr: u64,
        /// Length.
        len: usize,
    },
    /// An access outside the UMEM.
    #[error("UMEM access of {len} bytes at {addr:#x} is out of range")]
    OutOfRange {
        /// Address.
        addr: u64,
        /// Length.
        len: usize,
    },
}

/// Result of the crate.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unaligned_descriptor_addresses_decode() {
        let d = Desc {
            addr: (256u64 << 48) | 0x1_0000,
            len: 1400,
            options: 0,
        };
        assert_eq!(d.base(), 0x1_0000);
        assert_eq!(d.data_addr(), 0x1_0100);
    }
}
