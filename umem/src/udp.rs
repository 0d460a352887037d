//! Kernel UDP with segmentation offload: `sendmmsg(2)` of datagrams that each carry a run
//! of equal-sized segments and a `UDP_SEGMENT` control message, so that one system call
//! sends many packets and the kernel (or the NIC) cuts them. The sender's third transmit
//! path, beside AF_XDP and AF_PACKET.

use std::io::IoSlice;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

/// Most segments in one datagram (the kernel's `UDP_MAX_SEGMENTS` is 64 or more).
pub const MAX_SEGMENTS: usize = 64;
/// Most bytes in one datagram: an IPv4 packet's 65,535 less its headers.
pub const MAX_DATAGRAM: usize = 65_507;
/// Most datagrams in one `sendmmsg` call.
pub const MAX_BATCH: usize = 64;

/// One datagram: segments sent back to back, each `segment_size` bytes except a shorter
/// last one. The kernel gathers the slices without copying them first.
#[derive(Debug, Clone, Copy)]
pub struct Datagram<'a> {
    /// The segments' bytes.
    pub segments: &'a [IoSlice<'a>],
    /// Size of every segment but the last.
    pub segment_size: u16,
}

/// `sockaddr_in` or `sockaddr_in6` of a destination.
#[derive(Clone, Copy)]
#[repr(C)]
union RawAddr {
    v4: libc::sockaddr_in,
    v6: libc::sockaddr_in6,
}

fn raw_addr(addr: SocketAddr) -> (RawAddr, libc::socklen_t) {
    #[allow(clippy::cast_possible_truncation, reason = "AF_INET and AF_INET6 fit")]
    match addr {
        SocketAddr::V4(a) => (
            RawAddr {
                v4: libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(a.ip().octets()),
                    },
                    sin_zero: [0; 8],
                },
            },
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        ),
        SocketAddr::V6(a) => (
            RawAddr {
                v6: libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.ip().octets(),
                    },
                    sin6_scope_id: a.scope_id(),
                },
            },
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
        ),
    }
}

/// Space for one `UDP_SEGMENT` control message (a u16), aligned for `cmsghdr`.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct SegmentCmsg([u8; 32]);

/// A UDP socket bound to one local address, not connected: ICMP errors from the receiver
/// (port 1000 has no socket there when a frame reaches its stack) do not fail later sends.
#[derive(Debug)]
pub struct GsoSocket {
    socket: UdpSocket,
}

impl GsoSocket {
    /// Binds a UDP socket to `local`.
    ///
    /// # Errors
    /// bind(2)'s error (the address is not the host's, the port is taken).
    pub fn bind(local: SocketAddr) -> std::io::Result<Self> {
        Ok(Self {
            socket: UdpSocket::bind(local)?,
        })
    }

    /// The bound address.
    ///
    /// # Errors
    /// getsockname(2)'s error.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Sends `datagrams` to `dst` in one `sendmmsg` call (at most [`MAX_BATCH`]; a
    /// datagram of more than one segment carries `UDP_SEGMENT`). Returns how many were
    /// sent: the first n; the rest were not. The kernel copied what it sent.
    ///
    /// # Errors
    /// InvalidInput for an empty datagram, more than [`MAX_SEGMENTS`] segments or
    /// [`MAX_DATAGRAM`] bytes, a segment longer than `segment_size`, or more than
    /// [`MAX_BATCH`] datagrams; else sendmmsg(2)'s error for the first datagram
    /// (ENOBUFS or EAGAIN when the queue is full: try again).
    pub fn send(&self, dst: SocketAddr, datagrams: &[Datagram<'_>]) -> std::io::Result<usize> {
        if datagrams.is_empty() {
            return Ok(0);
        }
        if datagrams.len() > MAX_BATCH || !datagrams.iter().all(valid) {
            return Err(std::io::ErrorKind::InvalidInput.into());
        }
        let (mut addr, addr_len) = raw_addr(dst);
        let mut cmsgs = vec![SegmentCmsg([0; 32]); datagrams.len()];
        let mut headers: Vec<libc::mmsghdr> = Vec::with_capacity(datagrams.len());
        for (d, space) in datagrams.iter().zip(cmsgs.iter_mut()) {
            // SAFETY: mmsghdr is plain data; all zeroes is a valid (empty) value.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_name = (&raw mut addr).cast();
            h.msg_hdr.msg_namelen = addr_len;
            // IoSlice is ABI-compatible with iovec; the kernel only reads through it.
            h.msg_hdr.msg_iov = d.segments.as_ptr().cast_mut().cast();
            h.msg_hdr.msg_iovlen = d.segments.len();
            if d.segments.len() > 1 {
                write_segment_cmsg(&mut h.msg_hdr, space, d.segment_size);
            }
            headers.push(h);
        }
        let count = u32::try_from(headers.len()).map_err(|_| std::io::ErrorKind::InvalidInput)?;
        // SAFETY: every header points at memory that lives until the call returns: `addr`,
        // the caller's slices (IoSlice has iovec's layout) and `cmsgs`, each with its
        // length; the kernel writes only msg_len of each header.
        let sent =
            unsafe { libc::sendmmsg(self.socket.as_raw_fd(), headers.as_mut_ptr(), count, 0) };
        usize::try_from(sent).map_err(|_| std::io::Error::last_os_error())
    }
}

/// A datagram the kernel would accept.
fn valid(d: &Datagram<'_>) -> bool {
    let size = usize::from(d.segment_size);
    let total: usize = d.segments.iter().map(|s| s.len()).sum();
    !d.segments.is_empty()
        && d.segments.len() <= MAX_SEGMENTS
        && total <= MAX_DATAGRAM
        && size > 0
        && d.segments.iter().all(|s| s.len() <= size)
        && d.segments[..d.segments.len() - 1]
            .iter()
            .all(|s| s.len() == size)
}

/// Fills `space` with a `UDP_SEGMENT` control message of `size` and points `hdr` at it.
fn write_segment_cmsg(hdr: &mut libc::msghdr, space: &mut SegmentCmsg, size: u16) {
    // SAFETY: CMSG_SPACE only computes a length.
    let needed = unsafe { libc::CMSG_SPACE(2) } as usize;
    debug_assert!(needed <= space.0.len());
    hdr.msg_control = space.0.as_mut_ptr().cast();
    hdr.msg_controllen = needed;
    // SAFETY: msg_control points at `needed` bytes aligned for cmsghdr (SegmentCmsg is
    // 8-aligned and 32 bytes), so CMSG_FIRSTHDR returns a pointer into it, and CMSG_DATA
    // leaves room for the u16 (CMSG_LEN(2) ≤ CMSG_SPACE(2)).
    unsafe {
        let c = libc::CMSG_FIRSTHDR(hdr);
        (*c).cmsg_level = libc::SOL_UDP;
        (*c).cmsg_type = libc::UDP_SEGMENT;
        (*c).cmsg_len = libc::CMSG_LEN(2) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), size);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receiver() -> UdpSocket {
        let r = UdpSocket::bind("127.0.0.1:0").unwrap();
        r.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        r
    }

    #[test]
    fn segments_arrive_as_separate_datagrams_in_order() {
        let r = receiver();
        let s = GsoSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let a = [1u8; 100];
        let b = [2u8; 100];
        let c = [3u8; 40];
        let first = [IoSlice::new(&a), IoSlice::new(&b), IoSlice::new(&c)];
        let d = [4u8; 7];
        let second = [IoSlice::new(&d)];
        let sent = s
            .send(
                r.local_addr().unwrap(),
                &[
                    Datagram {
                        segments: &first,
                        segment_size: 100,
                    },
                    Datagram {
                        segments: &second,
                        segment_size: 7,
                    },
                ],
            )
            .unwrap();
        assert_eq!(sent, 2);
        let mut buf = [0u8; 2048];
        for (len, byte) in [(100, 1), (100, 2), (40, 3), (7, 4)] {
            let (n, from) = r.recv_from(&mut buf).unwrap();
            assert_eq!(n, len);
            assert!(buf[..n].iter().all(|x| *x == byte));
            assert_eq!(from, s.local_addr().unwrap());
        }
    }

    #[test]
    fn datagrams_the_kernel_would_refuse_are_refused_first() {
        let s = GsoSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let dst: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let long = [0u8; 101];
        let short = [0u8; 50];
        // A segment longer than the segment size.
        let bad = [IoSlice::new(&short), IoSlice::new(&long)];
        let cases: [&[IoSlice<'_>]; 2] = [&bad, &[]];
        for segments in cases {
            let e = s
                .send(
                    dst,
                    &[Datagram {
                        segments,
                        segment_size: 100,
                    }],
                )
                .unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
        }
        // A short segment before the last.
        let uneven = [IoSlice::new(&short), IoSlice::new(&short)];
        let e = s
            .send(
                dst,
                &[Datagram {
                    segments: &uneven,
                    segment_size: 100,
                }],
            )
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
        assert_eq!(s.send(dst, &[]).unwrap(), 0);
    }
}
