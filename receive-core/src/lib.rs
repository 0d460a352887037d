//! The receiver's sans-IO core. No syscalls, no clocks: time is passed in as the
//! [`Duration`](std::time::Duration) since the receiver started, and every function returns
//! what the I/O layer must do.
//!
//! - [`windows`]: the windows of one region (checked first-fit allocation with guard gaps);
//! - [`grant_table`]: sessions, SAs, grants and windows from the first control request to
//!   the window's release, with ownership per connection, revocation on close and a grant
//!   timeout;
//! - [`pairing`]: each RX descriptor with its header record, per queue, with counters;
//! - [`drive`]: plays arbitrary event sequences against the grant table, checking its
//!   invariants (property test and fuzz target).

#![forbid(unsafe_code)]

pub mod drive;
pub mod error;
pub mod grant_table;
pub mod pairing;
pub mod windows;

pub use error::{RequestError, SetupError, WindowError};
pub use grant_table::{
    Action, ConnId, GrantEntry, GrantState, GrantTable, Limits, RegionSpec, Revoked, TableStats,
    engine_time,
};
pub use pairing::{Pairing, PairingStats};
pub use windows::{RegionWindows, WINDOW_GAP};
