//! `zc-send` refuses bad arguments with a clear message and a non-zero exit, without a
//! panic and before it opens a socket or a control session (no root needed).

use std::net::TcpListener;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A control address nothing else uses: a listener that records whether zc-send connected.
fn control() -> TcpListener {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a local listener");
    l.set_nonblocking(true).expect("non-blocking listener");
    l
}

fn zc_send(control: &TcpListener, args: &[&str]) -> Output {
    let addr = control.local_addr().unwrap().to_string();
    let iface: &[&str] = if args.contains(&"--iface") {
        &[]
    } else {
        &["--iface", "lo"]
    };
    Command::new(env!("CARGO_BIN_EXE_zc-send"))
        .args(["--control", &addr, "--no-progress"])
        .args(iface)
        .args(args)
        .output()
        .expect("run zc-send")
}

#[test]
fn bad_arguments_are_refused_before_the_network() {
    let cases: &[(&[&str], &str)] = &[
        (&["--rate-pps", "0"], "--rate-pps"),
        (&["--message-bytes", "1099511627776"], "2 GiB"),
        (
            &["--message-bytes", "18446744073709551615"],
            "--message-bytes",
        ),
        (&["--message-bytes", "0"], "--message-bytes"),
        (
            &["--message-bytes", "2147483648", "--queues", "0,1,2"],
            "bytes of messages at once",
        ),
        (&["--mss", "0"], "--mss"),
        (&["--mss", "1801"], "--mss"),
        (&["--loss", "1.5"], "--loss"),
        (&["--duplicate=-0.1"], "--duplicate"),
        (&["--reorder", "NaN"], "--reorder"),
        (&["--queues", "0,0"], "queue 0 is named twice"),
        (&["--queues", "25536"], "--queues"),
        (&["--queues", ""], "--queues"),
        (&["--messages", "0"], "--messages"),
        (&["--shuffle-window", "0"], "--shuffle-window"),
        (&["--psp-version", "4"], "--psp-version"),
        (&["--lie", "5:stale"], "no stream on queue 5"),
        (
            &["--lie", "0:stale", "--lie", "0:outside"],
            "already has a --lie",
        ),
        (&["--regions", "1,2"], "--regions"),
        (&["--iface", "no-such-if0"], "no interface no-such-if0"),
        (&["--iface", "../../etc"], "not an interface name"),
    ];
    for (args, needle) in cases {
        let listener = control();
        let out = zc_send(&listener, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert_eq!(
            out.status.code(),
            Some(if err.starts_with("error:") { 2 } else { 1 })
        );
        assert!(err.contains(needle), "{args:?}: want {needle:?} in {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(
            listener.accept().is_err(),
            "{args:?}: zc-send opened a control session before refusing its arguments"
        );
    }
}

/// The listener does see zc-send when the arguments are good (so the test above means
/// something): as root, AF_PACKET on lo opens and the control connection follows; without
/// root, the socket is refused first.
#[test]
fn good_arguments_reach_the_network() {
    let listener = control();
    let addr = listener.local_addr().unwrap().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_zc-send"))
        .args(["--control", &addr, "--iface", "lo", "--no-progress"])
        .args(["--tx", "packet", "--message-bytes", "4096"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run zc-send");
    let start = Instant::now();
    let connected = loop {
        if let Ok((conn, _)) = listener.accept() {
            drop(conn); // the receiver "closes" the session: zc-send must fail cleanly
            break true;
        }
        if child.try_wait().unwrap().is_some() || start.elapsed() > Duration::from_secs(20) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(!err.contains("panicked"), "{err}");
    if connected {
        // EOF or a reset, depending on who was first.
        assert!(
            err.contains("receiver closed the control connection")
                || err.contains("control connection:"),
            "{err}"
        );
    } else {
        assert!(
            err.contains("AF_PACKET"),
            "neither connected nor refused the socket: {err}"
        );
    }
}

/// A fake receiver on `listener` that answers one stream: session, grant, then the status
/// replies in `statuses` (window-relative missing ranges, or None for "verified").
fn fake_receiver(
    listener: TcpListener,
    statuses: Vec<Option<serde_json::Value>>,
    granted_len: Option<u64>,
) -> std::thread::JoinHandle<()> {
    use std::io::{BufRead, BufReader, Write};
    std::thread::spawn(move || {
        listener.set_nonblocking(false).unwrap();
        let (conn, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let mut writer = conn;
        let mut statuses = statuses.into_iter();
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            let req: serde_json::Value = serde_json::from_str(&line).unwrap();
            line.clear();
            let answer = match req["type"].as_str().unwrap() {
                "session" => serde_json::json!({"type": "session", "spi": 0x4000_0001u32,
                    "version": 0, "key": "00112233445566778899aabbccddeeff",
                    "mac": "00:00:00:00:00:00"}),
                "grant" => serde_json::json!({"type": "granted", "grant": 7, "region": 1,
                    "generation": 1, "offset": 0,
                    "len": granted_len.unwrap_or(req["len"].as_u64().unwrap()),
                    "base_seq": req["base_seq"], "mss": req["mss"]}),
                "complete" => match statuses.next().flatten() {
                    Some(missing) => serde_json::json!({"type": "status", "grant": 7,
                        "complete": false, "verified": false, "missing": missing}),
                    None => serde_json::json!({"type": "status", "grant": 7,
                        "complete": true, "verified": true, "missing": []}),
                },
                _ => serde_json::json!({"type": "bye"}),
            };
            if writeln!(writer, "{answer}").is_err() {
                break;
            }
        }
    })
}

/// Runs zc-send against a fake receiver over AF_PACKET on lo (root only: returns None
/// when the socket is refused).
fn against_fake(
    statuses: Vec<Option<serde_json::Value>>,
    granted_len: Option<u64>,
    json: &std::path::Path,
) -> Option<Output> {
    let listener = control();
    let addr = listener.local_addr().unwrap().to_string();
    let receiver = fake_receiver(listener, statuses, granted_len);
    let out = Command::new(env!("CARGO_BIN_EXE_zc-send"))
        .args([
            "--control",
            &addr,
            "--iface",
            "lo",
            "--no-progress",
            "--tx",
            "packet",
        ])
        .args(["--message-bytes", "10000", "--mss", "1000", "--json"])
        .arg(json)
        .output()
        .expect("run zc-send");
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("AF_PACKET socket") {
        eprintln!("skipped: AF_PACKET needs root ({err})");
        return None;
    }
    receiver.join().unwrap();
    Some(out)
}

#[test]
fn hostile_missing_ranges_are_clamped_and_counted() {
    let json = std::env::temp_dir().join(format!("zc-send-hostile-{}.json", std::process::id()));
    let hostile = serde_json::json!([
        [0u64, u64::MAX],
        [5, 1],
        [u64::MAX - 1, u64::MAX],
        [10_000, 20_000],
        [3, 3]
    ]);
    let Some(out) = against_fake(vec![Some(hostile), None], None, &json) else {
        return;
    };
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["bad_missing_ranges"], 5, "{report}");
    // 10 segments first, then all 10 again: the clamped range covers the whole message.
    assert_eq!(report["segments_sent"], 20, "{report}");
    assert_eq!(report["retransmitted_segments"], 10, "{report}");
    assert_eq!(report["verified_messages"], 1);
    std::fs::remove_file(&json).ok();
}

#[test]
fn a_grant_other_than_asked_is_refused() {
    let json = std::env::temp_dir().join(format!("zc-send-badgrant-{}.json", std::process::id()));
    let Some(out) = against_fake(vec![None], Some(u64::MAX), &json) else {
        return;
    };
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("receiver granted"), "{err}");
}
