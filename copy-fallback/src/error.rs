//! Errors of the copy fallback.

/// Why a copy or an engine failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A copy would write outside the copy target's memory.
    #[error("copy of {len} bytes to {addr:#x} falls outside the target memory")]
    CopyOutOfRange {
        /// Destination address.
        addr: u64,
        /// Bytes.
        len: usize,
    },
    /// A copy engine channel failed (injected, or a hardware error).
    #[error("copy engine channel {0} failed")]
    ChannelFailed(usize),
    /// A descriptor completed with an error.
    #[error("descriptor {0} completed with an error")]
    DescriptorError(u64),
    /// A copy engine could not start (thread spawn failed).
    #[error("copy engine could not start: {0}")]
    EngineStart(String),
}

/// Result with the crate's [`Error`].
pub type Result<T> = core::result::Result<T, Error>;
