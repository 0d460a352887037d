//! Whole frames: building Ethernet / IP / UDP / PSP / hint / TCP / payload / ICV into a
//! caller's buffer (no allocation), and finding the PSP segment in a received frame.
//! The builder writes outer headers with `etherparse`; [`locate`] reads them through
//! fixed offsets, which is several times faster on the receive path.

use core::ops::Range;

use etherparse::{
    EtherType, Ethernet2Header, IpNumber, Ipv4Header, Ipv6FlowLabel, Ipv6Header, TcpHeader,
    UdpHeader,
};

use crate::error::{Error, Result};
use crate::header::{
    BASE_LEN, CRYPT_OFFSET_UNIT, Extension, Header, HeaderRepr, ICV_LEN, UDP_PORT, VC_LEN,
};
use crate::hint::Hint;
use crate::sa::Sa;
use crate::segment::{IPPROTO_TCP, TCP_MIN_HEADER_LEN};

const ETH_LEN: usize = xdp_common::wire::ETH_LEN;
const UDP_LEN: usize = xdp_common::wire::UDP_LEN;
const _: () = assert!(ETH_LEN == Ethernet2Header::LEN && UDP_LEN == UdpHeader::LEN);

/// The outer IP addresses of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpEndpoints {
    /// IPv4 source and destination.
    V4 {
        /// Source address.
        src: [u8; 4],
        /// Destination address.
        dst: [u8; 4],
    },
    /// IPv6 source and destination.
    V6 {
        /// Source address.
        src: [u8; 16],
        /// Destination address.
        dst: [u8; 16],
    },
}

impl IpEndpoints {
    fn header_len(&self) -> usize {
        match self {
            Self::V4 { .. } => Ipv4Header::MIN_LEN,
            Self::V6 { .. } => Ipv6Header::LEN,
        }
    }
}

/// What stays the same for every frame of one flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowTemplate {
    /// Ethernet source.
    pub eth_src: [u8; 6],
    /// Ethernet destination.
    pub eth_dst: [u8; 6],
    /// Outer IP addresses.
    pub ip: IpEndpoints,
    /// UDP source port: flow entropy.
    pub udp_src_port: u16,
    /// Inner TCP source port.
    pub tcp_src_port: u16,
    /// Inner TCP destination port.
    pub tcp_dst_port: u16,
    /// Virtualization Cookie, if any.
    pub vc: Option<u64>,
    /// IPv4 TTL / IPv6 hop limit.
    pub ttl: u8,
}

/// What changes per frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentSpec {
    /// PSP IV; must never repeat under one key.
    pub iv: u64,
    /// Placement hint, if any.
    pub hint: Option<Hint>,
    /// TCP sequence number of the first payload byte.
    pub seq: u32,
    /// TCP acknowledgment number.
    pub ack: u32,
    /// TCP PSH flag.
    pub psh: bool,
}

/// Builds sealed PSP frames of one flow into caller-provided buffers.
#[derive(Debug)]
pub struct FrameBuilder<'a> {
    flow: FlowTemplate,
    sa: &'a Sa,
    seal: bool,
}

impl<'a> FrameBuilder<'a> {
    /// A builder for `flow`, sealing with `sa`.
    pub fn new(flow: FlowTemplate, sa: &'a Sa) -> Self {
        Self {
            flow,
            sa,
            seal: true,
        }
    }

    /// The same, but frames are left unsealed: the payload in the clear and the ICV zero.
    /// The testbed's model of a NIC with inline PSP crypto, which seals on transmit; such
    /// frames authenticate nowhere.
    pub fn without_sealing(self) -> Self {
        Self {
            seal: false,
            ..self
        }
    }

    fn psp_header_len(&self, hint: bool) -> usize {
        BASE_LEN
            + if self.flow.vc.is_some() { VC_LEN } else { 0 }
            + if hint { Hint::LEN } else { 0 }
    }

    /// Offset of the TCP payload inside the frame.
    pub fn payload_offset(&self, hint: bool) -> usize {
        ETH_LEN
            + self.flow.ip.header_len()
            + UDP_LEN
            + self.psp_header_len(hint)
            + TCP_MIN_HEADER_LEN
    }

    /// Bytes of a frame carrying `payload_len` bytes.
    pub fn frame_len(&self, hint: bool, payload_len: usize) -> usize {
        self.payload_offset(hint) + payload_len + ICV_LEN
    }

    /// Writes a sealed frame carrying `payload` into `buf`; returns its length.
    /// The crypt offset leaves the VC, the hint and the TCP header authenticated but in
    /// the clear, so a receiver can read them before decrypting.
    ///
    /// # Errors
    /// [`Error::Truncated`] when `buf` is too short; [`Error::FieldOverflow`] when the
    /// frame exceeds IP's length fields.
    pub fn build(&self, buf: &mut [u8], spec: &SegmentSpec, payload: &[u8]) -> Result<usize> {
        let hint = spec.hint.is_some();
        let len = self.frame_len(hint, payload.len());
        crate::error::need("frame buffer", buf, len)?;
        let ip_len = self.flow.ip.header_len();
        let udp_len = len - ETH_LEN - ip_len;
        let udp_len16 = u16::try_from(udp_len).map_err(|_| Error::FieldOverflow {
            what: "UDP length",
            value: udp_len,
            max: 65535,
        })?;
        let psp_start = ETH_LEN + ip_len + UDP_LEN;
        let psp_len = self.psp_header_len(hint);

        let ether_type = match self.flow.ip {
            IpEndpoints::V4 { .. } => EtherType::IPV4,
            IpEndpoints::V6 { .. } => EtherType::IPV6,
        };
        buf[..ETH_LEN].copy_from_slice(
            &Ethernet2Header {
                source: self.flow.eth_src,
                destination: self.flow.eth_dst,
                ether_type,
            }
            .to_bytes(),
        );
        let mut out = &mut buf[ETH_LEN..ETH_LEN + ip_len];
        match self.flow.ip {
            IpEndpoints::V4 { src, dst } => {
                let mut ip = Ipv4Header::new(udp_len16, self.flow.ttl, IpNumber::UDP, src, dst)
                    .map_err(|_| Error::FieldOverflow {
                        what: "IPv4 total length",
                        value: udp_len + ip_len,
                        max: 65535,
                    })?;
                ip.header_checksum = ip.calc_header_checksum();
                ip.write(&mut out)
            }
            IpEndpoints::V6 { src, dst } => Ipv6Header {
                traffic_class: 0,
                flow_label: Ipv6FlowLabel::ZERO,
                payload_length: udp_len16,
                next_header: IpNumber::UDP,
                hop_limit: self.flow.ttl,
                source: src,
                destination: dst,
            }
            .write(&mut out),
        }
        .map_err(|_| Error::Truncated {
            what: "IP header",
            needed: ip_len,
            got: 0,
        })?;
        let udp = UdpHeader {
            source_port: self.flow.udp_src_port,
            destination_port: UDP_PORT,
            length: udp_len16,
            checksum: 0,
        };
        buf[ETH_LEN + ip_len..psp_start].copy_from_slice(&udp.to_bytes());

        let clear = psp_len - BASE_LEN + TCP_MIN_HEADER_LEN;
        let repr = HeaderRepr {
            next_header: IPPROTO_TCP,
            reserved: 0,
            crypt_offset: u8::try_from(clear / CRYPT_OFFSET_UNIT).unwrap_or(u8::MAX),
            sample: false,
            drop: false,
            version: self.sa.version(),
            spi: self.sa.spi(),
            iv: spec.iv,
            vc: self.flow.vc,
            extension: spec.hint.map_or(Extension::None, Extension::Hint),
        };
        repr.emit(&mut Header::new_unchecked(
            &mut buf[psp_start..psp_start + psp_len],
        ))?;

        let tcp_start = psp_start + psp_len;
        let mut tcp = TcpHeader::new(
            self.flow.tcp_src_port,
            self.flow.tcp_dst_port,
            spec.seq,
            u16::MAX,
        );
        tcp.ack = true;
        tcp.acknowledgment_number = spec.ack;
        tcp.psh = spec.psh;
        buf[tcp_start..tcp_start + TCP_MIN_HEADER_LEN].copy_from_slice(&tcp.to_bytes());
        let payload_start = tcp_start + TCP_MIN_HEADER_LEN;
        buf[payload_start..payload_start + payload.len()].copy_from_slice(payload);
        if self.seal {
            self.sa.seal_in_place(&mut buf[psp_start..len])?;
        } else {
            buf[len - ICV_LEN..len].fill(0);
        }
        Ok(len)
    }
}

/// Where a received frame's PSP segment is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PspLocation {
    /// First PSP byte through the ICV, as indices into the frame.
    pub segment: Range<usize>,
    /// Outer IP addresses.
    pub ip: IpEndpoints,
    /// UDP source port (flow entropy).
    pub udp_src_port: u16,
}

/// Byte offsets of the outer headers a receiver reads (relative to each header's start).
mod outer {
    use core::ops::Range;
    use xdp_common::wire;
    pub const ETHERTYPE: Range<usize> = wire::ETHERTYPE;
    pub const VLAN_LEN: usize = wire::VLAN_LEN;
    pub const V4_VERSION_IHL: usize = wire::IPV4_VERSION_IHL;
    pub const V4_TOTAL_LEN: Range<usize> = wire::IPV4_TOTAL_LEN;
    pub const V4_FRAGMENT: Range<usize> = wire::IPV4_FRAGMENT;
    pub const V4_PROTOCOL: usize = wire::IPV4_PROTOCOL;
    pub const V4_SRC: Range<usize> = wire::IPV4_SRC;
    pub const V4_DST: Range<usize> = wire::IPV4_DST;
    pub const V6_VERSION: usize = wire::IPV6_VERSION;
    pub const V6_PAYLOAD_LEN: Range<usize> = wire::IPV6_PAYLOAD_LEN;
    pub const V6_NEXT_HEADER: usize = wire::IPV6_NEXT_HEADER;
    pub const V6_SRC: Range<usize> = wire::IPV6_SRC;
    pub const V6_DST: Range<usize> = wire::IPV6_DST;
    pub const UDP_SRC_PORT: Range<usize> = wire::UDP_SRC_PORT;
    pub const UDP_DST_PORT: Range<usize> = wire::UDP_DST_PORT;
    pub const UDP_LEN: Range<usize> = wire::UDP_LENGTH;
}

use xdp_common::wire::{ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_VLAN, IPPROTO_UDP};

#[inline]
fn be16(b: &[u8], r: Range<usize>) -> u16 {
    u16::from_be_bytes([b[r.start], b[r.start + 1]])
}

/// Finds the PSP segment in an Ethernet frame (one VLAN tag allowed): IPv4 (not
/// fragmented) or IPv6 (no extension headers), UDP to port 1000. The segment ends where the
/// UDP length says. The UDP checksum is not checked (PSP senders set it to 0).
///
/// # Errors
/// [`Error::NotPsp`] naming what did not match.
#[inline]
pub fn locate(frame: &[u8]) -> Result<PspLocation> {
    if frame.len() < ETH_LEN {
        return Err(Error::NotPsp("shorter than an Ethernet header"));
    }
    let (mut l3, mut ethertype) = (ETH_LEN, be16(frame, outer::ETHERTYPE));
    if ethertype == ETHERTYPE_VLAN {
        if frame.len() < ETH_LEN + outer::VLAN_LEN {
            return Err(Error::NotPsp("truncated VLAN tag"));
        }
        ethertype = be16(
            frame,
            outer::ETHERTYPE.start + outer::VLAN_LEN..outer::ETHERTYPE.end + outer::VLAN_LEN,
        );
        l3 += outer::VLAN_LEN;
    }
    let ip_bytes = &frame[l3..];
    let (ip, udp_start, ip_end) = match ethertype {
        ETHERTYPE_IPV4 => {
            if ip_bytes.len() < Ipv4Header::MIN_LEN || ip_bytes[outer::V4_VERSION_IHL] >> 4 != 4 {
                return Err(Error::NotPsp("truncated or malformed IPv4 header"));
            }
            let ihl = usize::from(ip_bytes[outer::V4_VERSION_IHL] & 0x0f) * 4;
            let total = usize::from(be16(ip_bytes, outer::V4_TOTAL_LEN));
            if ihl < Ipv4Header::MIN_LEN || total < ihl || total > ip_bytes.len() {
                return Err(Error::NotPsp("IPv4 lengths do not fit the frame"));
            }
            if ip_bytes[outer::V4_PROTOCOL] != IPPROTO_UDP {
                return Err(Error::NotPsp("not UDP"));
            }
            if be16(ip_bytes, outer::V4_FRAGMENT) & 0x3fff != 0 {
                return Err(Error::NotPsp("IPv4 fragment"));
            }
            let mut src = [0u8; 4];
            let mut dst = [0u8; 4];
            src.copy_from_slice(&ip_bytes[outer::V4_SRC]);
            dst.copy_from_slice(&ip_bytes[outer::V4_DST]);
            (IpEndpoints::V4 { src, dst }, l3 + ihl, l3 + total)
        }
        ETHERTYPE_IPV6 => {
            if ip_bytes.len() < Ipv6Header::LEN || ip_bytes[outer::V6_VERSION] >> 4 != 6 {
                return Err(Error::NotPsp("truncated or malformed IPv6 header"));
            }
            let payload = usize::from(be16(ip_bytes, outer::V6_PAYLOAD_LEN));
            if Ipv6Header::LEN + payload > ip_bytes.len() {
                return Err(Error::NotPsp("IPv6 payload length does not fit the frame"));
            }
            if ip_bytes[outer::V6_NEXT_HEADER] != IPPROTO_UDP {
                return Err(Error::NotPsp("not UDP"));
            }
            let mut src = [0u8; 16];
            let mut dst = [0u8; 16];
            src.copy_from_slice(&ip_bytes[outer::V6_SRC]);
            dst.copy_from_slice(&ip_bytes[outer::V6_DST]);
            (
                IpEndpoints::V6 { src, dst },
                l3 + Ipv6Header::LEN,
                l3 + Ipv6Header::LEN + payload,
            )
        }
        _ => return Err(Error::NotPsp("not IPv4 or IPv6")),
    };
    if ip_end < udp_start + UDP_LEN {
        return Err(Error::NotPsp("truncated UDP header"));
    }
    let udp = &frame[udp_start..ip_end];
    if be16(udp, outer::UDP_DST_PORT) != UDP_PORT {
        return Err(Error::NotPsp("UDP destination port is not 1000"));
    }
    let udp_len = usize::from(be16(udp, outer::UDP_LEN));
    if udp_len < UDP_LEN || udp_len > udp.len() {
        return Err(Error::NotPsp("UDP length does not fit the IP packet"));
    }
    Ok(PspLocation {
        segment: udp_start + UDP_LEN..udp_start + udp_len,
        ip,
        udp_src_port: be16(udp, outer::UDP_SRC_PORT),
    })
}
