//! Fuzzes the PSP parsers and `open_in_place` on arbitrary frames and segments.
#![no_main]

use libfuzzer_sys::fuzz_target;
use psp::{Header, HeaderRepr, MasterKey, MasterKeys, Sa, Segment, locate};

fuzz_target!(|data: &[u8]| {
    let keys = MasterKeys::new(MasterKey([1; 32]), MasterKey([2; 32]));
    // As a whole Ethernet frame.
    if let Ok(loc) = locate(data) {
        let _ = Segment::parse(&data[loc.segment]);
    }
    // As a bare PSP segment.
    if let Ok(seg) = Segment::parse(data) {
        let _ = (seg.hint(), seg.clear_tcp());
        let header = seg.header();
        let _ = HeaderRepr::parse(header);
        let spi = header.spi();
        let sa = Sa::new(spi, seg.version(), &keys.derive(spi, seg.version())).expect("derived keys fit");
        let mut copy = data.to_vec();
        assert!(sa.open_in_place(&mut copy).is_err(), "arbitrary bytes authenticated");
    }
    if let Ok(h) = Header::new_checked(data) {
        let _ = (h.extension(), h.vc(), h.crypt_start());
    }
});
