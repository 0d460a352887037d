//! AF_PACKET raw sockets: whole Ethernet frames sent on one interface, the kernel choosing
//! the queue. The sender's fallback where AF_XDP is not available.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::{Error, Result};

/// Length of an Ethernet header: the least a frame must have.
const ETH_HLEN: usize = 14;
#[allow(clippy::cast_possible_truncation, reason = "AF_PACKET is 17")]
const FAMILY: libc::c_ushort = libc::AF_PACKET as libc::c_ushort;
#[allow(clippy::cast_possible_truncation, reason = "a 20-byte struct")]
const SLL_LEN: libc::socklen_t = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;

/// A raw AF_PACKET socket bound to nothing, sending to one interface.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: i32,
}

impl PacketSocket {
    /// Opens a raw socket that sends on `ifname`.
    ///
    /// # Errors
    /// [`Error::Io`]: no such interface (ENODEV), a name with a NUL byte, or socket(2)
    /// failing (EPERM without CAP_NET_RAW).
    pub fn open(ifname: &str) -> Result<Self> {
        let name = CString::new(ifname).map_err(|_| {
            Error::Io(
                "interface name",
                std::io::Error::from(std::io::ErrorKind::InvalidInput),
            )
        })?;
        // SAFETY: a valid NUL-terminated string, read only during the call.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(Error::Io(
                "if_nametoindex",
                std::io::Error::from_raw_os_error(libc::ENODEV),
            ));
        }
        let ifindex = i32::try_from(ifindex).map_err(|_| {
            Error::Io(
                "if_nametoindex",
                std::io::Error::from_raw_os_error(libc::ERANGE),
            )
        })?;
        // SAFETY: plain socket(2) call, no pointers.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(Error::Io(
                "AF_PACKET socket",
                std::io::Error::last_os_error(),
            ));
        }
        Ok(Self {
            // SAFETY: fd is a fresh descriptor that nothing else owns.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            ifindex,
        })
    }

    /// The interface's index.
    pub fn ifindex(&self) -> i32 {
        self.ifindex
    }

    /// Sends one whole Ethernet frame (its first six bytes, the destination MAC address,
    /// are also the link-layer destination). The kernel copies it: `frame` is free again
    /// when this returns.
    ///
    /// # Errors
    /// InvalidInput for a frame shorter than an Ethernet header; else sendto(2)'s error
    /// (ENOBUFS when the queue is full: try again).
    pub fn send(&self, frame: &[u8]) -> std::io::Result<()> {
        let Some(dst) = frame.get(..6).filter(|_| frame.len() >= ETH_HLEN) else {
            return Err(std::io::ErrorKind::InvalidInput.into());
        };
        let mut addr = [0u8; 8];
        addr[..6].copy_from_slice(dst);
        let sll = libc::sockaddr_ll {
            sll_family: FAMILY,
            sll_protocol: 0,
            sll_ifindex: self.ifindex,
            sll_hatype: 0,
            sll_pkttype: 0,
            sll_halen: 6,
            sll_addr: addr,
        };
        // SAFETY: `frame` is valid for reads of its length and `sll` is a complete
        // sockaddr_ll whose size is passed; both are only read during the call.
        let r = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const sll).cast(),
                SLL_LEN,
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_interfaces_and_bad_names_are_refused() {
        assert!(PacketSocket::open("no-such-if0").is_err());
        assert!(PacketSocket::open("bad\0name").is_err());
    }

    /// Needs CAP_NET_RAW: skipped otherwise.
    #[test]
    fn frames_are_sent_on_loopback_and_short_ones_refused() {
        let s = match PacketSocket::open("lo") {
            Ok(s) => s,
            Err(e) => {
                eprintln!("skipping: {e}");
                return;
            }
        };
        assert!(s.ifindex() > 0);
        let mut frame = [0u8; 60];
        frame[12..14].copy_from_slice(&0x88b5u16.to_be_bytes()); // local experimental
        s.send(&frame).unwrap();
        let e = s.send(&frame[..13]).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    }
}
