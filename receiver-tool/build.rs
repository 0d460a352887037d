//! Builds the XDP program (`xdp-prog`) for the BPF target with aya-build. Needs the nightly
//! toolchain with rust-src and bpf-linker (`cargo xtask test` and `cargo xtask demo`
//! install them).

fn main() -> anyhow::Result<()> {
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "xdp-prog",
            root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../xdp-prog"),
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
}
