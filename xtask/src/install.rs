//! Installs what a fresh machine lacks: Debian packages, the nightly toolchain's rust-src
//! and bpf-linker (to build the XDP program), and (for fuzzing) cargo-fuzz.

use std::process::Command;

use anyhow::{Context, Result, bail};

/// Debian packages the tests need: tcpdump and tshark read `psp-pcap`'s output; the live
/// benchmark (run short by the tests) turns TSO/GSO off with ethtool.
pub const TEST_PACKAGES: &[&str] = &["tcpdump", "tshark", "ethtool"];

/// Debian packages the data path needs: libxdp-sys builds libxdp and libbpf from source
/// (clang, llvm, m4, make, pkg-config, libelf, zlib, libpcap (its configure step includes
/// `pcap/dlt.h`); libclang for bindgen), and the test hosts need iproute2.
///
/// Checked against a fresh image's package list, not this machine's: a fresh machine has
/// only llvm, make and iproute2 of these.
pub const DATA_PATH_PACKAGES: &[&str] = &[
    "clang",
    "libclang-dev",
    "llvm",
    "m4",
    "make",
    "pkg-config",
    "libelf-dev",
    "zlib1g-dev",
    "libpcap-dev",
    "iproute2",
];

/// The bpf-linker release that works with this machine's nightly LLVM.
const BPF_LINKER_VERSION: &str = "0.10.2";

fn output_of(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Makes sure the eBPF toolchain is there: nightly with rust-src, and bpf-linker.
pub fn ebpf_toolchain() -> Result<()> {
    let components = output_of(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .context(
        "the nightly toolchain is missing (the XDP program is built with it): rustup toolchain install nightly",
    )?;
    if !components.lines().any(|l| l.starts_with("rust-src")) {
        eprintln!("xtask: adding rust-src to the nightly toolchain");
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    let linker = output_of(Command::new("bpf-linker").arg("--version")).unwrap_or_default();
    if !linker.contains(BPF_LINKER_VERSION) {
        eprintln!("xtask: installing bpf-linker {BPF_LINKER_VERSION} (about a minute)");
        run(Command::new("cargo").args([
            "install",
            &format!("bpf-linker@{BPF_LINKER_VERSION}"),
            "--locked",
        ]))?;
    }
    Ok(())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// Installs the Debian packages of `packages` that are missing.
pub fn debian_packages(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing Debian packages {missing:?}; installing them needs root (run as root, or apt-get install them first)"
        );
    }
    eprintln!("xtask: installing Debian packages {missing:?}");
    run(Command::new("apt-get")
        .args(["update", "-qq"])
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// Runs `cmd`, failing with its name when it exits non-zero.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}
