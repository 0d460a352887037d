//! Checks of zc-send's input: its arguments, all checked before any socket or control
//! session exists, and what the receiver answers, which is untrusted: a hostile receiver
//! must never make the sender panic or allocate without bound.

use anyhow::{Result, bail};

/// Largest `--message-bytes`: 2 GiB. A grant's window is addressed by TCP sequence deltas
/// from its base, and the receiver refuses deltas of 2^31 or more (`seq_wrap`), so a longer
/// message could never complete.
pub const MAX_MESSAGE_BYTES: u64 = 1 << 31;
/// Most bytes of messages held at once: every stream holds its current message in memory.
pub const MAX_MESSAGE_MEMORY: u64 = 4 << 30;
/// Largest `--mss`: a frame must fit one 2 KiB transmit frame.
pub const MAX_MSS: u32 = 1800;
/// UDP source port of the stream on queue 0; the stream on queue q uses this plus q.
pub const UDP_PORT_BASE: u16 = 40000;
/// Largest queue: its UDP source port (40000 + queue) must fit 16 bits.
pub const MAX_QUEUE: u32 = (u16::MAX - UDP_PORT_BASE) as u32;
/// Most missing ranges read from one status reply; more are counted as bad and ignored.
/// (A reply within `control::MAX_LINE` holds fewer.)
pub const MAX_MISSING_RANGES: usize = 1 << 18;
/// What a frame adds to the IP header and the payload: UDP 8, PSP header 16, placement
/// hint 16, TCP header 20, ICV 16.
const FRAME_OVERHEAD_AFTER_IP: u32 = 8 + 16 + 16 + 20 + 16;

/// A `--loss`, `--duplicate` or `--reorder` probability: a number in 0..=1.
///
/// # Errors
/// Not a number, or outside 0..=1 (NaN included).
pub fn probability(s: &str) -> std::result::Result<f64, String> {
    let p: f64 = s.parse().map_err(|_| format!("'{s}' is not a number"))?;
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(format!("{s} is not a probability in 0..=1"))
    }
}

/// A `--message-bytes` value: 1..=[`MAX_MESSAGE_BYTES`].
///
/// # Errors
/// Not a number, zero, or above the cap.
pub fn message_bytes(s: &str) -> std::result::Result<u64, String> {
    let n: u64 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a byte count"))?;
    match n {
        0 => Err("a message needs at least one byte".into()),
        n if n > MAX_MESSAGE_BYTES => Err(format!(
            "{n} bytes is more than {MAX_MESSAGE_BYTES} (2 GiB): a window's TCP sequence \
             deltas must stay below 2^31"
        )),
        n => Ok(n),
    }
}

/// The queues: at least one, each at most once (the value parser checks the range).
///
/// # Errors
/// No queue, or a queue named twice.
pub fn queues(queues: &[u32]) -> Result<()> {
    if queues.is_empty() {
        bail!("--queues: name at least one queue");
    }
    for (i, q) in queues.iter().enumerate() {
        if queues[..i].contains(q) {
            bail!("--queues: queue {q} is named twice");
        }
    }
    Ok(())
}

/// An interface name as Linux allows it: 1 to 15 bytes, no '/', no whitespace, not `.` or
/// `..` (it becomes a path under /sys/class/net).
///
/// # Errors
/// Any other name.
pub fn iface_name(name: &str) -> Result<()> {
    let bad_char = name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c == '\0');
    if name.is_empty() || name.len() > 15 || bad_char || name == "." || name == ".." {
        bail!("--iface {name:?} is not an interface name");
    }
    Ok(())
}

/// The sizes of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    /// Segments per message.
    pub segments: usize,
    /// Payload bytes of the whole run (every message of every stream).
    pub total_bytes: u64,
}

/// Checks that `streams` messages of `message_bytes` can be held at once and that the run's
/// totals fit, with checked arithmetic.
///
/// # Errors
/// A zero size or MSS, a message above [`MAX_MESSAGE_BYTES`], messages of all streams above
/// [`MAX_MESSAGE_MEMORY`], or totals that overflow.
pub fn sizes(message_bytes: u64, mss: u32, messages: u32, streams: usize) -> Result<Sizes> {
    if message_bytes == 0 || message_bytes > MAX_MESSAGE_BYTES {
        bail!("--message-bytes must be within 1..={MAX_MESSAGE_BYTES}");
    }
    if mss == 0 {
        bail!("--mss must be positive");
    }
    let streams = u64::try_from(streams)?;
    let held = message_bytes.checked_mul(streams);
    if held.is_none_or(|h| h > MAX_MESSAGE_MEMORY) {
        bail!(
            "--message-bytes {message_bytes} on {streams} queues holds more than \
             {MAX_MESSAGE_MEMORY} bytes of messages at once"
        );
    }
    let total_bytes = held
        .and_then(|h| h.checked_mul(u64::from(messages)))
        .ok_or_else(|| anyhow::anyhow!("--messages {messages}: the run's byte count overflows"))?;
    let segments = usize::try_from(message_bytes.div_ceil(u64::from(mss)))?;
    Ok(Sizes {
        segments,
        total_bytes,
    })
}

/// Checks that frames of `mss` payload bytes fit the interface's `mtu` (IP packet bytes).
///
/// # Errors
/// The IP packet would exceed the MTU; the error names the largest MSS that fits.
pub fn fits_mtu(mss: u32, ipv6: bool, mtu: u32, iface: &str) -> Result<()> {
    let ip_header = if ipv6 { 40 } else { 20 };
    let packet = u64::from(ip_header + FRAME_OVERHEAD_AFTER_IP) + u64::from(mss);
    if packet > u64::from(mtu) {
        let largest = mtu.saturating_sub(ip_header + FRAME_OVERHEAD_AFTER_IP);
        bail!(
            "--mss {mss} makes IP packets of {packet} bytes, more than the MTU of {iface} \
             ({mtu}); the largest --mss that fits is {largest}"
        );
    }
    Ok(())
}

/// The segments to send again for a status reply's `missing` ranges, and how many of those
/// ranges were bad.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Resend {
    /// Segment numbers, ascending, each once.
    pub segments: Vec<usize>,
    /// Ranges that were empty, inverted, beyond the message (ignored), reaching past its
    /// end (clamped), or beyond [`MAX_MISSING_RANGES`] (ignored).
    pub bad_ranges: usize,
}

/// The segments of a `message_len`-byte message in `mss`-byte segments that cover the
/// receiver's `missing` byte ranges (window-relative, end exclusive). Every range is
/// checked: the result never names a segment outside the message, and its length is at
/// most the message's segment count whatever the receiver sends.
pub fn resend(missing: &[(u64, u64)], message_len: u64, mss: u32) -> Resend {
    let mss = u64::from(mss.max(1));
    let mut bad_ranges = missing.len().saturating_sub(MAX_MISSING_RANGES);
    let mut spans = Vec::with_capacity(missing.len().min(MAX_MISSING_RANGES));
    for &(start, end) in missing.iter().take(MAX_MISSING_RANGES) {
        if start >= end || start >= message_len {
            bad_ranges += 1;
            continue;
        }
        if end > message_len {
            bad_ranges += 1;
        }
        spans.push((start / mss, end.min(message_len).div_ceil(mss)));
    }
    spans.sort_unstable();
    let mut segments = Vec::new();
    let mut next = 0;
    for (first, end) in spans {
        segments.extend((first.max(next)..end).filter_map(|s| usize::try_from(s).ok()));
        next = next.max(end);
    }
    Resend {
        segments,
        bad_ranges,
    }
}

/// What the receiver granted, against what was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrantCheck {
    /// Bytes asked for / granted.
    pub len: u64,
    /// Base sequence number asked for / granted.
    pub base_seq: u32,
    /// MSS asked for / granted.
    pub mss: u32,
    /// Window offset granted.
    pub offset: u64,
}

/// Checks a grant from the receiver: the window it describes must be the one asked for,
/// and its hint offsets (window start and end) must fit the hint's 48-bit field.
///
/// # Errors
/// Any difference, or an offset that does not fit.
pub fn grant(asked: GrantCheck, granted: GrantCheck) -> Result<()> {
    if (asked.len, asked.base_seq, asked.mss) != (granted.len, granted.base_seq, granted.mss) {
        bail!(
            "receiver granted {} bytes from sequence {} in segments of {}, but {} bytes from {} \
             in segments of {} were asked for",
            granted.len,
            granted.base_seq,
            granted.mss,
            asked.len,
            asked.base_seq,
            asked.mss
        );
    }
    let end = granted.offset.checked_add(granted.len);
    if end.is_none_or(|e| e > psp::hint::MAX_OFFSET) {
        bail!(
            "receiver granted a window at offset {} of {} bytes, beyond the hint's 48-bit offset",
            granted.offset,
            granted.len
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probabilities_are_numbers_in_0_to_1() {
        assert_eq!(probability("0"), Ok(0.0));
        assert_eq!(probability("1"), Ok(1.0));
        assert_eq!(probability("0.25"), Ok(0.25));
        for bad in ["-0.1", "1.01", "NaN", "inf", "x", ""] {
            assert!(probability(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn message_bytes_are_capped() {
        assert_eq!(message_bytes("1"), Ok(1));
        assert_eq!(message_bytes("2147483648"), Ok(MAX_MESSAGE_BYTES));
        assert!(message_bytes("0").is_err());
        assert!(message_bytes("2147483649").is_err());
        let e = message_bytes("1099511627776").unwrap_err();
        assert!(e.contains("2 GiB"), "{e}");
        assert!(message_bytes("18446744073709551616").is_err());
    }

    #[test]
    fn queues_are_named_once() {
        assert!(queues(&[0, 1, 3]).is_ok());
        assert!(queues(&[]).is_err());
        let e = queues(&[1, 2, 1]).unwrap_err().to_string();
        assert!(e.contains("queue 1 is named twice"), "{e}");
        assert_eq!(u32::from(UDP_PORT_BASE) + MAX_QUEUE, 65535);
    }

    #[test]
    fn interface_names_are_checked() {
        assert!(iface_name("veth0").is_ok());
        assert!(iface_name("zcdemo-snd.100").is_ok());
        for bad in ["", ".", "..", "../../etc", "a b", "sixteen-bytes-xx"] {
            assert!(iface_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_use_checked_arithmetic_and_caps() {
        assert_eq!(
            sizes(16 << 20, 1400, 8, 2).unwrap(),
            Sizes {
                segments: 11_984,
                total_bytes: 256 << 20
            }
        );
        assert_eq!(sizes(1, 1400, 1, 1).unwrap().segments, 1);
        assert!(sizes(0, 1400, 1, 1).is_err());
        assert!(sizes(1 << 40, 1400, 1, 1).is_err());
        assert!(sizes(1 << 20, 0, 1, 1).is_err());
        // Two 2 GiB messages fit the memory cap, three do not; stream counts that overflow
        // the product are refused too.
        assert!(sizes(MAX_MESSAGE_BYTES, 1400, u32::MAX, 2).is_ok());
        assert!(sizes(MAX_MESSAGE_BYTES, 1400, 1, 3).is_err());
        assert!(sizes(MAX_MESSAGE_BYTES, 1400, 1, usize::MAX).is_err());
        assert!(sizes(1, 1400, u32::MAX, usize::MAX).is_err());
    }

    #[test]
    fn frames_must_fit_the_mtu() {
        assert!(fits_mtu(1404, false, 1500, "veth0").is_ok());
        let e = fits_mtu(1795, false, 1500, "veth0")
            .unwrap_err()
            .to_string();
        assert!(e.contains("largest --mss that fits is 1404"), "{e}");
        assert!(fits_mtu(1384, true, 1500, "veth0").is_ok());
        assert!(fits_mtu(1385, true, 1500, "veth0").is_err());
        assert!(fits_mtu(1, false, 0, "x").is_err());
    }

    #[test]
    fn honest_missing_ranges_map_to_their_segments() {
        // 10 segments of 100 bytes, the last one 50 bytes.
        let r = resend(&[(0, 100), (250, 260), (900, 950)], 950, 100);
        assert_eq!(r.segments, [0, 2, 9]);
        assert_eq!(r.bad_ranges, 0);
        // Overlapping and unsorted ranges: each segment once, ascending.
        let r = resend(&[(300, 500), (0, 150), (100, 350)], 950, 100);
        assert_eq!(r.segments, [0, 1, 2, 3, 4]);
        assert_eq!(r.bad_ranges, 0);
        assert_eq!(resend(&[], 950, 100), Resend::default());
    }

    #[test]
    fn hostile_missing_ranges_are_clamped_or_ignored() {
        let len = 950;
        let r = resend(
            &[
                (5, 5),      // empty
                (600, 500),  // inverted
                (950, 2000), // past the end
                (u64::MAX - 1, u64::MAX),
                (900, u64::MAX), // clamped to the end
                (0, u64::MAX),   // clamped: the whole message
            ],
            len,
            100,
        );
        assert_eq!(r.segments, (0..10).collect::<Vec<_>>());
        assert_eq!(r.bad_ranges, 6);
        // Many ranges: the count read is bounded, the output by the message's segments.
        let many = vec![(0, u64::MAX); MAX_MISSING_RANGES + 5];
        let r = resend(&many, len, 100);
        assert_eq!(r.segments.len(), 10);
        assert_eq!(r.bad_ranges, MAX_MISSING_RANGES + 5);
        // An MSS of 0 from nowhere cannot divide by zero.
        assert_eq!(resend(&[(0, 3)], 3, 0).segments, [0, 1, 2]);
    }

    #[test]
    fn grants_must_be_what_was_asked() {
        let asked = GrantCheck {
            len: 1000,
            base_seq: 7,
            mss: 1400,
            offset: 0,
        };
        assert!(
            grant(
                asked,
                GrantCheck {
                    offset: 4096,
                    ..asked
                }
            )
            .is_ok()
        );
        for granted in [
            GrantCheck { len: 999, ..asked },
            GrantCheck {
                len: u64::MAX,
                ..asked
            },
            GrantCheck {
                base_seq: 8,
                ..asked
            },
            GrantCheck { mss: 100, ..asked },
            GrantCheck {
                offset: u64::MAX,
                ..asked
            },
            GrantCheck {
                offset: psp::hint::MAX_OFFSET,
                ..asked
            },
        ] {
            assert!(grant(asked, granted).is_err(), "{granted:?}");
        }
    }
}
