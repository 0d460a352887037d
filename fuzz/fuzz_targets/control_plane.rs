//! Fuzzes the receiver's control-message handling: arbitrary sequences of requests,
//! closes, timeouts, finishes and releases against the grant table and a real placement
//! engine. Invariants (checked after every step by `receive_core::drive::play`): windows
//! never overlap, every granted byte lies in its region, the table and the engine agree,
//! nothing panics.
#![no_main]

use arbitrary::Arbitrary;
use control::Request;
use libfuzzer_sys::fuzz_target;
use receive_core::drive::{Op, play};

#[derive(Debug, Arbitrary)]
enum RequestIn {
    Session(u8),
    Grant {
        spi_low: Option<u8>,
        spi: u32,
        len: u64,
        base_seq: u32,
        mss: u32,
        queue: u8,
        region: Option<u8>,
    },
    Complete {
        grant: u64,
        good_digest: bool,
    },
    Bye,
}

#[derive(Debug, Arbitrary)]
enum OpIn {
    Request(u8, RequestIn),
    Close(u8),
    Wait(u16),
    Finish(u8),
    Release(u8),
}

fn request(r: RequestIn) -> Request {
    match r {
        RequestIn::Session(version) => Request::Session {
            version: version % 5,
            crypto: if version & 0x80 != 0 { control::Crypto::Inline } else { control::Crypto::Software },
        },
        RequestIn::Grant {
            spi_low,
            spi,
            len,
            base_seq,
            mss,
            queue,
            region,
        } => Request::Grant {
            // Mostly SPIs the receiver hands out, so ownership is exercised.
            spi: spi_low.map_or(spi, |l| 0x4000_0001 + u32::from(l % 8)),
            len: len % (1 << 21),
            base_seq,
            mss: mss % 2000,
            queue: u32::from(queue % 3),
            region: region.map(|r| u32::from(r % 4)),
            frame_header_len: None,
        },
        RequestIn::Complete { grant, good_digest } => Request::Complete {
            grant: grant % (4 << 32),
            sha256: if good_digest { "ab".repeat(32) } else { "x".into() },
        },
        RequestIn::Bye => Request::Bye,
    }
}

fuzz_target!(|ops: Vec<OpIn>| {
    let ops: Vec<Op> = ops
        .into_iter()
        .map(|o| match o {
            OpIn::Request(conn, r) => Op::Request {
                conn: conn % 4,
                request: request(r),
            },
            OpIn::Close(conn) => Op::Close { conn: conn % 4 },
            OpIn::Wait(ms) => Op::Wait { ms },
            OpIn::Finish(pick) => Op::Finish { pick },
            OpIn::Release(pick) => Op::Release { pick },
        })
        .collect();
    if let Err(e) = play(&ops) {
        panic!("{e}");
    }
});
