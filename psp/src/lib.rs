//! The PSP Security Protocol as this testbed uses it, sans-IO and without `unsafe`.
//!
//! - [`header`]: the PSP header as a checked zero-copy view and a parsed representation;
//! - [`hint`]: the testbed's 16-byte placement hint extension;
//! - [`segment`]: a whole PSP segment (header, body, ICV) and its inner TCP header;
//! - [`key`]: master keys, rotation, the specification's key derivation and region-bound keys;
//! - [`sa`]: seal and open in place (AES-GCM / AES-GMAC, via `ring`);
//! - [`frame`]: building whole Ethernet frames and locating PSP in received ones.
//!
//! Nothing here reads a clock, touches a socket or allocates per packet.

pub mod error;
pub mod frame;
pub mod header;
pub mod hint;
pub mod key;
pub mod sa;
pub mod segment;

pub use error::{Error, Result};
pub use frame::{FlowTemplate, FrameBuilder, IpEndpoints, PspLocation, SegmentSpec, locate};
pub use header::{Extension, Header, HeaderRepr, ICV_LEN, UDP_PORT, Version};
pub use hint::Hint;
pub use key::{DerivedKey, KeyPhase, MasterKey, MasterKeys, derive, derive_region_bound};
pub use sa::Sa;
pub use segment::{Layout, Segment, TcpInfo};
