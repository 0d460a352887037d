//! Criterion benchmarks: frame parsing, and `open_in_place` beside raw `ring` AES-GCM on
//! the same buffer.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use psp::{
    FlowTemplate, FrameBuilder, Hint, IpEndpoints, MasterKey, MasterKeys, Sa, Segment, SegmentSpec,
    Version, locate,
};
use ring::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

fn keys() -> MasterKeys {
    MasterKeys::new(MasterKey([1; 32]), MasterKey([2; 32]))
}

fn frame(sa: &Sa, payload_len: usize) -> Vec<u8> {
    let flow = FlowTemplate {
        eth_src: [2, 0, 0, 0, 0, 1],
        eth_dst: [2, 0, 0, 0, 0, 2],
        ip: IpEndpoints::V4 {
            src: [10, 0, 0, 1],
            dst: [10, 0, 0, 2],
        },
        udp_src_port: 1234,
        tcp_src_port: 40000,
        tcp_dst_port: 5001,
        vc: None,
        ttl: 64,
    };
    let builder = FrameBuilder::new(flow, sa);
    let hint = Some(Hint {
        region_id: 1,
        generation: 1,
        offset: 0,
        base_tcp_seq: 0,
    });
    let mut buf = vec![0u8; builder.frame_len(true, payload_len)];
    builder
        .build(
            &mut buf,
            &SegmentSpec {
                iv: 1,
                hint,
                seq: 0,
                ack: 0,
                psh: false,
            },
            &vec![7u8; payload_len],
        )
        .unwrap();
    buf
}

fn parse(c: &mut Criterion) {
    let sa = Sa::new(
        0x4000_0001,
        Version::AesGcm128,
        &keys().derive(0x4000_0001, Version::AesGcm128),
    )
    .unwrap();
    let f = frame(&sa, 1400);
    c.bench_function("parse/frame_1400 (locate + segment + hint + tcp)", |b| {
        b.iter(|| {
            let f = black_box(&f[..]);
            let loc = locate(f).unwrap();
            let seg = Segment::parse(&f[loc.segment]).unwrap();
            black_box((seg.hint(), seg.clear_tcp().unwrap().seq))
        })
    });
    let seg_bytes = f[42..].to_vec();
    c.bench_function("parse/segment_only", |b| {
        b.iter(|| {
            let seg = Segment::parse(black_box(&seg_bytes[..])).unwrap();
            black_box((seg.hint(), seg.clear_tcp().unwrap().seq))
        })
    });
}

fn open(c: &mut Criterion) {
    let spi = 0x4000_0001;
    let key = keys().derive(spi, Version::AesGcm128);
    let sa = Sa::new(spi, Version::AesGcm128, &key).unwrap();
    let raw = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, key.as_bytes()).unwrap());
    let mut group = c.benchmark_group("open");
    for len in [1400usize, 64 * 1024 - 200] {
        let f = frame(&sa, len);
        let sealed = f[42..].to_vec();
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_with_input(
            BenchmarkId::new("psp_open_in_place", len),
            &sealed,
            |b, sealed| {
                let mut buf = sealed.clone();
                b.iter(|| {
                    buf.copy_from_slice(sealed);
                    black_box(sa.open_in_place(&mut buf).unwrap());
                })
            },
        );
        // Raw ring on the same bytes: same AAD/ciphertext split, no PSP parsing.
        let crypt_start = Segment::parse(&sealed).unwrap().layout().crypt_start;
        group.bench_with_input(
            BenchmarkId::new("ring_aes_gcm_open", len),
            &sealed,
            |b, sealed| {
                let mut buf = sealed.clone();
                b.iter(|| {
                    buf.copy_from_slice(sealed);
                    let (aad, in_out) = buf.split_at_mut(crypt_start);
                    let mut nonce = [0u8; 12];
                    nonce.copy_from_slice(&aad[4..16]);
                    black_box(
                        raw.open_in_place(
                            Nonce::assume_unique_for_key(nonce),
                            Aad::from(&aad[..]),
                            in_out,
                        )
                        .unwrap()
                        .len(),
                    );
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, parse, open);
criterion_main!(benches, parts);

fn parse_parts(c: &mut Criterion) {
    let sa = Sa::new(
        0x4000_0001,
        Version::AesGcm128,
        &keys().derive(0x4000_0001, Version::AesGcm128),
    )
    .unwrap();
    let f = frame(&sa, 1400);
    let seg_bytes = f[42..].to_vec();
    c.bench_function("parts/locate", |b| {
        b.iter(|| black_box(locate(black_box(&f[..])).unwrap()))
    });
    c.bench_function("parts/segment_parse", |b| {
        b.iter(|| black_box(Segment::parse(black_box(&seg_bytes[..])).unwrap().layout()))
    });
    let seg = Segment::parse(&seg_bytes).unwrap();
    c.bench_function("parts/hint", |b| {
        b.iter(|| black_box(black_box(&seg).hint()))
    });
    c.bench_function("parts/clear_tcp", |b| {
        b.iter(|| black_box(black_box(&seg).clear_tcp().unwrap()))
    });
}
criterion_group!(parts, parse_parts);
