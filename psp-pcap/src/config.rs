//! The reference programs' configuration files: whitespace-separated tokens.

use anyhow::{Context, Result, bail};
use psp::{MasterKey, MasterKeys, Version};

/// PSP encapsulation mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Transport,
    Tunnel,
}

/// `psp_encrypt`'s configuration.
#[derive(Debug, Clone)]
pub struct EncryptConfig {
    pub keys: MasterKeys,
    pub spi: u32,
    pub mode: Mode,
    pub version: Version,
    /// Crypt offsets in 4-byte units: transport, IPv4 tunnel, IPv6 tunnel.
    pub transport_crypt_offset: u8,
    pub ipv4_tunnel_crypt_offset: u8,
    pub ipv6_tunnel_crypt_offset: u8,
    pub include_vc: bool,
}

struct Tokens<'a> {
    iter: std::str::SplitWhitespace<'a>,
}

impl<'a> Tokens<'a> {
    fn next(&mut self, what: &str) -> Result<&'a str> {
        self.iter
            .next()
            .with_context(|| format!("the config ends before {what}"))
    }
}

fn strip_0x(s: &str) -> &str {
    s.strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s)
}

/// A master key: 32 hex bytes as separate tokens (the reference's form) or one 64-digit token.
fn master_key(tokens: &mut Tokens<'_>, which: &str) -> Result<MasterKey> {
    let mut key = [0u8; 32];
    let first = tokens.next(which)?;
    if strip_0x(first).len() == 64 {
        hex::decode_to_slice(strip_0x(first), &mut key)
            .with_context(|| format!("{which} is not 64 hex digits"))?;
        return Ok(MasterKey(key));
    }
    for (i, byte) in key.iter_mut().enumerate() {
        let token = if i == 0 { first } else { tokens.next(which)? };
        *byte = u8::from_str_radix(strip_0x(token), 16)
            .with_context(|| format!("byte {} of {which} ('{token}') is not a hex byte", i + 1))?;
    }
    Ok(MasterKey(key))
}

fn keys(tokens: &mut Tokens<'_>) -> Result<MasterKeys> {
    let k0 = master_key(tokens, "master key 0")?;
    let k1 = master_key(tokens, "master key 1")?;
    Ok(MasterKeys::new(k0, k1))
}

fn crypt_offset(tokens: &mut Tokens<'_>, which: &str) -> Result<u8> {
    let token = tokens.next(which)?;
    let units: u64 = token
        .parse()
        .with_context(|| format!("{which} '{token}' is not a number of 4-byte units"))?;
    match u8::try_from(units) {
        Ok(u) if u <= psp::header::MAX_CRYPT_OFFSET => Ok(u),
        _ => bail!("{which} {units} is larger than 63, the largest the 6-bit field holds"),
    }
}

/// Parses an encrypt configuration.
pub fn parse_encrypt(text: &str) -> Result<EncryptConfig> {
    let mut t = Tokens {
        iter: text.split_whitespace(),
    };
    let keys = keys(&mut t)?;
    let spi_token = t.next("the SPI")?;
    let spi = u32::from_str_radix(strip_0x(spi_token), 16)
        .with_context(|| format!("SPI '{spi_token}' is not a 32-bit hex number"))?;
    let mode = match t.next("the encap mode")? {
        "transport" => Mode::Transport,
        "tunnel" => Mode::Tunnel,
        other => bail!("encap mode '{other}' is neither 'transport' nor 'tunnel'"),
    };
    let version = match t.next("the crypto algorithm")? {
        "aes-gcm-128" => Version::AesGcm128,
        "aes-gcm-256" => Version::AesGcm256,
        "aes-gmac-128" => Version::AesGmac128,
        "aes-gmac-256" => Version::AesGmac256,
        other => bail!(
            "crypto algorithm '{other}' is not aes-gcm-128, aes-gcm-256, aes-gmac-128 or aes-gmac-256"
        ),
    };
    let transport_crypt_offset = crypt_offset(&mut t, "transport crypt offset")?;
    let ipv4_tunnel_crypt_offset = crypt_offset(&mut t, "IPv4 tunnel crypt offset")?;
    let ipv6_tunnel_crypt_offset = crypt_offset(&mut t, "IPv6 tunnel crypt offset")?;
    let include_vc = match t.next("the vc mode")? {
        "vc" => true,
        "no-vc" => false,
        other => bail!("vc mode '{other}' is neither 'vc' nor 'no-vc'"),
    };
    Ok(EncryptConfig {
        keys,
        spi,
        mode,
        version,
        transport_crypt_offset,
        ipv4_tunnel_crypt_offset,
        ipv6_tunnel_crypt_offset,
        include_vc,
    })
}

/// Parses a decrypt configuration: the two master keys.
pub fn parse_decrypt(text: &str) -> Result<MasterKeys> {
    keys(&mut Tokens {
        iter: text.split_whitespace(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: &str = "34 44 8a 06 42 92 60 1b 11 a0 97 8f 56 a2 d3 4c f3 fc 35 ed e1 a6 bc 04 f8 db 3e 52 43 a2 b0 ca
56 39 52 56 5d 3a 78 ae 77 3e c1 b7 79 f2 f2 d9 9f 4a 7f 53 a6 fb b9 b0 7d 5b 71 f3 93 64 d7 39";

    #[test]
    fn reference_config_parses() {
        let cfg = parse_encrypt(&format!(
            "{KEYS}\n9A345678\ntransport\naes-gcm-128\n1\n6\n11\nno-vc\n"
        ))
        .unwrap();
        assert_eq!(cfg.spi, 0x9a34_5678);
        assert_eq!(cfg.mode, Mode::Transport);
        assert_eq!(
            (
                cfg.transport_crypt_offset,
                cfg.ipv4_tunnel_crypt_offset,
                cfg.ipv6_tunnel_crypt_offset
            ),
            (1, 6, 11)
        );
        assert!(!cfg.include_vc);
        assert_eq!(
            hex::encode(cfg.keys.derive(0x9A34_5678, Version::AesGcm128).as_bytes()),
            "3946da2554eae46ad1ef77a64372edc4"
        );
    }

    #[test]
    fn bad_configs_say_what_is_wrong() {
        let e = parse_encrypt(&format!(
            "{KEYS}\n9A345678\ntransport\naes-ccm\n1\n6\n11\nno-vc\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("aes-ccm"), "{e}");
        let e = parse_encrypt(&format!(
            "{KEYS}\n9A345678\ntransport\naes-gcm-128\n64\n6\n11\nno-vc\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("63"), "{e}");
        let e = parse_encrypt("34 44 zz").unwrap_err();
        assert!(e.to_string().contains("byte 3 of master key 0"), "{e}");
        let e = parse_decrypt("34").unwrap_err();
        assert!(e.to_string().contains("ends before master key 0"), "{e}");
    }

    #[test]
    fn errors_name_the_field_that_is_wrong() {
        let cfg = |spi: &str, mode: &str, offsets: [&str; 3], vc: &str| {
            parse_encrypt(&format!(
                "{KEYS}\n{spi}\n{mode}\naes-gcm-128\n{}\n{}\n{}\n{vc}\n",
                offsets[0], offsets[1], offsets[2]
            ))
            .map(|_| ())
            .unwrap_err()
            .to_string()
        };
        let ok = ["1", "6", "11"];
        // A crypt offset too large for a byte is too large, not "not a number".
        let e = cfg("9A345678", "transport", ["300", "6", "11"], "no-vc");
        assert!(
            e.contains("transport crypt offset 300 is larger than 63"),
            "{e}"
        );
        let e = cfg("9A345678", "transport", ["1", "6", "-1"], "no-vc");
        assert!(
            e.contains("IPv6 tunnel crypt offset '-1' is not a number"),
            "{e}"
        );
        let e = cfg("9A345678", "transport", ["1", "64", "11"], "no-vc");
        assert!(e.contains("IPv4 tunnel crypt offset 64"), "{e}");
        let e = cfg("1234567890", "transport", ok, "no-vc");
        assert!(e.contains("SPI '1234567890'"), "{e}");
        let e = cfg("9A345678", "tunel", ok, "no-vc");
        assert!(e.contains("encap mode 'tunel'"), "{e}");
        let e = cfg("9A345678", "tunnel", ok, "vcx");
        assert!(e.contains("vc mode 'vcx'"), "{e}");
        let e = parse_decrypt(&format!("{}zz", &KEYS[..KEYS.len() - 2])).unwrap_err();
        assert!(e.to_string().contains("byte 32 of master key 1"), "{e}");
        let e = parse_decrypt(&format!("0x{}", "g".repeat(64))).unwrap_err();
        assert!(
            e.to_string().contains("master key 0 is not 64 hex digits"),
            "{e}"
        );
    }
}
