//! The receive core played against the kernel model: whole transfers through the control
//! plane, fill rings, header records and RX descriptors, with loss, reordering, late
//! regions, revocation and lying senders. No root, no kernel.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use copy_fallback::decider::Decider;

use control::Request;
use placement::GrantId;
use psp::{DerivedKey, Sa, Version};
use receive_core::ConnId;
use receive_core::grant_table::WholeFrame;
use support::{Harness, HeldEngine, MSS, RegionDef, Setup, verified};

const LEN: u64 = 256 * 1024;

/// Segments that land in the bounce frames posted before the grant (Setup's bounce_depth).
const EARLY: u64 = 16;

fn full_segments_bytes(segments: u64) -> u64 {
    segments * u64::from(MSS)
}

#[test]
fn an_in_order_stream_is_placed_directly_and_verifies() {
    let mut h = Harness::new(&Setup::default());
    let s = h.open_stream(1, LEN, 0, None);
    h.turn();
    h.arrive_in_batches(0, &s.frames(), 32);
    assert!(verified(&h.complete(&s)));
    assert_eq!(h.window_bytes(&s), s.message);
    let r = h.report();
    // The first segments land in the bounce frames posted before the grant; every later
    // full segment lands in its slot; the short last one is copied.
    let full = LEN / u64::from(MSS);
    assert_eq!(r.numbers.direct_bytes, full_segments_bytes(full - EARLY));
    assert_eq!(
        r.numbers.cpu_copy_bytes,
        LEN - full_segments_bytes(full - EARLY)
    );
    assert!(r.numbers.rejects.is_empty(), "{:?}", r.numbers.rejects);
    assert!(r.verified);
    assert_eq!(r.regions[0].stray_bytes, 0);
}

#[test]
fn pairing_survives_frames_dropped_for_want_of_fill_entries_and_lost_records() {
    let mut h = Harness::new(&Setup::default());
    let s = h.open_stream(1, LEN, 0, None);
    h.turn();
    let frames = s.frames();
    // 150 frames at once: the window posted 64 slots, so the kernel drops the rest after
    // the program wrote their records.
    h.arrive(0, &frames[..150]);
    assert!(h.kernel.stats().fill_ring_empty > 0);
    // The header ring overflows: two records never come.
    h.kernel.lose_next_records(2);
    h.arrive_in_batches(0, &frames[150..], 16);
    assert_eq!(h.kernel.stats().records_lost, 2);
    assert!(verified(&h.complete(&s)), "retransmission fills the gaps");
    assert_eq!(h.window_bytes(&s), s.message);
    let r = h.report();
    let rx = r.xsk_stats.expect("receiver counters").receiver;
    assert!(rx.unpaired_header_records > 0, "{rx:?}");
    assert!(rx.unpaired_descriptors >= 2, "{rx:?}");
    assert!(r.verified);
}

#[test]
fn the_plan_resyncs_after_loss_and_rescues_what_landed_in_other_slots() {
    // Slots posted ahead of a loss catch the wrong segments: a window of 16 bounds that.
    let mut h = Harness::new(&Setup {
        window: 16,
        ..Setup::default()
    });
    let s = h.open_stream(1, LEN, 0, None);
    h.turn();
    let frames = s.frames();
    // Segments 10..15 are lost: 15 lands in 10's slot, and so on, until the plan resyncs.
    let sent: Vec<Vec<u8>> = frames
        .iter()
        .enumerate()
        .filter(|(i, _)| !(10..15).contains(i))
        .map(|(_, f)| f.clone())
        .collect();
    h.arrive_in_batches(0, &sent, 8);
    assert!(verified(&h.complete(&s)));
    assert_eq!(h.window_bytes(&s), s.message);
    let r = h.report();
    let rx = r.xsk_stats.expect("receiver counters").receiver;
    assert!(rx.resyncs > 0, "{rx:?}");
    assert!(rx.rescued_bytes > 0, "{rx:?}");
    assert!(
        r.numbers.copies_avoided > 0.7,
        "after the resync segments land in place again: {}",
        r.numbers.copies_avoided
    );
}

#[test]
fn a_copy_whose_slot_is_still_posted_is_parked_until_the_slot_returns() {
    let mut h = Harness::new(&Setup::default());
    let s = h.open_stream(1, LEN, 0, None);
    h.turn();
    let frames = s.frames();
    // Pairs swapped: segment 1 lands in slot 0, segment 0 in slot 1. Segment 1's copy to
    // slot 1 must wait until the kernel gave slot 1 back (and segment 0 was rescued out
    // of it).
    let mut swapped = frames.clone();
    let early = usize::try_from(EARLY).expect("small");
    for pair in swapped[early..early + 40].chunks_mut(2) {
        pair.swap(0, 1);
    }
    h.arrive_in_batches(0, &swapped, 32);
    assert!(verified(&h.complete(&s)));
    assert_eq!(h.window_bytes(&s), s.message);
    let r = h.report();
    let rx = r.xsk_stats.expect("receiver counters").receiver;
    assert!(rx.parked_copies >= 20, "{rx:?}");
    assert!(rx.rescued_bytes >= 20 * u64::from(MSS), "{rx:?}");
    assert_eq!(rx.parked_bytes_at_end, 0);
    assert_eq!(r.regions[0].stray_bytes, 0);
}

fn late_setup(max_staged_bytes: usize) -> Setup {
    Setup {
        regions: vec![RegionDef {
            id: 1,
            len: 4 << 20,
            late: true,
        }],
        max_staged_bytes,
        ..Setup::default()
    }
}

#[test]
fn a_late_region_stages_early_segments_then_places_directly() {
    let mut h = Harness::new(&late_setup(64 << 20));
    let s = h.open_stream(1, LEN, 0, None);
    h.turn();
    let frames = s.frames();
    h.arrive_in_batches(0, &frames[..30], 10);
    // The region activates 200 ms after its first grant.
    h.advance(Duration::from_millis(250));
    h.turn();
    h.arrive_in_batches(0, &frames[30..], 16);
    assert!(verified(&h.complete(&s)));
    assert_eq!(h.window_bytes(&s), s.message);
    let r = h.report();
    assert_eq!(r.numbers.staged_bytes, full_segments_bytes(30));
    assert!(
        r.numbers.direct_bytes >= full_segments_bytes(100),
        "after activation the plan predicts: {:?}",
        r.numbers
    );
    assert_eq!(r.still_staged_bytes, 0);
}

#[test]
fn staging_is_bounded_and_what_does_not_fit_is_refused_then_retransmitted() {
    let mut h = Harness::new(&late_setup(20 * MSS as usize));
    let s = h.open_stream(1, LEN, 0, None);
    h.turn();
    let frames = s.frames();
    h.arrive_in_batches(0, &frames[..60], 10);
    h.advance(Duration::from_millis(250));
    h.arrive_in_batches(0, &frames[60..], 16);
    assert!(verified(&h.complete(&s)));
    assert_eq!(h.window_bytes(&s), s.message);
    let r = h.report();
    assert_eq!(r.numbers.staged_bytes, full_segments_bytes(20));
    assert_eq!(r.numbers.rejects.get("not_ready"), Some(&40));
}

#[test]
fn revoking_a_grant_drops_its_staged_copies_and_nothing_of_it_is_written() {
    let mut h = Harness::new(&late_setup(64 << 20));
    let a = h.open_stream(1, LEN, 0, None);
    h.turn();
    h.arrive_in_batches(0, &a.frames()[..10], 10);
    // The sender goes away before its region activates: its staged payloads must never
    // be copied into the window.
    h.rx.connection_closed(a.conn);
    h.advance(Duration::from_millis(250));
    h.advance(Duration::from_millis(250));
    assert!(h.window_bytes(&a).iter().all(|b| *b == 0));
    assert!(
        h.rx.grant_table()
            .grant(GrantId::from_wire(a.granted.grant))
            .is_none(),
        "a drained window is released"
    );
    // Its window can be granted again, and the new owner's transfer verifies.
    let b = h.open_stream(2, LEN, 0, None);
    assert_eq!(b.granted.offset, a.granted.offset);
    h.turn();
    h.arrive_in_batches(0, &b.frames(), 16);
    assert!(verified(&h.complete(&b)));
    let r = h.report();
    let control = r.control.expect("control report");
    assert_eq!(control.revoked_on_close, 1);
    // Staged bytes were never placed, so nothing counts as abandoned; none is left.
    assert_eq!(r.numbers.staged_bytes, full_segments_bytes(10));
    assert_eq!(control.abandoned_bytes, 0);
    assert_eq!(r.still_staged_bytes, 0);
}

#[test]
fn a_revoked_window_stays_reserved_while_its_slots_are_posted() {
    let mut h = Harness::new(&Setup::default());
    let a = h.open_stream(1, LEN, 0, None);
    h.turn();
    // Segment 1 lands in slot 0; its copy parks on slot 1, which stays posted.
    h.arrive(0, &[a.frame(1)]);
    assert!(h.kernel.fill_outstanding(0) > 0);
    h.rx.connection_closed(a.conn);
    h.advance(Duration::from_millis(150));
    let id = GrantId::from_wire(a.granted.grant);
    assert!(
        h.rx.grant_table().grant(id).is_some(),
        "slots of the revoked grant may still be written: its window is kept"
    );
    let b = h.open_stream(2, LEN, 0, None);
    assert_ne!(b.granted.offset, a.granted.offset);
    h.turn();
    // B's frames take A's posted slots first (copied), then B's own.
    h.arrive_in_batches(0, &b.frames(), 16);
    assert!(verified(&h.complete(&b)));
    h.advance(Duration::from_millis(150));
    assert!(
        h.rx.grant_table().grant(id).is_none(),
        "released once drained"
    );
    let r = h.report();
    assert_eq!(r.regions[0].stray_bytes, 0);
}

#[test]
fn every_reject_reason_a_sender_can_cause_is_counted_and_harms_no_one() {
    let mut h = Harness::new(&Setup::default());
    let s = h.open_stream(1, LEN, 0, None);
    h.turn();
    // A second session with an SA but no grant.
    let stranger = h.open_session_only(2);
    let hint = s.hint();
    let frame = |i| s.frame(i);
    let mut bad = Vec::new();
    // malformed: the always-one bit cleared.
    let mut f = frame(0);
    let psp_at = psp::locate(&f).expect("PSP").segment.start;
    f[psp_at + 3] &= !1;
    bad.push(f);
    // unknown_sa: an SPI the receiver never issued.
    let forged = Sa::new(
        0x7000_0001,
        Version::AesGcm128,
        &DerivedKey::Aes128([1; 16]),
    )
    .expect("SA");
    bad.push(s.frame_with(1, Some(hint), &forged));
    // auth_failed: one payload bit flipped.
    let mut f = frame(2);
    let last = f.len() - 20;
    f[last] ^= 1;
    bad.push(f);
    // no_hint.
    bad.push(s.frame_with(3, None, &s.sa));
    // unknown_region.
    bad.push(s.frame_with(
        4,
        Some(psp::Hint {
            region_id: 77,
            ..hint
        }),
        &s.sa,
    ));
    // not_granted: the stranger's SA with the grant's hint.
    bad.push(s.frame_with(5, Some(hint), &stranger));
    // out_of_bounds: an offset past the window.
    bad.push(s.frame_with(
        6,
        Some(psp::Hint {
            offset: hint.offset + LEN,
            ..hint
        }),
        &s.sa,
    ));
    // stale_generation: the generation before the active one.
    bad.push(s.frame_with(
        7,
        Some(psp::Hint {
            generation: hint.generation.wrapping_sub(1),
            ..hint
        }),
        &s.sa,
    ));
    // seq_wrap: a base 2^31 away from the sequence.
    bad.push(s.frame_with(
        8,
        Some(psp::Hint {
            base_tcp_seq: hint.base_tcp_seq.wrapping_add(1 << 31),
            ..hint
        }),
        &s.sa,
    ));
    h.arrive(0, &bad);
    h.arrive_in_batches(0, &s.frames(), 16);
    assert!(verified(&h.complete(&s)), "the honest stream is untouched");
    assert_eq!(h.window_bytes(&s), s.message);
    let r = h.report();
    for reason in [
        "malformed",
        "unknown_sa",
        "auth_failed",
        "no_hint",
        "unknown_region",
        "not_granted",
        "out_of_bounds",
        "stale_generation",
        "seq_wrap",
    ] {
        assert_eq!(
            r.numbers.rejects.get(reason),
            Some(&1),
            "{reason}: {:?}",
            r.numbers.rejects
        );
    }
    assert_eq!(r.regions[0].stray_bytes, 0);
    // not_ready is counted in the staging test; not_direct_spi cannot be caused through
    // the receiver (it issues direct SPIs only, and unknown SPIs are unknown_sa first);
    // landed_elsewhere is a copy, not a reject (the resync and parking tests).
}

#[test]
fn a_completion_of_an_incomplete_window_names_what_is_missing() {
    let mut h = Harness::new(&Setup::default());
    let s = h.open_stream(1, LEN, 0, None);
    h.turn();
    let frames = s.frames();
    h.arrive_in_batches(0, &frames[..100], 16);
    let r = h.request(
        s.conn,
        &Request::Complete {
            grant: s.granted.grant,
            sha256: support::sha256_hex(&s.message),
        },
    );
    let control::Response::Status {
        complete: false,
        missing,
        ..
    } = r
    else {
        panic!("{r:?}");
    };
    assert_eq!(missing, vec![(100 * u64::from(MSS), LEN)]);
}

/// What happens to the frames on the way: each op drops, duplicates or moves one frame.
#[derive(Debug, Clone, Copy)]
enum Impair {
    Drop(u16),
    Duplicate(u16),
    Swap(u16, u16),
}

fn impair(frames: &[Vec<u8>], ops: &[Impair]) -> Vec<Vec<u8>> {
    let mut out = frames.to_vec();
    for op in ops {
        let n = out.len();
        if n == 0 {
            break;
        }
        match *op {
            Impair::Drop(i) => {
                out.remove(usize::from(i) % n);
            }
            Impair::Duplicate(i) => {
                let f = out[usize::from(i) % n].clone();
                out.insert((usize::from(i) * 7) % n, f);
            }
            Impair::Swap(i, j) => out.swap(usize::from(i) % n, usize::from(j) % n),
        }
    }
    out
}

fn impairment() -> impl proptest::strategy::Strategy<Value = Impair> {
    use proptest::prelude::*;
    prop_oneof![
        any::<u16>().prop_map(Impair::Drop),
        any::<u16>().prop_map(Impair::Duplicate),
        (any::<u16>(), any::<u16>()).prop_map(|(i, j)| Impair::Swap(i, j)),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Whatever the network does to a stream, the receiver ends with the message in its
    /// window (after retransmission), writes nothing outside it, and says so.
    #[test]
    fn any_loss_duplication_and_reordering_ends_with_the_message_in_place(
        ops in proptest::collection::vec(impairment(), 0..40),
        batch in 1usize..48,
        window in proptest::sample::select(vec![8u32, 16, 64]),
    ) {
        let mut h = Harness::new(&Setup { window, ..Setup::default() });
        let s = h.open_stream(1, 64 * 1024, 0, None);
        h.turn();
        h.arrive_in_batches(0, &impair(&s.frames(), &ops), batch);
        proptest::prop_assert!(verified(&h.complete(&s)));
        proptest::prop_assert_eq!(h.window_bytes(&s), s.message.clone());
        let r = h.report();
        proptest::prop_assert!(r.verified);
        proptest::prop_assert_eq!(r.regions[0].stray_bytes, 0);
        proptest::prop_assert_eq!(r.still_staged_bytes, 0);
    }
}

#[test]
fn a_revoked_window_is_kept_until_its_copies_in_flight_have_landed() {
    let release = Arc::new(AtomicBool::new(false));
    let held = Arc::clone(&release);
    let mut h = Harness::with_engine(&Setup::default(), Decider::fixed(0), move |t| {
        HeldEngine::new(t, held)
    });
    let a = h.open_stream(1, LEN, 0, None);
    h.turn();
    // The first segments land in bounce frames: their copies go to the engine and stay
    // in flight.
    h.arrive(0, &a.frames()[..usize::try_from(EARLY).expect("small")]);
    h.rx.connection_closed(a.conn);
    h.advance(Duration::from_millis(150));
    let id = GrantId::from_wire(a.granted.grant);
    assert!(
        h.rx.grant_table().grant(id).is_some(),
        "copies still in flight may write the window: it is kept"
    );
    let b = h.open_stream(2, LEN, 0, None);
    assert_ne!(b.granted.offset, a.granted.offset);
    // B's traffic takes the slots A still had posted; A's copies are still held.
    h.turn();
    h.arrive_in_batches(0, &b.frames(), 16);
    h.advance(Duration::from_millis(150));
    assert!(
        h.rx.grant_table().grant(id).is_some(),
        "no slot of A is posted any more, but its copies are still in flight"
    );
    release.store(true, Ordering::Relaxed);
    h.advance(Duration::from_millis(150));
    assert!(
        h.rx.grant_table().grant(id).is_none(),
        "released once they landed"
    );
    assert!(verified(&h.complete(&b)));
    assert_eq!(h.window_bytes(&b), b.message);
    let r = h.report();
    assert_eq!(r.regions[0].stray_bytes, 0);
    assert_eq!(r.control.expect("control").revoked_on_close, 1);
}

/// Whole frames land back to front (headers first), in frames of at most `frame_cap`
/// bytes: with their ICV after the payload (`trailer` 16: what a zero-copy NIC DMAs), or
/// without it (`trailer` 0: the PSP-offload model).
fn whole_frame_setup(trailer: u32) -> Setup {
    Setup {
        whole_frame: Some(WholeFrame {
            frame_cap: 1498 + trailer,
            descending_run: 4096,
            trailer,
        }),
        ..Setup::default()
    }
}

/// Both whole-frame landings: the zero-copy NIC's and the PSP-offload model's.
const TRAILERS: [u32; 2] = [16, 0];

#[test]
fn whole_frames_sent_back_to_front_leave_every_payload_in_place() {
    for trailer in TRAILERS {
        let mut h = Harness::new(&whole_frame_setup(trailer));
        let s = h.open_stream(1, LEN, 0, None);
        // The MSS fills the frame cap after the sender's headers; the order is back to front.
        assert_eq!(s.granted.mss + support::FRAME_HEADER_LEN, 1498);
        assert_eq!(s.granted.descending_run, Some(4096));
        h.turn();
        h.arrive_in_batches(0, &s.frames(), 32);
        assert!(verified(&h.complete(&s)));
        assert_eq!(h.window_bytes(&s), s.message);
        let r = h.report();
        // The first segments sent (the highest) land in the bounce frames posted before the
        // grant; every later one lands whole with its payload exactly in place, its headers
        // in the slot below (covered by the next frame).
        let mss = u64::from(s.granted.mss);
        let full = LEN / mss;
        let in_bounce = EARLY - 1; // the short last segment is one of them
        assert_eq!(
            r.numbers.direct_bytes,
            (full - in_bounce) * mss,
            "trailer {trailer}: {:?} {:?}",
            r.numbers,
            r.xsk_stats
        );
        assert!(r.numbers.rejects.is_empty(), "{:?}", r.numbers.rejects);
        assert_eq!(r.regions[0].stray_bytes, 0);
        let repair = r.xsk_stats.as_ref().expect("xsk").receiver.head_repair;
        let grant = r.streams[0].grants[0].head_repair;
        if trailer == 0 {
            assert_eq!(repair, Default::default());
        } else {
            // Every slot but the lowest placed one had its head covered by the ICV of the
            // frame below (a batch lands before the receiver runs), and got it back.
            let placed = full - in_bounce;
            assert_eq!(repair.repaired_bytes, (placed - 1) * 16, "{repair:?}");
            assert_eq!(repair.failures, 0);
            assert!(repair.waited_frames > 0, "{repair:?}");
            assert_eq!(grant, repair);
        }
    }
}

/// A frame's head is covered by the ICV of the frame below only once that one lands: the
/// frame waits for it, whichever batch brings it, and is opened after the repair.
#[test]
fn a_whole_frame_waits_for_the_frame_below_before_it_is_opened() {
    let mut h = Harness::new(&whole_frame_setup(16));
    let s = h.open_stream(1, LEN, 0, None);
    h.turn();
    // One frame per batch: each one's head is still intact when it arrives, so it can
    // only be opened safely after the next frame (the one below) has landed.
    h.arrive_in_batches(0, &s.frames(), 1);
    assert!(verified(&h.complete(&s)));
    assert_eq!(h.window_bytes(&s), s.message);
    let r = h.report();
    let repair = r.xsk_stats.as_ref().expect("xsk").receiver.head_repair;
    assert_eq!(repair.failures, 0);
    let mss = u64::from(s.granted.mss);
    let placed = LEN / mss - (EARLY - 1);
    assert_eq!(r.numbers.direct_bytes, placed * mss);
    assert!(repair.waited_frames >= placed - 1, "{repair:?}");
}

#[test]
fn a_whole_frame_grant_must_declare_its_header_length() {
    let mut h = Harness::new(&whole_frame_setup(16));
    h.frame_header_len = None;
    let sa = h.open_session_only(1);
    let r = h.request(
        ConnId(1),
        &Request::Grant {
            spi: sa.spi(),
            len: LEN,
            base_seq: 0,
            mss: MSS,
            queue: 0,
            region: None,
            frame_header_len: None,
        },
    );
    assert!(
        matches!(&r, control::Response::Error { message } if message.contains("frame_header_len")),
        "{r:?}"
    );
    let r = h.request(
        ConnId(1),
        &Request::Grant {
            spi: sa.spi(),
            len: LEN,
            base_seq: 0,
            mss: MSS,
            queue: 0,
            region: None,
            frame_header_len: Some(1498 + 16 - MSS - 16 + 1),
        },
    );
    assert!(
        matches!(&r, control::Response::Error { message } if message.contains("frame cap")),
        "{r:?}"
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Whole frames, back to front, whatever the network does, batches of up to a whole
    /// window landing before the receiver runs: the window ends equal to the message,
    /// nothing lands outside it (but the spill of headers before it and of an ICV after
    /// it, inside the guard gap), and on a clean stream every segment after the first
    /// batch of bounce frames is in place.
    #[test]
    fn whole_frames_end_with_the_message_in_place_under_loss_duplication_and_reordering(
        ops in proptest::collection::vec(impairment(), 0..40),
        batch in 1usize..256,
        second_window in proptest::bool::ANY,
        with_icv in proptest::bool::ANY,
    ) {
        let mut h = Harness::new(&whole_frame_setup(if with_icv { 16 } else { 0 }));
        if second_window {
            // A first window, so that this one has a neighbour below it.
            let _ = h.open_stream(9, 64 * 1024, 0, None);
        }
        let s = h.open_stream(1, 64 * 1024, 0, None);
        h.turn();
        h.arrive_in_batches(0, &impair(&s.frames(), &ops), batch);
        proptest::prop_assert!(verified(&h.complete(&s)));
        proptest::prop_assert_eq!(h.window_bytes(&s), s.message.clone());
        // The other window's grant is never sent: its prediction takes the queue's slots.
        let clean = ops.is_empty() && !second_window;
        let r = h.report();
        proptest::prop_assert_eq!(r.regions[0].stray_bytes, 0);
        if clean {
            let placed = r.numbers.direct_bytes as f64 / r.numbers.payload_bytes as f64;
            proptest::prop_assert!(placed > 0.6, "{}", placed);
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(8))]

    /// A loss-free 4 MiB stream of whole frames, landing in batches of up to a whole window
    /// before the receiver runs: at least 99 % of its bytes are placed directly, no head
    /// repair fails, and the window ends equal to the message.
    #[test]
    fn loss_free_whole_frames_place_at_least_99_percent_directly(
        batch in 1usize..=64,
        with_icv in proptest::bool::ANY,
    ) {
        let mut h = Harness::new(&whole_frame_setup(if with_icv { 16 } else { 0 }));
        let s = h.open_stream(1, 4 << 20, 0, None);
        h.turn();
        h.arrive_in_batches(0, &s.frames(), batch);
        proptest::prop_assert!(verified(&h.complete(&s)));
        proptest::prop_assert_eq!(h.window_bytes(&s), s.message.clone());
        let r = h.report();
        let placed = r.numbers.direct_bytes as f64 / (4u64 << 20) as f64;
        proptest::prop_assert!(placed >= 0.99, "{}", placed);
        let repair = r.xsk_stats.as_ref().expect("xsk").receiver.head_repair;
        proptest::prop_assert_eq!(repair.failures, 0);
        proptest::prop_assert_eq!(repair.repaired_bytes > 0, with_icv);
        proptest::prop_assert_eq!(r.regions[0].stray_bytes, 0);
    }
}

#[test]
fn whole_frames_in_short_runs_miss_only_the_lowest_slot_of_each_run() {
    let mut h = Harness::new(&Setup {
        whole_frame: Some(WholeFrame {
            frame_cap: 1498 + 16,
            descending_run: 32,
            trailer: 16,
        }),
        ..Setup::default()
    });
    let s = h.open_stream(1, LEN, 0, None);
    h.turn();
    h.arrive_in_batches(0, &s.frames(), 16);
    assert!(verified(&h.complete(&s)));
    let r = h.report();
    let mss = u64::from(s.granted.mss);
    let segments = LEN.div_ceil(mss);
    let runs = segments.div_ceil(32);
    let copied = r.numbers.cpu_copy_bytes.div_ceil(mss);
    // The bounce frames ahead of the grant, the short last segment among them, and the
    // lowest slot of every run after the first.
    assert!(
        copied <= EARLY + runs,
        "{copied} copied of {segments}: {:?}",
        r.xsk_stats
    );
}

#[test]
fn without_prediction_every_payload_is_copied_and_still_checked() {
    let mut h = Harness::new(&Setup {
        predict: false,
        ..Setup::default()
    });
    let s = h.open_stream(1, LEN, 0, None);
    h.turn();
    let mut frames = s.frames();
    // A lie is still refused: a hint outside the window.
    frames.push(s.frame_with(
        0,
        Some(psp::Hint {
            offset: s.granted.offset + LEN,
            ..s.hint()
        }),
        &s.sa,
    ));
    h.arrive_in_batches(0, &frames, 32);
    assert!(verified(&h.complete(&s)));
    assert_eq!(h.window_bytes(&s), s.message);
    let r = h.report();
    assert_eq!(r.numbers.direct_bytes, 0);
    assert_eq!(r.numbers.cpu_copy_bytes, LEN);
    assert_eq!(r.numbers.rejects.get("out_of_bounds"), Some(&1));
    let rx = r.xsk_stats.expect("receiver counters").receiver;
    assert_eq!(rx.slots_posted, 0);
    assert!(!rx.predict);
}
