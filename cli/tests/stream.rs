//! `linkstream host` and `linkstream client` end to end on loopback: the
//! real binary as three processes (host, a UDP viewer, a WebSocket viewer)
//! plus the capture process the host spawns; every decoded picture checked.

mod common;

use std::process::{Command, Stdio};

use common::{BIN, json, num, start_host};

// r[verify cli.client.check]
// r[verify cli.client.report]
#[test]
fn host_serves_a_udp_and_a_websocket_viewer_and_every_picture_checks() {
    let key = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(key.path(), "00112233445566778899aabbccddeeff\n").unwrap();
    let key = key.path().to_str().unwrap().to_string();
    let (host, urls) = start_host(
        &[
            "--udp",
            "127.0.0.1:0",
            "--ws",
            "127.0.0.1:0",
            "--psk-file",
            &key,
            "--source",
            "testsrc:640x360@30",
            "--bitrate",
            "1500000",
            "--seconds",
            "5",
        ],
        2,
    );
    let viewers: Vec<_> = urls
        .iter()
        .map(|url| {
            Command::new(BIN)
                .args([
                    "client",
                    url,
                    "--psk-file",
                    &key,
                    "--json",
                    "--input-rate",
                    "50",
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let reports: Vec<serde_json::Value> = viewers
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{err}");
            json(&String::from_utf8_lossy(&out.stdout))
        })
        .collect();
    let out = host.wait_with_output().unwrap();
    assert!(out.status.success());
    let host = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(host["encrypted"], true);
    let hv = host["viewers"].as_array().unwrap();
    assert_eq!(hv.len(), 2, "{host}");
    for (r, url) in reports.iter().zip(&urls) {
        let decoded = num(r, "frames_decoded");
        assert!(decoded >= 60.0, "{url}: {r}");
        for zero in [
            "decode_errors",
            "index_mismatches",
            "index_unreadable",
            "envelope_errors",
            "frames_lost",
        ] {
            assert_eq!(num(r, zero), 0.0, "{url}: {zero} in {r}");
        }
        assert_eq!(num(r, "index_checked"), decoded, "{url}");
        assert!(num(r, "psnr_db_mean") >= 30.0, "{url}: {r}");
        assert!(
            num(r, "psnr_db_min") > 0.0 && num(r, "psnr_frames") >= decoded,
            "{url}"
        );
        // Every stage was measured and adds up to about the whole.
        let total = num(r, "latency_ms.p50");
        assert!(total > 0.0, "{url}: {r}");
        for stage in ["capture_to_encoded", "reassembled_to_decoded"] {
            assert!(
                num(r, &format!("stages_ms.{stage}.p50")) > 0.0,
                "{stage}: {r}"
            );
        }
        assert!(num(r, "latency_ms.p99") >= total);
        assert!(num(r, "bitrate_mbps") > 0.0);
        assert!(
            num(r, "input_sent") > 0.0 && num(r, "input_acked") > 0.0,
            "{r}"
        );
        assert!(r["clock"].as_str().unwrap().starts_with("shared"));
        // The host sent this viewer exactly the frames it received.
        let transport = if url.starts_with("udp") { "udp" } else { "ws" };
        let v = hv.iter().find(|v| v["transport"] == transport).unwrap();
        assert_eq!(num(v, "frames_sent"), num(r, "frames_received"), "{v} {r}");
        assert!(num(v, "input_events") > 0.0);
    }
    assert!(num(&host, "frames_encoded") >= 120.0, "{host}");
}

// r[verify cli.client.check]
/// A viewer whose path is far slower than the stream loses frames; it
/// resumes each time at a recovery point, so nothing it shows is broken
/// and the frames in between are counted apart from decode errors.
#[test]
fn a_viewer_that_loses_frames_resumes_at_recovery_points_without_decode_errors() {
    let (mut host, urls) = start_host(
        &[
            "--udp",
            "127.0.0.1:0",
            "--source",
            "testsrc:640x360@30",
            "--bitrate",
            "1500000",
            "--min-bitrate",
            "1500000",
            "--seconds",
            "6",
        ],
        1,
    );
    let url = &urls[0];
    // Below the stream's rate: its queue overflows, frames are lost.
    let out = Command::new(BIN)
        .args(["client", url, "--json", "--simulate-bottleneck", "1.1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let r = json(&String::from_utf8_lossy(&out.stdout));
    assert!(host.wait().unwrap().success());
    assert_eq!(num(&r, "bottleneck_mbps"), 1.1, "{r}");
    assert!(num(&r, "bottleneck_queue_dropped") > 0.0, "{r}");
    assert!(num(&r, "frames_lost") > 0.0, "no frame lost: {r}");
    assert!(num(&r, "frames_decoded") > 0.0, "nothing decoded: {r}");
    assert!(
        num(&r, "frames_skipped") + num(&r, "frames_broken") > 0.0,
        "no frame left out after a loss: {r}"
    );
    assert!(
        num(&r, "recovery_frames") + num(&r, "keyframes") > 1.0,
        "never resumed at a recovery point: {r}"
    );
    assert_eq!(num(&r, "decode_errors"), 0.0, "{r}");
    assert_eq!(num(&r, "envelope_errors"), 0.0, "{r}");
    assert_eq!(num(&r, "index_mismatches"), 0.0, "{r}");
    assert_eq!(num(&r, "index_checked"), num(&r, "frames_decoded"), "{r}");
}

// r[verify cli.client.input]
/// Keys typed on the client's standard input reach the host as key events:
/// a press and a release per character.
#[test]
fn typed_keys_reach_the_host() {
    let (host, urls) = start_host(
        &[
            "--udp",
            "127.0.0.1:0",
            "--source",
            "testsrc:640x360@30",
            "--bitrate",
            "1000000",
            "--seconds",
            "4",
        ],
        1,
    );
    let url = &urls[0];
    let mut client = Command::new(BIN)
        .args([
            "client",
            url,
            "--json",
            "--terminal-input",
            "--seconds",
            "3",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = client.stdin.take().unwrap();
        // Six characters with a code each ("~" has none and is skipped).
        stdin.write_all(b"hi 4~2\n").unwrap();
    }
    let out = client.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(num(&r, "input_sent"), 12.0, "{r}");
    let out = host.wait_with_output().unwrap();
    assert!(out.status.success());
    let host = json(&String::from_utf8_lossy(&out.stdout));
    let v = &host["viewers"][0];
    assert_eq!(num(v, "input_events"), 12.0, "{host}");
}

/// A UDP relay between a client and the host that can be paused: while
/// paused it drops every datagram both ways (the path is gone); it counts
/// the datagrams it passes to the client.
struct Relay {
    /// Where the client connects.
    front: std::net::SocketAddr,
    /// The host sees the relay's session from this address.
    back: std::net::SocketAddr,
    paused: std::sync::Arc<std::sync::atomic::AtomicBool>,
    to_client: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Relay {
    fn start(host: std::net::SocketAddr) -> Relay {
        use std::net::UdpSocket;
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
        use std::time::Duration;
        let front = UdpSocket::bind("127.0.0.1:0").unwrap();
        let back = UdpSocket::bind("127.0.0.1:0").unwrap();
        back.connect(host).unwrap();
        for s in [&front, &back] {
            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        }
        let relay = Relay {
            front: front.local_addr().unwrap(),
            back: back.local_addr().unwrap(),
            paused: Arc::new(AtomicBool::new(false)),
            to_client: Arc::new(AtomicU64::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let client = Arc::new(std::sync::Mutex::new(None));
        let (front, back) = (Arc::new(front), Arc::new(back));
        {
            let (front, back, client) = (front.clone(), back.clone(), client.clone());
            let (paused, stop) = (relay.paused.clone(), relay.stop.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while !stop.load(Relaxed) {
                    if let Ok((n, from)) = front.recv_from(&mut buf) {
                        *client.lock().unwrap() = Some(from);
                        if !paused.load(Relaxed) {
                            let _ = back.send(&buf[..n]);
                        }
                    }
                }
            });
        }
        {
            let (paused, stop, count) = (
                relay.paused.clone(),
                relay.stop.clone(),
                relay.to_client.clone(),
            );
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while !stop.load(Relaxed) {
                    if let Ok(n) = back.recv(&mut buf)
                        && !paused.load(Relaxed)
                        && let Some(to) = *client.lock().unwrap()
                    {
                        let _ = front.send_to(&buf[..n], to);
                        count.fetch_add(1, Relaxed);
                    }
                }
            });
        }
        relay
    }

    fn passed_to_client(&self) -> u64 {
        self.to_client.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn set_paused(&self, paused: bool) {
        self.paused
            .store(paused, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Microseconds since the UNIX epoch (the client's JSON uses this clock).
fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// Wait (at most `secs` seconds) until `cond` holds.
fn wait_for(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !cond() {
        assert!(
            std::time::Instant::now() < until,
            "waited {secs} s for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

// r[verify cli.host.resume]
// r[verify cli.host.idle]
/// Two viewers: A behind a relay whose path is cut for 1.5 s (the host's
/// idle timeout is 8 s: more than 5x, so a loaded machine cannot stretch
/// the outage into a timeout) and comes back; C killed (SIGKILL) and
/// started again. A resumes decoding in the same session (one handshake); the killed C's session is freed by the
/// host's idle timeout and counted, and its new process gets a new session.
/// Pass/fail on counters and the order of events, not on durations.
#[test]
fn an_interrupted_viewer_resumes_in_its_session_and_a_killed_one_is_timed_out() {
    let (host, urls) = start_host(
        &[
            "--udp",
            "127.0.0.1:0",
            "--source",
            "testsrc:640x360@30",
            "--bitrate",
            "1000000",
            "--idle-timeout",
            "8",
            "--seconds",
            "20",
        ],
        1,
    );
    let url = &urls[0];
    let host_addr: std::net::SocketAddr = url.trim_start_matches("udp://").parse().unwrap();
    let relay = Relay::start(host_addr);
    let spawn = |url: &str, seconds: Option<&str>| {
        let mut c = Command::new(BIN);
        c.args(["client", url, "--json"]);
        if let Some(s) = seconds {
            c.args(["--seconds", s]);
        }
        c.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let a = spawn(&format!("udp://{}", relay.front), Some("9"));
    let c1 = spawn(url, None);
    // A streams; then its path goes away and comes back.
    wait_for(20, "frames through the relay", || {
        relay.passed_to_client() > 200
    });
    relay.set_paused(true);
    let paused_at = relay.passed_to_client();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let unpaused_us = now_us();
    relay.set_paused(false);
    // C is killed without a word, and started again (a new port).
    let mut c1 = c1;
    c1.kill().unwrap();
    let _ = c1.wait();
    let c2 = spawn(url, Some("3"));
    wait_for(20, "frames after the path came back", || {
        relay.passed_to_client() > paused_at + 100
    });
    let report = |c: std::process::Child| {
        let out = c.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        json(&String::from_utf8_lossy(&out.stdout))
    };
    let a = report(a);
    let c2 = report(c2);
    let out = host.wait_with_output().unwrap();
    assert!(out.status.success());
    let host = json(&String::from_utf8_lossy(&out.stdout));
    // A: frames were lost in the outage, and pictures were decoded again
    // after it, by the same process (a client never handshakes twice).
    assert!(num(&a, "frames_lost") > 0.0, "the outage lost nothing: {a}");
    // The outage is a gap in A's pictures that spans the path's return:
    // pictures before it, and again after it.
    let u = unpaused_us as f64;
    let spans = a["gaps"]
        .as_array()
        .unwrap()
        .iter()
        .any(|g| num(g, "from_us") < u && num(g, "to_us") > u);
    assert!(spans, "no picture decoded after the path came back: {a}");
    assert_eq!(num(&a, "decode_errors"), 0.0, "{a}");
    assert_eq!(num(&a, "index_mismatches"), 0.0, "{a}");
    // The host: one session from the relay, ended by A's Bye; three
    // handshakes in all (A, C, C again), one session timed out: C's first.
    let viewers = host["viewers"].as_array().unwrap();
    let from = |peer: &str| -> Vec<&serde_json::Value> {
        viewers.iter().filter(|v| v["peer"] == peer).collect()
    };
    let a_sessions = from(&relay.back.to_string());
    assert_eq!(a_sessions.len(), 1, "{host}");
    assert_eq!(a_sessions[0]["end"], "viewer closed", "{host}");
    assert_eq!(num(&host, "viewers_joined"), 3.0, "{host}");
    assert_eq!(num(&host, "viewers_timed_out"), 1.0, "{host}");
    let timed_out: Vec<_> = viewers
        .iter()
        .filter(|v| v["end"].as_str().unwrap().starts_with("viewer timed out"))
        .collect();
    assert_eq!(timed_out.len(), 1, "{host}");
    assert_ne!(timed_out[0]["peer"], relay.back.to_string().as_str());
    // The new C decoded pictures in its own session.
    assert!(num(&c2, "frames_decoded") > 0.0, "{c2}");
    assert_eq!(num(&c2, "decode_errors"), 0.0, "{c2}");
}
