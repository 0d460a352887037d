//! The testbed's Wireshark dissector (`wireshark/psp_hint.lua`) against captures built
//! here: every PSP version, with and without VC and hint, IPv4 and IPv6, S/D and key-phase
//! bits, and malformed headers. tshark's `-V` output is compared with golden text
//! (`wireshark/golden/psp_hint.txt`; `UPDATE_GOLDEN=1` rewrites it), and the fields that
//! filters rely on are read back with `-T fields`.

use std::path::{Path, PathBuf};
use std::process::Command;

use pcap_file::pcap::{PcapHeader, PcapWriter, RawPcapPacket};
use pcap_file::{DataLink, Endianness, TsResolution};
use psp::{DerivedKey, FlowTemplate, FrameBuilder, Hint, IpEndpoints, Sa, SegmentSpec, Version};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn script() -> PathBuf {
    repo().join("wireshark/psp_hint.lua")
}

/// tshark, or `None` outside CI when it is missing (CI=true forbids skipping).
fn tshark() -> Option<Command> {
    let found = Command::new("tshark").arg("--version").output().is_ok();
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "tshark is missing (cargo xtask test installs it), and CI=true forbids skipping"
        );
        eprintln!("skipping: tshark is not installed");
        return None;
    }
    let mut c = Command::new("tshark");
    c.arg("-X")
        .arg(format!("lua_script:{}", script().display()))
        .env("LC_ALL", "C");
    Some(c)
}

fn flow(ip: IpEndpoints, vc: Option<u64>) -> FlowTemplate {
    FlowTemplate {
        eth_src: [2, 0, 0, 0, 0, 1],
        eth_dst: [2, 0, 0, 0, 0, 2],
        ip,
        udp_src_port: 40001,
        tcp_src_port: 5001,
        tcp_dst_port: 80,
        vc,
        ttl: 64,
    }
}

const V4: IpEndpoints = IpEndpoints::V4 {
    src: [10, 77, 0, 1],
    dst: [10, 77, 0, 2],
};
const V6: IpEndpoints = IpEndpoints::V6 {
    src: [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
    dst: [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
};

/// A sealed frame of 64 payload bytes.
fn frame(version: u8, ip: IpEndpoints, vc: Option<u64>, hint: Option<Hint>, spi: u32) -> Vec<u8> {
    let version = Version::from_wire(version).unwrap();
    let key = match version {
        Version::AesGcm128 | Version::AesGmac128 => DerivedKey::Aes128([7; 16]),
        _ => DerivedKey::Aes256([7; 32]),
    };
    let sa = Sa::new(spi, version, &key).unwrap();
    let mut buf = vec![0u8; 2048];
    let spec = SegmentSpec {
        iv: 0x0102_0304_0506_0708,
        hint,
        seq: 1_000_000,
        ack: 0,
        psh: true,
    };
    let len = FrameBuilder::new(flow(ip, vc), &sa)
        .build(&mut buf, &spec, &[0x5a; 64])
        .unwrap();
    buf.truncate(len);
    buf
}

const HINT: Hint = Hint {
    region_id: 1,
    generation: 2,
    offset: 0x0000_1234_5678,
    base_tcp_seq: 999_000,
};

/// Where the PSP header starts in a frame of `ip`.
fn psp_at(ip: IpEndpoints) -> usize {
    14 + match ip {
        IpEndpoints::V4 { .. } => 20,
        IpEndpoints::V6 { .. } => 40,
    } + 8
}

/// The frames of the capture, each with what it shows.
fn frames() -> Vec<Vec<u8>> {
    let mut out = vec![
        // 1: IPv4, AES-GCM-128, hint.
        frame(0, V4, None, Some(HINT), 0x4000_0001),
        // 2: IPv4, AES-GCM-256, VC and hint, key phase 1.
        frame(1, V4, Some(0x1122_3344_5566_7788), Some(HINT), 0xc000_0002),
        // 3: IPv6, AES-GMAC-128, hint.
        frame(2, V6, None, Some(HINT), 0x4000_0003),
        // 4: IPv6, AES-GMAC-256, VC, no hint.
        frame(3, V6, Some(42), None, 0x4000_0004),
        // 5: IPv4, no VC, no hint.
        frame(0, V4, None, None, 0x4000_0005),
    ];
    // 6: S and D set.
    let mut f = frame(0, V4, None, Some(HINT), 0x4000_0006);
    f[psp_at(V4) + 3] |= 0xc0;
    out.push(f);
    // 7: the always-1 bit cleared.
    let mut f = frame(0, V4, None, Some(HINT), 0x4000_0007);
    f[psp_at(V4) + 3] &= !0x01;
    out.push(f);
    // 8: a crypt offset past the end of the segment.
    let mut f = frame(0, V4, None, Some(HINT), 0x4000_0008);
    f[psp_at(V4) + 2] = 0x3f;
    out.push(f);
    // 9: an 8-byte extension area (Hdr Ext Len 2 without V): not a hint.
    let mut f = frame(0, V4, None, None, 0x4000_0009);
    let at = psp_at(V4);
    f[at + 1] = 2;
    out.push(f);
    // 10: a version that does not exist (5).
    let mut f = frame(0, V4, None, Some(HINT), 0x4000_000a);
    f[psp_at(V4) + 3] = (f[psp_at(V4) + 3] & !0x3c) | (5 << 2);
    out.push(f);
    out
}

fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let header = PcapHeader {
        version_major: 2,
        version_minor: 4,
        ts_correction: 0,
        ts_accuracy: 0,
        snaplen: 65535,
        datalink: DataLink::ETHERNET,
        ts_resolution: TsResolution::MicroSecond,
        endianness: Endianness::Little,
    };
    let file = std::fs::File::create(path).unwrap();
    let mut w = PcapWriter::with_header(file, header).unwrap();
    for (i, f) in frames.iter().enumerate() {
        let len = u32::try_from(f.len()).unwrap();
        w.write_raw_packet(&RawPcapPacket {
            ts_sec: 1_700_000_000,
            ts_frac: u32::try_from(i).unwrap(),
            incl_len: len,
            orig_len: len,
            data: f.as_slice().into(),
        })
        .unwrap();
    }
}

/// The capture, in a file of its own per test (the tests run in parallel).
fn capture(test: &str) -> PathBuf {
    let path =
        std::env::temp_dir().join(format!("psp-dissector-{}-{test}.pcap", std::process::id()));
    write_pcap(&path, &frames());
    path
}

fn run(mut c: Command) -> String {
    let out = c.output().expect("run tshark");
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

#[test]
fn tshark_shows_every_field_as_the_golden_text_says() {
    let Some(mut c) = tshark() else { return };
    let pcap = capture("golden");
    c.args(["-r"]).arg(&pcap).args(["-V", "-O", "psp"]);
    let text = run(c);
    let _ = std::fs::remove_file(&pcap);
    let golden = repo().join("wireshark/golden/psp_hint.txt");
    if std::env::var("UPDATE_GOLDEN").as_deref() == Ok("1") {
        std::fs::write(&golden, &text).unwrap();
    }
    let expected = std::fs::read_to_string(&golden).expect("golden text");
    if text != expected {
        let diff: Vec<String> = text
            .lines()
            .zip(expected.lines())
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .take(5)
            .map(|(i, (a, b))| format!("line {}: got {a:?}, golden {b:?}", i + 1))
            .collect();
        panic!(
            "tshark's output differs from {} ({} vs {} lines):\n{}",
            golden.display(),
            text.lines().count(),
            expected.lines().count(),
            diff.join("\n")
        );
    }
}

#[test]
fn filters_can_rely_on_the_field_names_and_tcp_seq() {
    let Some(mut c) = tshark() else { return };
    let pcap = capture("fields");
    c.args(["-r"])
        .arg(&pcap)
        .args(["-T", "fields", "-E", "separator=,"]);
    for field in [
        "frame.number",
        "psp.next_header",
        "psp.hdr_ext_len",
        "psp.crypt_offset",
        "psp.s",
        "psp.d",
        "psp.version",
        "psp.v",
        "psp.spi",
        "psp.iv",
        "psp.vc",
        "psp.hint.region",
        "psp.hint.generation",
        "psp.hint.offset",
        "psp.hint.base_seq",
        "psp.icv",
        "tcp.seq_raw",
    ] {
        c.args(["-e", field]);
    }
    let text = run(c);
    let _ = std::fs::remove_file(&pcap);
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), frames().len(), "{text}");
    // Frame 2: AES-GCM-256 with VC and hint; the clear TCP header reached tcp.seq.
    let r = &rows[1];
    assert_eq!(r[1], "6", "{text}");
    assert_eq!(r[2], "4");
    assert_eq!(r[6], "1", "version");
    assert_eq!(r[8], "0xc0000002");
    assert_eq!(r[10], "1122334455667788");
    assert_eq!(
        (r[11], r[12], r[13], r[14]),
        ("1", "2", "305419896", "999000")
    );
    assert_eq!(r[16], "1000000", "tcp.seq_raw from the clear TCP header");
    // Frame 4 (IPv6, GMAC-256, VC, no hint) has no hint fields.
    assert_eq!(rows[3][6], "3");
    assert_eq!(rows[3][11], "");
    // Frame 6: S and D.
    assert_eq!((rows[5][4], rows[5][5]), ("1", "1"));
}

#[test]
fn malformed_headers_raise_expert_info() {
    let Some(mut c) = tshark() else { return };
    let pcap = capture("expert");
    c.args(["-r"]).arg(&pcap).args([
        "-T",
        "fields",
        "-e",
        "frame.number",
        "-e",
        "_ws.expert.message",
    ]);
    let text = run(c);
    let _ = std::fs::remove_file(&pcap);
    let rows: Vec<&str> = text.lines().collect();
    let expert = |n: usize| rows[n - 1].split_once('\t').map_or("", |(_, e)| e);
    assert!(expert(7).contains("always-1 bit"), "{text}");
    assert!(expert(8).contains("Crypt offset past the end"), "{text}");
    assert!(expert(9).contains("not a 16-byte placement hint"), "{text}");
    assert!(expert(10).contains("No such PSP version"), "{text}");
    let ours = [
        "always-1",
        "Crypt offset",
        "placement hint",
        "PSP version",
        "Header extension",
    ];
    for n in 1..=6 {
        assert!(
            !ours.iter().any(|m| expert(n).contains(m)),
            "frame {n} is well formed: {text}"
        );
    }
}
