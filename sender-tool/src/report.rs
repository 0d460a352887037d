//! The sender's report (JSON) and its one-line summary.

use serde::Serialize;

use crate::cli::{Cli, TxKind};
use crate::tx::UdpStats;

/// The sender's report.
#[derive(Debug, Serialize)]
pub(crate) struct SendReport {
    pub(crate) tx: &'static str,
    /// software or inline (the inline-NIC model: nothing sealed here).
    pub(crate) crypto: &'static str,
    pub(crate) streams: usize,
    pub(crate) messages_per_stream: u32,
    pub(crate) message_bytes: u64,
    pub(crate) segments_sent: u64,
    pub(crate) retransmitted_segments: u64,
    pub(crate) payload_bytes_sent: u64,
    /// Frames were built and sealed before sending (`--prebuild`).
    pub(crate) prebuilt: bool,
    pub(crate) seconds: f64,
    /// With `--prebuild`: time spent building and sealing frames ahead of sending.
    pub(crate) build_seconds: f64,
    /// Time spent sending (building and sealing too, unless prebuilt; transmitting),
    /// without message generation, digests and control round trips.
    pub(crate) send_seconds: f64,
    pub(crate) gbit_per_s: f64,
    pub(crate) packets_per_s: f64,
    pub(crate) verified_messages: u32,
    pub(crate) failed_messages: u32,
    /// `--transport tcp --zero-copy-send`: sends the kernel copied after all.
    pub(crate) zerocopy_copied_sends: u64,
    /// `--tx udp`: sendmmsg calls, datagrams and segments.
    pub(crate) udp: Option<UdpStats>,
    /// Frames were built and sealed in a second thread (`--seal-thread`).
    pub(crate) seal_thread: bool,
    /// Missing ranges in the receiver's status replies that were empty, inverted or outside
    /// the message (ignored or clamped to it).
    pub(crate) bad_missing_ranges: u64,
}

impl SendReport {
    /// An empty report of a run of `streams` streams with `cli`'s settings.
    pub(crate) fn new(cli: &Cli, streams: usize) -> Self {
        Self {
            tx: match cli.tx {
                TxKind::Xdp => "af_xdp",
                TxKind::Packet => "af_packet",
                TxKind::Udp => "udp_gso",
            },
            crypto: control::Crypto::from(cli.crypto).as_str(),
            streams,
            messages_per_stream: cli.messages,
            message_bytes: cli.message_bytes,
            segments_sent: 0,
            retransmitted_segments: 0,
            payload_bytes_sent: 0,
            prebuilt: cli.prebuild,
            seconds: 0.0,
            build_seconds: 0.0,
            send_seconds: 0.0,
            gbit_per_s: 0.0,
            packets_per_s: 0.0,
            verified_messages: 0,
            failed_messages: 0,
            zerocopy_copied_sends: 0,
            udp: None,
            seal_thread: cli.seal_thread,
            bad_missing_ranges: 0,
        }
    }

    /// Throughput while sending, from the bytes and segments sent.
    pub(crate) fn finish_rates(&mut self) {
        let busy = self.send_seconds.max(1e-9);
        self.gbit_per_s = self.payload_bytes_sent as f64 * 8.0 / busy / 1e9;
        self.packets_per_s = self.segments_sent as f64 / busy;
    }

    /// One line for people.
    pub(crate) fn summary(&self) -> String {
        format!(
            "zc-send: {} streams, {} segments ({} retransmitted), {:.3} GB payload, {:.2} s sending ({:.2} s in all): {:.3} Gbit/s, {:.0} packets/s while sending; {} messages verified, {} refused (lying streams)",
            self.streams,
            self.segments_sent,
            self.retransmitted_segments,
            self.payload_bytes_sent as f64 / 1e9,
            self.send_seconds,
            self.seconds,
            self.gbit_per_s,
            self.packets_per_s,
            self.verified_messages,
            self.failed_messages
        )
    }
}
