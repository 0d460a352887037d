//! Reason codes of placement decisions, used verbatim in reports.
//!
//! They follow the tagged-buffer errors of iWARP DDP (RFC 5041): invalid STag
//! (`unknown_region`), base-or-bounds violation (`out_of_bounds`), STag not associated with
//! the stream (`not_granted`), offset wrap (`seq_wrap`).

/// Why a segment was rejected or copied instead of placed directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// Not a valid PSP segment.
    Malformed,
    /// No SA for this SPI.
    UnknownSa,
    /// The ICV did not verify.
    AuthFailed,
    /// No placement hint: the segment goes to the ordinary copy path.
    NoHint,
    /// No region with this id (or it was retired).
    UnknownRegion,
    /// This SPI has no grant for this region and generation.
    NotGranted,
    /// Bytes would fall outside the grant or the region.
    OutOfBounds,
    /// Older than the region's active generation.
    StaleGeneration,
    /// Region or generation not active yet: copy fallback (staged), not a reject.
    NotReady,
    /// Sequence delta of 2^31 or more from the hint's base.
    SeqWrap,
    /// SPI outside the direct-write range: copied, never placed directly.
    NotDirectSpi,
    /// The payload landed somewhere other than its computed address: copied there.
    LandedElsewhere,
}

impl Reason {
    /// Every reason, in report order.
    pub const ALL: [Reason; 12] = [
        Self::Malformed,
        Self::UnknownSa,
        Self::AuthFailed,
        Self::NoHint,
        Self::UnknownRegion,
        Self::NotGranted,
        Self::OutOfBounds,
        Self::StaleGeneration,
        Self::NotReady,
        Self::SeqWrap,
        Self::NotDirectSpi,
        Self::LandedElsewhere,
    ];
    /// Number of reasons.
    pub const COUNT: usize = Self::ALL.len();

    /// The report name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::UnknownSa => "unknown_sa",
            Self::AuthFailed => "auth_failed",
            Self::NoHint => "no_hint",
            Self::UnknownRegion => "unknown_region",
            Self::NotGranted => "not_granted",
            Self::OutOfBounds => "out_of_bounds",
            Self::StaleGeneration => "stale_generation",
            Self::NotReady => "not_ready",
            Self::SeqWrap => "seq_wrap",
            Self::NotDirectSpi => "not_direct_spi",
            Self::LandedElsewhere => "landed_elsewhere",
        }
    }

    /// Index into per-reason arrays.
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl core::fmt::Display for Reason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}
