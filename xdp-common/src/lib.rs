//! What the XDP program (`xdp-prog`) and the receiver share: the header record it writes
//! into the header ring for every split packet, the names of its maps, its counters, and
//! the wire's offsets and constants ([`wire`], also used by `psp` and `psp-pcap`).
//!
//! `no_std`, no dependencies: it is compiled for the BPF target too.

#![no_std]

use core::mem::offset_of;

pub mod wire;

/// Bytes of PSP header (+VC, +hint) and TCP header a record can hold: 40 + 60.
pub const MAX_HDR: usize = 104;
/// Longest PSP header the program splits: base 16, VC 8, hint 16.
pub const MAX_PSP_HDR: usize = 40;
/// Payload bytes copied into the record as the pairing tag: the payload's *last* bytes,
/// which no later frame covers in any landing mode (a whole frame's ICV may cover the next
/// slot's first bytes).
pub const TAG_LEN: usize = 8;
/// Payload bytes copied into the record as the payload's head: the ciphertext a frame
/// landing just below may cover with its ICV, restored from here (whole-frame landing).
pub const HEAD_LEN: usize = 16;
/// Bytes of the ICV.
pub const ICV_LEN: usize = wire::ICV_LEN;
/// Most rx queues the program serves (entries of the XSKMAP and of the sequence array).
pub const MAX_QUEUES: u32 = 64;
/// Size of the header ring (a BPF ring buffer), in bytes: a power of two and a multiple
/// of the page size. 8 MiB holds ~40,000 records.
pub const HEADER_RING_BYTES: u32 = 8 << 20;

/// Name of the XDP program function.
pub const PROGRAM: &str = "zc_split";
/// Map names.
pub mod map {
    /// The header ring (BPF_MAP_TYPE_RINGBUF).
    pub const HEADERS: &str = "HEADERS";
    /// rx queue → AF_XDP socket (BPF_MAP_TYPE_XSKMAP).
    pub const XSKS: &str = "XSKS";
    /// Per-CPU counters indexed by [`Counter`](super::Counter).
    pub const COUNTERS: &str = "COUNTERS";
    /// rx queue → next record sequence number.
    pub const QUEUE_SEQ: &str = "QUEUE_SEQ";
    /// How frames land ([`landing`](super::landing)): mode and frame cap.
    pub const LANDING: &str = "LANDING";
}

/// How the program leaves a frame for its AF_XDP socket: entries of the `LANDING` array.
pub mod landing {
    /// Index of the mode.
    pub const MODE: u32 = 0;
    /// Index of the frame cap (whole-frame modes).
    pub const FRAME_CAP: u32 = 1;
    /// Index of the capture switch: non-zero makes every record a
    /// [`CapturedRecord`](super::CapturedRecord) (outer headers and arrival time too).
    pub const CAPTURE: u32 = 2;
    /// Entries of the array.
    pub const ENTRIES: u32 = 3;
    /// The payload alone: headers stripped (`bpf_xdp_adjust_head`), ICV trimmed.
    pub const SPLIT: u32 = 0;
    /// The whole frame but its ICV (trimmed: the PSP-offload NIC model, whose NIC verifies
    /// the ICV inline and need not DMA it), at most `FRAME_CAP` bytes: longer frames pass
    /// to the kernel (`pass_too_long`).
    pub const WHOLE_WITHOUT_ICV: u32 = 1;
    /// The whole frame, ICV included, unmodified: byte for byte what a zero-copy NIC's DMA
    /// writes. At most `FRAME_CAP` bytes; longer frames pass to the kernel.
    pub const WHOLE: u32 = 2;
}

/// What happened to a packet; the program counts each outcome per CPU.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// Header record written, payload redirected to the queue's AF_XDP socket.
    Redirected = 0,
    /// Not PSP over UDP port 1000 (ARP, control connection, other traffic): passed.
    PassNotPsp,
    /// PSP, but no AF_XDP socket on this rx queue: passed.
    PassNoSocket,
    /// PSP that cannot be split (not TCP, header too long, TCP header encrypted, too
    /// short): passed.
    PassUnsplittable,
    /// The header ring was full: dropped.
    DropRingFull,
    /// `bpf_xdp_adjust_tail`/`adjust_head` failed: dropped.
    DropAdjustFailed,
    /// The record was written but the redirect failed (socket gone): aborted.
    RedirectFailed,
    /// Whole-frame landing: longer than the frame cap: passed.
    PassTooLong,
}

impl Counter {
    /// Number of counters.
    pub const COUNT: usize = 8;
    /// Every counter, in index order.
    pub const ALL: [Counter; Self::COUNT] = [
        Counter::Redirected,
        Counter::PassNotPsp,
        Counter::PassNoSocket,
        Counter::PassUnsplittable,
        Counter::DropRingFull,
        Counter::DropAdjustFailed,
        Counter::RedirectFailed,
        Counter::PassTooLong,
    ];

    /// Name in reports.
    pub const fn as_str(self) -> &'static str {
        match self {
            Counter::Redirected => "redirected",
            Counter::PassNotPsp => "pass_not_psp",
            Counter::PassNoSocket => "pass_no_socket",
            Counter::PassUnsplittable => "pass_unsplittable",
            Counter::DropRingFull => "drop_ring_full",
            Counter::DropAdjustFailed => "drop_adjust_failed",
            Counter::RedirectFailed => "redirect_failed",
            Counter::PassTooLong => "pass_too_long",
        }
    }
}

/// One record of the header ring: everything the receiver needs about a packet whose
/// descriptor holds only the payload. Native-endian integers, C layout.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderRecord {
    /// rx queue the packet arrived on.
    pub queue: u32,
    /// Per-queue sequence number (wraps).
    pub seq: u32,
    /// Bytes of payload left in the descriptor.
    pub payload_len: u32,
    /// Valid bytes of `hdr`: PSP header (with VC and hint) through the TCP header.
    pub hdr_len: u16,
    /// Valid bytes of `tag` (less than [`TAG_LEN`] for short payloads).
    pub tag_len: u16,
    /// The ICV trimmed from the packet's end.
    pub icv: [u8; ICV_LEN],
    /// The last payload bytes (the pairing tag).
    pub tag: [u8; TAG_LEN],
    /// The first payload bytes (valid when `payload_len` ≥ [`HEAD_LEN`]).
    pub head: [u8; HEAD_LEN],
    /// PSP header through TCP header.
    pub hdr: [u8; MAX_HDR],
}

/// Bytes of a record.
pub const RECORD_LEN: usize = core::mem::size_of::<HeaderRecord>();

fn array<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..at + N)?.try_into().ok()
}

impl HeaderRecord {
    /// Reads a record from the bytes of a ring-buffer entry; `None` when too short.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() < RECORD_LEN {
            return None;
        }
        let u32_at = |at| array::<4>(b, at).map(u32::from_ne_bytes);
        let u16_at = |at| array::<2>(b, at).map(u16::from_ne_bytes);
        Some(Self {
            queue: u32_at(offset_of!(Self, queue))?,
            seq: u32_at(offset_of!(Self, seq))?,
            payload_len: u32_at(offset_of!(Self, payload_len))?,
            hdr_len: u16_at(offset_of!(Self, hdr_len))?,
            tag_len: u16_at(offset_of!(Self, tag_len))?,
            icv: array(b, offset_of!(Self, icv))?,
            tag: array(b, offset_of!(Self, tag))?,
            head: array(b, offset_of!(Self, head))?,
            hdr: array(b, offset_of!(Self, hdr))?,
        })
    }

    /// The valid part of `hdr`.
    pub fn header_bytes(&self) -> &[u8] {
        &self.hdr[..usize::from(self.hdr_len).min(MAX_HDR)]
    }

    /// The valid part of `tag`.
    pub fn tag_bytes(&self) -> &[u8] {
        &self.tag[..usize::from(self.tag_len).min(TAG_LEN)]
    }

    /// The valid part of `head`: the payload's first [`HEAD_LEN`] bytes, if it has them.
    pub fn head_bytes(&self) -> Option<&[u8; HEAD_LEN]> {
        (self.payload_len as usize >= HEAD_LEN).then_some(&self.head)
    }

    /// An all-zero record (a starting point for tests and the eBPF side).
    pub const fn zeroed() -> Self {
        Self {
            queue: 0,
            seq: 0,
            payload_len: 0,
            hdr_len: 0,
            tag_len: 0,
            icv: [0; ICV_LEN],
            tag: [0; TAG_LEN],
            head: [0; HEAD_LEN],
            hdr: [0; MAX_HDR],
        }
    }

    /// The record's bytes, as the eBPF side lays them out (for tests of the reader).
    pub fn to_bytes(&self, out: &mut [u8; RECORD_LEN]) {
        let mut put = |at: usize, src: &[u8]| out[at..at + src.len()].copy_from_slice(src);
        put(offset_of!(Self, queue), &self.queue.to_ne_bytes());
        put(offset_of!(Self, seq), &self.seq.to_ne_bytes());
        put(
            offset_of!(Self, payload_len),
            &self.payload_len.to_ne_bytes(),
        );
        put(offset_of!(Self, hdr_len), &self.hdr_len.to_ne_bytes());
        put(offset_of!(Self, tag_len), &self.tag_len.to_ne_bytes());
        put(offset_of!(Self, icv), &self.icv);
        put(offset_of!(Self, tag), &self.tag);
        put(offset_of!(Self, head), &self.head);
        put(offset_of!(Self, hdr), &self.hdr);
    }
}

/// Bytes of outer headers (Ethernet through UDP) a captured record holds: enough for a
/// VLAN tag and IPv4 with 40 bytes of options (14 + 4 + 60 + 8 = 86 at most).
pub const MAX_OUTER: usize = 96;

/// What capturing adds to a record (`zc-recv live --capture`): the frame's outer headers,
/// as they were on the wire, and when it arrived.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureExt {
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) when the program ran.
    pub ktime_ns: u64,
    /// Valid bytes of `outer`: Ethernet through the UDP header.
    pub outer_len: u16,
    /// Zero.
    pub pad: [u8; 6],
    /// The frame's first bytes.
    pub outer: [u8; MAX_OUTER],
}

/// A record with its capture extension: what the program writes while capturing.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapturedRecord {
    /// The record.
    pub record: HeaderRecord,
    /// The extension.
    pub ext: CaptureExt,
}

/// Bytes of a captured record.
pub const CAPTURED_RECORD_LEN: usize = core::mem::size_of::<CapturedRecord>();

impl CaptureExt {
    /// Reads the extension that follows a record in a captured record's bytes; `None` when
    /// the entry is a plain record (or too short, or claims more outer bytes than it has).
    pub fn from_record_bytes(b: &[u8]) -> Option<Self> {
        let base = offset_of!(CapturedRecord, ext);
        let b = b.get(base..base + core::mem::size_of::<Self>())?;
        let ext = Self {
            ktime_ns: u64::from_ne_bytes(array(b, offset_of!(Self, ktime_ns))?),
            outer_len: u16::from_ne_bytes(array(b, offset_of!(Self, outer_len))?),
            pad: [0; 6],
            outer: array(b, offset_of!(Self, outer))?,
        };
        (usize::from(ext.outer_len) <= MAX_OUTER).then_some(ext)
    }

    /// The valid outer header bytes.
    pub fn outer_bytes(&self) -> &[u8] {
        &self.outer[..usize::from(self.outer_len).min(MAX_OUTER)]
    }

    /// The extension's bytes after a record's, as the eBPF side lays them out (tests).
    pub fn to_record_bytes(&self, out: &mut [u8; CAPTURED_RECORD_LEN]) {
        let base = offset_of!(CapturedRecord, ext);
        let mut put = |at: usize, src: &[u8]| {
            out[base + at..base + at + src.len()].copy_from_slice(src);
        };
        put(offset_of!(Self, ktime_ns), &self.ktime_ns.to_ne_bytes());
        put(offset_of!(Self, outer_len), &self.outer_len.to_ne_bytes());
        put(offset_of!(Self, outer), &self.outer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_extension_round_trips_after_a_record() {
        let mut r = HeaderRecord::zeroed();
        r.seq = 7;
        let ext = CaptureExt {
            ktime_ns: 123_456_789,
            outer_len: 42,
            pad: [0; 6],
            outer: [3; MAX_OUTER],
        };
        let mut bytes = [0u8; CAPTURED_RECORD_LEN];
        let mut head = [0u8; RECORD_LEN];
        r.to_bytes(&mut head);
        bytes[..RECORD_LEN].copy_from_slice(&head);
        ext.to_record_bytes(&mut bytes);
        assert_eq!(HeaderRecord::from_bytes(&bytes), Some(r));
        assert_eq!(CaptureExt::from_record_bytes(&bytes), Some(ext));
        assert_eq!(
            CaptureExt::from_record_bytes(&bytes)
                .unwrap()
                .outer_bytes()
                .len(),
            42
        );
        // A plain record has none; a lying length is refused.
        assert_eq!(CaptureExt::from_record_bytes(&head), None);
        let lying = CaptureExt {
            outer_len: u16::try_from(MAX_OUTER).unwrap() + 1,
            ..ext
        };
        lying.to_record_bytes(&mut bytes);
        assert_eq!(CaptureExt::from_record_bytes(&bytes), None);
    }

    #[test]
    fn record_round_trips_through_bytes() {
        let mut r = HeaderRecord::zeroed();
        r.queue = 3;
        r.seq = 0xdead_beef;
        r.payload_len = 1400;
        r.hdr_len = 52;
        r.tag_len = 8;
        r.icv = [7; ICV_LEN];
        r.tag = [1, 2, 3, 4, 5, 6, 7, 8];
        r.head = [5; HEAD_LEN];
        r.hdr[51] = 9;
        let mut bytes = [0u8; RECORD_LEN];
        r.to_bytes(&mut bytes);
        assert_eq!(HeaderRecord::from_bytes(&bytes), Some(r));
        assert_eq!(HeaderRecord::from_bytes(&bytes[..RECORD_LEN - 1]), None);
        assert_eq!(r.header_bytes().len(), 52);
        assert_eq!(r.tag_bytes(), &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(r.head_bytes(), Some(&[5; HEAD_LEN]));
        r.payload_len = 15;
        assert_eq!(r.head_bytes(), None);
    }

    #[test]
    fn record_size_is_a_multiple_of_8() {
        // The ring buffer reserves 8-byte aligned records.
        assert_eq!(RECORD_LEN % 8, 0);
        assert_eq!(RECORD_LEN, 160);
    }

    #[test]
    fn counter_indices_match_all() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
    }
}
