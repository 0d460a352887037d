//! Where a received payload is: held exclusively while it is handled ([`Received`]), and
//! as the source of a copy ([`Payload`]).

use umem::{LentFrame, ReceivedFrame, SlotMut};

/// A live segment's payload as it came back from the kernel, held exclusively until it is
/// handled: no copy, read or other holder reaches these bytes meanwhile.
pub enum Received<'a> {
    /// In a predicted slot (perhaps another segment's).
    Slot(SlotMut<'a>),
    /// In a bounce frame: opened in place, then lent to the copy (or staging) instead of
    /// copied out; back to the plan if dropped unlent.
    Bounce {
        /// The frame.
        frame: ReceivedFrame<'a>,
        /// The payload's address inside it.
        data: u64,
        /// The payload's length.
        len: usize,
    },
}

impl Received<'_> {
    /// The payload, mutable (to open it in place).
    ///
    /// # Errors
    /// The payload is not inside its bounce frame.
    pub fn bytes_mut(&mut self) -> Result<&mut [u8], umem::Error> {
        Ok(match self {
            Self::Slot(slot) => slot.as_mut_slice(),
            Self::Bounce { frame, data, len } => frame.range_mut(*data, *len)?,
        })
    }
}

/// The source of a copy: a bounce frame the payload landed in, or bytes copied out of
/// wherever else it was (a replayed frame, or a slot that belongs to another segment and
/// will be overwritten).
pub enum Payload {
    /// Copied out.
    Owned(Vec<u8>),
    /// Still in its bounce frame.
    Frame(LentFrame),
}

impl Payload {
    /// Whether it holds a bounce frame.
    pub fn is_frame(&self) -> bool {
        matches!(self, Self::Frame(_))
    }
}

impl AsRef<[u8]> for Payload {
    fn as_ref(&self) -> &[u8] {
        match self {
            Self::Owned(v) => v,
            Self::Frame(f) => f.as_ref(),
        }
    }
}
