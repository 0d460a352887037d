//! Runs of the sender/receiver pair on the local test hosts, for the demo and the live
//! benchmark ([`crate::bench`]): the placement path and the kernel-TCP baseline.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use testbed::{RECEIVER_IP, Testbed};

/// Fails with a clear message when not root.
pub fn require_root(what: &str) -> Result<()> {
    if !testbed::is_root() {
        bail!(
            "{what} needs root: it creates network namespaces and a veth pair, attaches an XDP program and opens AF_XDP sockets (run it as root, e.g. sudo -E cargo xtask {what})"
        );
    }
    Ok(())
}

/// `zc-recv tcp` (with `recv_args`) and `zc-send --transport tcp` (with `send_args`) on
/// `tb`, one connection; the receiver writes its JSON report to `recv_json`.
///
/// # Errors
/// Either side failed.
pub fn run_tcp_pair(
    tb: &Testbed,
    bin: &Path,
    recv_args: &[&str],
    send_args: &[&str],
    recv_json: &Path,
) -> Result<()> {
    let listen = format!("{RECEIVER_IP}:7000");
    let mut recv = Testbed::command_in(&tb.receiver_ns(), &bin.join("zc-recv").to_string_lossy())
        .args(["tcp", "--listen", &listen, "--region", "1:512M"])
        .args(recv_args)
        .args(["--connections", "1", "--max-seconds", "300", "--json"])
        .arg(recv_json)
        .stdout(Stdio::null())
        .spawn()
        .context("starting zc-recv tcp")?;
    // The listener must be up before the sender connects.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let send = Testbed::command_in(&tb.sender_ns(), &bin.join("zc-send").to_string_lossy())
        .args([
            "--transport",
            "tcp",
            "--control",
            &listen,
            "--iface",
            &tb.sender_if(),
        ])
        .args(send_args)
        .stdout(Stdio::null())
        .status()
        .context("running zc-send --transport tcp");
    if !send.as_ref().is_ok_and(ExitStatus::success) {
        let _ = recv.kill();
    }
    let recv_status = recv.wait()?;
    let send = send?;
    anyhow::ensure!(send.success(), "zc-send --transport tcp failed ({send})");
    anyhow::ensure!(recv_status.success(), "zc-recv tcp failed ({recv_status})");
    Ok(())
}

/// One receiver and one sender on `tb`, the receiver writing its JSON report to
/// `recv_json`. Output goes to the terminal unless `quiet`.
pub fn run_pair(
    tb: &Testbed,
    bin: &Path,
    recv_args: &[&str],
    send_args: &[&str],
    recv_json: &Path,
    quiet: bool,
) -> Result<()> {
    let listen = format!("{RECEIVER_IP}:7000");
    let out = || {
        if quiet {
            Stdio::null()
        } else {
            Stdio::inherit()
        }
    };
    let sessions = testbed::sender_sessions(send_args).to_string();
    let mut recv = Testbed::command_in(&tb.receiver_ns(), &bin.join("zc-recv").to_string_lossy())
        .args(["live", "--iface", &tb.receiver_if(), "--listen", &listen])
        .args(["--sessions", &sessions])
        .args(recv_args)
        .args(["--no-progress", "--json"])
        .arg(recv_json)
        .stdout(out())
        .spawn()
        .context("starting zc-recv")?;
    let send = Testbed::command_in(&tb.sender_ns(), &bin.join("zc-send").to_string_lossy())
        .args(["--control", &listen, "--iface", &tb.sender_if()])
        .args(send_args)
        .stdout(out())
        .status()
        .context("running zc-send");
    let sent_ok = send.as_ref().is_ok_and(ExitStatus::success);
    if !sent_ok {
        // The receiver would wait for its sessions until --max-seconds.
        let _ = recv.kill();
    }
    let recv_status = recv.wait()?;
    let send = send?;
    anyhow::ensure!(send.success(), "zc-send failed ({send})");
    anyhow::ensure!(recv_status.success(), "zc-recv failed ({recv_status})");
    Ok(())
}

/// A JSON report.
///
/// # Errors
/// Missing or not JSON.
pub fn read_json(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("no report {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

/// Builds the tools in release mode; returns their directory.
pub fn build_tools(root: &Path, cargo: &mut Command) -> Result<PathBuf> {
    crate::install::run(cargo.args([
        "build",
        "--release",
        "--locked",
        "-p",
        "receiver-tool",
        "-p",
        "sender-tool",
    ]))?;
    Ok(root.join("target/release"))
}
