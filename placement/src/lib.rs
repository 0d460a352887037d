//! Placement decisions for PSP placement hints, sans-IO: regions, grants, the flow
//! allow-list, the address rule, the security checks and completion accounting. The copy
//! fallback (threads, core pinning, clocks) is the `copy-fallback` crate.
//!
//! ```text
//! address = region.base + hint.offset + (tcp.seq - hint.base_seq  mod 2^32)
//! ```
//!
//! [`PlacementEngine::decide`] returns [`Decision::Direct`] when a payload landed exactly
//! at its address, [`Decision::Copy`] when it must be copied there, or
//! [`Decision::Reject`] with a [`Reason`]. Time is passed in; nothing here reads a clock or
//! touches a socket, and no thread is started.

pub mod counters;
pub mod engine;
pub mod error;
pub mod idmap;
pub mod progress;
pub mod reason;

pub use counters::{Counters, Tally};
pub use engine::{
    AccessControl, Decision, Grant, GrantId, MAX_GRANTS_PER_SA, MemoryUsage, Placement,
    PlacementEngine, Policy, Region, Segment,
};
pub use error::{Error, Result};
pub use progress::{GrantProgress, RangeSet};
pub use reason::Reason;
