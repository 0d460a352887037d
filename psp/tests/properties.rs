//! Properties: parse(emit(x)) == x, and no parser panics on arbitrary bytes.

use proptest::prelude::*;
use psp::{
    Extension, Header, HeaderRepr, Hint, MasterKey, MasterKeys, Sa, Segment, TcpInfo, Version,
    locate,
};

fn hint() -> impl Strategy<Value = Hint> {
    (
        any::<u32>(),
        any::<u16>(),
        0u64..=psp::hint::MAX_OFFSET,
        any::<u32>(),
    )
        .prop_map(|(region_id, generation, offset, base_tcp_seq)| Hint {
            region_id,
            generation,
            offset,
            base_tcp_seq,
        })
}

fn repr() -> impl Strategy<Value = HeaderRepr> {
    let ext = prop_oneof![
        Just(Extension::None),
        hint().prop_map(Extension::Hint),
        (1usize..8).prop_map(|n| Extension::Other(n * 8))
    ];
    (
        any::<u8>(),
        0u8..4,
        0u8..64,
        any::<bool>(),
        any::<bool>(),
        0u8..4,
        any::<u32>(),
        any::<u64>(),
        proptest::option::of(any::<u64>()),
        ext,
    )
        .prop_map(
            |(next_header, reserved, crypt_offset, sample, drop, v, spi, iv, vc, extension)| {
                HeaderRepr {
                    next_header,
                    reserved,
                    crypt_offset,
                    sample,
                    drop,
                    version: Version::from_wire(v).unwrap(),
                    spi,
                    iv,
                    vc,
                    // A 16-byte "other" extension is by definition a hint: keep the cases apart.
                    extension: if extension == Extension::Other(16) {
                        Extension::Other(24)
                    } else {
                        extension
                    },
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn header_parse_emit_round_trips(r in repr()) {
        let mut buf = vec![0u8; r.buffer_len()];
        r.emit(&mut Header::new_unchecked(&mut buf[..])).unwrap();
        let parsed = HeaderRepr::parse(&Header::new_checked(&buf[..]).unwrap()).unwrap();
        prop_assert_eq!(parsed, r);
    }

    #[test]
    fn hint_parse_emit_round_trips(h in hint()) {
        let mut buf = [0u8; 16];
        h.emit(&mut buf).unwrap();
        prop_assert_eq!(Hint::parse(&buf).unwrap(), h);
    }

    #[test]
    fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(h) = Header::new_checked(&bytes[..]) {
            let _ = (h.spi(), h.iv(), h.vc(), h.hint(), h.extension().len(), h.crypt_start());
            let _ = HeaderRepr::parse(&h);
        }
        if let Ok(seg) = Segment::parse(&bytes) {
            let _ = (seg.hint(), seg.clear_tcp(), seg.layout().len());
        }
        let _ = TcpInfo::parse(&bytes);
        let _ = locate(&bytes);
        let keys = MasterKeys::new(MasterKey([1; 32]), MasterKey([2; 32]));
        if let Ok(v) = Header::new_checked(&bytes[..]).and_then(|h| h.version()) {
            let spi = Header::new_unchecked(&bytes[..]).spi();
            let sa = Sa::new(spi, v, &keys.derive(spi, v)).unwrap();
            let mut copy = bytes.clone();
            prop_assert!(sa.open_in_place(&mut copy).is_err(), "random bytes must not authenticate");
        }
    }

    #[test]
    fn sealed_segments_parse_back(r in repr(), body in proptest::collection::vec(any::<u8>(), 0..300)) {
        let hl = r.buffer_len();
        // Keep the crypt offset inside the segment.
        let max_units = u8::try_from((hl + body.len() - 16) / 4).unwrap_or(63).min(63);
        let r = HeaderRepr { crypt_offset: r.crypt_offset.min(max_units), ..r };
        let mut seg = vec![0u8; hl + body.len() + 16];
        r.emit(&mut Header::new_unchecked(&mut seg[..])).unwrap();
        seg[hl..hl + body.len()].copy_from_slice(&body);
        let keys = MasterKeys::new(MasterKey([1; 32]), MasterKey([2; 32]));
        let sa = Sa::new(r.spi, r.version, &keys.derive(r.spi, r.version)).unwrap();
        sa.seal_in_place(&mut seg).unwrap();
        let layout = sa.open_in_place(&mut seg).unwrap();
        prop_assert_eq!(&seg[layout.header_len..layout.icv_start], &body[..]);
    }
}
