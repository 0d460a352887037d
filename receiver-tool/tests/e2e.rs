//! End-to-end tests of the data path: a real receiver (XDP + AF_XDP) and a real sender in
//! two network namespaces joined by a veth pair. They need root; with CI=true they fail
//! rather than skip when not root. They run one at a time (the machine has two cores).
//! Every test's namespaces are removed by name, also on failure (Testbed's Drop).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use testbed::{RECEIVER_IP, Testbed};

static SERIAL: Mutex<()> = Mutex::new(());

fn may_run() -> bool {
    if testbed::is_root() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "end-to-end tests need root, and CI=true forbids skipping them"
    );
    eprintln!("skipping: end-to-end tests need root");
    false
}

fn zc_send() -> PathBuf {
    let recv = PathBuf::from(env!("CARGO_BIN_EXE_zc-recv"));
    let send = recv.with_file_name("zc-send");
    assert!(
        send.exists(),
        "{} is missing: build it first (cargo build -p sender-tool; cargo xtask test does)",
        send.display()
    );
    send
}

fn wait(child: &mut Child, limit: Duration, what: &str) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Outcome {
    recv: Value,
    send: Value,
    /// The receiver's log (stderr).
    recv_log: String,
}

/// Brings up test hosts `name` with `queues` queues, runs a receiver with `recv_args` and
/// a sender with `send_args`, and returns both JSON reports.
fn run(name: &str, queues: u32, recv_args: &[&str], send_args: &[&str]) -> Outcome {
    run_after(name, queues, recv_args, send_args, None)
}

/// As [`run`], running the bash `script` in the sender's namespace (and checking it
/// succeeded) before the sender starts.
fn run_after(
    name: &str,
    queues: u32,
    recv_args: &[&str],
    send_args: &[&str],
    script: Option<&str>,
) -> Outcome {
    let tb = Testbed::up(name, queues).expect("test hosts");
    let dir = std::env::temp_dir().join(format!("zc-e2e-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    let (recv_json, send_json) = (dir.join("recv.json"), dir.join("send.json"));
    let _ = std::fs::remove_file(&recv_json);
    let q = queues.to_string();
    let listen = format!("{RECEIVER_IP}:7000");
    let mut recv = Testbed::command_in(&tb.receiver_ns(), env!("CARGO_BIN_EXE_zc-recv"))
        .args([
            "live",
            "--iface",
            &tb.receiver_if(),
            "--queues",
            &q,
            "--listen",
            &listen,
        ])
        .args(["--no-progress", "--max-seconds", "120", "--json"])
        .arg(&recv_json)
        .args([
            "--sessions",
            &testbed::sender_sessions(send_args).to_string(),
        ])
        .args(recv_args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("recv.log")).expect("receiver log"))
        .spawn()
        .expect("start zc-recv");
    if let Some(script) = script {
        let ok = Command::new("ip")
            .args(["netns", "exec", &tb.sender_ns(), "bash", "-c", script])
            .status()
            .expect("run script");
        if !ok.success() {
            let _ = recv.kill();
            let _ = recv.wait();
            panic!("script in the sender's namespace failed ({ok}): {script}");
        }
    }
    let send_status = run_sender(&tb, send_args, &send_json);
    if !send_status.success() {
        // The receiver would wait for its sessions until --max-seconds.
        let _ = recv.kill();
    }
    let recv_status = wait(&mut recv, Duration::from_secs(150), "zc-recv");
    assert!(send_status.success(), "zc-send failed: {send_status}");
    assert!(recv_status.success(), "zc-recv failed: {recv_status}");
    let read = |p: &PathBuf| -> Value {
        serde_json::from_str(&std::fs::read_to_string(p).expect("report written")).expect("JSON")
    };
    drop(tb);
    Outcome {
        recv: read(&recv_json),
        send: read(&send_json),
        recv_log: std::fs::read_to_string(dir.join("recv.log")).unwrap_or_default(),
    }
}

fn u(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

fn stream(report: &Value, i: usize) -> &Value {
    &report["streams"][i]
}

#[test]
fn one_in_order_stream_lands_directly() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !may_run() {
        return;
    }
    let o = run(
        "zce2eone",
        1,
        &["--region", "1:32M"],
        &["--message-bytes", "16777216"],
    );
    let r = &o.recv;
    // The defaults (--zero-copy off, --landing auto): copy mode, payloads alone.
    assert_eq!(
        r["xsk_stats"]["queue0"]["mode"], "copy",
        "copy mode where zero-copy is refused"
    );
    assert_eq!(r["xsk_stats"]["receiver"]["landing"], "split");
    assert_eq!(r["verified"], true, "{r}");
    // Payload counts retransmissions too (a busy machine may drop a few): compare the
    // directly placed bytes with the message.
    assert!(u(r, "payload_bytes") >= 16 << 20);
    let direct = u(r, "direct_bytes") as f64 / f64::from(16 << 20);
    assert!(
        direct >= 0.99,
        "only {:.2}% placed directly: {} {}",
        direct * 100.0,
        r["xsk_stats"],
        r["xdp_counters"]
    );
    assert_eq!(u(r, "rejected_bytes"), 0);
    assert_eq!(r["regions"][0]["stray_bytes"], 0);
    assert!(u(&r["xdp_counters"], "redirected") >= u(r, "payload_packets"));
    assert_eq!(u(&o.send, "verified_messages"), 1);
    let a = &r["accounting"];
    assert!(u(a, "clock_ticks_per_second") > 0, "{a}");
    assert!(
        a["thread_cpu_seconds"]["zc-recv"].as_f64().unwrap() > 0.0,
        "{a}"
    );
    assert!(
        a["machine_cpu_seconds"]["softirq"].as_f64().is_some(),
        "{a}"
    );
    assert!(a["useful_ns_per_packet"].as_f64().unwrap() > 0.0, "{a}");
    assert!(u(a, "loop_turns") > u(a, "empty_polls"), "{a}");
    assert!(a["whole_run_gbit_per_s"].as_f64().unwrap() <= r["gbit_per_s"].as_f64().unwrap());
}

#[test]
fn two_streams_on_two_queues_both_verify() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !may_run() {
        return;
    }
    let o = run(
        "zce2etwo",
        2,
        &["--region", "1:16M", "--region", "2:16M"],
        &[
            "--queues",
            "0,1",
            "--regions",
            "1,2",
            "--messages",
            "2",
            "--message-bytes",
            "4194304",
            "--prebuild",
        ],
    );
    let r = &o.recv;
    assert_eq!(r["verified"], true, "{r}");
    for i in 0..2 {
        let s = stream(r, i);
        assert_eq!(u(s, "payload_bytes"), 8 << 20, "stream {i}");
        let grants = s["grants"].as_array().unwrap();
        assert_eq!(grants.len(), 2, "stream {i}: two messages");
        assert!(grants.iter().all(|g| g["digest_ok"] == true));
        assert!(
            u(s, "direct_bytes") > u(s, "payload_bytes") * 9 / 10,
            "stream {i}: {s}"
        );
    }
    assert_eq!(u(&o.send, "verified_messages"), 4);
    assert_eq!(o.send["prebuilt"], true);
    assert!(o.send["build_seconds"].as_f64().unwrap() > 0.0);
}

#[test]
fn af_packet_fallback_transmit_to_a_polling_receiver_verifies() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !may_run() {
        return;
    }
    let o = run(
        "zce2epkt",
        1,
        // The receiver waits in poll(2) with need-wakeup here instead of busy polling.
        &["--region", "1:16M", "--poll"],
        &["--tx", "packet", "--message-bytes", "4194304"],
    );
    let r = &o.recv;
    assert_eq!(r["verified"], true, "{r}");
    assert_eq!(o.send["tx"], "af_packet");
    assert_eq!(u(&o.send, "verified_messages"), 1);
    assert!(u(r, "direct_bytes") > u(r, "payload_bytes") * 9 / 10, "{r}");
}

#[test]
fn kernel_udp_with_segmentation_offload_transmits_and_verifies() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !may_run() {
        return;
    }
    let o = run(
        "zce2eudp",
        1,
        &["--region", "1:16M", "--poll"],
        &[
            "--tx",
            "udp",
            "--tx-batch",
            "256",
            "--prebuild",
            "--messages",
            "2",
            "--message-bytes",
            "4194304",
        ],
    );
    let (r, s) = (&o.recv, &o.send);
    assert_eq!(r["verified"], true, "{r}");
    assert_eq!(s["tx"], "udp_gso");
    assert_eq!(u(s, "verified_messages"), 2);
    // Every segment went through sendmmsg, in datagrams of many segments.
    let udp = &s["udp"];
    assert_eq!(u(udp, "segments"), u(s, "segments_sent"), "{s}");
    assert!(u(udp, "datagrams") * 20 < u(udp, "segments"), "{udp}");
    assert!(u(udp, "sendmmsg_calls") <= u(udp, "datagrams"), "{udp}");
    assert!(u(r, "direct_bytes") > u(r, "payload_bytes") * 9 / 10, "{r}");
}

#[test]
fn coalesced_polling_takes_packets_in_larger_batches_and_verifies() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !may_run() {
        return;
    }
    let o = run(
        "zce2ecoal",
        1,
        &["--region", "1:16M", "--poll", "--poll-coalesce-us", "1000"],
        &[
            "--prebuild",
            "--messages",
            "2",
            "--message-bytes",
            "4194304",
        ],
    );
    let r = &o.recv;
    assert_eq!(r["verified"], true, "{r}");
    // ~1 ms of packets per turn (at ≥100,000 packets/s), at most 256 a turn.
    let batch = r["accounting"]["packets_per_busy_turn"].as_f64().unwrap();
    assert!((16.0..=256.0).contains(&batch), "{}", r["accounting"]);
    assert!(u(r, "direct_bytes") > u(r, "payload_bytes") * 9 / 10, "{r}");
}

#[test]
fn frames_sealed_in_a_second_thread_verify() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !may_run() {
        return;
    }
    let o = run(
        "zce2eseal",
        2,
        &["--region", "1:16M", "--region", "2:16M", "--poll"],
        &[
            "--queues",
            "0,1",
            "--regions",
            "1,2",
            "--seal-thread",
            "--loss",
            "0.01",
            "--message-bytes",
            "4194304",
        ],
    );
    let (r, s) = (&o.recv, &o.send);
    assert_eq!(r["verified"], true, "{r}");
    assert_eq!(s["seal_thread"], true);
    assert_eq!(s["udp"], serde_json::Value::Null);
    assert_eq!(u(s, "verified_messages"), 2);
    // The lost segments were sealed again and resent.
    assert!(u(s, "retransmitted_segments") > 0, "{s}");
}

/// `zc-recv replay` of `pcap` with its configuration (`pcap.toml`); returns its report.
fn replay_capture(pcap: &std::path::Path) -> Value {
    let json = pcap.with_extension("replay.json");
    let mut config = pcap.as_os_str().to_owned();
    config.push(".toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_zc-recv"))
        .arg("replay")
        .arg("--pcap")
        .arg(pcap)
        .arg("--config")
        .arg(&config)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap()
}

#[test]
fn a_captured_live_run_replays_to_the_same_decisions() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !may_run() {
        return;
    }
    let dir = std::env::temp_dir().join("zc-e2e-capture");
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("live.pcap");
    let _ = std::fs::remove_file(&pcap);
    let pcap_arg = pcap.to_str().unwrap();
    // An honest stream and one that lies about its offsets.
    let o = run(
        "zce2ecap",
        2,
        &[
            "--region",
            "1:16M",
            "--region",
            "2:16M",
            "--poll",
            "--capture",
            pcap_arg,
        ],
        &[
            "--queues",
            "0,1",
            "--regions",
            "1,2",
            "--lie",
            "1:outside",
            "--message-bytes",
            "2097152",
        ],
    );
    let live = &o.recv;
    let cap = &live["capture"];
    // Every frame the receiver handled was captured, nothing was left out.
    assert_eq!(u(cap, "frames"), u(live, "payload_packets"), "{cap}");
    for key in ["over_limit", "without_outer", "writer_busy"] {
        assert_eq!(u(cap, key), 0, "{key}: {cap}");
    }
    assert_eq!(cap["not_replayable"], Value::Null, "{cap}");
    // The configuration holds the master keys: its owner's only.
    let config = std::path::PathBuf::from(cap["config"].as_str().unwrap());
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&config).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    // Capturing did not change placement: the honest stream landed in place.
    assert!(u(live, "direct_bytes") > 2097152 * 9 / 10, "{live}");
    let replayed = replay_capture(&pcap);
    // The same frames reach the same decisions: the same bytes and packets, the same
    // rejects by reason, the same windows verified. (Replay lands every frame in bounce
    // memory, so it copies what live placed directly.)
    for key in ["payload_bytes", "payload_packets", "rejected_bytes"] {
        assert_eq!(u(&replayed, key), u(live, key), "{key}");
    }
    assert!(u(live, "rejected_bytes") > 0, "{live}");
    assert_eq!(replayed["rejects"], live["rejects"]);
    assert_eq!(
        u(&replayed, "cpu_copy_bytes") + u(&replayed, "engine_copy_bytes"),
        u(live, "direct_bytes") + u(live, "cpu_copy_bytes") + u(live, "engine_copy_bytes"),
    );
    // The same windows verified, per SPI. (Live reports no window for the liar: its
    // grant was revoked when its session closed; replay holds every grant to the end.)
    let verified = |r: &Value| -> Vec<(u64, usize)> {
        let mut v: Vec<_> = r["streams"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let grants = s["grants"].as_array().unwrap();
                let ok = grants.iter().filter(|g| g["digest_ok"] == true).count();
                (u(s, "spi"), ok)
            })
            .collect();
        v.sort_unstable();
        v
    };
    assert_eq!(verified(&replayed), verified(live));
    assert_eq!(
        verified(live).iter().map(|(_, n)| n).sum::<usize>(),
        1,
        "{live}"
    );
}

#[test]
fn capture_stops_at_its_limit() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !may_run() {
        return;
    }
    let dir = std::env::temp_dir().join("zc-e2e-capture-limit");
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("live.pcap");
    let _ = std::fs::remove_file(&pcap);
    let o = run(
        "zce2ecapl",
        1,
        &[
            "--region",
            "1:16M",
            "--capture",
            pcap.to_str().unwrap(),
            "--capture-limit",
            "100frames",
        ],
        &["--message-bytes", "1048576"],
    );
    let (r, cap) = (&o.recv, &o.recv["capture"]);
    assert_eq!(r["verified"], true, "{r}");
    assert_eq!(u(cap, "frames"), 100, "{cap}");
    assert_eq!(
        u(cap, "frames") + u(cap, "over_limit"),
        u(r, "payload_packets")
    );
    // 24-byte file header, then per frame a 16-byte record header and the frame.
    let size = std::fs::metadata(&pcap).unwrap().len();
    assert_eq!(size, 24 + 100 * 16 + u(cap, "bytes"));
}

/// Connects to the receiver's control port (retrying while it starts), sends `what`, and
/// succeeds when the receiver closes the connection within 5 s.
const INTRUDER: &str = r#"
closed_after() {
  for i in $(seq 100); do { exec 3<>/dev/tcp/10.77.0.2/7000; } 2>/dev/null && break; sleep 0.1; done
  "$@" >&3 2>/dev/null
  timeout 5 cat <&3 >/dev/null 2>&1
  [ $? -ne 124 ] || { echo "receiver kept the connection open"; exit 1; }
  exec 3<&-
}
closed_after printf 'this is not JSON
'
closed_after printf '{"grant": {"spi": "nonsense"}}
'
closed_after head -c 2000000 /dev/zero
"#;

#[test]
fn malformed_control_messages_close_only_their_connection() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !may_run() {
        return;
    }
    let o = run_after(
        "zce2ectl",
        1,
        &["--region", "1:16M"],
        &["--message-bytes", "4194304"],
        Some(INTRUDER),
    );
    let r = &o.recv;
    assert_eq!(r["verified"], true, "the receiver kept serving: {r}");
    assert_eq!(u(&o.send, "verified_messages"), 1);
    let errors = o.recv_log.matches("control connection").count();
    assert_eq!(
        errors, 3,
        "one logged error per bad connection:\n{}",
        o.recv_log
    );
}

#[test]
fn late_region_copies_early_segments_then_places_directly() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !may_run() {
        return;
    }
    // 6000 segments at 20,000/s take 300 ms; the region activates 100 ms after the grant.
    // Until then only bounce frames are posted: 512 of them absorb a 25 ms stall of a
    // busy machine (after activation, the first 512 segments take them and are copied).
    let o = run(
        "zce2elate",
        1,
        &[
            "--region",
            "1:16M:late",
            "--activation-delay-ms",
            "100",
            "--bounce-depth",
            "512",
        ],
        &["--message-bytes", "8400000", "--rate-pps", "20000"],
    );
    let r = &o.recv;
    assert_eq!(r["verified"], true, "{r}");
    assert!(
        u(r, "staged_bytes") > 0,
        "early segments waited for the region: {r}"
    );
    assert!(
        u(r, "cpu_copy_bytes") >= u(r, "staged_bytes"),
        "and were copied in"
    );
    assert!(
        u(r, "direct_bytes") > u(r, "payload_bytes") / 4,
        "the rest direct: {r}"
    );
    assert_eq!(u(r, "still_staged_bytes"), 0);
    let receiver = &r["xsk_stats"]["receiver"];
    assert_eq!(
        u(receiver, "rescued_bytes"),
        0,
        "staged payloads stayed in their bounce frames"
    );
}

#[test]
fn staging_beyond_the_bounce_pool_is_refused_then_retransmitted() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !may_run() {
        return;
    }
    // 2048 bounce frames, 64 + 512 kept for the queue: at most 1472 payloads staged. About
    // 4000 of the 6000 segments arrive before the region activates.
    let o = run(
        "zce2estage",
        1,
        &[
            "--region",
            "1:16M:late",
            "--activation-delay-ms",
            "200",
            "--bounce-frames",
            "2048",
        ],
        &["--message-bytes", "8400000", "--rate-pps", "20000"],
    );
    let r = &o.recv;
    assert_eq!(r["verified"], true, "{r}");
    let staged = u(r, "staged_bytes");
    assert!(
        staged > 0 && staged <= 1472 * 1400,
        "staged {staged} bytes: {r}"
    );
    assert!(
        u(&r["rejects"], "not_ready") > 0,
        "the rest was refused: {r}"
    );
    assert!(u(&o.send, "retransmitted_segments") > 0, "and sent again");
    assert_eq!(u(r, "still_staged_bytes"), 0);
    assert_eq!(r["regions"][0]["stray_bytes"], 0);
}

#[test]
fn descending_order_is_copied_into_place() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !may_run() {
        return;
    }
    let o = run(
        "zce2edesc",
        1,
        &["--region", "1:8M"],
        &["--message-bytes", "2800000", "--order", "descending"],
    );
    let r = &o.recv;
    assert_eq!(r["verified"], true, "{r}");
    // The plan predicts ascending slots: segments arriving backwards land elsewhere.
    assert!(u(r, "cpu_copy_bytes") > u(r, "payload_bytes") / 2, "{r}");
    // Those in another segment's slot were copied out first (that slot is overwritten by
    // its own segment); those in bounce frames were not. Both are counted.
    let rescued = u(&r["xsk_stats"]["receiver"], "rescued_bytes");
    assert!(rescued > 0 && rescued <= u(r, "cpu_copy_bytes"), "{r}");
    assert_eq!(r["regions"][0]["stray_bytes"], 0);
}

#[test]
fn without_prediction_every_payload_is_copied_and_verified() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !may_run() {
        return;
    }
    let o = run(
        "zce2enop",
        1,
        &["--region", "1:32M", "--no-predict"],
        &["--message-bytes", "16777216", "--prebuild"],
    );
    let r = &o.recv;
    assert_eq!(r["verified"], true, "{r}");
    assert_eq!(u(r, "direct_bytes"), 0);
    assert!(u(r, "cpu_copy_bytes") >= 16 << 20);
    assert_eq!(r["xsk_stats"]["receiver"]["predict"], false);
    assert_eq!(u(&r["xsk_stats"]["receiver"], "slots_posted"), 0);
    assert_eq!(r["regions"][0]["stray_bytes"], 0);
}

#[test]
fn sender_loss_is_retransmitted_until_verified() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !may_run() {
        return;
    }
    // A loss shifts every slot still posted by one segment, so a small window keeps the
    // cost of each loss small: ~15 losses x 64 slots of 3000 segments go to copies.
    let o = run(
        "zce2eloss",
        1,
        &["--region", "1:16M", "--window", "64"],
        &[
            "--message-bytes",
            "4200000",
            "--loss",
            "0.005",
            "--seed",
            "3",
        ],
    );
    let r = &o.recv;
    assert_eq!(r["verified"], true, "{r}");
    assert_eq!(u(r, "missing_bytes"), 0);
    let resent = u(&o.send, "retransmitted_segments");
    assert!(resent >= 5, "~0.5% of 3000 segments resent, got {resent}");
    assert!(u(&r["xsk_stats"]["receiver"], "resyncs") > 0, "{r}");
    assert!(u(r, "direct_bytes") > u(r, "payload_bytes") * 4 / 10, "{r}");
}

#[test]
fn lying_senders_are_rejected_and_leave_other_regions_untouched() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !may_run() {
        return;
    }
    lying_senders("zce2elie", &[], "1400");
}

#[test]
fn lying_senders_of_whole_frames_are_rejected_and_leave_other_regions_untouched() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !may_run() {
        return;
    }
    lying_senders("zce2eliew", WHOLE_FRAME, WHOLE_FRAME_MSS);
}

/// Queue 0 honest (region 1); queues 1-4 lie, each granted a window in region 2: every
/// lie is rejected for its reason, and region 1 holds the honest window and nothing else.
fn lying_senders(name: &str, landing: &[&str], mss: &str) {
    let message_bytes = (1000 * mss.parse::<u64>().unwrap()).to_string();
    let mut recv_args = vec!["--region", "1:8M", "--region", "2:32M"];
    recv_args.extend_from_slice(landing);
    let o = run(
        name,
        5,
        &recv_args,
        &[
            "--queues",
            "0,1,2,3,4",
            "--regions",
            "1,2,2,2,2",
            "--mss",
            mss,
            "--message-bytes",
            &message_bytes,
            "--lie",
            "1:region=1",
            "--lie",
            "2:outside",
            "--lie",
            "3:stale",
            "--lie",
            "4:forged-icv",
        ],
    );
    let r = &o.recv;
    let honest = stream(r, 0);
    assert_eq!(honest["grants"][0]["digest_ok"], true, "{honest}");
    assert_eq!(u(honest, "rejected_bytes"), 0);
    for (i, reason) in [
        (1, "not_granted"),
        (2, "out_of_bounds"),
        (3, "stale_generation"),
        (4, "auth_failed"),
    ] {
        let s = stream(r, i);
        let packets = u(s, "payload_packets");
        assert_eq!(packets, 1000, "liar {i}: {s}");
        assert_eq!(
            s["rejects"][reason].as_u64(),
            Some(packets),
            "liar {i} ({reason}): {s}"
        );
        assert_eq!(u(s, "direct_bytes") + u(s, "cpu_copy_bytes"), 0, "liar {i}");
    }
    // Region 1 holds the honest window and nothing else.
    assert_eq!(r["regions"][0]["id"], 1);
    assert_eq!(r["regions"][0]["stray_bytes"], 0, "{}", r["regions"]);
    assert_eq!(r["verified"], false, "liars' windows never complete");
    assert_eq!(u(&o.send, "failed_messages"), 4);
}

/// Whole-frame landing: the XDP program leaves the frame as it came (headers, payload,
/// ICV), so the kernel's copy writes it at fill + 256 byte for byte as a zero-copy NIC's
/// DMA would; frames are sent back to front as the grant says, and each ICV lands on the
/// head of the slot above, restored from that frame's header record.
const WHOLE_FRAME: &[&str] = &["--landing", "whole-frame"];
/// The MSS that fills the 1514-byte frame of a 1500-byte MTU after the sender's 94 header
/// bytes (Ethernet 14, IPv4 20, UDP 8, PSP 16, hint 16, TCP 20) and the 16-byte ICV.
const WHOLE_FRAME_MSS: &str = "1404";

/// Checks a whole-frame run of `streams` streams of `bytes` each: verified, at least
/// 95 % placed directly, nothing stray, no frame over the cap.
fn check_whole_frames(o: &Outcome, streams: usize, bytes: u64) {
    let r = &o.recv;
    assert_eq!(r["verified"], true, "{r}");
    for i in 0..streams {
        let s = stream(r, i);
        let direct = u(s, "direct_bytes") as f64 / bytes as f64;
        assert!(
            direct >= 0.95,
            "stream {i}: only {:.2}% placed directly: {s}",
            direct * 100.0
        );
    }
    for region in r["regions"].as_array().unwrap() {
        assert_eq!(region["stray_bytes"], 0, "{region}");
    }
    assert_eq!(u(&r["xdp_counters"], "pass_too_long"), 0);
    assert_eq!(u(r, "rejected_bytes"), 0);
    assert_eq!(r["xsk_stats"]["receiver"]["landing"], "whole-frame");
    assert_eq!(r["xsk_stats"]["queue0"]["mode"], "copy");
    // The ICV of each frame covered the head of the one above it: restored, never failed.
    let repair = &r["xsk_stats"]["receiver"]["head_repair"];
    assert!(u(repair, "repaired_bytes") > 0, "{repair}");
    assert_eq!(u(repair, "failures"), 0, "{repair}");
    let grant = &stream(r, 0)["grants"][0]["head_repair"];
    assert!(u(grant, "repaired_bytes") > 0, "{grant}");
    eprintln!("whole frames: head repair {repair}");
}

#[test]
fn whole_frames_of_one_stream_land_back_to_front_in_place() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !may_run() {
        return;
    }
    // The same window as the two-stream run (a receive-loop stall in CI emptied the
    // default 4096-entry fill ring: 25,000 drops, 34 % direct).
    let mut recv_args = vec!["--region", "1:272M", "--window", "65536"];
    recv_args.extend_from_slice(WHOLE_FRAME);
    let bytes: u64 = 256 << 20;
    let o = run(
        "zce2ewf1",
        1,
        &recv_args,
        &[
            "--mss",
            WHOLE_FRAME_MSS,
            "--message-bytes",
            &bytes.to_string(),
        ],
    );
    check_whole_frames(&o, 1, bytes);
}

#[test]
fn whole_frames_of_two_streams_land_back_to_front_in_place() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !may_run() {
        return;
    }
    // A window of 65536 fill entries per queue: on 2 cores the sender, the digest thread
    // and the receive loop compete, and a stall of the loop of ~0.3 s emptied the default
    // 4096-entry fill rings (31,000 drops per queue in CI, 42 % direct after the resyncs).
    let mut recv_args = vec![
        "--region", "1:272M", "--region", "2:272M", "--window", "65536",
    ];
    recv_args.extend_from_slice(WHOLE_FRAME);
    let bytes: u64 = 256 << 20;
    let o = run(
        "zce2ewf2",
        2,
        &recv_args,
        &[
            "--queues",
            "0,1",
            "--regions",
            "1,2",
            "--mss",
            WHOLE_FRAME_MSS,
            "--message-bytes",
            &bytes.to_string(),
        ],
    );
    check_whole_frames(&o, 2, bytes);
}

#[test]
fn whole_frames_under_loss_and_reordering_verify() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !may_run() {
        return;
    }
    let mut recv_args = vec!["--region", "1:32M", "--window", "64"];
    recv_args.extend_from_slice(WHOLE_FRAME);
    let o = run(
        "zce2ewfl",
        1,
        &recv_args,
        &[
            "--mss",
            WHOLE_FRAME_MSS,
            "--message-bytes",
            "16777216",
            "--loss",
            "0.01",
            "--reorder",
            "0.01",
            "--seed",
            "5",
        ],
    );
    let r = &o.recv;
    assert_eq!(r["verified"], true, "{r}");
    assert_eq!(u(r, "missing_bytes"), 0);
    assert!(u(&o.send, "retransmitted_segments") > 0);
    assert_eq!(r["regions"][0]["stray_bytes"], 0);
    eprintln!(
        "whole frames, 1% loss and reordering: {:.1}% placed directly",
        r["copies_avoided"].as_f64().unwrap() * 100.0
    );
}

/// Copies through the I/OAT-class engine model (every copy offered to it, threshold 0):
/// descending order, and shuffled with loss and duplication, on two queues with four
/// messages per region (so windows are reused), several seeds. Every transfer verifies,
/// and the engine really ran: engine bytes and refusals (CPU fallback) are both > 0.
#[test]
fn copies_through_the_engine_verify() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !may_run() {
        return;
    }
    let orders: [&[&str]; 4] = [
        &["--order", "descending", "--seed", "3"],
        &["--order", "descending", "--seed", "4"],
        &[
            "--order",
            "shuffled",
            "--loss",
            "0.01",
            "--duplicate",
            "0.01",
            "--seed",
            "5",
        ],
        &[
            "--order",
            "shuffled",
            "--loss",
            "0.01",
            "--duplicate",
            "0.01",
            "--seed",
            "6",
        ],
    ];
    for order in orders {
        let mut send = vec![
            "--queues",
            "0,1",
            "--regions",
            "1,2",
            "--messages",
            "4",
            "--message-bytes",
            "33554432",
        ];
        send.extend_from_slice(order);
        let o = run(
            "zce2eioat",
            2,
            &[
                "--region",
                "1:64M",
                "--region",
                "2:64M:late",
                "--engine",
                "ioat",
                "--engine-threshold",
                "0",
            ],
            &send,
        );
        let r = &o.recv;
        assert_eq!(r["verified"], true, "{order:?}: {r}");
        assert_eq!(u(&o.send, "verified_messages"), 8, "{order:?}");
        assert!(
            u(r, "engine_copy_bytes") > 0,
            "{order:?}: the engine copied nothing"
        );
        assert!(
            u(&r["copy_engine"], "refused_to_cpu") > 0,
            "{order:?}: no refusal, so the CPU fallback was not exercised: {r}"
        );
        for region in r["regions"].as_array().unwrap() {
            assert_eq!(region["stray_bytes"], 0, "{order:?}: {region}");
        }
    }
}

/// Opens 200 connections and holds them: the receiver serves at most --max-connections
/// and closes idle ones.
const IDLE_HORDE: &str = r#"
fds=()
for i in $(seq 200); do
  exec {fd}<>/dev/tcp/10.77.0.2/7000 2>/dev/null && fds+=($fd)
done
echo "opened ${#fds[@]}"
sleep 4
"#;

/// A hostile client, run while a victim transfers: wrapping lengths, other sessions'
/// SPIs and grants (with a wrong digest), then a stranger that opens a session, takes a
/// grant and leaves. Fails if the receiver grants or completes anything it should not.
const HOSTILE: &str = r#"
for i in $(seq 100); do { exec 3<>/dev/tcp/10.77.0.2/7000; } 2>/dev/null && break; sleep 0.05; done
ask() { printf '%s\n' "$1" >&3; read -r -t 5 line <&3 || { echo "no answer to $1"; exit 1; }; echo "$line"; }
refused() { ask "$1" | grep -q '"type":"error"' || { echo "not refused: $1"; exit 1; }; }
r=$(ask '{"type":"session","version":0}')
spi=$(echo "$r" | sed -n 's/.*"spi":\([0-9]*\).*/\1/p')
[ -n "$spi" ] || { echo "no session: $r"; exit 1; }
for len in 18446744073709539328 18446744073709551615 0 67108865; do
  refused "{\"type\":\"grant\",\"spi\":$spi,\"len\":$len,\"base_seq\":0,\"mss\":1400,\"queue\":0,\"region\":1}"
done
zeros=0000000000000000000000000000000000000000000000000000000000000000
for round in $(seq 30); do
  for s in $(seq 1073741825 1073741834); do
    [ "$s" = "$spi" ] && continue
    refused "{\"type\":\"grant\",\"spi\":$s,\"len\":4096,\"base_seq\":0,\"mss\":1400,\"queue\":0,\"region\":null}"
  done
  for g in 0 1 2 3 4 5 6 7 4294967296 4294967297; do
    refused "{\"type\":\"complete\",\"grant\":$g,\"sha256\":\"$zeros\"}"
  done
  sleep 0.1
done
exec 3<&-
exec 4<>/dev/tcp/10.77.0.2/7000
printf '{"type":"session","version":0}\n' >&4; read -r -t 5 s <&4
spi=$(echo "$s" | sed -n 's/.*"spi":\([0-9]*\).*/\1/p')
printf '{"type":"grant","spi":%s,"len":1000000,"base_seq":0,"mss":1400,"queue":0,"region":1}\n' "$spi" >&4
read -r -t 5 g <&4
echo "$g" | grep -q granted || { echo "stranger got no grant: $g"; exit 1; }
exec 4<&-
echo hostile done
"#;

/// Runs zc-send with `args` in the sender's namespace of `tb`, its JSON report to `json`.
fn run_sender(tb: &Testbed, args: &[&str], json: &std::path::Path) -> std::process::ExitStatus {
    let listen = format!("{RECEIVER_IP}:7000");
    Command::new("ip")
        .args(["netns", "exec", &tb.sender_ns()])
        .arg(zc_send())
        .args(["--control", &listen, "--iface", &tb.sender_if()])
        .args(["--no-progress", "--json"])
        .arg(json)
        .args(args)
        .stdout(Stdio::null())
        .spawn()
        .map(|mut c| wait(&mut c, Duration::from_secs(150), "zc-send"))
        .expect("start zc-send")
}

/// As [`run_sender`], asserting success; returns the sender's report.
fn sender_in(tb: &Testbed, args: &[&str], json: &std::path::Path) -> Value {
    let status = run_sender(tb, args, json);
    assert!(status.success(), "zc-send failed: {status}");
    serde_json::from_str(&std::fs::read_to_string(json).expect("sender report")).expect("JSON")
}

fn script_in(tb: &Testbed, script: &str) -> Child {
    Command::new("ip")
        .args(["netns", "exec", &tb.sender_ns(), "bash", "-c", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run script")
}

/// A hostile control client cannot hurt a victim's transfer or stop the receiver: 200
/// idle connections, wrapping lengths, other sessions' SPIs and grants, a stranger that
/// leaves. The victim verifies, and the receiver serves a normal transfer afterwards.
#[test]
fn a_hostile_control_client_cannot_hurt_other_sessions() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !may_run() {
        return;
    }
    let tb = Testbed::up("zce2ehost", 1).expect("test hosts");
    let dir = std::env::temp_dir().join("zc-e2e-hostile");
    std::fs::create_dir_all(&dir).unwrap();
    let recv_json = dir.join("recv.json");
    let _ = std::fs::remove_file(&recv_json);
    let listen = format!("{RECEIVER_IP}:7000");
    let mut recv = Testbed::command_in(&tb.receiver_ns(), env!("CARGO_BIN_EXE_zc-recv"))
        .args(["live", "--iface", &tb.receiver_if(), "--listen", &listen])
        .args(["--region", "1:64M", "--sessions", "2", "--no-progress"])
        .args(["--max-connections", "64", "--control-idle-seconds", "2"])
        .args(["--max-seconds", "100", "--json"])
        .arg(&recv_json)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("recv.log")).expect("log"))
        .spawn()
        .expect("start zc-recv");
    let log_path = dir.join("recv.log");
    let started = Instant::now();
    while !std::fs::read_to_string(&log_path).is_ok_and(|l| l.contains("listening on")) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "zc-recv did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let horde = script_in(&tb, IDLE_HORDE)
        .wait_with_output()
        .expect("horde");
    let opened = String::from_utf8_lossy(&horde.stdout).into_owned();
    assert!(opened.contains("opened 200"), "{opened}");
    let mut hostile = script_in(&tb, HOSTILE);
    let victim = sender_in(
        &tb,
        &["--messages", "3", "--message-bytes", "16777216"],
        &dir.join("victim.json"),
    );
    let hostile_status = wait(&mut hostile, Duration::from_secs(60), "hostile client");
    let mut said = String::new();
    if let Some(mut out) = hostile.stdout.take() {
        use std::io::Read;
        let _ = out.read_to_string(&mut said);
    }
    let after = sender_in(
        &tb,
        &["--messages", "1", "--message-bytes", "8388608"],
        &dir.join("after.json"),
    );
    let recv_status = wait(&mut recv, Duration::from_secs(100), "zc-recv");
    let log = std::fs::read_to_string(dir.join("recv.log")).unwrap_or_default();
    drop(tb);
    assert!(hostile_status.success(), "hostile client: {said}\n{log}");
    assert!(
        recv_status.success(),
        "zc-recv failed: {recv_status}\n{log}"
    );
    assert_eq!(u(&victim, "verified_messages"), 3, "{victim}");
    assert_eq!(u(&after, "verified_messages"), 1, "{after}");
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(&recv_json).expect("report")).unwrap();
    let control = &r["control"];
    assert!(u(control, "refused_connections") > 0, "{control}");
    assert!(u(control, "refused_requests") >= 4 + 30 * 19, "{control}");
    assert_eq!(u(control, "completed_sessions"), 2, "{control}");
    assert!(
        u(control, "revoked_on_close") >= 1,
        "the stranger's grant: {control}"
    );
    assert_eq!(r["verified"], true, "{r}");
    assert_eq!(r["regions"][0]["stray_bytes"], 0);
}

/// `--zero-copy on` is refused where the driver cannot (veth), with a clear error.
#[test]
fn zero_copy_on_is_refused_where_the_driver_cannot() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !may_run() {
        return;
    }
    let tb = Testbed::up("zce2ezc", 1).expect("test hosts");
    let out = Testbed::command_in(&tb.receiver_ns(), env!("CARGO_BIN_EXE_zc-recv"))
        .args(["live", "--iface", &tb.receiver_if(), "--region", "1:1M"])
        .args(["--zero-copy", "on", "--no-progress", "--max-seconds", "5"])
        .output()
        .expect("run zc-recv");
    drop(tb);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("does not support AF_XDP zero-copy"), "{err}");
}

/// The kernel-TCP baseline: two streams of two 16 MiB messages (the placement path's
/// messages, same seeds) over TCP into a region, checked by their digests; the report has
/// the placement path's keys.
#[test]
fn kernel_tcp_transfers_verify_with_the_same_report_keys() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !may_run() {
        return;
    }
    let (r, send) = run_tcp(
        "zce2etcp",
        None,
        &["--connections", "2", "--mss", "1400"],
        &["--queues", "0,1"],
    );
    assert_eq!(r["mode"], "tcp");
    assert_eq!(r["verified"], true, "{r}");
    assert_eq!(u(&r, "payload_bytes"), 4 << 24);
    assert_eq!(u(&r, "verified_messages"), 4);
    assert_eq!(u(&r, "direct_bytes"), 0);
    assert!(r["gbit_per_s"].as_f64().unwrap() > 0.0);
    assert!(r["rx_cpu_seconds_per_gb"].as_f64().unwrap() > 0.0);
    assert!(r["accounting"]["process_cpu_seconds"].as_f64().is_some());
    for s in r["streams"].as_array().unwrap() {
        // The receiver's announced MSS, less the timestamp option.
        let mss = u(s, "mss");
        assert!((1380..=1400).contains(&mss), "{s}");
    }
    assert_eq!(send["tx"], "tcp");
    assert_eq!(u(&send, "verified_messages"), 4);
}

/// Inline crypto (the inline-NIC model): agreed in the session where the receiver allows
/// it, segments neither sealed nor opened in software, placed directly and verified by the
/// window's digest; labelled in both reports. Refused where the receiver does not allow it.
#[test]
fn inline_crypto_transfers_verify_by_digest_and_are_refused_unless_allowed() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !may_run() {
        return;
    }
    let o = run(
        "zce2einl",
        1,
        &["--region", "1:32M", "--allow-inline-crypto"],
        &["--crypto", "inline", "--message-bytes", "16777216"],
    );
    let r = &o.recv;
    assert_eq!(r["verified"], true, "{r}");
    assert_eq!(r["xsk_stats"]["receiver"]["crypto"], "inline");
    assert_eq!(o.send["crypto"], "inline");
    let direct = u(r, "direct_bytes") as f64 / f64::from(16 << 20);
    assert!(
        direct >= 0.99,
        "only {:.2}% placed directly",
        direct * 100.0
    );
    assert_eq!(u(r, "rejected_bytes"), 0);

    // Not allowed: the session is refused, with the reason.
    let tb = Testbed::up("zce2einr", 1).expect("test hosts");
    let dir = std::env::temp_dir().join("zc-e2e-inline-refused");
    std::fs::create_dir_all(&dir).unwrap();
    let listen = format!("{RECEIVER_IP}:7000");
    let mut recv = Testbed::command_in(&tb.receiver_ns(), env!("CARGO_BIN_EXE_zc-recv"))
        .args(["live", "--iface", &tb.receiver_if(), "--listen", &listen])
        .args(["--region", "1:8M", "--no-progress", "--max-seconds", "5"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start zc-recv");
    std::thread::sleep(Duration::from_millis(500));
    let out = Command::new("ip")
        .args(["netns", "exec", &tb.sender_ns()])
        .arg(zc_send())
        .args(["--control", &listen, "--iface", &tb.sender_if()])
        .args([
            "--crypto",
            "inline",
            "--no-progress",
            "--message-bytes",
            "65536",
        ])
        .output()
        .expect("run zc-send");
    let _ = recv.kill();
    let _ = recv.wait();
    drop(tb);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("allow-inline-crypto"), "{err}");
}

/// The kernel's own zero-copy receive: on a 9000-byte MTU, a page of payload per segment
/// (MSS 4108 with timestamps), a `MSG_ZEROCOPY` sender from page-aligned memory: the
/// receiver maps (rather than copies) nearly every byte, and every message verifies.
#[test]
fn tcp_zerocopy_receive_maps_pages_and_verifies() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !may_run() {
        return;
    }
    let (r, send) = run_tcp(
        "zce2etzc",
        Some(9000),
        &["--zero-copy", "--mss", "4108"],
        &["--zero-copy-send"],
    );
    assert_eq!(r["mode"], "tcp-zerocopy");
    assert_eq!(r["verified"], true, "{r}");
    assert_eq!(u(&send, "verified_messages"), 2);
    assert_eq!(u(&r["streams"][0], "mss"), 4096, "{r}");
    let mapped = r["copies_avoided"].as_f64().unwrap();
    assert!(mapped >= 0.9, "only {:.1}% mapped: {r}", mapped * 100.0);
}

/// The copy fallback's controls in a live run: two engine channels, one failing for good
/// after 200 copies, the other refusing every 7th submission; the receive loop and the
/// workers pinned. The transfer verifies, and the report shows per channel what happened
/// (the failed channel's failures, the other's refusals, copies and latency percentiles).
/// Without --engine-threshold the crossover is measured at start-up and reported.
#[test]
fn live_engine_channels_faults_and_calibration_are_reported() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !may_run() {
        return;
    }
    let o = run(
        "zce2eeng",
        1,
        &[
            "--region",
            "1:64M",
            "--engine",
            "ioat",
            "--engine-threshold",
            "0",
            "--engine-channels",
            "2",
            "--engine-fault",
            "0:fail-after=200",
            "--engine-fault",
            "1:refuse-every=7",
            "--engine-cpu",
            "0,1",
            "--cpu",
            "1",
        ],
        &["--order", "descending", "--message-bytes", "16777216"],
    );
    let r = &o.recv;
    assert_eq!(r["verified"], true, "{r}");
    let ce = &r["copy_engine"];
    let ch = ce["channels"].as_array().expect("channels");
    assert_eq!(ch.len(), 2, "{ce}");
    assert_eq!(ch[0]["healthy"], false, "{ce}");
    assert!(
        u(&ch[0], "failures") > 0 || u(&ch[0], "copies") == 200,
        "{ce}"
    );
    assert!(u(&ch[1], "refusals") > 0, "{ce}");
    assert!(u(&ch[1], "copies") > 0, "{ce}");
    let lat = &ch[1]["latency_ns"];
    assert_eq!(u(lat, "count"), u(&ch[1], "copies"), "{lat}");
    assert!(u(lat, "p50") > 0 && u(lat, "p50") <= u(lat, "p99") && u(lat, "p99") <= u(lat, "p999"));
    assert!(
        ce.get("calibration").is_none(),
        "a given threshold is not measured"
    );

    // No threshold: measured at start-up, reported.
    let o = run(
        "zce2ecal",
        1,
        &["--region", "1:16M", "--engine", "ioat"],
        &["--message-bytes", "4194304"],
    );
    let r = &o.recv;
    assert_eq!(r["verified"], true, "{r}");
    let cal = &r["copy_engine"]["calibration"];
    assert_eq!(cal["points"].as_array().map(Vec::len), Some(9), "{cal}");
    assert_eq!(
        cal["threshold_bytes"], r["copy_engine"]["threshold_bytes"],
        "the measured crossover is the one used"
    );
}

/// `zc-recv tcp` with `recv_args` and `zc-send --transport tcp` with `send_args` (2 messages
/// of 16 MiB per stream) on test hosts `name`, the link's MTU set first when given; returns
/// both reports once both succeeded.
fn run_tcp(name: &str, mtu: Option<u32>, recv_args: &[&str], send_args: &[&str]) -> (Value, Value) {
    let tb = Testbed::up(name, 1).expect("test hosts");
    if let Some(mtu) = mtu {
        tb.set_mtu(mtu).expect("MTU");
    }
    let dir = std::env::temp_dir().join(format!("zc-e2e-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    let (recv_json, send_json) = (dir.join("recv.json"), dir.join("send.json"));
    let _ = std::fs::remove_file(&recv_json);
    let listen = format!("{RECEIVER_IP}:7000");
    let mut recv = Testbed::command_in(&tb.receiver_ns(), env!("CARGO_BIN_EXE_zc-recv"))
        .args([
            "tcp",
            "--listen",
            &listen,
            "--region",
            "1:64M",
            "--max-seconds",
            "60",
        ])
        .args(recv_args)
        .arg("--json")
        .arg(&recv_json)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start zc-recv tcp");
    let mut send = vec![
        "--transport",
        "tcp",
        "--messages",
        "2",
        "--message-bytes",
        "16777216",
    ];
    send.extend_from_slice(send_args);
    let sent = sender_in(&tb, &send, &send_json);
    let status = wait(&mut recv, Duration::from_secs(90), "zc-recv tcp");
    drop(tb);
    assert!(status.success(), "zc-recv tcp failed: {status}");
    let r = serde_json::from_str(&std::fs::read_to_string(&recv_json).expect("report")).unwrap();
    (r, sent)
}
