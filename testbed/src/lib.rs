//! The test hosts: two network namespaces, `<name>-snd` and `<name>-rcv`, joined by a veth
//! pair `<name>s` / `<name>r` with the same number of tx and rx queues on both ends
//! (native XDP on veth refuses to attach when the receiver has fewer rx queues than the
//! peer has tx queues). Addresses exist only inside the namespaces.
//!
//! [`Testbed::down`] removes exactly what [`Testbed::up`] created, by name, also after a
//! crash (it ignores what is already gone). Dropping a [`Testbed`] takes it down.

use std::process::{Command, Output};

use anyhow::{Context, Result, bail};

/// Sender's address inside its namespace.
pub const SENDER_IP: &str = "10.77.0.1";
/// Receiver's address inside its namespace.
pub const RECEIVER_IP: &str = "10.77.0.2";

/// A pair of test hosts.
#[derive(Debug)]
pub struct Testbed {
    /// Base name.
    pub name: String,
    /// Number of queues on each veth end.
    pub queues: u32,
}

fn ip(args: &[&str]) -> Result<Output> {
    Command::new("ip")
        .args(args)
        .output()
        .with_context(|| format!("cannot run ip {}", args.join(" ")))
}

fn ip_ok(args: &[&str]) -> Result<()> {
    let out = ip(args)?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Whether this process runs as root (namespaces, veth and XDP need it).
pub fn is_root() -> bool {
    // SAFETY-free: /proc/self/status tells the effective uid.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

impl Testbed {
    /// Sender namespace.
    pub fn sender_ns(&self) -> String {
        format!("{}-snd", self.name)
    }

    /// Receiver namespace.
    pub fn receiver_ns(&self) -> String {
        format!("{}-rcv", self.name)
    }

    /// Sender's interface (in the sender namespace).
    pub fn sender_if(&self) -> String {
        format!("{}s", self.name)
    }

    /// Receiver's interface (in the receiver namespace).
    pub fn receiver_if(&self) -> String {
        format!("{}r", self.name)
    }

    /// Creates the namespaces and the veth pair with `queues` queues, addresses and links
    /// up. Anything left from an earlier run of the same name is removed first.
    ///
    /// # Errors
    /// Not root, a name longer than 12 characters, or an `ip` command failing (what was
    /// created is removed again).
    pub fn up(name: &str, queues: u32) -> Result<Self> {
        if !is_root() {
            bail!(
                "the test hosts need root: creating network namespaces, veth links and attaching XDP programs requires CAP_NET_ADMIN and CAP_SYS_ADMIN (run as root, e.g. with sudo)"
            );
        }
        if name.is_empty() || name.len() > 12 || !name.chars().all(|c| c.is_ascii_alphanumeric()) {
            bail!("testbed name {name:?} must be 1-12 ASCII letters or digits");
        }
        if queues == 0 || queues > 64 {
            bail!("queues must be 1..=64, not {queues}");
        }
        let tb = Self {
            name: name.to_string(),
            queues,
        };
        tb.down();
        if let Err(e) = tb.create() {
            tb.down();
            return Err(e);
        }
        Ok(tb)
    }

    fn create(&self) -> Result<()> {
        let (snd, rcv) = (self.sender_ns(), self.receiver_ns());
        let (sif, rif) = (self.sender_if(), self.receiver_if());
        let q = self.queues.to_string();
        ip_ok(&["netns", "add", &snd])?;
        ip_ok(&["netns", "add", &rcv])?;
        ip_ok(&[
            "link",
            "add",
            &sif,
            "netns",
            &snd,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "type",
            "veth",
            "peer",
            "name",
            &rif,
            "netns",
            &rcv,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
        ])?;
        for (ns, ifname, addr) in [(&snd, &sif, SENDER_IP), (&rcv, &rif, RECEIVER_IP)] {
            ip_ok(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                ifname,
            ])?;
            ip_ok(&["-n", ns, "link", "set", ifname, "up"])?;
            ip_ok(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    /// Removes the namespaces (which removes the veth pair). Ignores what is gone.
    pub fn down(&self) {
        for ns in [self.sender_ns(), self.receiver_ns()] {
            let _ = ip(&["netns", "del", &ns]);
        }
    }

    /// Turns TSO and GSO off on the sender's link (needs `ethtool`), so that kernel TCP
    /// sends MSS-sized frames as a real NIC's wire carries them, like the placement path.
    ///
    /// # Errors
    /// ethtool is missing or failed.
    pub fn sender_offloads_off(&self) -> Result<()> {
        let out = Self::command_in(&self.sender_ns(), "ethtool")
            .args(["-K", &self.sender_if(), "tso", "off", "gso", "off"])
            .output()
            .context("cannot run ethtool (apt-get install ethtool)")?;
        if !out.status.success() {
            bail!(
                "ethtool -K {} tso off gso off: {}",
                self.sender_if(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Sets the MTU of both ends of the link.
    ///
    /// # Errors
    /// `ip` refused (e.g. an XDP program attached that cannot take frames that long).
    pub fn set_mtu(&self, mtu: u32) -> Result<()> {
        let m = mtu.to_string();
        for (ns, link) in [
            (self.sender_ns(), self.sender_if()),
            (self.receiver_ns(), self.receiver_if()),
        ] {
            ip_ok(&["-n", &ns, "link", "set", "dev", &link, "mtu", &m])?;
        }
        Ok(())
    }

    /// A command that runs `program` inside namespace `ns`.
    pub fn command_in(ns: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, program]);
        c
    }

    /// Whether both namespaces exist.
    pub fn exists(&self) -> bool {
        let list = ip(&["netns", "list"])
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let has = |ns: &str| {
            list.lines()
                .any(|l| l.split_whitespace().next() == Some(ns))
        };
        has(&self.sender_ns()) && has(&self.receiver_ns())
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        self.down();
    }
}

/// Control sessions of a `zc-send` with `send_args` that will verify a window: one per
/// queue of its `--queues` list (default one), less the streams told to `--lie` (their
/// windows never verify). The receiver is told to stop after that many
/// (`zc-recv live --sessions N`).
pub fn sender_sessions(send_args: &[&str]) -> usize {
    let streams = send_args
        .iter()
        .position(|a| *a == "--queues")
        .and_then(|i| send_args.get(i + 1))
        .map_or(1, |list| list.split(',').count());
    let liars = send_args.iter().filter(|a| **a == "--lie").count();
    streams.saturating_sub(liars)
}

#[cfg(test)]
mod sessions_tests {
    #[test]
    fn one_session_per_queue() {
        assert_eq!(super::sender_sessions(&["--messages", "2"]), 1);
        assert_eq!(super::sender_sessions(&["--queues", "0,1,2", "--x"]), 3);
        assert_eq!(
            super::sender_sessions(&["--queues", "0,1,2", "--lie", "1:stale"]),
            2
        );
    }
}
