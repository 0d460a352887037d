//! The testbed's XDP program. For PSP over UDP port 1000 carrying TCP with a clear TCP
//! header, on an rx queue with an AF_XDP socket, it
//! 1. writes a [`HeaderRecord`] (PSP header through TCP header, ICV, lengths, per-queue
//!    sequence number, first and last payload bytes) into the `HEADERS` ring buffer;
//! 2. in split landing, trims the ICV (`bpf_xdp_adjust_tail`) and strips the headers
//!    (`bpf_xdp_adjust_head`) so that the AF_XDP descriptor holds the payload only; in the
//!    whole-frame landings (the `LANDING` map) it keeps the headers, trims the ICV only in
//!    the PSP-offload model (`WHOLE_WITHOUT_ICV`), leaves the frame untouched in `WHOLE`,
//!    and passes frames longer than the frame cap to the kernel;
//! 3. redirects to the queue's socket in `XSKS`.
//!
//! While capturing (`LANDING[CAPTURE]`), each record also carries the frame's outer
//! headers and its arrival time ([`CapturedRecord`]).
//!
//! Everything else passes to the kernel. Every outcome is counted per CPU in `COUNTERS`.
//!
//! Minimum kernel: 5.18 (`bpf_xdp_load_bytes`; ring buffers need 5.8).

#![no_std]
#![no_main]

use aya_ebpf::bindings::BPF_RB_NO_WAKEUP;
use aya_ebpf::bindings::xdp_action::{XDP_DROP, XDP_PASS};
use aya_ebpf::helpers::{
    bpf_ktime_get_ns, bpf_xdp_adjust_head, bpf_xdp_adjust_tail, bpf_xdp_load_bytes,
};
use aya_ebpf::macros::{map, xdp};
use aya_ebpf::maps::ring_buf::RingBufEntry;
use aya_ebpf::maps::{Array, PerCpuArray, RingBuf, XskMap};
use aya_ebpf::programs::XdpContext;
use xdp_common::{
    CapturedRecord, Counter, HEAD_LEN, HEADER_RING_BYTES, HeaderRecord, ICV_LEN, MAX_HDR,
    MAX_OUTER, MAX_PSP_HDR, MAX_QUEUES, TAG_LEN, landing, wire,
};

#[map(name = "HEADERS")]
static HEADERS: RingBuf = RingBuf::with_byte_size(HEADER_RING_BYTES, 0);
#[map(name = "XSKS")]
static XSKS: XskMap = XskMap::with_max_entries(MAX_QUEUES, 0);
#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT as u32, 0);
#[map(name = "QUEUE_SEQ")]
static QUEUE_SEQ: Array<u32> = Array::with_max_entries(MAX_QUEUES, 0);
#[map(name = "LANDING")]
static LANDING: Array<u32> = Array::with_max_entries(landing::ENTRIES, 0);

#[xdp]
pub fn zc_split(ctx: XdpContext) -> u32 {
    let (action, counter) = split(&ctx);
    if let Some(n) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: a per-CPU array slot, only this CPU writes it.
        unsafe { *n += 1 };
    }
    action
}

/// Copies `N` packet bytes at `off` into `buf`.
#[inline(always)]
fn load<const N: usize>(ctx: &XdpContext, off: u32, buf: &mut [u8; N]) -> Option<()> {
    // SAFETY: the helper checks the packet range and writes at most N bytes into buf.
    let r = unsafe { bpf_xdp_load_bytes(ctx.ctx, off, buf.as_mut_ptr().cast(), N as u32) };
    (r == 0).then_some(())
}

/// Where the PSP header starts, if the frame is UDP to the PSP port (IPv4 unfragmented, or
/// IPv6 without extension headers; one optional VLAN tag).
#[inline(always)]
fn locate(ctx: &XdpContext) -> Option<u32> {
    let mut eth = [0u8; wire::ETH_LEN + wire::VLAN_LEN];
    load(ctx, 0, &mut eth)?;
    let at = wire::ETHERTYPE.start;
    let (mut ethertype, mut off) = (u16::from_be_bytes([eth[at], eth[at + 1]]), wire::ETH_LEN);
    if ethertype == wire::ETHERTYPE_VLAN {
        let at = at + wire::VLAN_LEN;
        ethertype = u16::from_be_bytes([eth[at], eth[at + 1]]);
        off += wire::VLAN_LEN;
    }
    let mut off = off as u32;
    match ethertype {
        wire::ETHERTYPE_IPV4 => {
            let mut ip = [0u8; wire::IPV4_MIN_LEN];
            load(ctx, off, &mut ip)?;
            let ihl = u32::from(ip[wire::IPV4_VERSION_IHL] & 0x0f) * 4;
            let frag = wire::IPV4_FRAGMENT.start;
            let fragmented =
                u16::from_be_bytes([ip[frag], ip[frag + 1]]) & wire::IPV4_FRAGMENT_MASK != 0;
            if ip[wire::IPV4_VERSION_IHL] >> 4 != 4
                || ihl < wire::IPV4_MIN_LEN as u32
                || ip[wire::IPV4_PROTOCOL] != wire::IPPROTO_UDP
                || fragmented
            {
                return None;
            }
            off += ihl;
        }
        wire::ETHERTYPE_IPV6 => {
            let mut ip = [0u8; 8];
            load(ctx, off, &mut ip)?;
            if ip[wire::IPV6_VERSION] >> 4 != 6 || ip[wire::IPV6_NEXT_HEADER] != wire::IPPROTO_UDP {
                return None;
            }
            off += wire::IPV6_LEN as u32;
        }
        _ => return None,
    }
    let mut udp = [0u8; wire::UDP_LEN];
    load(ctx, off, &mut udp)?;
    let port = wire::UDP_DST_PORT.start;
    if u16::from_be_bytes([udp[port], udp[port + 1]]) != wire::PSP_UDP_PORT {
        return None;
    }
    Some(off + wire::UDP_LEN as u32)
}

/// Lengths of a splittable PSP segment: (header bytes through TCP, payload bytes).
#[inline(always)]
fn measure(ctx: &XdpContext, psp: u32) -> Option<(u32, u32)> {
    let mut base = [0u8; 8];
    load(ctx, psp, &mut base)?;
    let psp_len = wire::psp_header_len(base[wire::PSP_HDR_EXT_LEN]) as u32;
    let crypt_start = wire::psp_crypt_start(base[wire::PSP_CRYPT_OFFSET]) as u32;
    let gmac = wire::psp_version(base[wire::PSP_FLAGS]) >= wire::PSP_FIRST_GMAC_VERSION;
    if base[wire::PSP_NEXT_HEADER] != wire::IPPROTO_TCP
        || !(wire::PSP_BASE_LEN as u32..=MAX_PSP_HDR as u32).contains(&psp_len)
    {
        return None;
    }
    let mut tcp = [0u8; wire::TCP_MIN_LEN];
    load(ctx, psp + psp_len, &mut tcp)?;
    let tcp_len = wire::tcp_header_len(tcp[wire::TCP_DATA_OFFSET]) as u32;
    let hdr_len = psp_len + tcp_len;
    // GCM: the payload must be exactly the encrypted part, so that the record holds all
    // of the AAD and the descriptor all of the ciphertext.
    if tcp_len < wire::TCP_MIN_LEN as u32
        || hdr_len > MAX_HDR as u32
        || (!gmac && crypt_start != hdr_len)
    {
        return None;
    }
    let pkt_len = (ctx.data_end() - ctx.data()) as u32;
    let payload_len = pkt_len.checked_sub(psp + hdr_len + ICV_LEN as u32)?;
    Some((hdr_len, payload_len))
}

#[inline(always)]
fn split(ctx: &XdpContext) -> (u32, Counter) {
    let Some(psp) = locate(ctx) else {
        return (XDP_PASS, Counter::PassNotPsp);
    };
    let Some((hdr_len, payload_len)) = measure(ctx, psp) else {
        return (XDP_PASS, Counter::PassUnsplittable);
    };
    let queue = ctx.rx_queue_index();
    if XSKS.get(queue).is_none() {
        return (XDP_PASS, Counter::PassNoSocket);
    }
    let mode = LANDING
        .get(landing::MODE)
        .copied()
        .unwrap_or(landing::SPLIT);
    let whole = mode == landing::WHOLE_WITHOUT_ICV || mode == landing::WHOLE;
    let keep_icv = mode == landing::WHOLE;
    if whole {
        let cap = LANDING.get(landing::FRAME_CAP).copied().unwrap_or(0);
        let frame = (ctx.data_end() - ctx.data()) as u32;
        let landed = if keep_icv {
            frame
        } else {
            frame - ICV_LEN as u32
        };
        if landed > cap {
            return (XDP_PASS, Counter::PassTooLong);
        }
    }
    let frame = Frame {
        psp,
        hdr_len,
        payload_len,
        queue,
        keep_icv,
        whole,
    };
    let capture = LANDING.get(landing::CAPTURE).copied().unwrap_or(0) != 0;
    if capture {
        let Some(mut entry) = HEADERS.reserve::<CapturedRecord>(0) else {
            return (XDP_DROP, Counter::DropRingFull);
        };
        let c = entry.as_mut_ptr();
        // The outer headers end where PSP starts: at most 86 bytes (checked against
        // MAX_OUTER for the verifier), within the frame.
        let outer = psp & 0x7f;
        // SAFETY: `c` points to a reserved, exclusively owned ring-buffer entry of
        // size_of::<CapturedRecord>() bytes; the load writes at most MAX_OUTER bytes into
        // `outer`. If it fails the record says so (outer_len 0): the capture must not
        // change what happens to the frame.
        let rec = unsafe {
            (*c).ext.ktime_ns = bpf_ktime_get_ns();
            (*c).ext.pad = [0; 6];
            let loaded = outer <= MAX_OUTER as u32
                && bpf_xdp_load_bytes(ctx.ctx, 0, (*c).ext.outer.as_mut_ptr().cast(), outer) == 0;
            (*c).ext.outer_len = if loaded { outer as u16 } else { 0 };
            core::ptr::addr_of_mut!((*c).record)
        };
        finish(ctx, entry, rec, &frame)
    } else {
        let Some(mut entry) = HEADERS.reserve::<HeaderRecord>(0) else {
            return (XDP_DROP, Counter::DropRingFull);
        };
        let rec = entry.as_mut_ptr();
        finish(ctx, entry, rec, &frame)
    }
}

/// A frame the program takes: where its parts are and how it lands.
struct Frame {
    psp: u32,
    hdr_len: u32,
    payload_len: u32,
    queue: u32,
    keep_icv: bool,
    whole: bool,
}

/// Fills the record `rec` inside `entry`, adjusts the frame to its landing, submits the
/// entry and redirects.
#[inline(always)]
fn finish<T>(
    ctx: &XdpContext,
    entry: RingBufEntry<T>,
    rec: *mut HeaderRecord,
    f: &Frame,
) -> (u32, Counter) {
    let (psp, hdr_len, payload_len, queue) = (f.psp, f.hdr_len, f.payload_len, f.queue);
    let pkt_len = (ctx.data_end() - ctx.data()) as u32;
    let payload = psp + hdr_len;
    // Payloads shorter than the tag are paired by length alone, and shorter than the head
    // keep none (constant-size loads keep the verifier simple).
    let tag_len = if payload_len < TAG_LEN as u32 {
        0
    } else {
        TAG_LEN as u32
    };
    let has_head = payload_len >= HEAD_LEN as u32;
    // SAFETY: `rec` points to a record inside the reserved, exclusively owned ring-buffer
    // entry; every write stays inside it (lengths are bounded by MAX_HDR, TAG_LEN and
    // ICV_LEN above).
    let loaded = unsafe {
        (*rec).queue = queue;
        (*rec).payload_len = payload_len;
        (*rec).hdr_len = hdr_len as u16;
        (*rec).tag_len = tag_len as u16;
        (*rec).tag = [0; TAG_LEN];
        (*rec).head = [0; HEAD_LEN];
        let hdr_ok =
            bpf_xdp_load_bytes(ctx.ctx, psp, (*rec).hdr.as_mut_ptr().cast(), hdr_len & 0x7f) == 0;
        let icv_ok = bpf_xdp_load_bytes(
            ctx.ctx,
            pkt_len - ICV_LEN as u32,
            (*rec).icv.as_mut_ptr().cast(),
            ICV_LEN as u32,
        ) == 0;
        let tag_ok = tag_len == 0
            || bpf_xdp_load_bytes(
                ctx.ctx,
                payload + payload_len - TAG_LEN as u32,
                (*rec).tag.as_mut_ptr().cast(),
                TAG_LEN as u32,
            ) == 0;
        let head_ok = !has_head
            || bpf_xdp_load_bytes(
                ctx.ctx,
                payload,
                (*rec).head.as_mut_ptr().cast(),
                HEAD_LEN as u32,
            ) == 0;
        hdr_ok && icv_ok && tag_ok && head_ok
    };
    if !loaded {
        entry.discard(0);
        return (XDP_PASS, Counter::PassUnsplittable);
    }
    // SAFETY: the helpers check their deltas against the packet; on failure the packet
    // is dropped below. Whole frames keep their headers, and in `WHOLE` their ICV.
    let adjusted = unsafe {
        (f.keep_icv || bpf_xdp_adjust_tail(ctx.ctx, -(ICV_LEN as i32)) == 0)
            && (f.whole || bpf_xdp_adjust_head(ctx.ctx, payload as i32) == 0)
    };
    if !adjusted {
        entry.discard(0);
        return (XDP_DROP, Counter::DropAdjustFailed);
    }
    let seq = match QUEUE_SEQ.get_ptr_mut(queue) {
        // SAFETY: an array slot; one rx queue is processed by one CPU at a time.
        Some(p) => unsafe {
            let s = *p;
            *p = s.wrapping_add(1);
            s
        },
        None => 0,
    };
    // SAFETY: as above, the record is still exclusively ours.
    unsafe { (*rec).seq = seq };
    // No wakeup: the receiver polls the header ring whenever its socket has descriptors
    // and never sleeps on the ring itself. A wakeup per record costs an irq_work
    // self-IPI, which in a VM is an exit per packet (two thirds of the sender's time).
    entry.submit(BPF_RB_NO_WAKEUP as u64);
    match XSKS.redirect(queue, 0) {
        Ok(action) => (action, Counter::Redirected),
        Err(action) => (action, Counter::RedirectFailed),
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
