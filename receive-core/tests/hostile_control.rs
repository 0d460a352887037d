//! The grant table against hostile control-plane clients: every refusal leaves the other
//! sessions' state as it was.

use std::time::Duration;

use control::{Crypto, Request, Response};
use placement::{GrantId, PlacementEngine, Policy};
use receive_core::{Action, ConnId, GrantTable, Limits, RegionSpec, Timestamp};

const MIB: u64 = 1 << 20;
const DIGEST: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

fn setup() -> (PlacementEngine, GrantTable) {
    setup_with(Policy::default(), false)
}

fn setup_with(policy: Policy, allow_inline_crypto: bool) -> (PlacementEngine, GrantTable) {
    let mut engine = PlacementEngine::new(policy);
    let regions = [
        RegionSpec {
            id: 1,
            base: 1 << 30,
            len: 64 * MIB,
            late: false,
        },
        RegionSpec {
            id: 2,
            base: 2 << 30,
            len: 64 * MIB,
            late: true,
        },
    ];
    let limits = Limits {
        queues: 2,
        grant_timeout: Duration::from_secs(10),
        allow_inline_crypto,
        ..Limits::default()
    };
    let table = GrantTable::new(&mut engine, &regions, limits).unwrap();
    (engine, table)
}

fn session(e: &mut PlacementEngine, t: &mut GrantTable, conn: u64) -> u32 {
    match t.handle(
        e,
        ConnId(conn),
        &Request::Session {
            version: 0,
            crypto: Crypto::Software,
        },
        Timestamp::START,
    ) {
        Action::SessionOpened { spi, .. } => spi,
        other => panic!("no session: {other:?}"),
    }
}

fn grant_req(spi: u32, len: u64, region: Option<u32>) -> Request {
    Request::Grant {
        spi,
        len,
        base_seq: 0,
        mss: 1400,
        queue: 0,
        region,
        frame_header_len: None,
    }
}

fn grant(e: &mut PlacementEngine, t: &mut GrantTable, conn: u64, spi: u32, len: u64) -> GrantId {
    match t.handle(
        e,
        ConnId(conn),
        &grant_req(spi, len, Some(1)),
        Timestamp::START,
    ) {
        Action::Granted { grant, .. } => grant,
        other => panic!("no grant: {other:?}"),
    }
}

fn is_error(a: &Action) -> bool {
    matches!(a, Action::Reply(Response::Error { .. }))
}

#[test]
fn a_wrapping_length_is_refused_and_reserves_nothing() {
    let (mut e, mut t) = setup();
    let victim_spi = session(&mut e, &mut t, 1);
    let victim = grant(&mut e, &mut t, 1, victim_spi, 32 * MIB);
    let spi = session(&mut e, &mut t, 2);
    for len in [u64::MAX - 12287, u64::MAX, 0, 64 * MIB + 1] {
        let a = t.handle(
            &mut e,
            ConnId(2),
            &grant_req(spi, len, Some(1)),
            Timestamp::START,
        );
        assert!(is_error(&a), "len {len}: {a:?}");
    }
    // The next grant lands after the victim's window, never inside it.
    let g = grant(&mut e, &mut t, 2, spi, MIB);
    let (v, n) = (t.grant(victim).unwrap().grant, t.grant(g).unwrap().grant);
    assert!(n.offset >= v.offset + v.len, "{n:?} overlaps {v:?}");
    t.check_invariants(&e).unwrap();
}

#[test]
fn refused_grants_leak_no_region_space() {
    let (mut e, mut t) = setup();
    let spi = session(&mut e, &mut t, 1);
    for _ in 0..64 {
        grant(&mut e, &mut t, 1, spi, 4096);
    }
    // The 65th grant of the SA is refused by the engine after the window was reserved.
    for _ in 0..90 {
        let a = t.handle(
            &mut e,
            ConnId(1),
            &grant_req(spi, 600_000, Some(1)),
            Timestamp::START,
        );
        assert!(is_error(&a));
    }
    let live: u64 = t.windows(1).unwrap().live().map(|(_, l)| l).sum();
    assert_eq!(live, 64 * 4096, "refusals reserved region space");
    t.check_invariants(&e).unwrap();
}

#[test]
fn nobody_uses_another_connections_spi_or_grant() {
    let (mut e, mut t) = setup();
    let victim_spi = session(&mut e, &mut t, 1);
    let victim = grant(&mut e, &mut t, 1, victim_spi, MIB);
    session(&mut e, &mut t, 2);
    let a = t.handle(
        &mut e,
        ConnId(2),
        &grant_req(victim_spi, MIB, None),
        Timestamp::START,
    );
    assert!(is_error(&a), "granted on another session's SPI: {a:?}");
    let complete = Request::Complete {
        grant: victim.to_wire(),
        sha256: DIGEST.into(),
    };
    let a = t.handle(&mut e, ConnId(2), &complete, Timestamp::START);
    assert!(is_error(&a), "completed another session's grant: {a:?}");
    // Unknown and made-up ids too.
    for wire in [victim.to_wire() + 1, u64::MAX, victim.to_wire() + (1 << 32)] {
        let c = Request::Complete {
            grant: wire,
            sha256: DIGEST.into(),
        };
        assert!(is_error(&t.handle(&mut e, ConnId(1), &c, Timestamp::START)));
    }
    // The owner can.
    assert!(matches!(
        t.handle(&mut e, ConnId(1), &complete, Timestamp::START),
        Action::Complete { grant, .. } if grant == victim
    ));
    assert_eq!(t.stats().refused_requests, 5);
}

#[test]
fn a_bad_digest_is_refused() {
    let (mut e, mut t) = setup();
    let spi = session(&mut e, &mut t, 1);
    let g = grant(&mut e, &mut t, 1, spi, MIB);
    for sha in ["", "zz", &"g".repeat(64), &"a".repeat(65)] {
        let c = Request::Complete {
            grant: g.to_wire(),
            sha256: sha.into(),
        };
        assert!(
            is_error(&t.handle(&mut e, ConnId(1), &c, Timestamp::START)),
            "{sha:?}"
        );
    }
}

#[test]
fn a_closed_connection_leaves_nothing_behind() {
    let (mut e, mut t) = setup();
    let spi = session(&mut e, &mut t, 1);
    let a = grant(&mut e, &mut t, 1, spi, 16 * MIB);
    let b = grant(&mut e, &mut t, 1, spi, 16 * MIB);
    let revoked = t.close(&mut e, ConnId(1));
    assert_eq!(revoked.len(), 2);
    assert!(!e.has_sa(spi));
    assert_eq!(e.grant(a), None);
    t.check_invariants(&e).unwrap();
    // Windows drain until the I/O layer releases them.
    assert_eq!(t.windows(1).unwrap().live().count(), 2);
    assert!(t.release(a).is_some());
    assert!(t.release(b).is_some());
    assert_eq!(t.windows(1).unwrap().live().count(), 0);
    assert_eq!(t.connections(), 0);
    assert_eq!(t.stats().revoked_on_close, 2);
    // Its SPI is dead: a new connection cannot use it.
    session(&mut e, &mut t, 3);
    assert!(is_error(&t.handle(
        &mut e,
        ConnId(3),
        &grant_req(spi, MIB, None),
        Timestamp::START
    )));
}

#[test]
fn unfinished_grants_time_out() {
    let (mut e, mut t) = setup();
    let spi = session(&mut e, &mut t, 1);
    let g = grant(&mut e, &mut t, 1, spi, MIB);
    assert!(
        t.expire(&mut e, Timestamp::since_start(Duration::from_secs(9)))
            .is_empty()
    );
    assert_eq!(
        t.expire(&mut e, Timestamp::since_start(Duration::from_secs(10))),
        vec![g]
    );
    assert_eq!(e.grant(g), None);
    assert_eq!(t.stats().timed_out, 1);
    t.check_invariants(&e).unwrap();
}

#[test]
fn sessions_count_as_completed_only_after_a_window_of_theirs_verified() {
    let (mut e, mut t) = setup();
    // A stranger: session, a grant, someone else's completion, goodbye.
    let spi = session(&mut e, &mut t, 1);
    grant(&mut e, &mut t, 1, spi, MIB);
    let victim_spi = session(&mut e, &mut t, 2);
    let g = grant(&mut e, &mut t, 2, victim_spi, MIB);
    let complete = Request::Complete {
        grant: g.to_wire(),
        sha256: DIGEST.into(),
    };
    assert!(is_error(&t.handle(
        &mut e,
        ConnId(1),
        &complete,
        Timestamp::START
    )));
    t.handle(&mut e, ConnId(1), &Request::Bye, Timestamp::START);
    assert_eq!(t.stats().completed_sessions, 0);
    assert!(matches!(
        t.handle(&mut e, ConnId(2), &complete, Timestamp::START),
        Action::Complete { .. }
    ));
    assert!(t.finish(&mut e, g).is_some());
    // Checked, but it did not match: not a completed session.
    assert!(t.release(g).is_some());
    let g = grant(&mut e, &mut t, 2, victim_spi, MIB);
    assert!(t.finish(&mut e, g).is_some());
    t.verified(g);
    assert!(t.release(g).is_some());
    t.handle(&mut e, ConnId(2), &Request::Bye, Timestamp::START);
    assert_eq!(t.stats().completed_sessions, 1);
}

#[test]
fn a_connection_opens_a_bounded_number_of_sessions() {
    let (mut e, mut t) = setup();
    for _ in 0..4 {
        session(&mut e, &mut t, 1);
    }
    let a = t.handle(
        &mut e,
        ConnId(1),
        &Request::Session {
            version: 0,
            crypto: Crypto::Software,
        },
        Timestamp::START,
    );
    assert!(is_error(&a));
    let a = t.handle(
        &mut e,
        ConnId(2),
        &Request::Session {
            version: 9,
            crypto: Crypto::Software,
        },
        Timestamp::START,
    );
    assert!(is_error(&a));
}

#[test]
fn mss_and_queue_are_checked() {
    let (mut e, mut t) = setup();
    let spi = session(&mut e, &mut t, 1);
    for (mss, queue) in [
        (0, 0),
        (1, 0),
        (255, 0),
        (1793, 0),
        (1400, 2),
        (1400, u32::MAX),
    ] {
        let r = Request::Grant {
            spi,
            len: MIB,
            base_seq: 0,
            mss,
            queue,
            region: None,
            frame_header_len: None,
        };
        assert!(is_error(&t.handle(&mut e, ConnId(1), &r, Timestamp::START)));
    }
    let r = grant_req(spi, MIB, Some(77));
    assert!(is_error(&t.handle(&mut e, ConnId(1), &r, Timestamp::START)));
    assert_eq!(t.windows(1).unwrap().live().count(), 0);
}

/// Inline crypto (nothing decrypted or verified) only where the receiver allows it, and
/// never with region-bound keys, whose point is authentication.
#[test]
fn inline_crypto_is_agreed_only_where_allowed_and_never_with_region_bound_keys() {
    let inline = Request::Session {
        version: 0,
        crypto: Crypto::Inline,
    };
    let message = |a: &Action| match a {
        Action::Reply(Response::Error { message }) => message.clone(),
        other => panic!("not refused: {other:?}"),
    };
    let (mut e, mut t) = setup();
    let a = t.handle(&mut e, ConnId(1), &inline, Timestamp::START);
    assert!(message(&a).contains("allow-inline-crypto"), "{a:?}");

    let (mut e, mut t) = setup_with(Policy::default(), true);
    let a = t.handle(&mut e, ConnId(1), &inline, Timestamp::START);
    assert!(
        matches!(
            a,
            Action::SessionOpened {
                crypto: Crypto::Inline,
                ..
            }
        ),
        "{a:?}"
    );

    let bound = Policy {
        access: placement::AccessControl::RegionBoundKeys,
        ..Policy::default()
    };
    let (mut e, mut t) = setup_with(bound, true);
    let a = t.handle(&mut e, ConnId(1), &inline, Timestamp::START);
    assert!(message(&a).contains("region-bound"), "{a:?}");
    // Software sessions are unaffected.
    session(&mut e, &mut t, 1);
}
