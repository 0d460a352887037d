//! Seal/open round trips over every version, mode, crypt offset, VC and IP family, and
//! tamper detection on every authenticated bit.

use psp::header::{BASE_LEN, ICV_LEN};
use psp::{
    Error, Extension, FlowTemplate, FrameBuilder, Header, HeaderRepr, Hint, IpEndpoints, MasterKey,
    MasterKeys, Sa, SegmentSpec, Version, derive_region_bound, locate,
};

fn keys() -> MasterKeys {
    MasterKeys::new(MasterKey([0x11; 32]), MasterKey([0x22; 32]))
}

fn sa(spi: u32, version: Version) -> Sa {
    Sa::new(spi, version, &keys().derive(spi, version)).unwrap()
}

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + 7) as u8).collect()
}

/// A segment: header from `repr`, then `body`, then room for the ICV.
fn segment(repr: &HeaderRepr, body: &[u8]) -> Vec<u8> {
    let hl = repr.buffer_len();
    let mut seg = vec![0u8; hl + body.len() + ICV_LEN];
    repr.emit(&mut Header::new_unchecked(&mut seg[..])).unwrap();
    seg[hl..hl + body.len()].copy_from_slice(body);
    seg
}

fn repr(version: Version, next_header: u8, crypt_offset: u8, vc: bool, hint: bool) -> HeaderRepr {
    HeaderRepr {
        next_header,
        reserved: 0,
        crypt_offset,
        sample: false,
        drop: false,
        version,
        spi: 0x9a34_5678,
        iv: 42,
        vc: vc.then_some(0x0102_0304_0506_0708),
        extension: if hint {
            Extension::Hint(Hint {
                region_id: 9,
                generation: 1,
                offset: 4096,
                base_tcp_seq: 1,
            })
        } else {
            Extension::None
        },
    }
}

#[test]
fn every_version_mode_offset_and_vc_round_trips() {
    let body = payload(300);
    let mut cases = 0;
    for version in Version::ALL {
        let sa = sa(0x9a34_5678, version);
        for next_header in [6u8, 4, 41] {
            for vc in [false, true] {
                for hint in [false, true] {
                    for crypt_offset in [0u8, 1, 2, 5, 6, 9, 11, 13, 63] {
                        let r = repr(version, next_header, crypt_offset, vc, hint);
                        let mut seg = segment(&r, &body);
                        sa.seal_in_place(&mut seg).unwrap();
                        let hl = r.buffer_len();
                        let clear_end = BASE_LEN + usize::from(crypt_offset) * 4;
                        if version.is_gmac() {
                            assert_eq!(
                                &seg[hl..hl + body.len()],
                                &body[..],
                                "GMAC must not encrypt"
                            );
                        } else if clear_end < hl + body.len() {
                            assert_ne!(
                                &seg[clear_end.max(hl)..hl + body.len()],
                                &body[clear_end.max(hl) - hl..],
                                "{version} must encrypt after the crypt offset"
                            );
                        }
                        let layout = sa.open_in_place(&mut seg).unwrap();
                        assert_eq!(layout.header_len, hl);
                        assert_eq!(&seg[hl..hl + body.len()], &body[..]);
                        assert_eq!(
                            HeaderRepr::parse(&Header::new_checked(&seg[..]).unwrap()).unwrap(),
                            r
                        );
                        cases += 1;
                    }
                }
            }
        }
    }
    assert_eq!(cases, 4 * 3 * 2 * 2 * 9);
}

#[test]
fn empty_encrypted_part_still_verifies_the_tag() {
    for version in Version::ALL {
        let sa = sa(0x9a34_5678, version);
        let r = repr(version, 6, 5, false, false);
        let mut seg = segment(&r, &payload(20));
        sa.seal_in_place(&mut seg).unwrap();
        let last = seg.len() - 1;
        seg[last] ^= 1;
        assert_eq!(
            sa.open_in_place(&mut seg),
            Err(Error::AuthenticationFailed),
            "{version}"
        );
    }
}

#[test]
fn flipping_any_authenticated_bit_fails_open() {
    for version in [Version::AesGcm128, Version::AesGmac256] {
        let sa = sa(0x9a34_5678, version);
        let r = repr(version, 6, 11, true, true);
        let mut sealed = segment(&r, &payload(60));
        sa.seal_in_place(&mut sealed).unwrap();
        for byte in 0..sealed.len() {
            for bit in 0..8 {
                let mut copy = sealed.clone();
                copy[byte] ^= 1 << bit;
                // Flips in SPI, version or lengths are caught before the AEAD (mismatch,
                // malformed); all others by the tag. None may open.
                assert!(
                    sa.open_in_place(&mut copy).is_err(),
                    "{version}: flip of byte {byte} bit {bit} was accepted"
                );
            }
        }
    }
}

#[test]
fn reserved_s_and_d_bits_are_authenticated() {
    let sa = sa(0x9a34_5678, Version::AesGcm256);
    let mut sealed = segment(&repr(Version::AesGcm256, 6, 9, false, true), &payload(100));
    sa.seal_in_place(&mut sealed).unwrap();
    for (byte, mask) in [(2usize, 0x80u8), (2, 0x40), (3, 0x80), (3, 0x40)] {
        let mut copy = sealed.clone();
        copy[byte] ^= mask;
        assert_eq!(
            sa.open_in_place(&mut copy),
            Err(Error::AuthenticationFailed)
        );
    }
}

#[test]
fn wrong_key_and_wrong_sa_are_refused() {
    let sa_a = sa(0x10, Version::AesGcm128);
    let mut seg = segment(
        &HeaderRepr {
            spi: 0x10,
            ..repr(Version::AesGcm128, 6, 9, false, true)
        },
        &payload(64),
    );
    sa_a.seal_in_place(&mut seg).unwrap();
    let other = Sa::new(
        0x10,
        Version::AesGcm128,
        &MasterKeys::new(MasterKey([9; 32]), MasterKey([9; 32])).derive(0x10, Version::AesGcm128),
    )
    .unwrap();
    assert_eq!(
        other.open_in_place(&mut seg.clone()),
        Err(Error::AuthenticationFailed)
    );
    let wrong_spi = sa(0x11, Version::AesGcm128);
    assert!(matches!(
        wrong_spi.open_in_place(&mut seg.clone()),
        Err(Error::SaMismatch { .. })
    ));
}

#[test]
fn region_bound_key_rejects_a_hint_for_another_region() {
    let master = MasterKey([5; 32]);
    let spi = 0x4000_0001;
    let granted = Sa::new(
        spi,
        Version::AesGcm128,
        &derive_region_bound(&master, spi, Version::AesGcm128, 1),
    )
    .unwrap();
    // A sender holding the key for region 1 writes a hint naming region 2.
    let mut forged = segment(
        &HeaderRepr {
            spi,
            extension: Extension::Hint(Hint {
                region_id: 2,
                ..Hint::default()
            }),
            ..repr(Version::AesGcm128, 6, 9, false, true)
        },
        &payload(64),
    );
    granted.seal_in_place(&mut forged).unwrap();
    let receiver_region2 = Sa::new(
        spi,
        Version::AesGcm128,
        &derive_region_bound(&master, spi, Version::AesGcm128, 2),
    )
    .unwrap();
    assert_eq!(
        receiver_region2.open_in_place(&mut forged),
        Err(Error::AuthenticationFailed)
    );
}

fn flow(ip: IpEndpoints, vc: Option<u64>) -> FlowTemplate {
    FlowTemplate {
        eth_src: [2, 0, 0, 0, 0, 1],
        eth_dst: [2, 0, 0, 0, 0, 2],
        ip,
        udp_src_port: 4242,
        tcp_src_port: 40000,
        tcp_dst_port: 5001,
        vc,
        ttl: 64,
    }
}

#[test]
fn frame_builder_round_trips_ipv4_and_ipv6() {
    let ips = [
        IpEndpoints::V4 {
            src: [10, 0, 0, 1],
            dst: [10, 0, 0, 2],
        },
        IpEndpoints::V6 {
            src: [0xfd; 16],
            dst: [0xfe; 16],
        },
    ];
    let data = payload(1400);
    for version in Version::ALL {
        let sa = sa(0x4000_0007, version);
        for ip in ips {
            for vc in [None, Some(77)] {
                for hint in [
                    None,
                    Some(Hint {
                        region_id: 3,
                        generation: 2,
                        offset: 1 << 40,
                        base_tcp_seq: 1000,
                    }),
                ] {
                    let builder = FrameBuilder::new(flow(ip, vc), &sa);
                    let mut buf = vec![0u8; 2048];
                    let spec = SegmentSpec {
                        iv: 5,
                        hint,
                        seq: 1000 + 1400,
                        ack: 1,
                        psh: true,
                    };
                    let len = builder.build(&mut buf, &spec, &data).unwrap();
                    assert_eq!(len, builder.frame_len(hint.is_some(), data.len()));
                    let frame = &mut buf[..len];
                    let loc = locate(frame).unwrap();
                    assert_eq!(loc.ip, ip);
                    assert_eq!(loc.udp_src_port, 4242);
                    assert_eq!(loc.segment.end, len);
                    // Before decryption: hint and TCP header readable.
                    let seg = psp::Segment::parse(&frame[loc.segment.clone()]).unwrap();
                    assert_eq!(seg.hint(), hint);
                    let tcp = seg.clear_tcp().unwrap();
                    assert_eq!((tcp.seq, tcp.src_port, tcp.dst_port), (2400, 40000, 5001));
                    let layout = sa.open_in_place(&mut frame[loc.segment.clone()]).unwrap();
                    let off = loc.segment.start + layout.header_len + tcp.header_len;
                    assert_eq!(off, builder.payload_offset(hint.is_some()));
                    assert_eq!(&frame[off..off + data.len()], &data[..]);
                }
            }
        }
    }
}

#[test]
fn frame_builder_refuses_short_buffers() {
    let sa = sa(1, Version::AesGcm128);
    let builder = FrameBuilder::new(
        flow(
            IpEndpoints::V4 {
                src: [10, 0, 0, 1],
                dst: [10, 0, 0, 2],
            },
            None,
        ),
        &sa,
    );
    let mut buf = [0u8; 100];
    let spec = SegmentSpec {
        iv: 1,
        hint: None,
        seq: 0,
        ack: 0,
        psh: false,
    };
    assert!(matches!(
        builder.build(&mut buf, &spec, &payload(64)),
        Err(Error::Truncated { .. })
    ));
}

#[test]
fn locate_rejects_non_psp_frames() {
    assert!(matches!(locate(&[0u8; 10]), Err(Error::NotPsp(_))));
    let sa = sa(1, Version::AesGcm128);
    let builder = FrameBuilder::new(
        flow(
            IpEndpoints::V4 {
                src: [10, 0, 0, 1],
                dst: [10, 0, 0, 2],
            },
            None,
        ),
        &sa,
    );
    let mut buf = vec![0u8; 256];
    let len = builder
        .build(
            &mut buf,
            &SegmentSpec {
                iv: 1,
                hint: None,
                seq: 0,
                ack: 0,
                psh: false,
            },
            &payload(32),
        )
        .unwrap();
    buf[14 + 20 + 2..14 + 20 + 4].copy_from_slice(&999u16.to_be_bytes());
    assert_eq!(
        locate(&buf[..len]),
        Err(Error::NotPsp("UDP destination port is not 1000"))
    );
}

/// The receiver's split path: header (through TCP) and payload in different places, ICV
/// beside. Every version opens; a flipped payload, header or ICV bit fails.
#[test]
fn split_segments_open_like_whole_ones() {
    let flow = FlowTemplate {
        eth_src: [2; 6],
        eth_dst: [4; 6],
        ip: IpEndpoints::V4 {
            src: [10, 0, 0, 1],
            dst: [10, 0, 0, 2],
        },
        udp_src_port: 40000,
        tcp_src_port: 1,
        tcp_dst_port: 2,
        vc: None,
        ttl: 64,
    };
    for version in Version::ALL {
        let sa = sa(0x4000_0001, version);
        let builder = FrameBuilder::new(flow, &sa);
        let spec = SegmentSpec {
            iv: 9,
            hint: Some(Hint {
                region_id: 1,
                generation: 1,
                offset: 0,
                base_tcp_seq: 5,
            }),
            seq: 5,
            ack: 0,
            psh: false,
        };
        let body = payload(1400);
        let mut frame = vec![0u8; 1600];
        let len = builder.build(&mut frame, &spec, &body).unwrap();
        let loc = locate(&frame[..len]).unwrap();
        let seg = frame[loc.segment].to_vec();
        // payload_offset is relative to the frame; the segment starts at loc.segment.start.
        let hdr_len = builder.payload_offset(true) - (len - seg.len());
        let icv: [u8; ICV_LEN] = seg[seg.len() - ICV_LEN..].try_into().unwrap();
        let open = |hdr: &[u8], payload: &mut Vec<u8>, icv: &[u8; ICV_LEN]| {
            sa.open_split(&psp::Segment::parse_head(hdr)?, payload, icv)
        };
        let mut pl = seg[hdr_len..seg.len() - ICV_LEN].to_vec();
        open(&seg[..hdr_len], &mut pl, &icv).unwrap_or_else(|e| panic!("{version}: {e}"));
        assert_eq!(pl, body, "{version}: plaintext");

        let mut pl = seg[hdr_len..seg.len() - ICV_LEN].to_vec();
        pl[700] ^= 1;
        assert!(
            open(&seg[..hdr_len], &mut pl, &icv).is_err(),
            "{version}: payload bit"
        );
        let mut hdr = seg[..hdr_len].to_vec();
        hdr[hdr_len - 10] ^= 0x80; // a TCP header byte
        let mut pl = seg[hdr_len..seg.len() - ICV_LEN].to_vec();
        assert!(open(&hdr, &mut pl, &icv).is_err(), "{version}: header bit");
        let mut bad = icv;
        bad[0] ^= 1;
        let mut pl = seg[hdr_len..seg.len() - ICV_LEN].to_vec();
        assert!(
            open(&seg[..hdr_len], &mut pl, &bad).is_err(),
            "{version}: ICV bit"
        );
    }
}
