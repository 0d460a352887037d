//! Packet and byte counters of a receive run.

use crate::reason::Reason;

/// Packets and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Packets.
    pub packets: u64,
    /// Payload bytes.
    pub bytes: u64,
}

impl Tally {
    /// Adds one packet of `bytes`.
    pub fn add(&mut self, bytes: u64) {
        self.packets += 1;
        self.bytes += bytes;
    }
}

/// What happened to the payload bytes received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Every PSP segment received.
    pub payload: Tally,
    /// Left where they landed (no copy).
    pub direct: Tally,
    /// Copied by the CPU.
    pub cpu_copy: Tally,
    /// Copied by the copy engine.
    pub engine_copy: Tally,
    /// Held in bounce memory while the region was not ready.
    pub staged: Tally,
    /// Rejected, by reason (`Reason::index`).
    pub rejected: [Tally; Reason::COUNT],
    /// Bytes that arrived again after they were complete.
    pub duplicate_bytes: u64,
}

impl Counters {
    /// Counts a rejected packet.
    pub fn reject(&mut self, reason: Reason, bytes: u64) {
        self.rejected[reason.index()].add(bytes);
    }

    /// All rejected packets and bytes.
    pub fn rejected_total(&self) -> Tally {
        self.rejected.iter().fold(Tally::default(), |a, t| Tally {
            packets: a.packets + t.packets,
            bytes: a.bytes + t.bytes,
        })
    }

    /// Bytes placed directly / payload bytes received (0 when nothing was received).
    pub fn copies_avoided(&self) -> f64 {
        if self.payload.bytes == 0 {
            0.0
        } else {
            self.direct.bytes as f64 / self.payload.bytes as f64
        }
    }

    /// (reason name, packets) for every reason with at least one packet.
    pub fn rejects(&self) -> impl Iterator<Item = (&'static str, Tally)> + '_ {
        Reason::ALL
            .iter()
            .map(|r| (r.as_str(), self.rejected[r.index()]))
            .filter(|(_, t)| t.packets > 0)
    }
}
