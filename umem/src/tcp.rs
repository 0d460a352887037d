//! The TCP socket options the kernel-TCP baselines need: the MSS (`TCP_MAXSEG`), and the
//! kernel's own zero-copy receive (`TCP_ZEROCOPY_RECEIVE`: received pages mapped into a
//! mapping of the socket instead of copied).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Sets the socket's maximum segment size (before connecting, so that the handshake
/// announces it).
///
/// # Errors
/// The kernel refused the value.
pub fn set_max_segment(socket: BorrowedFd<'_>, mss: u32) -> io::Result<()> {
    let value = libc::c_int::try_from(mss).map_err(|_| io::Error::other("MSS too large"))?;
    setsockopt_int(socket, libc::IPPROTO_TCP, libc::TCP_MAXSEG, value)
}

/// The socket's maximum segment size now (after connecting: what was agreed).
///
/// # Errors
/// The call failed.
pub fn max_segment(socket: BorrowedFd<'_>) -> io::Result<u32> {
    let mut value: libc::c_int = 0;
    let mut len = socklen::<libc::c_int>();
    // SAFETY: `value` and `len` are valid for writes of the sizes given; the fd is
    // borrowed, so it is open for the call.
    let r = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MAXSEG,
            (&raw mut value).cast(),
            &raw mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    u32::try_from(value).map_err(|_| io::Error::other("negative MSS"))
}

/// The size of a `T` as a socket option length (option structs are small).
fn socklen<T>() -> libc::socklen_t {
    libc::socklen_t::try_from(size_of::<T>()).unwrap_or(libc::socklen_t::MAX)
}

fn setsockopt_int(
    socket: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` is valid for reads of the size given; the fd is borrowed, so it is
    // open for the call.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            socklen::<libc::c_int>(),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `struct tcp_zerocopy_receive` (linux/tcp.h, 6.x layout: 64 bytes).
#[repr(C)]
#[derive(Debug, Default)]
struct TcpZerocopyReceive {
    address: u64,
    length: u32,
    recv_skip_hint: u32,
    inq: u32,
    err: i32,
    copybuf_address: u64,
    copybuf_len: i32,
    flags: u32,
    msg_control: u64,
    msg_controllen: u64,
    msg_flags: u32,
    reserved: u32,
}

const _: () = assert!(size_of::<TcpZerocopyReceive>() == 64);

/// What one zero-copy receive call gave.
#[derive(Debug)]
pub struct Mapped<'a> {
    /// Received bytes mapped read-only into the mapping (whole pages), valid until the next
    /// call.
    pub bytes: &'a [u8],
    /// Bytes the kernel could not map (not in page-aligned, page-sized fragments): read them
    /// with `read` before calling again.
    pub skip: usize,
    /// Bytes still queued on the socket.
    pub queued: usize,
}

/// The kernel's zero-copy TCP receive on one socket: received pages are mapped into a
/// read-only mapping of the socket instead of copied (`TCP_ZEROCOPY_RECEIVE`). Each call
/// replaces what the previous one mapped, so the bytes it returns borrow `self` mutably.
#[derive(Debug)]
pub struct ZeroCopyReceive<'s> {
    socket: BorrowedFd<'s>,
    map: std::ptr::NonNull<u8>,
    len: usize,
}

impl<'s> ZeroCopyReceive<'s> {
    /// Maps `len` bytes (rounded up to whole pages) of `socket`.
    ///
    /// # Errors
    /// `mmap` refused (not a TCP socket, or the kernel lacks zero-copy receive).
    pub fn new(socket: BorrowedFd<'s>, len: usize) -> io::Result<Self> {
        let page = page_size();
        let len = len
            .max(page)
            .div_ceil(page)
            .checked_mul(page)
            .ok_or_else(|| io::Error::other("mapping too large"))?;
        // SAFETY: a fresh shared read-only mapping of the socket; no memory of ours is
        // passed in, and the result is checked.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                socket.as_raw_fd(),
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let map = std::ptr::NonNull::new(map.cast::<u8>())
            .ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Self { socket, map, len })
    }

    /// Maps up to `want` received bytes (whole pages only).
    ///
    /// # Errors
    /// The call failed, or the socket has an error.
    pub fn receive(&mut self, want: usize) -> io::Result<Mapped<'_>> {
        let mut zc = TcpZerocopyReceive {
            address: self.map.as_ptr() as u64,
            length: u32::try_from(want.min(self.len)).unwrap_or(u32::MAX),
            ..TcpZerocopyReceive::default()
        };
        let mut optlen = socklen::<TcpZerocopyReceive>();
        // SAFETY: `zc` and `optlen` are valid for reads and writes of the sizes given; the
        // address names our own mapping of this socket, of at least `length` bytes, which
        // no reference into it outlives (the returned slice borrows `self` mutably, and
        // this call replaces its pages).
        let r = unsafe {
            libc::getsockopt(
                self.socket.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_ZEROCOPY_RECEIVE,
                (&raw mut zc).cast(),
                &raw mut optlen,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        if zc.err != 0 {
            let errno = i32::try_from(zc.err.unsigned_abs()).unwrap_or(libc::EIO);
            return Err(io::Error::from_raw_os_error(errno));
        }
        let mapped = (zc.length as usize).min(self.len);
        // SAFETY: the kernel mapped `mapped` bytes at the start of our mapping (read-only,
        // valid until the next call or the unmapping, which need `&mut self`).
        let bytes = unsafe { std::slice::from_raw_parts(self.map.as_ptr(), mapped) };
        Ok(Mapped {
            bytes,
            skip: zc.recv_skip_hint as usize,
            queued: zc.inq as usize,
        })
    }
}

impl Drop for ZeroCopyReceive<'_> {
    fn drop(&mut self) {
        // SAFETY: our own mapping of `len` bytes; no slice into it outlives `self`.
        unsafe { libc::munmap(self.map.as_ptr().cast(), self.len) };
    }
}

/// `SO_ZEROCOPY` (asm-generic/socket.h).
const SO_ZEROCOPY: libc::c_int = 60;
/// `SO_EE_ORIGIN_ZEROCOPY` (linux/errqueue.h).
const SO_EE_ORIGIN_ZEROCOPY: u8 = 5;
/// `SO_EE_CODE_ZEROCOPY_COPIED`: the kernel copied after all.
const SO_EE_CODE_ZEROCOPY_COPIED: u8 = 1;

/// `MSG_ZEROCOPY` sending on one socket: the kernel transmits from the caller's pages
/// instead of copying them, and says on the socket's error queue when it no longer needs
/// them. The kernel numbers a socket's zero-copy sends from 0 for the socket's whole life,
/// so one sender per socket counts them: [`send`](Self::send) borrows its buffer only
/// for the call, and returns once every send made so far is reported complete, so the
/// buffer cannot change under the kernel.
#[derive(Debug)]
pub struct ZeroCopySender<'s> {
    socket: BorrowedFd<'s>,
    /// Send calls made on the socket (the kernel's next completion number).
    calls: u64,
    /// Send calls reported complete (ranges counted, in whatever order they come).
    completed: u64,
    /// Of those, the ones the kernel copied after all.
    copied: u64,
}

/// How long [`ZeroCopySender::send`] waits for the kernel to release the buffer.
const COMPLETION_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

impl<'s> ZeroCopySender<'s> {
    /// Enables `SO_ZEROCOPY` on `socket`.
    ///
    /// # Errors
    /// The kernel refused `SO_ZEROCOPY`.
    pub fn new(socket: BorrowedFd<'s>) -> io::Result<Self> {
        setsockopt_int(socket, libc::SOL_SOCKET, SO_ZEROCOPY, 1)?;
        Ok(Self {
            socket,
            calls: 0,
            completed: 0,
            copied: 0,
        })
    }

    /// Send calls the kernel copied after all, so far.
    pub fn copied(&self) -> u64 {
        self.copied
    }

    /// Sends all of `buf` (blocking), then waits until the kernel released it.
    ///
    /// # Errors
    /// A send or the error queue failed, or the kernel kept the pages for 30 s.
    pub fn send(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut at = 0;
        while at < buf.len() {
            let rest = &buf[at..];
            // SAFETY: `rest` is valid for reads of its length and stays borrowed, so
            // unchanged, until every completion is in (`wait` below, before returning).
            let n = unsafe {
                libc::send(
                    self.socket.as_raw_fd(),
                    rest.as_ptr().cast(),
                    rest.len(),
                    libc::MSG_ZEROCOPY,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    // Too many pages pinned: let completions come in, then retry.
                    Some(libc::ENOBUFS) => {
                        self.drain(true)?;
                        continue;
                    }
                    _ => {
                        // What was sent may still be in the kernel's hands.
                        self.wait()?;
                        return Err(e);
                    }
                }
            }
            at += usize::try_from(n).unwrap_or(0);
            self.calls += 1;
            self.drain(false)?;
        }
        self.wait()
    }

    /// Waits until every send call so far is reported complete.
    fn wait(&mut self) -> io::Result<()> {
        let give_up = std::time::Instant::now() + COMPLETION_WAIT;
        while self.completed < self.calls {
            if std::time::Instant::now() > give_up {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "MSG_ZEROCOPY: the kernel kept the buffer's pages for 30 s",
                ));
            }
            self.drain(true)?;
        }
        Ok(())
    }

    /// Reads the completions queued on the error queue (`block`: waits up to 100 ms for
    /// one first).
    fn drain(&mut self, block: bool) -> io::Result<()> {
        if block {
            let mut pfd = libc::pollfd {
                fd: self.socket.as_raw_fd(),
                events: 0,
                revents: 0,
            };
            // SAFETY: one valid pollfd; POLLERR is always reported.
            let r = unsafe { libc::poll(&raw mut pfd, 1, 100) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
        while let Some(next) = self.read_completion()? {
            if let Some((first, last, copied)) = next {
                let covered = u64::from(last.wrapping_sub(first)) + 1;
                self.completed += covered;
                if copied {
                    self.copied += covered;
                }
            }
        }
        Ok(())
    }

    /// One message from the error queue: `Some(range of send calls it completes, copied)`
    /// for a zero-copy completion, `None` for another message. `None` outside when the
    /// queue is empty.
    #[allow(clippy::option_option)]
    fn read_completion(&self) -> io::Result<Option<Option<(u32, u32, bool)>>> {
        let mut control = [0u64; 16];
        // SAFETY: an all-zero msghdr is valid (no name, no data).
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = size_of_val(&control);
        // SAFETY: `msg` points to our control buffer, valid for its length; no data
        // buffers.
        let r = unsafe {
            libc::recvmsg(
                self.socket.as_raw_fd(),
                &raw mut msg,
                libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock => Ok(None),
                io::ErrorKind::Interrupted => Ok(Some(None)),
                _ => Err(e),
            };
        }
        let err_len = u32::try_from(size_of::<libc::sock_extended_err>()).unwrap_or(u32::MAX);
        // SAFETY: CMSG_LEN is arithmetic on its argument; it reads no memory.
        let wanted = unsafe { libc::CMSG_LEN(err_len) };
        // SAFETY: the kernel filled `msg`'s control buffer; CMSG_FIRSTHDR / CMSG_NXTHDR
        // walk it within msg_controllen.
        let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&raw const msg) };
        while !cmsg.is_null() {
            // SAFETY: `cmsg` is a header inside the control buffer.
            let c = unsafe { &*cmsg };
            let recverr = (c.cmsg_level == libc::SOL_IP && c.cmsg_type == libc::IP_RECVERR)
                || (c.cmsg_level == libc::SOL_IPV6 && c.cmsg_type == libc::IPV6_RECVERR);
            if recverr && c.cmsg_len as usize >= wanted as usize {
                // SAFETY: a RECVERR message long enough for a sock_extended_err, read
                // unaligned from its data.
                let err = unsafe {
                    libc::CMSG_DATA(cmsg)
                        .cast::<libc::sock_extended_err>()
                        .read_unaligned()
                };
                if err.ee_origin == SO_EE_ORIGIN_ZEROCOPY {
                    let copied = err.ee_code & SO_EE_CODE_ZEROCOPY_COPIED != 0;
                    return Ok(Some(Some((err.ee_info, err.ee_data, copied))));
                }
            }
            // SAFETY: as above.
            cmsg = unsafe { libc::CMSG_NXTHDR(&raw const msg, cmsg) };
        }
        Ok(Some(None))
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf reads a constant of the C library; it takes no pointers.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(page)
        .ok()
        .filter(|p| *p > 0)
        .unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsFd;

    /// Over loopback: every byte sent arrives, mapped or read, in order; the MSS set on the
    /// listener is what the connection agrees on.
    #[test]
    fn zero_copy_receive_gives_every_byte_in_order_mapped_or_to_read() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        // A page of payload per segment, plus the 12-byte timestamp option.
        set_max_segment(listener.as_fd(), 4096 + 12).unwrap();
        let addr = listener.local_addr().unwrap();
        let message: Vec<u8> = (0..1u32 << 20)
            .map(|i| (i.wrapping_mul(7) ^ (i >> 12)).to_le_bytes()[0])
            .collect();
        let sent = message.clone();
        let sender = std::thread::spawn(move || {
            // Page-aligned memory, sent with MSG_ZEROCOPY: the receiver gets whole pages.
            let layout = crate::Layout::new(&[(1, 1 << 20)], 1, 2048).unwrap();
            let memory = crate::UmemMemory::with_layout(&layout).unwrap();
            let base = layout.region(1).unwrap().base;
            let mut slot = memory.slot_mut(base, sent.len()).unwrap();
            slot.as_mut_slice().copy_from_slice(&sent);
            let s = TcpStream::connect(addr).unwrap();
            let mut sender = ZeroCopySender::new(s.as_fd()).unwrap();
            // Two sends on one socket: the second counts its completions from where the
            // first ended.
            let half = sent.len() / 2;
            sender.send(&slot.as_slice()[..half]).unwrap();
            sender.send(&slot.as_slice()[half..]).unwrap();
            sender.copied()
        });
        let (mut socket, _) = listener.accept().unwrap();
        let mss = max_segment(socket.as_fd()).unwrap();
        assert_eq!(mss, 4096, "payload per segment");
        let mut got = Vec::new();
        let mut mapped_total = 0;
        let borrowed = socket.try_clone().unwrap();
        let mut zc = ZeroCopyReceive::new(borrowed.as_fd(), 256 * 1024).unwrap();
        while got.len() < message.len() {
            let m = zc.receive(message.len() - got.len()).unwrap();
            mapped_total += m.bytes.len();
            got.extend_from_slice(m.bytes);
            let skip = m.skip;
            if skip > 0 {
                let mut buf = vec![0u8; skip];
                socket.read_exact(&mut buf).unwrap();
                got.extend_from_slice(&buf);
            } else if m.bytes.is_empty() {
                // Nothing queued yet: wait for data without taking any (a byte read here
                // would shift every later page).
                socket.peek(&mut [0u8; 1]).unwrap();
            }
        }
        let copied = sender.join().unwrap();
        assert_eq!(got, message, "{mapped_total} bytes were mapped");
        // Loopback hands the sender's pages over: page-sized segments of a page-aligned
        // stream are mapped, most of them.
        assert!(
            mapped_total >= message.len() / 2,
            "only {mapped_total} bytes mapped ({copied} sends copied)"
        );
    }
}
