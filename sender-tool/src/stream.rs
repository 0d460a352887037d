//! One stream: its queue, session and message; segment building with the lie modes;
//! completion against the receiver's digest check.

use std::net::IpAddr;

use anyhow::{Context, Result, bail};
use control::{Crypto, Granted, Request, Response};
use psp::{DerivedKey, FlowTemplate, FrameBuilder, Hint, IpEndpoints, Sa, SegmentSpec, Version};

use crate::check;
use crate::cli::{Cli, Lie, parse_mac};
use crate::control_client::Control;
use crate::schedule::Rng;

/// The seed of message `m` of stream `i`.
pub(crate) fn message_seed(seed: u64, m: u32, i: usize) -> u64 {
    seed ^ (u64::from(m) << 16) ^ (i as u64 + 1)
}

/// Fills `message` with the `len` bytes of message `seed` (the same bytes whichever
/// transport sends them).
///
/// # Errors
/// The message does not fit in memory.
pub(crate) fn fill_message(message: &mut Vec<u8>, len: u64, seed: u64) -> Result<()> {
    let bytes = usize::try_from(len)?;
    message.clear();
    message
        .try_reserve_exact(bytes)
        .with_context(|| format!("cannot allocate a message of {len} bytes"))?;
    message.resize(bytes, 0);
    fill_bytes(message, seed);
    Ok(())
}

/// Fills `message` with the bytes of message `seed` (its length is the message's).
pub(crate) fn fill_bytes(message: &mut [u8], seed: u64) {
    let mut rng = Rng::new(seed);
    for chunk in message.chunks_mut(8) {
        let word = rng.next_u64().to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
}

/// One stream: a queue, a session, the message being sent.
pub(crate) struct Stream {
    pub(crate) queue: u32,
    pub(crate) control: Control,
    pub(crate) sa: Sa,
    pub(crate) flow: FlowTemplate,
    pub(crate) lie: Option<Lie>,
    /// Who seals: this sender (software) or the modelled NIC (inline: sent unsealed).
    pub(crate) crypto: Crypto,
    pub(crate) iv: u64,
    pub(crate) next_seq: u32,
    pub(crate) region: Option<u32>,
    pub(crate) message: Vec<u8>,
    pub(crate) window: Option<Granted>,
    pub(crate) verified: u32,
    pub(crate) failed: u32,
}

impl Stream {
    pub(crate) fn open(
        cli: &Cli,
        eth_src: [u8; 6],
        queue: u32,
        region: Option<u32>,
        lie: Option<Lie>,
        seed: u64,
    ) -> Result<Self> {
        let version = Version::from_wire(cli.psp_version)
            .map_err(|e| anyhow::anyhow!("--psp-version: {e}"))?;
        let q16 = u16::try_from(queue).context("queue too large")?;
        let udp_src_port = check::UDP_PORT_BASE
            .checked_add(q16)
            .context("queue too large for a UDP source port")?;
        let (mut control, local) = Control::connect(cli.control)?;
        let Response::Session {
            spi,
            key,
            mac,
            crypto,
            ..
        } = control.call(&Request::Session {
            version: cli.psp_version,
            crypto: cli.crypto.into(),
        })?
        else {
            bail!("unexpected answer to session request");
        };
        if crypto != Crypto::from(cli.crypto) {
            bail!(
                "asked for {} crypto, the receiver agreed to {}",
                Crypto::from(cli.crypto).as_str(),
                crypto.as_str()
            );
        }
        let key = hex::decode(&key).context("session key is not hex")?;
        let key = match key.len() {
            16 => DerivedKey::Aes128(key.try_into().unwrap_or([0; 16])),
            32 => DerivedKey::Aes256(key.try_into().unwrap_or([0; 32])),
            n => bail!("session key of {n} bytes"),
        };
        let sa = Sa::new(spi, version, &key)?;
        let ip = match (local, cli.control.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => IpEndpoints::V4 {
                src: s.octets(),
                dst: d.octets(),
            },
            (IpAddr::V6(s), IpAddr::V6(d)) => IpEndpoints::V6 {
                src: s.octets(),
                dst: d.octets(),
            },
            _ => bail!("mixed IP families on the control connection"),
        };
        Ok(Self {
            queue,
            control,
            sa,
            flow: FlowTemplate {
                eth_src,
                eth_dst: parse_mac(&mac)?,
                ip,
                udp_src_port,
                tcp_src_port: 5000 + q16,
                tcp_dst_port: 80,
                vc: None,
                ttl: 64,
            },
            lie,
            crypto,
            iv: 1,
            next_seq: (Rng::new(seed).next_u64() >> 32) as u32,
            region,
            message: Vec::new(),
            window: None,
            verified: 0,
            failed: 0,
        })
    }

    /// Bytes of each frame before its payload (told to receivers that land whole frames).
    fn frame_header_len(&self) -> u32 {
        let header = FrameBuilder::new(self.flow, &self.sa).payload_offset(true);
        u32::try_from(header).unwrap_or(u32::MAX)
    }

    /// Back-to-front runs the current grant asks for (whole-frame landing).
    pub(crate) fn descending_run(&self) -> Option<usize> {
        let run = self.window.as_ref()?.descending_run?;
        usize::try_from(run).ok()
    }

    pub(crate) fn start_message(&mut self, len: u64, mss: u32, seed: u64) -> Result<()> {
        fill_message(&mut self.message, len, seed)?;
        let Response::Granted(granted) = self.control.call(&Request::Grant {
            spi: self.sa.spi(),
            len,
            base_seq: self.next_seq,
            mss,
            queue: self.queue,
            region: self.region,
            frame_header_len: Some(self.frame_header_len()),
        })?
        else {
            bail!("unexpected answer to grant request");
        };
        check::grant(
            check::GrantCheck {
                len,
                base_seq: self.next_seq,
                mss,
                offset: 0,
            },
            check::GrantCheck {
                len: granted.len,
                base_seq: granted.base_seq,
                mss: granted.mss,
                offset: granted.offset,
            },
        )?;
        // Sequence numbers count modulo 2^32; a message is at most 2^31 bytes.
        let seq_len = u32::try_from(len).context("message longer than the sequence space")?;
        self.next_seq = self.next_seq.wrapping_add(seq_len);
        self.window = Some(granted);
        Ok(())
    }

    /// Builds segment `j` of the current message into `buf`.
    pub(crate) fn build(&mut self, j: usize, mss: u32, buf: &mut [u8]) -> Result<usize> {
        let w = self.window.context("no window")?;
        let mss = mss as usize;
        let start = j.saturating_mul(mss);
        let end = start.saturating_add(mss).min(self.message.len());
        let payload = self
            .message
            .get(start..end)
            .with_context(|| format!("segment {j} lies outside the message"))?;
        let mut hint = Hint {
            region_id: w.region,
            generation: w.generation,
            offset: w.offset,
            base_tcp_seq: w.base_seq,
        };
        match self.lie {
            Some(Lie::Region(r)) => hint.region_id = r,
            Some(Lie::Outside) => hint.offset = w.offset + w.len,
            Some(Lie::Stale) => hint.generation = w.generation.wrapping_sub(1),
            Some(Lie::ForgedIcv) | None => {}
        }
        let spec = SegmentSpec {
            iv: self.iv,
            hint: Some(hint),
            seq: w
                .base_seq
                .wrapping_add(u32::try_from(start).context("segment beyond 2^32 bytes")?),
            ack: 0,
            psh: end == self.message.len(),
        };
        self.iv += 1;
        let builder = FrameBuilder::new(self.flow, &self.sa);
        let builder = match self.crypto {
            Crypto::Software => builder,
            // The NIC model seals on transmit: nothing to do here.
            Crypto::Inline => builder.without_sealing(),
        };
        let len = builder.build(buf, &spec, payload)?;
        if self.lie == Some(Lie::ForgedIcv)
            && let Some(last) = len.checked_sub(1).and_then(|i| buf.get_mut(i))
        {
            *last ^= 0x5a;
        }
        Ok(len)
    }

    pub(crate) fn complete(&mut self) -> Result<(bool, Vec<(u64, u64)>)> {
        let w = self.window.context("no window")?;
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.message);
        let Response::Status {
            grant,
            complete,
            verified,
            missing,
        } = self.control.call(&Request::Complete {
            grant: w.grant,
            sha256: hex::encode(digest.as_ref()),
        })?
        else {
            bail!("unexpected answer to completion");
        };
        if grant != w.grant {
            bail!(
                "receiver answered the completion of grant {} for grant {grant}",
                w.grant
            );
        }
        if complete && !verified {
            bail!(
                "receiver says message of grant {} is complete but does not match its digest",
                w.grant
            );
        }
        Ok((verified, missing))
    }
}
