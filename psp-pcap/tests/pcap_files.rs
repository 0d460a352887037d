//! `psp-pcap`'s files: Ethernet captures only, output written to a temporary file and
//! renamed at the end (a failed run leaves no truncated file, `-i X -o X` cannot destroy
//! its input), and configuration errors that name the field.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference")
}

fn tool(args: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_psp-pcap"))
        .args(args)
        .output()
        .expect("run psp-pcap")
}

/// A fresh directory per test, so that leftovers can be listed.
fn dir(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("psp-pcap-files-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn entries(d: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn p(s: &str) -> &Path {
    Path::new(s)
}

fn cfg(name: &str) -> PathBuf {
    fixtures().join(format!("{name}.cfg"))
}

fn fails(out: &Output, needle: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "should fail: {err}");
    assert!(err.contains(needle), "want {needle:?} in {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// A capture whose every packet fails authentication (sealed with `-e`).
fn corrupted(d: &Path) -> PathBuf {
    let out = d.join("corrupt.pcap");
    let run = tool(&[
        p("encrypt"),
        p("-e"),
        p("-c"),
        &cfg("encrypt_transport_crypt_off_128"),
        p("-i"),
        &fixtures().join("v4_cleartext.pcap"),
        p("-o"),
        &out,
    ]);
    assert!(run.status.success());
    out
}

#[test]
fn a_failed_run_leaves_no_output_and_keeps_an_old_one() {
    let d = dir("failed");
    let bad = corrupted(&d);
    let out = d.join("clear.pcap");
    let decrypt = |out: &Path| {
        tool(&[
            p("decrypt"),
            p("-c"),
            &fixtures().join("decrypt.cfg"),
            p("-i"),
            &bad,
            p("-o"),
            out,
        ])
    };
    fails(&decrypt(&out), "authentication failed");
    assert_eq!(
        entries(&d),
        ["corrupt.pcap"],
        "no output, no temporary file"
    );
    // An existing output is left as it was.
    std::fs::write(&out, b"previous").unwrap();
    fails(&decrypt(&out), "authentication failed");
    assert_eq!(std::fs::read(&out).unwrap(), b"previous");
    assert_eq!(entries(&d), ["clear.pcap", "corrupt.pcap"]);
}

#[test]
fn the_same_file_as_input_and_output_is_not_destroyed() {
    let d = dir("inplace");
    // Failing in place: the input stays intact.
    let bad = corrupted(&d);
    let before = std::fs::read(&bad).unwrap();
    let run = tool(&[
        p("decrypt"),
        p("-c"),
        &fixtures().join("decrypt.cfg"),
        p("-i"),
        &bad,
        p("-o"),
        &bad,
    ]);
    fails(&run, "authentication failed");
    assert_eq!(std::fs::read(&bad).unwrap(), before, "input destroyed");
    // Succeeding in place: the file becomes the output, byte for byte the reference's.
    let x = d.join("x.pcap");
    std::fs::copy(fixtures().join("v4_cleartext.pcap"), &x).unwrap();
    let run = tool(&[
        p("encrypt"),
        p("-c"),
        &cfg("encrypt_tunnel_crypt_off_256_vc"),
        p("-i"),
        &x,
        p("-o"),
        &x,
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let expected = fixtures().join("expected/v4_cleartext__encrypt_tunnel_crypt_off_256_vc.pcap");
    assert!(std::fs::read(&x).unwrap() == std::fs::read(expected).unwrap());
    assert_eq!(entries(&d), ["corrupt.pcap", "x.pcap"]);
}

#[test]
fn output_to_a_device_is_written_in_place() {
    let run = tool(&[
        p("encrypt"),
        p("-c"),
        &cfg("encrypt_transport_crypt_off_128"),
        p("-i"),
        &fixtures().join("v4_cleartext.pcap"),
        p("-o"),
        p("/dev/null"),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    use std::os::unix::fs::FileTypeExt;
    let meta = std::fs::metadata("/dev/null").unwrap();
    assert!(meta.file_type().is_char_device(), "/dev/null was replaced");
}

/// `v4_cleartext.pcap` relabelled with another link type.
fn relabelled(d: &Path, link_type: u32) -> PathBuf {
    let mut bytes = std::fs::read(fixtures().join("v4_cleartext.pcap")).unwrap();
    let little = bytes[..4] == [0xd4, 0xc3, 0xb2, 0xa1];
    let field = if little {
        link_type.to_le_bytes()
    } else {
        link_type.to_be_bytes()
    };
    bytes[20..24].copy_from_slice(&field);
    let path = d.join(format!("link{link_type}.pcap"));
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn only_ethernet_captures_are_read() {
    let d = dir("linktype");
    let raw = relabelled(&d, 101);
    let out = d.join("out.pcap");
    let run = tool(&[
        p("encrypt"),
        p("-c"),
        &cfg("encrypt_transport_crypt_off_128"),
        p("-i"),
        &raw,
        p("-o"),
        &out,
    ]);
    fails(&run, "link type RAW (101) is not Ethernet (1)");
    let sll = relabelled(&d, 113);
    let run = tool(&[
        p("decrypt"),
        p("-c"),
        &fixtures().join("decrypt.cfg"),
        p("-i"),
        &sll,
        p("-o"),
        &out,
    ]);
    fails(&run, "link type LINUX_SLL (113) is not Ethernet (1)");
    assert!(!out.exists());
}

#[test]
fn configuration_errors_name_the_field() {
    let d = dir("config");
    let keys = std::fs::read_to_string(fixtures().join("decrypt.cfg")).unwrap();
    let write = |name: &str, rest: &str| {
        let path = d.join(name);
        std::fs::write(&path, format!("{keys}\n{rest}\n")).unwrap();
        path
    };
    let encrypt = |config: &Path, extra: &[&Path]| {
        let mut args: Vec<&Path> = vec![p("encrypt")];
        args.extend_from_slice(extra);
        let input = fixtures().join("v4_cleartext.pcap");
        let out = d.join("out.pcap");
        tool(&[args, vec![p("-c"), config, p("-i"), &input, p("-o"), &out]].concat())
    };
    let big = write("big.cfg", "9A345678 transport aes-gcm-128 300 6 11 no-vc");
    fails(
        &encrypt(&big, &[]),
        "transport crypt offset 300 is larger than 63",
    );
    // With --hint, the offset moves 4 units further: refused before any packet, named.
    let near = write("near.cfg", "9A345678 tunnel aes-gcm-128 1 6 62 no-vc");
    fails(
        &encrypt(&near, &[p("--hint"), p("1:1:0:0")]),
        "IPv6 tunnel crypt offset 62 plus the hint's 4 units exceeds 63",
    );
    assert!(!d.join("out.pcap").exists());
}

/// The same capture as pcapng (microsecond timestamps, no `if_tsresol`) encrypts to the
/// same bytes as the pcap.
#[test]
fn pcapng_input_gives_the_same_output_as_pcap() {
    use pcap_file::pcap::PcapReader;
    use pcap_file::pcapng::PcapNgWriter;
    use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
    use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock;
    let d = dir("pcapng");
    let input = fixtures().join("v4_tcp_and_arp.pcap");
    let ng = d.join("input.pcapng");
    let mut reader = PcapReader::new(std::fs::File::open(&input).unwrap()).unwrap();
    let mut w = PcapNgWriter::new(std::fs::File::create(&ng).unwrap()).unwrap();
    w.write_pcapng_block(InterfaceDescriptionBlock {
        linktype: pcap_file::DataLink::ETHERNET,
        snaplen: 0,
        options: vec![],
    })
    .unwrap();
    while let Some(pkt) = reader.next_packet() {
        let pkt = pkt.unwrap();
        let micros = u64::try_from(pkt.timestamp.as_micros()).unwrap();
        w.write_pcapng_block(EnhancedPacketBlock {
            interface_id: 0,
            timestamp: std::time::Duration::from_nanos(micros),
            original_len: pkt.orig_len,
            data: pkt.data,
            options: vec![],
        })
        .unwrap();
    }
    drop(w);
    let cfg = cfg("encrypt_transport_crypt_off_128");
    let (from_pcap, from_ng) = (d.join("a.pcap"), d.join("b.pcap"));
    for (i, o) in [(&input, &from_pcap), (&ng, &from_ng)] {
        let run = tool(&[p("encrypt"), p("-c"), &cfg, p("-i"), i, p("-o"), o]);
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
    }
    assert_eq!(
        std::fs::read(&from_pcap).unwrap(),
        std::fs::read(&from_ng).unwrap()
    );
}
