//! psp-pcap's library side: reading pcap and pcapng captures ([`capture`]), shared with
//! `zc-recv replay`.

pub mod capture;
