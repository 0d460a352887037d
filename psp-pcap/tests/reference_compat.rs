//! `psp-pcap` against google/psp's reference programs: byte-identical encryption, decryption
//! of the reference's output, error behaviour, and pcap files that tcpdump and tshark read.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const INPUTS: [&str; 5] = [
    "v4_cleartext",
    "v6_cleartext",
    "v4_cleartext_empty",
    "v6_cleartext_empty",
    "v4_tcp_and_arp",
];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference")
}

fn tool(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_psp-pcap"))
        .args(args)
        .output()
        .expect("run psp-pcap")
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("psp-pcap-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn configs() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixtures())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("encrypt_") && n.ends_with(".cfg"))
        .map(|n| n.trim_end_matches(".cfg").to_string())
        .collect();
    names.sort();
    names
}

/// (timestamp, bytes) of every record, header skipped (the snaplen may differ).
fn records(path: &Path) -> Vec<(u32, u32, Vec<u8>)> {
    let data = std::fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= data.len() {
        let word = |o: usize| u32::from_le_bytes(data[at + o..at + o + 4].try_into().unwrap());
        let len = word(8) as usize;
        out.push((word(0), word(4), data[at + 16..at + 16 + len].to_vec()));
        at += 16 + len;
    }
    out
}

#[test]
fn encrypt_is_byte_identical_to_the_reference_and_decrypt_restores_cleartext() {
    let dir = fixtures();
    let cfgs = configs();
    assert_eq!(cfgs.len(), 12, "all reference configurations present");
    let mut checked = 0;
    for cfg in &cfgs {
        for input in INPUTS {
            let expected = dir.join(format!("expected/{input}__{cfg}.pcap"));
            let out = tmp(&format!("{input}__{cfg}.pcap"));
            let cfg_path = dir.join(format!("{cfg}.cfg"));
            let input_path = dir.join(format!("{input}.pcap"));
            let run = tool(&[
                "encrypt",
                "-c",
                s(&cfg_path),
                "-i",
                s(&input_path),
                "-o",
                s(&out),
            ]);
            assert!(
                run.status.success(),
                "{cfg} {input}: {}",
                String::from_utf8_lossy(&run.stderr)
            );
            assert!(
                std::fs::read(&out).unwrap() == std::fs::read(&expected).unwrap(),
                "{cfg} on {input}: output differs from the reference"
            );

            let dec = tmp(&format!("{input}__{cfg}.dec.pcap"));
            let run = tool(&[
                "decrypt",
                "-c",
                s(&dir.join("decrypt.cfg")),
                "-i",
                s(&expected),
                "-o",
                s(&dec),
            ]);
            assert!(
                run.status.success(),
                "{cfg} {input}: {}",
                String::from_utf8_lossy(&run.stderr)
            );
            // The reference skips non-IP frames and frames shorter than the crypt offset.
            let sealed: Vec<(u32, u32)> = records(&expected).iter().map(|r| (r.0, r.1)).collect();
            let cleartext: Vec<_> = records(&input_path)
                .into_iter()
                .filter(|r| sealed.contains(&(r.0, r.1)))
                .collect();
            assert_eq!(
                records(&dec),
                cleartext,
                "{cfg} on {input}: decrypt did not restore the cleartext"
            );
            checked += cleartext.len();
        }
    }
    assert!(checked >= 100, "only {checked} packets round-tripped");
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn corrupted_packets_fail_with_the_packet_named() {
    let dir = fixtures();
    let enc = tmp("corrupt.pcap");
    let run = tool(&[
        "encrypt",
        "-e",
        "-c",
        s(&dir.join("encrypt_transport_crypt_off_128.cfg")),
        "-i",
        s(&dir.join("v4_cleartext.pcap")),
        "-o",
        s(&enc),
    ]);
    assert!(run.status.success());
    let run = tool(&[
        "decrypt",
        "-c",
        s(&dir.join("decrypt.cfg")),
        "-i",
        s(&enc),
        "-o",
        s(&tmp("corrupt.dec.pcap")),
    ]);
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("packet 1") && err.contains("authentication failed"),
        "{err}"
    );
}

#[test]
fn hints_round_trip_and_are_printed() {
    let dir = fixtures();
    for cfg in [
        "encrypt_transport_crypt_off_128",
        "encrypt_transport_no_crypt_off_128_vc",
        "encrypt_tunnel_crypt_off_256_vc",
    ] {
        let enc = tmp(&format!("hint-{cfg}.pcap"));
        let run = tool(&[
            "encrypt",
            "--hint",
            "7:3:65536:1000",
            "-c",
            s(&dir.join(format!("{cfg}.cfg"))),
            "-i",
            s(&dir.join("v4_tcp_and_arp.pcap")),
            "-o",
            s(&enc),
        ]);
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let dec = tmp(&format!("hint-{cfg}.dec.pcap"));
        let run = tool(&[
            "decrypt",
            "--show-hints",
            "-c",
            s(&dir.join("decrypt.cfg")),
            "-i",
            s(&enc),
            "-o",
            s(&dec),
        ]);
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let stdout = String::from_utf8_lossy(&run.stdout);
        assert!(
            stdout.contains("packet 1: hint region=7 generation=3 offset=65536 base_seq=1000"),
            "{stdout}"
        );
        let ip_only: Vec<_> = records(&dir.join("v4_tcp_and_arp.pcap"))
            .into_iter()
            .filter(|r| r.2[12..14] != [0x08, 0x06])
            .collect();
        assert_eq!(
            records(&dec),
            ip_only,
            "{cfg}: hint packets did not decrypt to the cleartext"
        );
        // The hint is in the clear in the encrypted capture: region id right after IV (and VC).
        let first = &records(&enc)[0].2;
        let psp = 14 + 20 + 8; // outer IPv4 is 20 bytes in both modes
        let hint_at = psp + 16 + if cfg.ends_with("_vc") { 8 } else { 0 };
        assert_eq!(&first[hint_at..hint_at + 4], &7u32.to_be_bytes());
    }
}

#[test]
fn bad_input_gives_clear_errors_without_panics() {
    let dir = fixtures();
    let (keys_only, clear) = (dir.join("decrypt.cfg"), dir.join("v4_cleartext.pcap"));
    let (keys_only, clear) = (s(&keys_only), s(&clear));
    let cases: [(&[&str], &str); 4] = [
        (&["encrypt", "-c", "/nonexistent.cfg"], "cannot read config"),
        (
            &["encrypt", "-c", keys_only, "-i", clear, "-o", "/dev/null"],
            "ends before the SPI",
        ),
        (
            &[
                "decrypt",
                "-c",
                keys_only,
                "-i",
                keys_only,
                "-o",
                "/dev/null",
            ],
            "not a pcap file",
        ),
        (
            &["encrypt", "--hint", "1:2:3", "-c", keys_only],
            "REGION:GENERATION:OFFSET:BASE_SEQ",
        ),
    ];
    for (args, needle) in cases {
        let run = tool(args);
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{args:?} should fail");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn tcpdump_and_tshark_read_the_output() {
    let dir = fixtures();
    let enc = tmp("readable.pcap");
    let run = tool(&[
        "encrypt",
        "--hint",
        "1:1:0:0",
        "-c",
        s(&dir.join("encrypt_transport_crypt_off_128_vc.cfg")),
        "-i",
        s(&dir.join("v4_tcp_and_arp.pcap")),
        "-o",
        s(&enc),
    ]);
    assert!(run.status.success());
    let tcpdump = Command::new("tcpdump")
        .args(["-nn", "-r", s(&enc)])
        .output()
        .expect("tcpdump is installed by `cargo xtask test`");
    assert!(
        tcpdump.status.success(),
        "{}",
        String::from_utf8_lossy(&tcpdump.stderr)
    );
    let lines = String::from_utf8_lossy(&tcpdump.stdout);
    assert_eq!(
        lines
            .lines()
            .filter(|l| l.contains("10.0.0.2.1000: UDP"))
            .count(),
        2,
        "{lines}"
    );
    let tshark = Command::new("tshark")
        .args([
            "-n",
            "-r",
            s(&enc),
            "-T",
            "fields",
            "-e",
            "udp.dstport",
            "-e",
            "frame.len",
        ])
        .output()
        .expect("tshark is installed by `cargo xtask test`");
    assert!(
        tshark.status.success(),
        "{}",
        String::from_utf8_lossy(&tshark.stderr)
    );
    let fields = String::from_utf8_lossy(&tshark.stdout);
    let rows: Vec<&str> = fields.lines().collect();
    assert_eq!(rows.len(), 2, "{fields}");
    // 1054-byte TCP frame + UDP 8 + PSP 16 + VC 8 + hint 16 + ICV 16.
    assert!(rows.iter().all(|r| *r == "1000\t1118"), "{fields}");
}
