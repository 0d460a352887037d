//! The one source of wire truth: Ethernet, IP, UDP, PSP and TCP offsets and constants, as
//! the XDP program, the `psp` library and `psp-pcap` read and write them. `no_std`, plain
//! constants, so that the BPF target can use them too.

use core::ops::Range;

/// Ethernet header without a VLAN tag.
pub const ETH_LEN: usize = 14;
/// Where the EtherType is in the Ethernet header.
pub const ETHERTYPE: Range<usize> = 12..14;
/// Bytes an 802.1Q tag adds (the inner EtherType then follows it).
pub const VLAN_LEN: usize = 4;
/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// EtherType of an 802.1Q tag.
pub const ETHERTYPE_VLAN: u16 = 0x8100;

/// IPv4 header without options.
pub const IPV4_MIN_LEN: usize = 20;
/// IPv4: version and IHL byte.
pub const IPV4_VERSION_IHL: usize = 0;
/// IPv4: total length.
pub const IPV4_TOTAL_LEN: Range<usize> = 2..4;
/// IPv4: flags and fragment offset.
pub const IPV4_FRAGMENT: Range<usize> = 6..8;
/// IPv4: the MF flag and fragment offset bits (a fragment when any is set).
pub const IPV4_FRAGMENT_MASK: u16 = 0x3fff;
/// IPv4: protocol.
pub const IPV4_PROTOCOL: usize = 9;
/// IPv4: source address.
pub const IPV4_SRC: Range<usize> = 12..16;
/// IPv4: destination address.
pub const IPV4_DST: Range<usize> = 16..20;

/// IPv6 fixed header.
pub const IPV6_LEN: usize = 40;
/// IPv6: version byte.
pub const IPV6_VERSION: usize = 0;
/// IPv6: payload length.
pub const IPV6_PAYLOAD_LEN: Range<usize> = 4..6;
/// IPv6: next header.
pub const IPV6_NEXT_HEADER: usize = 6;
/// IPv6: source address.
pub const IPV6_SRC: Range<usize> = 8..24;
/// IPv6: destination address.
pub const IPV6_DST: Range<usize> = 24..40;

/// IP protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;

/// UDP header.
pub const UDP_LEN: usize = 8;
/// UDP: source port.
pub const UDP_SRC_PORT: Range<usize> = 0..2;
/// UDP: destination port.
pub const UDP_DST_PORT: Range<usize> = 2..4;
/// UDP: length.
pub const UDP_LENGTH: Range<usize> = 4..6;
/// PSP's UDP destination port.
pub const PSP_UDP_PORT: u16 = 1000;

/// PSP: next header.
pub const PSP_NEXT_HEADER: usize = 0;
/// PSP: header extension length (8-byte units beyond the first 8 bytes).
pub const PSP_HDR_EXT_LEN: usize = 1;
/// PSP: reserved bits and crypt offset.
pub const PSP_CRYPT_OFFSET: usize = 2;
/// PSP: S, D, version, V and the always-1 bit.
pub const PSP_FLAGS: usize = 3;
/// PSP: SPI.
pub const PSP_SPI: Range<usize> = 4..8;
/// PSP: IV.
pub const PSP_IV: Range<usize> = 8..16;
/// PSP: virtualization cookie, when V is set.
pub const PSP_VC: Range<usize> = 16..24;
/// PSP header without VC or extensions.
pub const PSP_BASE_LEN: usize = 16;
/// Unit of the header extension length, and the bytes it does not count.
pub const PSP_EXT_UNIT: usize = 8;
/// Bytes of the virtualization cookie.
pub const PSP_VC_LEN: usize = 8;
/// Unit of the crypt offset (counted from the end of the IV).
pub const PSP_CRYPT_OFFSET_UNIT: usize = 4;
/// The crypt offset's bits in its byte.
pub const PSP_CRYPT_OFFSET_MASK: u8 = 0x3f;
/// The version's position in the flags byte.
pub const PSP_VERSION_SHIFT: u8 = 2;
/// The version's bits (after the shift).
pub const PSP_VERSION_MASK: u8 = 0x0f;
/// First version that only authenticates (AES-GMAC).
pub const PSP_FIRST_GMAC_VERSION: u8 = 2;
/// Bytes of the ICV.
pub const ICV_LEN: usize = 16;

/// TCP header without options.
pub const TCP_MIN_LEN: usize = 20;
/// TCP: data offset (high 4 bits, in 4-byte units).
pub const TCP_DATA_OFFSET: usize = 12;

/// Bytes of a PSP header whose header extension length field says `hdr_ext_len`.
pub const fn psp_header_len(hdr_ext_len: u8) -> usize {
    PSP_EXT_UNIT + PSP_EXT_UNIT * hdr_ext_len as usize
}

/// Where encryption starts, from the start of the PSP header, for a crypt offset byte.
pub const fn psp_crypt_start(crypt_offset_byte: u8) -> usize {
    PSP_BASE_LEN + PSP_CRYPT_OFFSET_UNIT * (crypt_offset_byte & PSP_CRYPT_OFFSET_MASK) as usize
}

/// The version field of a PSP flags byte.
pub const fn psp_version(flags: u8) -> u8 {
    (flags >> PSP_VERSION_SHIFT) & PSP_VERSION_MASK
}

/// Bytes of a TCP header whose data offset byte is `byte`.
pub const fn tcp_header_len(data_offset_byte: u8) -> usize {
    (data_offset_byte >> 4) as usize * 4
}
