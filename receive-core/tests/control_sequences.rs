//! Arbitrary sequences of control requests, closes, timeouts, finishes and releases
//! against the grant table: windows never overlap, every granted byte lies in its region,
//! the engine and the table agree, nothing panics.

use control::Request;
use proptest::prelude::*;
use receive_core::drive::{Op, play};

fn request() -> impl Strategy<Value = Request> {
    let spi = prop_oneof![0x4000_0001u32..0x4000_0008, any::<u32>()];
    let len = prop_oneof![
        1..400_000u64,
        Just(0),
        Just(u64::MAX),
        Just(u64::MAX - 12287),
        any::<u64>()
    ];
    let grant = prop_oneof![
        0..8u64,
        (0..8u64, 0..3u64).prop_map(|(i, e)| e << 32 | i),
        any::<u64>()
    ];
    prop_oneof![
        (0..6u8, proptest::bool::ANY).prop_map(|(version, inline)| Request::Session {
            version,
            crypto: if inline {
                control::Crypto::Inline
            } else {
                control::Crypto::Software
            },
        }),
        (
            spi,
            len,
            any::<u32>(),
            prop_oneof![Just(1400u32), any::<u32>()],
            0..3u32,
            prop::option::of(0..4u32)
        )
            .prop_map(|(spi, len, base_seq, mss, queue, region)| Request::Grant {
                spi,
                len,
                base_seq,
                mss,
                queue,
                region,
                frame_header_len: None,
            }),
        (grant, prop_oneof![Just("ab".repeat(32)), ".{0,70}"])
            .prop_map(|(grant, sha256)| Request::Complete { grant, sha256 }),
        Just(Request::Bye),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..4u8, request()).prop_map(|(conn, request)| Op::Request { conn, request }),
        1 => (0..4u8).prop_map(|conn| Op::Close { conn }),
        1 => any::<u16>().prop_map(|ms| Op::Wait { ms }),
        1 => any::<u8>().prop_map(|pick| Op::Finish { pick }),
        1 => any::<u8>().prop_map(|pick| Op::Release { pick }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn hostile_sequences_keep_the_invariants(ops in prop::collection::vec(op(), 1..120)) {
        if let Err(e) = play(&ops) {
            return Err(TestCaseError::fail(e));
        }
    }
}
