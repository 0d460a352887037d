//! Staging: payloads for a region whose generation is not active yet wait here (in the
//! bounce frame they landed in, or copied out), bounded in bytes and in frames, until the
//! region activates; then they become ready and are copied in a few hundred at a time.

use std::collections::VecDeque;

use placement::{GrantId, Placement};

use crate::payload::Payload;

/// A staged payload: its stream, where it goes, and its bytes.
pub struct Staged {
    /// The stream (SPI).
    pub spi: u32,
    /// Where it goes once its region is active.
    pub placement: Placement,
    /// The bytes.
    pub bytes: Payload,
}

/// Payloads waiting for their region, and those whose region became active.
pub struct Staging {
    waiting: Vec<Staged>,
    ready: VecDeque<Staged>,
    bytes: usize,
    frames: usize,
    max_bytes: usize,
    max_frames: usize,
}

impl Staging {
    /// Staging of at most `max_bytes` bytes (and no limit on frames).
    pub fn new(max_bytes: usize) -> Self {
        Self {
            waiting: Vec::new(),
            ready: VecDeque::new(),
            bytes: 0,
            frames: 0,
            max_bytes,
            max_frames: usize::MAX,
        }
    }

    /// Holds at most `frames` bounce frames at a time.
    pub fn limit_frames(&mut self, frames: usize) {
        self.max_frames = frames;
    }

    /// Whether a payload of `len` bytes (in a bounce frame or not) fits.
    pub fn has_room(&self, len: usize, in_frame: bool) -> bool {
        self.bytes + len <= self.max_bytes && !(in_frame && self.frames >= self.max_frames)
    }

    /// Stages a payload (the caller checked [`has_room`](Self::has_room)).
    pub fn push(&mut self, staged: Staged) {
        self.bytes += staged.bytes.as_ref().len();
        self.frames += usize::from(staged.bytes.is_frame());
        self.waiting.push(staged);
    }

    /// Payloads for `regions` (just activated) become ready.
    pub fn activate(&mut self, regions: &[u32]) {
        if regions.is_empty() {
            return;
        }
        let (ready, waiting): (Vec<_>, Vec<_>) = self
            .waiting
            .drain(..)
            .partition(|s| regions.contains(&s.placement.region_id));
        self.waiting = waiting;
        self.ready.extend(ready);
    }

    /// Takes up to `budget` ready payloads.
    pub fn take_ready(&mut self, budget: usize) -> Vec<Staged> {
        let n = budget.min(self.ready.len());
        let taken: Vec<Staged> = self.ready.drain(..n).collect();
        for s in &taken {
            self.forget(s);
        }
        taken
    }

    /// Drops the payloads of grant `g` (their frames return to the plan).
    pub fn drop_grant(&mut self, g: GrantId) {
        let of_g = |s: &Staged| s.placement.grant == Some(g);
        let (mut dropped, waiting): (Vec<_>, Vec<_>) = self.waiting.drain(..).partition(of_g);
        let (ready_dropped, ready): (VecDeque<_>, VecDeque<_>) =
            self.ready.drain(..).partition(of_g);
        self.waiting = waiting;
        self.ready = ready;
        dropped.extend(ready_dropped);
        for s in &dropped {
            self.forget(s);
        }
    }

    fn forget(&mut self, s: &Staged) {
        self.bytes -= s.bytes.as_ref().len();
        self.frames -= usize::from(s.bytes.is_frame());
    }

    /// Bytes staged (waiting or ready).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Bounce frames held.
    pub fn frames(&self) -> usize {
        self.frames
    }
}
