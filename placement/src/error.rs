//! The `placement` crate's configuration errors (decisions never fail: they return a
//! [`crate::Decision`]).

use thiserror::Error;

/// Errors of configuring regions, SAs and grants, and of copy engines.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Error {
    /// A region with this id exists.
    #[error("region {0} already exists")]
    DuplicateRegion(u32),
    /// No region with this id.
    #[error("no region {0}")]
    UnknownRegion(u32),
    /// base + len overflows the address space.
    #[error("region {id}: base + length overflows")]
    RegionOverflow {
        /// Region id.
        id: u32,
    },
    /// An SA with this SPI exists.
    #[error("SA {0:#010x} already exists")]
    DuplicateSa(u32),
    /// No SA with this SPI.
    #[error("no SA {0:#010x}")]
    UnknownSa(u32),
    /// No grant with this id.
    #[error("no grant {0}")]
    UnknownGrant(u64),
    /// The window does not lie inside the region.
    #[error(
        "grant of {len} bytes at offset {offset} does not fit region {region} ({region_len} bytes)"
    )]
    GrantOutsideRegion {
        /// Region id.
        region: u32,
        /// Window offset.
        offset: u64,
        /// Window length.
        len: u64,
        /// Region length.
        region_len: u64,
    },
    /// The SA has the most grants it may hold.
    #[error("SA {spi:#010x} already holds {max} grants")]
    TooManyGrants {
        /// SPI.
        spi: u32,
        /// Limit.
        max: u16,
    },
}

/// Result with the crate's [`Error`].
pub type Result<T> = core::result::Result<T, Error>;
