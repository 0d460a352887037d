//! The control plane: the slow path between sender and receiver, over kernel TCP on the
//! same link, one JSON object per line.
//!
//! - Session: the receiver allocates the SPI (from the direct-write range) and hands over
//!   the derived key. **The key travels in the clear** between the two test hosts; a real
//!   deployment runs this exchange over TLS.
//! - Grant: the sender asks for a window of `len` bytes starting at TCP sequence
//!   `base_seq`, sent on `queue` in segments of `mss` bytes; the receiver answers with
//!   region, generation and offset.
//! - Complete: the sender gives the payload's SHA-256; the receiver reports whether the
//!   window is complete and verified, and which ranges are missing.
//!
//! A line longer than [`MAX_LINE`] or not a valid message is an error; the receiver logs
//! it and closes that connection.

use std::io::{BufRead, Read, Write};

use serde::{Deserialize, Serialize};

/// Who does a session's PSP crypto, agreed when the session opens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Crypto {
    /// The sender seals and the receiver opens with AES-GCM in software.
    #[default]
    Software,
    /// The model of a NIC with inline PSP crypto: the sender does not encrypt (the payload
    /// stays clear, the ICV zero) and the receiver neither decrypts nor verifies. For
    /// measuring placement without crypto's cost; never where authentication is measured.
    Inline,
}

impl Crypto {
    /// Software crypto (the default, left out of messages).
    pub fn is_software(&self) -> bool {
        *self == Self::Software
    }

    /// Its name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Software => "software",
            Self::Inline => "inline",
        }
    }
}

/// Longest accepted line, in bytes (a status with many missing ranges fits).
pub const MAX_LINE: usize = 1 << 20;

/// Sender → receiver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Open a PSP session of `version` (0..=3).
    Session {
        /// PSP version.
        version: u8,
        /// Who does the crypto (software when absent).
        #[serde(default, skip_serializing_if = "Crypto::is_software")]
        crypto: Crypto,
    },
    /// Ask for a placement window.
    Grant {
        /// The session's SPI.
        spi: u32,
        /// Bytes of the message.
        len: u64,
        /// TCP sequence number of its first byte.
        base_seq: u32,
        /// Payload bytes per segment.
        mss: u32,
        /// rx queue the segments will arrive on.
        queue: u32,
        /// Region wanted (the receiver picks one when absent).
        region: Option<u32>,
        /// Bytes of each frame before its payload (Ethernet through TCP), for a receiver
        /// that lands whole frames: it then picks the MSS that fills its frame cap.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        frame_header_len: Option<u32>,
    },
    /// The whole message was sent.
    Complete {
        /// Grant id from [`Response::Granted`].
        grant: u64,
        /// SHA-256 of the message (hex).
        sha256: String,
    },
    /// End of the run: the receiver writes its report and exits once every session said
    /// goodbye.
    Bye,
}

/// Receiver → sender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Response {
    /// Session opened.
    Session {
        /// SPI for the sender's segments.
        spi: u32,
        /// PSP version.
        version: u8,
        /// The derived key (hex). In the clear: see the crate docs.
        key: String,
        /// Receiver's MAC address on the data link (aa:bb:..).
        mac: String,
        /// The crypto agreed (software when absent).
        #[serde(default, skip_serializing_if = "Crypto::is_software")]
        crypto: Crypto,
    },
    /// Window granted.
    Granted(Granted),
    /// A window's state after [`Request::Complete`].
    Status {
        /// Grant id (generational: a revoked grant's id is never reused).
        grant: u64,
        /// Every byte arrived.
        complete: bool,
        /// Complete and equal to the digest.
        verified: bool,
        /// Missing ranges, relative to the window's start.
        missing: Vec<(u64, u64)>,
    },
    /// Goodbye acknowledged.
    Bye,
    /// The request could not be served.
    Error {
        /// Why.
        message: String,
    },
}

/// A granted window: where the sender's segments go and what their hints say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Granted {
    /// Grant id (generational: a revoked grant's id is never reused).
    pub grant: u64,
    /// Region id for the hint.
    pub region: u32,
    /// Region generation for the hint.
    pub generation: u16,
    /// Offset of the window in the region.
    pub offset: u64,
    /// Bytes of the window.
    pub len: u64,
    /// TCP sequence number of the window's first byte.
    pub base_seq: u32,
    /// Payload bytes per segment (the receiver's choice when it lands whole frames).
    pub mss: u32,
    /// Send the segments back to front within runs of this many segments, the runs in
    /// ascending order (whole-frame landing); ascending when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub descending_run: Option<u64>,
}

/// Errors of the control plane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The connection failed.
    #[error("control connection: {0}")]
    Io(#[from] std::io::Error),
    /// A line longer than [`MAX_LINE`].
    #[error("control message longer than {MAX_LINE} bytes")]
    Oversized,
    /// A line that is not a valid message.
    #[error("malformed control message")]
    Malformed(#[from] serde_json::Error),
}

/// Reads one message; `Ok(None)` at end of stream.
///
/// # Errors
/// [`Error::Io`], [`Error::Oversized`] or [`Error::Malformed`].
pub fn read<T: for<'de> Deserialize<'de>>(r: &mut impl BufRead) -> Result<Option<T>, Error> {
    let mut line = Vec::new();
    let n = Read::take(&mut *r, MAX_LINE as u64 + 1).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if line.len() > MAX_LINE {
        return Err(Error::Oversized);
    }
    Ok(Some(serde_json::from_slice(&line)?))
}

/// Writes one message and flushes.
///
/// # Errors
/// [`Error::Io`].
pub fn write<T: Serialize>(w: &mut impl Write, msg: &T) -> Result<(), Error> {
    let mut line = serde_json::to_vec(msg)?;
    line.push(b'\n');
    w.write_all(&line)?;
    w.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn software_crypto_is_the_default_and_left_out_of_the_line() {
        let old: Request = serde_json::from_str(r#"{"type":"session","version":0}"#).unwrap();
        assert_eq!(
            old,
            Request::Session {
                version: 0,
                crypto: Crypto::Software
            }
        );
        let line = serde_json::to_string(&old).unwrap();
        assert!(!line.contains("crypto"), "{line}");
        let inline = serde_json::to_string(&Request::Session {
            version: 0,
            crypto: Crypto::Inline,
        })
        .unwrap();
        assert!(inline.contains(r#""crypto":"inline""#), "{inline}");
        assert!(
            serde_json::from_str::<Request>(r#"{"type":"session","version":0,"crypto":"none"}"#)
                .is_err()
        );
    }

    #[test]
    fn messages_round_trip_as_lines() {
        let msgs = [
            Request::Session {
                version: 0,
                crypto: Crypto::Software,
            },
            Request::Session {
                version: 1,
                crypto: Crypto::Inline,
            },
            Request::Grant {
                spi: 0x4000_0001,
                len: 1 << 20,
                base_seq: 7,
                mss: 1400,
                queue: 1,
                region: None,
                frame_header_len: Some(94),
            },
            Request::Complete {
                grant: 3,
                sha256: "ab".into(),
            },
            Request::Bye,
        ];
        let granted = Response::Granted(Granted {
            grant: 1 << 32,
            region: 2,
            generation: 1,
            offset: 4096,
            len: 1 << 20,
            base_seq: 7,
            mss: 1400,
            descending_run: Some(4096),
        });
        let mut line = Vec::new();
        write(&mut line, &granted).unwrap();
        assert!(
            String::from_utf8_lossy(&line)
                .starts_with("{\"type\":\"granted\",\"grant\":4294967296,"),
            "the wire form is flat"
        );
        let mut r = std::io::Cursor::new(line);
        assert_eq!(read::<Response>(&mut r).unwrap(), Some(granted));
        let mut buf = Vec::new();
        for m in &msgs {
            write(&mut buf, m).unwrap();
        }
        let mut r = std::io::Cursor::new(buf);
        for m in &msgs {
            assert_eq!(read::<Request>(&mut r).unwrap().as_ref(), Some(m));
        }
        assert!(read::<Request>(&mut r).unwrap().is_none());
    }

    #[test]
    fn malformed_and_oversized_lines_are_errors() {
        let mut r = std::io::Cursor::new(b"{\"type\":\"grant\",\"spi\":1}\n".to_vec());
        assert!(matches!(read::<Request>(&mut r), Err(Error::Malformed(_))));
        let mut r =
            std::io::Cursor::new(b"{\"type\":\"session\",\"version\":0,\"extra\":1}\n".to_vec());
        assert!(matches!(read::<Request>(&mut r), Err(Error::Malformed(_))));
        let mut long = vec![b' '; MAX_LINE + 10];
        long.push(b'\n');
        let mut r = std::io::Cursor::new(long);
        assert!(matches!(read::<Request>(&mut r), Err(Error::Oversized)));
    }
}
