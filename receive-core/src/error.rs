//! Errors of the receive core: one enum per area.

/// Why a window could not be reserved in a region.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// A window of no bytes.
    #[error("a window must have at least one byte")]
    Empty,
    /// Longer than the whole region.
    #[error("{len} bytes do not fit a region of {region_len} bytes")]
    TooLarge {
        /// Bytes asked for.
        len: u64,
        /// The region's length.
        region_len: u64,
    },
    /// No gap between live windows is large enough now.
    #[error("no room for {len} bytes now")]
    NoRoom {
        /// Bytes asked for.
        len: u64,
    },
}

/// Why a control request was refused. The text goes back to the client in an `error`
/// response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// A PSP version that does not exist.
    #[error("PSP version {0} does not exist (0..=3)")]
    BadVersion(u8),
    /// The connection has opened as many sessions as it may.
    #[error("at most {0} sessions per connection")]
    TooManySessions(usize),
    /// No SPI is left to hand out.
    #[error("no SPI left")]
    SpisExhausted,
    /// Inline crypto asked of a receiver that does not allow it.
    #[error("inline crypto is not allowed here (zc-recv live --allow-inline-crypto)")]
    InlineCryptoNotAllowed,
    /// Inline crypto asked where segments are authorised by region-bound keys.
    #[error("inline crypto is refused with region-bound keys: they authorise by authentication")]
    InlineCryptoWithRegionBoundKeys,
    /// The SPI is unknown or belongs to another connection's session.
    #[error("SPI {0:#010x} is not one of this connection's sessions")]
    NotYourSpi(u32),
    /// The grant is unknown, finished, or belongs to another connection.
    #[error("grant {0} is not an open grant of this connection")]
    NotYourGrant(u64),
    /// MSS out of range.
    #[error("MSS {mss} must be {min}..={max}")]
    BadMss {
        /// Asked for.
        mss: u32,
        /// Smallest accepted.
        min: u32,
        /// Largest accepted.
        max: u32,
    },
    /// A queue the receiver does not serve.
    #[error("queue {queue} is not served (0..{queues})")]
    BadQueue {
        /// Asked for.
        queue: u32,
        /// Queues served.
        queues: u32,
    },
    /// A region the receiver does not have.
    #[error("no region {0}")]
    UnknownRegion(u32),
    /// No region had room (each candidate's reason).
    #[error("no room for {len} bytes: {why}")]
    NoRoom {
        /// Bytes asked for.
        len: u64,
        /// Per candidate region, why not.
        why: String,
    },
    /// The region has no room (or never could have) for the window.
    #[error("region {region}: {why}")]
    Window {
        /// The region.
        region: u32,
        /// Why not.
        why: WindowError,
    },
    /// Whole frames land, and the grant request did not say how long its headers are.
    #[error("this receiver lands whole frames: the grant request needs frame_header_len")]
    FrameHeaderLenMissing,
    /// Frames longer than the receiver lets land.
    #[error(
        "frames of {header} header bytes, an MSS of {mss} and {trailer} trailing bytes exceed the frame cap of {frame_cap} bytes (at most 256 header bytes)"
    )]
    FrameTooLong {
        /// Declared header bytes.
        header: u32,
        /// Asked MSS.
        mss: u32,
        /// Bytes after the payload (the ICV, when it lands).
        trailer: u32,
        /// The receiver's frame cap.
        frame_cap: u32,
    },
    /// A digest that is not 64 hex digits.
    #[error("sha256 must be 64 hex digits")]
    BadDigest,
    /// The placement engine refused (its own words).
    #[error("{0}")]
    Engine(#[from] placement::Error),
}

/// Errors of setting the core up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetupError {
    /// The placement engine refused a region.
    #[error("region: {0}")]
    Engine(#[from] placement::Error),
    /// A region of no bytes.
    #[error("region {0} has no bytes")]
    EmptyRegion(u32),
}

/// Errors of the receive path that are not a segment's fault alone: the memory a payload
/// landed in, or the copy pipeline.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    /// The UMEM refused (a frame or slot outside it, or already held).
    #[error("UMEM: {0}")]
    Memory(#[from] umem::Error),
    /// The copy pipeline refused.
    #[error("copy: {0}")]
    Copy(#[from] copy_fallback::Error),
    /// Copies still outstanding when the run ended.
    #[error("the copy engine did not finish within 30 s")]
    CopiesUnfinished,
}
