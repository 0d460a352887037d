//! Decryption of one PSP frame, with google/psp's `psp_decrypt` checks and output bytes,
//! except that the ICV is verified also when nothing is encrypted (the reference skips it).

use anyhow::{Result, bail};
use psp::header::ICV_LEN;
use psp::{Hint, MasterKeys, Sa, Segment};

use crate::encap::{
    ETH_LEN, ETHERTYPE_IPV4, ETHERTYPE_IPV6, IPV6_LEN, Outcome, TRANSPORT_ENCAP, UDP_LEN, be16,
};
use crate::ipv4_checksum;
use crate::pcapio::MAX_FRAME;

const ETH_MIN: usize = 64;
const IPPROTO_UDP: u8 = 17;

/// A decrypted frame and the hint its PSP header carried.
pub struct Decrypted {
    pub outcome: Outcome,
    pub hint: Option<Hint>,
    pub spi: u32,
}

pub fn process(keys: &MasterKeys, frame: &[u8]) -> Result<Decrypted> {
    let skipped = |why: String| {
        Ok(Decrypted {
            outcome: Outcome::Skipped(why),
            hint: None,
            spi: 0,
        })
    };
    let len = frame.len();
    if len < ETH_MIN {
        bail!("invalid packet, too small, {len} bytes");
    }
    if len > MAX_FRAME {
        bail!("invalid packet, too big, {len} bytes");
    }
    let etype = be16(frame, 12);
    let (ip_hdr_len, proto, ip_len) = match etype {
        ETHERTYPE_IPV4 => {
            let ihl = usize::from(frame[ETH_LEN] & 0x0f) * 4;
            let ip_len = be16(frame, ETH_LEN + 2);
            if usize::from(ip_len) != len - ETH_LEN {
                bail!("invalid packet, bad IP len");
            }
            (ihl, frame[ETH_LEN + 9], ip_len)
        }
        ETHERTYPE_IPV6 => {
            let plen = be16(frame, ETH_LEN + 4);
            let proto = frame[ETH_LEN + 6];
            if proto == IPPROTO_UDP && usize::from(plen) != len - ETH_LEN - IPV6_LEN {
                bail!("invalid packet, bad IP len");
            }
            (IPV6_LEN, proto, plen)
        }
        other => return skipped(format!("skipping non-IP packet, etype = {other:#06x}")),
    };
    if proto != IPPROTO_UDP {
        return skipped(format!("skipping non-PSP packet, IP proto = {proto:#04x}"));
    }
    let udp = ETH_LEN + ip_hdr_len;
    if ip_hdr_len < 20 || len < udp + TRANSPORT_ENCAP {
        bail!("invalid packet, too short for UDP, PSP header and ICV");
    }
    let dport = be16(frame, udp + 2);
    if dport != psp::UDP_PORT {
        return skipped(format!("skipping non-PSP packet, UDP dport = {dport:#06x}"));
    }
    if usize::from(be16(frame, udp + 4)) != len - udp {
        bail!("invalid packet, bad UDP len");
    }
    let psp_start = udp + UDP_LEN;
    let segment =
        Segment::parse(&frame[psp_start..]).map_err(|e| anyhow::anyhow!("invalid packet, {e}"))?;
    let header = segment.header();
    let (spi, version, hint, next_header) = (
        header.spi(),
        segment.version(),
        segment.hint(),
        header.next_header(),
    );
    let header_len = segment.layout().header_len;

    let mut plain = frame[psp_start..].to_vec();
    let sa = Sa::new(spi, version, &keys.derive(spi, version))?;
    sa.open_in_place(&mut plain)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let body = &plain[header_len..plain.len() - ICV_LEN];

    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&frame[..ETH_LEN]);
    let tunnel = matches!(next_header, 4 | 41);
    if !tunnel {
        out.extend_from_slice(&frame[ETH_LEN..udp]);
        let strip = u16::try_from(UDP_LEN + header_len + ICV_LEN)?;
        if etype == ETHERTYPE_IPV4 {
            out[ETH_LEN + 2..ETH_LEN + 4]
                .copy_from_slice(&ip_len.wrapping_sub(strip).to_be_bytes());
            out[ETH_LEN + 9] = next_header;
            out[ETH_LEN + 10..ETH_LEN + 12].copy_from_slice(&[0, 0]);
            let csum = ipv4_checksum(&out[ETH_LEN..udp]);
            out[ETH_LEN + 10..ETH_LEN + 12].copy_from_slice(&csum.to_be_bytes());
        } else {
            out[ETH_LEN + 4..ETH_LEN + 6]
                .copy_from_slice(&ip_len.wrapping_sub(strip).to_be_bytes());
            out[ETH_LEN + 6] = next_header;
        }
    }
    out.extend_from_slice(body);
    Ok(Decrypted {
        outcome: Outcome::Sealed(out),
        hint,
        spi,
    })
}
