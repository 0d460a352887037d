//! `zc-recv replay` on a pcap built with the `psp` crate: honest, low-trust and lying
//! streams; the report's numbers must match what the test sent.
#![allow(clippy::cast_possible_truncation)] // test data sizes are small

use std::path::{Path, PathBuf};
use std::process::Command;

use pcap_file::DataLink;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use psp::{
    FlowTemplate, FrameBuilder, Hint, IpEndpoints, MasterKey, MasterKeys, Sa, SegmentSpec, Version,
};

const K0: [u8; 32] = [0x11; 32];
const K1: [u8; 32] = [0x22; 32];
const HONEST: u32 = 0x4000_0001;
const LOW: u32 = 0x0000_0002;
const LIAR: u32 = 0x4000_0003;
const STRANGER: u32 = 0x4000_0099;
const MSS: usize = 1400;

fn message(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn sha256(b: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, b))
}

fn sa(spi: u32) -> Sa {
    let keys = MasterKeys::new(MasterKey(K0), MasterKey(K1));
    Sa::new(
        spi,
        Version::AesGcm128,
        &keys.derive(spi, Version::AesGcm128),
    )
    .unwrap()
}

#[derive(Default)]
struct Capture {
    frames: Vec<Vec<u8>>,
    iv: u64,
}

impl Capture {
    fn push(&mut self, spi: u32, hint: Option<Hint>, seq: u32, payload: &[u8]) -> usize {
        let sa = sa(spi);
        let flow = FlowTemplate {
            eth_src: [2, 0, 0, 0, 0, 1],
            eth_dst: [2, 0, 0, 0, 0, 2],
            ip: IpEndpoints::V4 {
                src: [10, 0, 0, 1],
                dst: [10, 0, 0, 2],
            },
            udp_src_port: 5555,
            tcp_src_port: 40000,
            tcp_dst_port: 5001,
            vc: None,
            ttl: 64,
        };
        let b = FrameBuilder::new(flow, &sa);
        let mut buf = vec![0u8; b.frame_len(hint.is_some(), payload.len())];
        self.iv += 1;
        b.build(
            &mut buf,
            &SegmentSpec {
                iv: self.iv,
                hint,
                seq,
                ack: 0,
                psh: false,
            },
            payload,
        )
        .unwrap();
        self.frames.push(buf);
        self.frames.len() - 1
    }

    /// Sends `msg` in MSS segments from `base_seq`, in the order `order` gives.
    fn transfer(
        &mut self,
        spi: u32,
        hint: Hint,
        msg: &[u8],
        order: impl Fn(Vec<usize>) -> Vec<usize>,
    ) {
        let chunks: Vec<usize> = (0..msg.len().div_ceil(MSS)).collect();
        for i in order(chunks) {
            let start = i * MSS;
            let end = (start + MSS).min(msg.len());
            self.push(
                spi,
                Some(hint),
                hint.base_tcp_seq.wrapping_add(start as u32),
                &msg[start..end],
            );
        }
    }

    /// The same frames as pcapng: one Ethernet interface without `if_tsresol`
    /// (microsecond timestamps), or of link type `link`.
    fn write_pcapng(&self, path: &Path, link: DataLink) {
        use pcap_file::pcapng::PcapNgWriter;
        use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
        use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock;
        let mut w = PcapNgWriter::new(std::fs::File::create(path).unwrap()).unwrap();
        w.write_pcapng_block(InterfaceDescriptionBlock {
            linktype: link,
            snaplen: 0,
            options: vec![],
        })
        .unwrap();
        for (i, f) in self.frames.iter().enumerate() {
            w.write_pcapng_block(EnhancedPacketBlock {
                interface_id: 0,
                // The raw count, in the interface's microseconds.
                timestamp: std::time::Duration::from_nanos(1000 * i as u64),
                original_len: f.len() as u32,
                data: f.as_slice().into(),
                options: vec![],
            })
            .unwrap();
        }
    }

    fn write(&self, path: &Path) {
        let mut w = PcapWriter::new(std::fs::File::create(path).unwrap()).unwrap();
        for (i, f) in self.frames.iter().enumerate() {
            w.write_packet(&PcapPacket::new(
                std::time::Duration::from_millis(i as u64),
                f.len() as u32,
                f,
            ))
            .unwrap();
        }
    }
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("zc-recv-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Runs `zc-recv replay` on `pcap` with the configuration `toml` (written to `name`).
fn run_replay(pcap: &Path, name: &str, toml: &str) -> std::process::Output {
    let cfg = tmp(name);
    std::fs::write(&cfg, toml).unwrap();
    Command::new(env!("CARGO_BIN_EXE_zc-recv"))
        .args([
            "replay",
            "--pcap",
            pcap.to_str().unwrap(),
            "--config",
            cfg.to_str().unwrap(),
        ])
        .output()
        .unwrap()
}

fn replay(pcap: &Path, toml: &str) -> serde_json::Value {
    let cfg = tmp(&format!(
        "{}.toml",
        pcap.file_stem().unwrap().to_str().unwrap()
    ));
    std::fs::write(&cfg, toml).unwrap();
    let json = cfg.with_extension("json");
    let out = Command::new(env!("CARGO_BIN_EXE_zc-recv"))
        .args([
            "replay",
            "--pcap",
            pcap.to_str().unwrap(),
            "--config",
            cfg.to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("replay report"));
    serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap()
}

fn keys_toml() -> String {
    format!(
        "[keys]\nmaster0 = \"{}\"\nmaster1 = \"{}\"\n",
        hex::encode(K0),
        hex::encode(K1)
    )
}

#[test]
fn replay_counts_every_path_and_check() {
    let a = message(100_000, 1);
    let b = message(20_000, 2);
    let mut cap = Capture {
        frames: Vec::new(),
        iv: 0,
    };
    // Honest stream, descending order, one duplicate.
    let hint_a = Hint {
        region_id: 1,
        generation: 2,
        offset: 1000,
        base_tcp_seq: 5000,
    };
    cap.transfer(HONEST, hint_a, &a, |mut c| {
        c.reverse();
        c
    });
    cap.push(HONEST, Some(hint_a), 5000 + 1400, &a[1400..2800]);
    // Low-trust stream into a region that activates late: staged, then copied.
    let hint_b = Hint {
        region_id: 2,
        generation: 1,
        offset: 0,
        base_tcp_seq: u32::MAX - 5000,
    };
    cap.transfer(LOW, hint_b, &b, |c| c);
    // The liar: one segment per check.
    let lie = [7u8; 200];
    cap.push(
        LIAR,
        Some(Hint {
            region_id: 1,
            generation: 2,
            offset: 0,
            base_tcp_seq: 0,
        }),
        0,
        &lie,
    ); // not_granted
    cap.push(
        LIAR,
        Some(Hint {
            region_id: 3,
            generation: 1,
            offset: 900,
            base_tcp_seq: 0,
        }),
        0,
        &lie,
    ); // out_of_bounds
    cap.push(
        LIAR,
        Some(Hint {
            region_id: 1,
            generation: 1,
            offset: 0,
            base_tcp_seq: 0,
        }),
        0,
        &lie,
    ); // stale_generation
    cap.push(
        LIAR,
        Some(Hint {
            region_id: 3,
            generation: 1,
            offset: 0,
            base_tcp_seq: 0,
        }),
        1 << 31,
        &lie,
    ); // seq_wrap
    cap.push(LIAR, None, 0, &lie); // no_hint
    let forged = cap.push(
        LIAR,
        Some(Hint {
            region_id: 3,
            generation: 1,
            offset: 0,
            base_tcp_seq: 0,
        }),
        0,
        &lie,
    );
    let last = cap.frames[forged].len() - 20;
    cap.frames[forged][last] ^= 0x01; // auth_failed
    cap.push(
        STRANGER,
        Some(Hint {
            region_id: 3,
            generation: 1,
            offset: 0,
            base_tcp_seq: 0,
        }),
        0,
        &lie,
    ); // unknown_sa
    let bad = cap.push(
        LIAR,
        Some(Hint {
            region_id: 3,
            generation: 1,
            offset: 0,
            base_tcp_seq: 0,
        }),
        0,
        &lie,
    );
    cap.frames[bad][42 + 3] = (9 << 2) | 1; // malformed: version 9
    let mut arp = vec![0xffu8; 60];
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    cap.frames.push(arp);
    let pcap = tmp("mixed.pcap");
    cap.write(&pcap);

    let toml = format!(
        "{}\n[[region]]\nid = 1\nlen = 200000\ngeneration = 2\nactive = true\n\n[[region]]\nid = 2\nlen = 50000\ngeneration = 1\nactive = false\n\n[[region]]\nid = 3\nlen = 10000\ngeneration = 1\nactive = true\n\n\
         [[grant]]\nspi = {HONEST}\nregion = 1\ngeneration = 2\noffset = 1000\nlen = 100000\nbase_seq = 5000\nsha256 = \"{}\"\n\n\
         [[grant]]\nspi = {LOW}\nregion = 2\ngeneration = 1\noffset = 0\nlen = 20000\nbase_seq = {}\nsha256 = \"{}\"\n\n\
         [[grant]]\nspi = {LIAR}\nregion = 3\ngeneration = 1\noffset = 0\nlen = 1000\nbase_seq = 0\n",
        keys_toml(),
        sha256(&a),
        u32::MAX - 5000,
        sha256(&b)
    );
    let r = replay(&pcap, &toml);
    let lies = 7 * 200; // the malformed segment counts as a packet of unknown (zero) payload
    assert_eq!(r["payload_bytes"], 100_000 + 1400 + 20_000 + lies);
    assert_eq!(r["cpu_copy_bytes"], 100_000 + 1400 + 20_000);
    assert_eq!(r["staged_bytes"], 20_000);
    assert_eq!(r["direct_bytes"], 0);
    assert_eq!(r["rejected_bytes"], lies);
    assert_eq!(r["duplicate_bytes"], 1400);
    assert_eq!(r["copies_avoided"], 0.0);
    assert_eq!(r["not_psp_frames"], 1);
    for reason in [
        "not_granted",
        "out_of_bounds",
        "stale_generation",
        "seq_wrap",
        "no_hint",
        "auth_failed",
        "unknown_sa",
        "malformed",
    ] {
        assert_eq!(r["rejects"][reason], 1, "{reason}: {}", r["rejects"]);
    }
    assert_eq!(r["rejects"].as_object().unwrap().len(), 8);
    let streams = r["streams"].as_array().unwrap();
    let stream = |spi: u32| streams.iter().find(|s| s["spi"] == spi).unwrap();
    assert_eq!(stream(HONEST)["grants"][0]["digest_ok"], true);
    assert_eq!(stream(HONEST)["grants"][0]["complete"], true);
    assert_eq!(stream(LOW)["grants"][0]["digest_ok"], true);
    assert_eq!(stream(LOW)["staged_bytes"], 20_000);
    assert_eq!(stream(LIAR)["grants"][0]["complete"], false);
    assert_eq!(
        stream(LIAR)["grants"][0]["missing"][0],
        serde_json::json!([0, 1000])
    );
    // The liar's window is incomplete, so the run as a whole is not verified.
    assert_eq!(r["verified"], false);
    assert_eq!(r["missing_bytes"], 1000);
    assert!(r["xsk_stats"].is_null() && r["xdp_counters"].is_null());
    assert!(r["gbit_per_s"].as_f64().unwrap() > 0.0);
}

/// The hint of a 50,000-byte window at the start of region 5, generation 0, from seq 1.
const REGION5_HINT: Hint = Hint {
    region_id: 5,
    generation: 0,
    offset: 0,
    base_tcp_seq: 1,
};

/// Region 5 (50,000 bytes, active) and one grant of the honest SPI for `message` there.
fn region5_toml(message: &[u8]) -> String {
    format!(
        "{}\n[[region]]\nid = 5\nlen = 50000\ngeneration = 0\nactive = true\n\n[[grant]]\nspi = {HONEST}\nregion = 5\ngeneration = 0\noffset = 0\nlen = 50000\nbase_seq = 1\nsha256 = \"{}\"\n",
        keys_toml(),
        sha256(message)
    )
}

#[test]
fn clean_transfer_verifies() {
    let a = message(50_000, 9);
    let (mut cap, hint) = (Capture::default(), REGION5_HINT);
    cap.transfer(HONEST, hint, &a, |c| c);
    let pcap = tmp("clean.pcap");
    cap.write(&pcap);
    let toml = region5_toml(&a);
    let r = replay(&pcap, &toml);
    assert_eq!(r["verified"], true);
    assert_eq!(r["missing_bytes"], 0);
    assert_eq!(r["cpu_copy_bytes"], 50_000);
    // With the wrong digest it must not verify.
    let wrong = toml.replace(&sha256(&a), &sha256(b"other"));
    assert_eq!(replay(&pcap, &wrong)["verified"], false);
}

#[test]
fn bad_configuration_is_a_clear_error() {
    let pcap = tmp("empty.pcap");
    Capture {
        frames: Vec::new(),
        iv: 0,
    }
    .write(&pcap);
    for (toml, needle) in [
        (
            "[keys]\nmaster0 = \"zz\"\nmaster1 = \"00\"\n",
            "master0 is not 64 hex digits",
        ),
        (
            "[keys]\nmaster0 = \"00\"\n",
            "not a valid replay configuration",
        ),
        (
            &*format!(
                "{}[[grant]]\nspi = 1\nregion = 9\ngeneration = 0\noffset = 0\nlen = 1\nbase_seq = 0\n",
                keys_toml()
            ),
            "no region 9",
        ),
    ] {
        let out = run_replay(&pcap, "bad.toml", toml);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains(needle), "{needle}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// A [[grant]]: spi, region, offset, len, base_seq, sha256.
type GrantRow<'a> = (u32, u32, u64, u64, u32, Option<&'a str>);

/// A configuration with `regions` ([[region]] id, len) and `grants`, generation 1, every
/// region active.
fn config(regions: &[(u32, u64)], grants: &[GrantRow<'_>]) -> String {
    let mut toml = keys_toml();
    for (id, len) in regions {
        toml += &format!("\n[[region]]\nid = {id}\nlen = {len}\ngeneration = 1\nactive = true\n");
    }
    for (spi, region, offset, len, base_seq, sha) in grants {
        toml += &format!(
            "\n[[grant]]\nspi = {spi}\nregion = {region}\ngeneration = 1\noffset = {offset}\nlen = {len}\nbase_seq = {base_seq}\n"
        );
        if let Some(sha) = sha {
            toml += &format!("sha256 = \"{sha}\"\n");
        }
    }
    toml
}

#[test]
fn configurations_that_cannot_work_are_refused_naming_the_field() {
    let pcap = tmp("empty-for-checks.pcap");
    Capture {
        frames: Vec::new(),
        iv: 0,
    }
    .write(&pcap);
    let empty = sha256(b"");
    let good = sha256(b"x");
    let cases: Vec<(String, &str)> = vec![
        (
            config(&[(1, 0)], &[]),
            "[[region]] 1 (id 1): len must be at least 1",
        ),
        (
            config(&[(1, 100), (1, 200)], &[]),
            "[[region]] 2 (id 1): id 1 is used by an earlier region",
        ),
        // A zero-length grant with the digest of nothing used to verify a run that
        // received nothing.
        (
            config(&[(1, 100)], &[(HONEST, 1, 0, 0, 0, Some(&empty))]),
            "[[grant]] 1 (SPI 0x40000001, region 1): len must be at least 1",
        ),
        (
            config(&[(1, 100)], &[(HONEST, 1, 50, 51, 0, None)]),
            "[[grant]] 1 (SPI 0x40000001, region 1): offset 50 + len 51 does not fit region 1 (100 bytes)",
        ),
        (
            config(&[(1, 100)], &[(HONEST, 1, u64::MAX, 2, 0, None)]),
            "offset 18446744073709551615 + len 2 does not fit region 1",
        ),
        (
            config(&[(1, 100)], &[(HONEST, 1, 0, 10, 0, Some("abc"))]),
            "[[grant]] 1 (SPI 0x40000001, region 1): sha256 \"abc\" is not 64 hex digits",
        ),
        (
            config(
                &[(1, 100)],
                &[(HONEST, 1, 0, 10, 0, Some(&format!("{}zz", &good[..62])))],
            ),
            "sha256",
        ),
        (
            config(
                &[(1, 100)],
                &[(HONEST, 1, 0, 10, 0, Some(&format!("{good}0")))],
            ),
            "is not 64 hex digits",
        ),
        // Another sender's window, or the same sender's, overlapping by one byte.
        (
            config(
                &[(1, 100), (2, 100)],
                &[
                    (HONEST, 1, 0, 50, 0, None),
                    (LOW, 2, 0, 100, 0, None),
                    (LIAR, 1, 49, 10, 0, None),
                ],
            ),
            "[[grant]] 3 (SPI 0x40000003, region 1): bytes 49..59 overlap bytes 0..50 of [[grant]] 1",
        ),
        (
            config(
                &[(1, 100)],
                &[(HONEST, 1, 40, 20, 0, None), (HONEST, 1, 0, 41, 0, None)],
            ),
            "[[grant]] 2 (SPI 0x40000001, region 1): bytes 0..41 overlap bytes 40..60 of [[grant]] 1",
        ),
    ];
    for (toml, needle) in &cases {
        let out = run_replay(&pcap, "refused.toml", toml);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{needle}: accepted\n{toml}");
        assert!(err.contains(needle), "{needle}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // Adjacent windows (no shared byte) are fine.
    let ok = config(
        &[(1, 100)],
        &[(HONEST, 1, 0, 50, 0, None), (LOW, 1, 50, 50, 0, None)],
    );
    let out = run_replay(&pcap, "adjacent.toml", &ok);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn two_disjoint_grants_of_one_spi_in_one_generation_both_verify() {
    let (a, b) = (message(30_000, 3), message(12_345, 4));
    let mut cap = Capture {
        frames: Vec::new(),
        iv: 0,
    };
    let hint = |offset, base_tcp_seq| Hint {
        region_id: 1,
        generation: 1,
        offset,
        base_tcp_seq,
    };
    // The older grant's segments interleaved with the newer's.
    let (ha, hb) = (hint(0, 1000), hint(40_000, 900_000));
    for i in 0..a.len().div_ceil(MSS).max(b.len().div_ceil(MSS)) {
        for (h, msg) in [(ha, &a), (hb, &b)] {
            let start = i * MSS;
            if start < msg.len() {
                let end = (start + MSS).min(msg.len());
                cap.push(
                    HONEST,
                    Some(h),
                    h.base_tcp_seq.wrapping_add(start as u32),
                    &msg[start..end],
                );
            }
        }
    }
    let pcap = tmp("two-grants.pcap");
    cap.write(&pcap);
    let toml = config(
        &[(1, 100_000)],
        &[
            (HONEST, 1, 0, a.len() as u64, 1000, Some(&sha256(&a))),
            (
                HONEST,
                1,
                40_000,
                b.len() as u64,
                900_000,
                Some(&sha256(&b)),
            ),
        ],
    );
    let r = replay(&pcap, &toml);
    let grants = r["streams"][0]["grants"].as_array().unwrap();
    assert_eq!(grants.len(), 2, "{r}");
    for g in grants {
        assert_eq!(g["complete"], true, "{g}");
        assert_eq!(g["digest_ok"], true, "{g}");
    }
    assert_eq!(r["rejected_bytes"], 0, "{}", r["rejects"]);
    assert_eq!(r["cpu_copy_bytes"], a.len() + b.len());
    assert_eq!(r["verified"], true);
}

#[test]
fn a_run_that_accepted_nothing_is_not_verified() {
    let pcap = tmp("nothing.pcap");
    let mut cap = Capture {
        frames: Vec::new(),
        iv: 0,
    };
    // Only a stranger's segment: rejected.
    cap.push(STRANGER, None, 0, b"hello");
    cap.write(&pcap);
    let toml = config(
        &[(1, 100)],
        &[(HONEST, 1, 0, 5, 0, Some(&sha256(b"hello")))],
    );
    let r = replay(&pcap, &toml);
    assert_eq!(r["verified"], false);
    assert_eq!(r["missing_bytes"], 5);
}

#[test]
fn captures_of_other_link_types_are_refused() {
    let pcap = tmp("raw-ip.pcap");
    let header = PcapHeader {
        datalink: DataLink::RAW,
        ..PcapHeader::default()
    };
    let mut w = PcapWriter::with_header(std::fs::File::create(&pcap).unwrap(), header).unwrap();
    let mut cap = Capture {
        frames: Vec::new(),
        iv: 0,
    };
    cap.push(HONEST, None, 0, b"payload");
    let frame = &cap.frames[0][14..]; // the IP packet, as a raw-IP capture holds it
    w.write_packet(&PcapPacket::new(
        std::time::Duration::ZERO,
        frame.len() as u32,
        frame,
    ))
    .unwrap();
    drop(w);
    let out = run_replay(&pcap, "raw.toml", &config(&[(1, 100)], &[]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("link type RAW (101) is not Ethernet (1)"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

/// pcapng replays as pcap does (the same decisions), and a capture of another link type is
/// refused with what is accepted.
#[test]
fn pcapng_replays_like_pcap_and_other_link_types_are_refused() {
    let a = message(50_000, 3);
    let (mut cap, hint) = (Capture::default(), REGION5_HINT);
    cap.transfer(HONEST, hint, &a, |mut c| {
        c.reverse();
        c
    });
    let toml = region5_toml(&a);
    let (pcap, pcapng) = (tmp("same.pcap"), tmp("same.pcapng"));
    cap.write(&pcap);
    cap.write_pcapng(&pcapng, DataLink::ETHERNET);
    let (r1, r2) = (replay(&pcap, &toml), replay(&pcapng, &toml));
    assert_eq!(r2["verified"], true, "{r2}");
    for key in [
        "payload_bytes",
        "payload_packets",
        "cpu_copy_bytes",
        "direct_bytes",
        "rejected_bytes",
    ] {
        assert_eq!(r1[key], r2[key], "{key}");
    }
    let other = tmp("raw.pcapng");
    cap.write_pcapng(&other, DataLink::RAW);
    let out = run_replay(&other, "raw.toml", &toml);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("Ethernet (link type 1) in pcap or pcapng"),
        "{err}"
    );
}
