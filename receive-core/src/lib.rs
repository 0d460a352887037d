//! The receiver's sans-IO core. No syscalls, no clocks: time is passed in as a
//! [`Timestamp`], and every function returns what the I/O layer must do. The stages, each
//! in a file named after it:
//!
//! - [`receiver`]: the [`Receiver`], one owner for everything below, driven by events
//!   (control requests, fill-ring refills, header records, RX descriptors, digest
//!   verdicts, polls);
//! - [`grant_table`]: sessions, SAs, grants and windows from the first control request to
//!   the window's release, with ownership per connection, revocation on close and a grant
//!   timeout ([`windows`]: checked first-fit allocation with guard gaps);
//! - [`pairing`]: each RX descriptor with its header record, per queue, with counters;
//! - [`repair`]: whole frames whose head the ICV of the frame below covers wait for it,
//!   then get their head back from their record;
//! - [`receive_path`]: per segment, open where it landed, decide, then leave, copy, stage
//!   or reject; [`payload`] says where the bytes are;
//! - [`staging`]: payloads for regions not active yet; [`parking`]: copies waiting for a
//!   posted slot to return;
//! - [`report`]: the accounting, a typed report serialised with serde and rendered for
//!   people from the same struct;
//! - [`time`]: the typed instant;
//! - [`kernel_model`]: a deterministic model of the XDP program, the kernel and the rings,
//!   over a UMEM in plain memory, for tests that play the kernel;
//! - [`drive`]: plays arbitrary event sequences against the grant table, checking its
//!   invariants (property test and fuzz target).

#![forbid(unsafe_code)]

pub mod capture;
pub mod drive;
pub mod error;
pub mod grant_table;
pub mod kernel_model;
pub mod pairing;
pub mod parking;
pub mod payload;
pub mod receive_path;
pub mod receiver;
pub mod repair;
pub mod report;
pub mod staging;
pub mod time;
pub mod windows;

pub use error::{ReceiveError, RequestError, SetupError, WindowError};
pub use grant_table::{
    Action, ConnId, GrantEntry, GrantState, GrantTable, Limits, RegionSpec, Revoked, TableStats,
};
pub use pairing::{Pairing, PairingStats};
pub use parking::{OpenGate, SlotGate};
pub use payload::{Payload, Received};
pub use receive_path::{CopyTag, RxPath};
pub use receiver::{DigestCheck, Output, Progress, Receiver, ReceiverConfig, RunFacts, UmemTarget};
pub use report::Report;
pub use time::Timestamp;
pub use windows::{RegionWindows, WINDOW_GAP};
