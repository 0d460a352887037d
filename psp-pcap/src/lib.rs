//! psp-pcap's library side: reading pcap and pcapng captures ([`capture`]), shared with
//! `zc-recv replay`, and writing pcap files ([`pcapio`]), shared with `zc-recv live
//! --capture`.

pub mod capture;
pub mod pcapio;
