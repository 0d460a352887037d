//! Encryption of one cleartext frame, byte for byte as google/psp's `psp_encrypt` does it.

use anyhow::{Result, bail};
use psp::header::{BASE_LEN, CRYPT_OFFSET_UNIT, ICV_LEN, VC_LEN};
use psp::{Extension, Header, HeaderRepr, Hint, Sa};

use crate::config::{EncryptConfig, Mode};
use crate::ipv4_checksum;
use crate::pcapio::MAX_FRAME;

pub use xdp_common::wire::{ETH_LEN, ETHERTYPE_IPV4, ETHERTYPE_IPV6, IPV6_LEN, UDP_LEN};
use xdp_common::wire::{IPPROTO_TCP, IPPROTO_UDP};
const IPPROTO_IPV4: u8 = 4;
const IPPROTO_IPV6: u8 = 41;
/// The crypt offsets' names in the config (and in its parser's errors).
const TRANSPORT_OFFSET: &str = "transport crypt offset";
const IPV4_TUNNEL_OFFSET: &str = "IPv4 tunnel crypt offset";
const IPV6_TUNNEL_OFFSET: &str = "IPv6 tunnel crypt offset";
/// UDP + base PSP header + ICV: what transport mode adds, before VC and hint.
pub const TRANSPORT_ENCAP: usize = UDP_LEN + BASE_LEN + ICV_LEN;

/// What became of one input frame.
pub enum Outcome {
    Sealed(Vec<u8>),
    Skipped(String),
}

/// The state of one `encrypt` run: the SA and the IV counter (starting at 1).
pub struct Encryptor {
    pub cfg: EncryptConfig,
    pub sa: Sa,
    pub next_iv: u64,
    pub hint: Option<Hint>,
    pub corrupt: bool,
}

pub fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// The UDP source port: inner source port XOR destination port for TCP/UDP, else 1000.
fn entropy_port(proto: u8, l4: &[u8]) -> u16 {
    if matches!(proto, IPPROTO_TCP | IPPROTO_UDP) && l4.len() >= 4 {
        be16(l4, 0) ^ be16(l4, 2)
    } else {
        psp::UDP_PORT
    }
}

impl Encryptor {
    pub fn new(cfg: EncryptConfig, hint: Option<Hint>, corrupt: bool) -> Result<Self> {
        let key = cfg.keys.derive(cfg.spi, cfg.version);
        let sa = Sa::new(cfg.spi, cfg.version, &key)?;
        let enc = Self {
            cfg,
            sa,
            next_iv: 1,
            hint,
            corrupt,
        };
        // The offsets this mode writes must leave room for the hint: refuse before any
        // packet, naming the offset.
        for (units, which) in enc.crypt_offsets() {
            enc.crypt_units(units, which)?;
        }
        Ok(enc)
    }

    /// The configured crypt offsets the mode uses, with their names in the config.
    fn crypt_offsets(&self) -> Vec<(u8, &'static str)> {
        match self.cfg.mode {
            Mode::Transport => vec![(self.cfg.transport_crypt_offset, TRANSPORT_OFFSET)],
            Mode::Tunnel => vec![
                (self.cfg.ipv4_tunnel_crypt_offset, IPV4_TUNNEL_OFFSET),
                (self.cfg.ipv6_tunnel_crypt_offset, IPV6_TUNNEL_OFFSET),
            ],
        }
    }

    fn vc_len(&self) -> usize {
        if self.cfg.include_vc { VC_LEN } else { 0 }
    }

    /// Bytes between the base header and the body: VC and hint.
    fn ext_len(&self) -> usize {
        self.vc_len() + if self.hint.is_some() { Hint::LEN } else { 0 }
    }

    /// The crypt offset to write: the configured one (named `which` in errors), moved past
    /// the hint when there is one.
    fn crypt_units(&self, configured: u8, which: &str) -> Result<u8> {
        let Some(_) = self.hint else {
            return Ok(configured);
        };
        let past_hint = (self.vc_len() + Hint::LEN) / CRYPT_OFFSET_UNIT;
        let units = (usize::from(configured) + Hint::LEN / CRYPT_OFFSET_UNIT).max(past_hint);
        match u8::try_from(units) {
            Ok(u) if u <= psp::header::MAX_CRYPT_OFFSET => Ok(u),
            _ => bail!("{which} {configured} plus the hint's 4 units exceeds 63 (with --hint)"),
        }
    }

    /// PSP header, VC, hint, `body` and ICV, sealed.
    fn segment(&mut self, next_header: u8, crypt_units: u8, body: &[u8]) -> Result<Vec<u8>> {
        let repr = HeaderRepr {
            next_header,
            reserved: 0,
            crypt_offset: crypt_units,
            sample: false,
            drop: false,
            version: self.cfg.version,
            spi: self.cfg.spi,
            iv: self.next_iv,
            vc: self.cfg.include_vc.then_some(0),
            extension: self.hint.map_or(Extension::None, Extension::Hint),
        };
        self.next_iv = self.next_iv.wrapping_add(1);
        let header_len = repr.buffer_len();
        let mut seg = vec![0u8; header_len + body.len() + ICV_LEN];
        repr.emit(&mut Header::new_unchecked(&mut seg[..]))?;
        seg[header_len..header_len + body.len()].copy_from_slice(body);
        self.sa.seal_in_place(&mut seg)?;
        if self.corrupt {
            seg[2] |= 0x80; // as the reference's -e: a reserved bit flipped after sealing
        }
        Ok(seg)
    }

    pub fn process(&mut self, frame: &[u8]) -> Result<Outcome> {
        if frame.len() < ETH_LEN {
            return Ok(Outcome::Skipped(
                "frame shorter than an Ethernet header".into(),
            ));
        }
        let etype = be16(frame, 12);
        if etype != ETHERTYPE_IPV4 && etype != ETHERTYPE_IPV6 {
            return Ok(Outcome::Skipped(format!(
                "skipping non-IP packet, etype = {etype:#x}"
            )));
        }
        match self.cfg.mode {
            Mode::Transport => self.transport(frame, etype),
            Mode::Tunnel => self.tunnel(frame, etype),
        }
    }

    fn transport(&mut self, frame: &[u8], etype: u16) -> Result<Outcome> {
        let encap = TRANSPORT_ENCAP + self.ext_len();
        if frame.len() > MAX_FRAME - TRANSPORT_ENCAP {
            bail!("invalid packet, too big, {} bytes", frame.len());
        }
        let (ip_hdr_len, proto) = if etype == ETHERTYPE_IPV4 {
            let ihl = usize::from(frame.get(ETH_LEN).copied().unwrap_or(0) & 0x0f) * 4;
            (ihl, frame.get(ETH_LEN + 9).copied())
        } else {
            match frame.get(ETH_LEN + 6).copied() {
                Some(p @ (IPPROTO_TCP | IPPROTO_UDP)) => (IPV6_LEN, Some(p)),
                _ => {
                    return Ok(Outcome::Skipped(
                        "skipping IPv6 packet that is not TCP or UDP".into(),
                    ));
                }
            }
        };
        let l4_start = ETH_LEN + ip_hdr_len;
        let (Some(proto), true) = (proto, frame.len() >= l4_start && ip_hdr_len >= 20) else {
            bail!("invalid packet, truncated IP header");
        };
        let l4 = &frame[l4_start..];
        let crypt_off = usize::from(self.cfg.transport_crypt_offset) * CRYPT_OFFSET_UNIT;
        if crypt_off > l4.len() {
            return Ok(Outcome::Skipped(
                "skipping packet, crypt offset too big".into(),
            ));
        }
        let units = self.crypt_units(self.cfg.transport_crypt_offset, TRANSPORT_OFFSET)?;
        let seg = self.segment(proto, units, l4)?;

        let mut out = Vec::with_capacity(frame.len() + encap);
        out.extend_from_slice(&frame[..l4_start]);
        let grow = u16::try_from(encap)?;
        if etype == ETHERTYPE_IPV4 {
            let len = be16(&out, ETH_LEN + 2).wrapping_add(grow);
            put16(&mut out, ETH_LEN + 2, len);
            out[ETH_LEN + 9] = IPPROTO_UDP;
            put16(&mut out, ETH_LEN + 10, 0);
            let csum = ipv4_checksum(&out[ETH_LEN..l4_start]);
            put16(&mut out, ETH_LEN + 10, csum);
        } else {
            let len = be16(&out, ETH_LEN + 4).wrapping_add(grow);
            put16(&mut out, ETH_LEN + 4, len);
            out[ETH_LEN + 6] = IPPROTO_UDP;
        }
        self.push_udp(&mut out, entropy_port(proto, l4), l4.len() + encap);
        out.extend_from_slice(&seg);
        Ok(Outcome::Sealed(out))
    }

    fn tunnel(&mut self, frame: &[u8], etype: u16) -> Result<Outcome> {
        let inner = &frame[ETH_LEN..];
        let (ip_hdr_len, proto, ip_len, outer_len, next_header, (configured, which)) =
            if etype == ETHERTYPE_IPV4 {
                let ihl = usize::from(inner.first().copied().unwrap_or(0) & 0x0f) * 4;
                if inner.len() < 20 || ihl < 20 {
                    bail!("invalid packet, truncated IPv4 header");
                }
                (
                    ihl,
                    inner[9],
                    be16(inner, 2),
                    20,
                    IPPROTO_IPV4,
                    (self.cfg.ipv4_tunnel_crypt_offset, IPV4_TUNNEL_OFFSET),
                )
            } else {
                if inner.len() < IPV6_LEN {
                    bail!("invalid packet, truncated IPv6 header");
                }
                (
                    IPV6_LEN,
                    inner[6],
                    be16(inner, 4),
                    IPV6_LEN,
                    IPPROTO_IPV6,
                    (self.cfg.ipv6_tunnel_crypt_offset, IPV6_TUNNEL_OFFSET),
                )
            };
        let encap = TRANSPORT_ENCAP + outer_len + self.ext_len();
        if frame.len() > MAX_FRAME - (TRANSPORT_ENCAP + outer_len + self.vc_len()) {
            bail!("invalid packet, too big, {} bytes", frame.len());
        }
        let crypt_off = usize::from(configured) * CRYPT_OFFSET_UNIT;
        if crypt_off > inner.len() {
            return Ok(Outcome::Skipped(
                "skipping packet, crypt offset too big".into(),
            ));
        }
        let units = self.crypt_units(configured, which)?;
        let seg = self.segment(next_header, units, inner)?;

        let mut out = Vec::with_capacity(frame.len() + encap);
        out.extend_from_slice(&frame[..ETH_LEN]);
        out.extend_from_slice(&inner[..outer_len]);
        let grow = u16::try_from(encap)?;
        if etype == ETHERTYPE_IPV4 {
            out[ETH_LEN] = 0x45;
            put16(&mut out, ETH_LEN + 2, ip_len.wrapping_add(grow));
            out[ETH_LEN + 9] = IPPROTO_UDP;
            put16(&mut out, ETH_LEN + 10, 0);
            let csum = ipv4_checksum(&out[ETH_LEN..ETH_LEN + 20]);
            put16(&mut out, ETH_LEN + 10, csum);
        } else {
            put16(&mut out, ETH_LEN + 4, ip_len.wrapping_add(grow));
            out[ETH_LEN + 6] = IPPROTO_UDP;
        }
        let l4 = inner.get(ip_hdr_len..).unwrap_or(&[]);
        self.push_udp(
            &mut out,
            entropy_port(proto, l4),
            inner.len() + TRANSPORT_ENCAP + self.ext_len(),
        );
        out.extend_from_slice(&seg);
        Ok(Outcome::Sealed(out))
    }

    fn push_udp(&self, out: &mut Vec<u8>, src_port: u16, len: usize) {
        out.extend_from_slice(&src_port.to_be_bytes());
        out.extend_from_slice(&psp::UDP_PORT.to_be_bytes());
        // The reference truncates to 16 bits; frames are at most 9014 bytes.
        out.extend_from_slice(&u16::try_from(len & 0xffff).unwrap_or(0).to_be_bytes());
        out.extend_from_slice(&[0, 0]);
    }
}
