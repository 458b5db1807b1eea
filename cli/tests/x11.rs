//! `linkstream host --source x11` end to end: an X server (Xvfb), the
//! project's own X client drawing the test pattern on it, the host
//! capturing the screen, a native viewer over UDP checking every picture
//! against the pattern as drawn.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, Xvfb, json, num, start_host_joins};

fn draw_pattern(display: &str, seconds: &str, log: &std::path::Path) -> std::process::Child {
    Command::new(BIN)
        .args(["__x11-pattern", "--display", display, "--fps", "30"])
        .args(["--seconds", seconds, "--log"])
        .arg(log)
        .spawn()
        .unwrap()
}

/// `linkstream client` with the join command's arguments (`URL
/// --psk-file PATH`) as the host printed them.
fn client(join: &[String], seconds: &str) -> std::process::Child {
    Command::new(BIN)
        .arg("client")
        .args(join)
        .args(["--json", "--seconds", seconds])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Wait until `log` has a line: the X client has drawn its first picture.
fn wait_drawn(log: &std::path::Path) {
    let t0 = Instant::now();
    while std::fs::read_to_string(log).map_or(true, |s| s.is_empty()) {
        assert!(t0.elapsed() < Duration::from_secs(10), "nothing drawn");
        std::thread::sleep(Duration::from_millis(50));
    }
}

// r[verify cli.host.x11]
// r[verify cli.capture.lent]
/// Every picture the viewer decodes is the pattern the X client drew:
/// readable, never older than one shown before, within 35 dB of the
/// pattern as drawn; the X server wrote every picture into the capture
/// slot itself (MIT-SHM), and the host says so.
#[test]
fn the_host_streams_an_x_screen_and_every_picture_is_what_was_drawn() {
    let x = Xvfb::start("640x360x24");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("drawn");
    let mut drawer = draw_pattern(&x.display, "12", &log);
    wait_drawn(&log);
    let source = format!("x11:{}", x.display);
    let (host, joins, _) = start_host_joins(
        &[
            "--udp",
            "127.0.0.1:0",
            "--source",
            &source,
            "--fps",
            "30",
            "--renditions",
            "1",
            "--bitrate",
            "1500000",
            "--seconds",
            "6",
        ],
        1,
    );
    // A desktop is private: the host made a key, only this user can read
    // it, and the join command carries it.
    assert_eq!(joins[0][1], "--psk-file", "{joins:?}");
    let key = std::path::PathBuf::from(&joins[0][2]);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let out = client(&joins[0], "4").wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = json(&String::from_utf8_lossy(&out.stdout));
    let out = host.wait_with_output().unwrap();
    assert!(out.status.success());
    let h = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(h["encrypted"], true);
    assert!(!key.exists(), "the run's key file is removed at the end");
    drawer.kill().unwrap();
    drawer.wait().unwrap();

    // Xvfb has MIT-SHM 1.2: every picture went straight from the X
    // server into the shared-memory slot.
    assert!(
        h["capture_path"].as_str().unwrap().starts_with("MIT-SHM"),
        "{h}"
    );
    assert!(num(&h, "frames_captured") > 0.0);
    assert_eq!(
        num(&h, "frames_zero_copy"),
        num(&h, "frames_captured"),
        "{h}"
    );
    assert_eq!(num(&h, "width"), 640.0);
    assert_eq!(num(&h, "fps"), 30.0);
    let decoded = num(&r, "frames_decoded");
    assert!(decoded >= 90.0, "4 s at 30 fps: {r}");
    assert!(decoded >= 0.99 * num(&r, "frames_received"), "{r}");
    for zero in [
        "decode_errors",
        "index_mismatches",
        "index_unreadable",
        "frames_lost",
    ] {
        assert_eq!(num(&r, zero), 0.0, "{zero} in {r}");
    }
    assert_eq!(num(&r, "index_checked"), decoded);
    assert!(num(&r, "psnr_db_min") >= 35.0, "{r}");
    assert!(num(&r, "psnr_frames") >= decoded, "{r}");
    // The screen changed: the drawer's log has the pictures it drew.
    let drawn = std::fs::read_to_string(&log).unwrap().lines().count();
    assert!(drawn >= 150, "{drawn} pictures drawn");
}

// r[verify cli.host.x11]
/// An X server that dies mid-stream ends the host with an error naming the
/// display, and the viewer's session ends; nothing hangs.
#[test]
fn an_x_server_that_dies_ends_the_host_with_an_error() {
    let mut x = Xvfb::start("640x360x24");
    let source = format!("x11:{}", x.display);
    let (mut host, joins, stderr) = start_host_joins(
        &["--udp", "127.0.0.1:0", "--source", &source, "--fps", "30"],
        1,
    );
    let mut viewer = client(&joins[0], "60");
    std::thread::sleep(Duration::from_secs(2));
    x.child.kill().unwrap();
    x.child.wait().unwrap();
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = host.try_wait().unwrap() {
            break s;
        }
        assert!(t0.elapsed() < Duration::from_secs(15), "host still running");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let mut err = String::new();
    while let Ok(l) = stderr.recv_timeout(Duration::from_secs(1)) {
        err.push_str(&l);
        err.push('\n');
    }
    assert!(
        err.contains("capture process failed") && err.contains(&x.display),
        "{err}"
    );
    let t0 = Instant::now();
    while viewer.try_wait().unwrap().is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "viewer still running"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

// r[verify cli.host.private]
// r[verify cli.host.origin]
/// A desktop host without --psk-file: a viewer without the run's key gets
/// no picture and the host says why; a browser connection from a page of
/// another origin is refused with 403 and counted, one from an origin
/// named with --allow-origin is not; --no-auth serves without a key and
/// says so.
#[test]
fn a_desktop_is_private_by_default() {
    use std::io::{Read, Write};
    let x = Xvfb::start("640x360x24");
    let source = format!("x11:{}", x.display);
    let (host, joins, stderr) = start_host_joins(
        &[
            "--udp",
            "127.0.0.1:0",
            "--ws",
            "127.0.0.1:0",
            "--source",
            &source,
            "--fps",
            "10",
            "--allow-origin",
            "https://viewer.example",
            "--seconds",
            "6",
        ],
        2,
    );
    let ws = joins[1][0].strip_prefix("ws://").unwrap().to_string();
    assert_eq!(joins[1][1], "--psk-file");
    // Without the key: no picture, the client fails, the host says why.
    let out = client(&joins[0][..1], "3").wait_with_output().unwrap();
    assert!(!out.status.success());
    let upgrade = |origin: &str| {
        let mut tcp = std::net::TcpStream::connect(&ws).unwrap();
        write!(
            tcp,
            "GET /stream HTTP/1.1\r\nHost: {ws}\r\nOrigin: {origin}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .unwrap();
        let mut head = [0u8; 12];
        tcp.read_exact(&mut head).unwrap();
        String::from_utf8_lossy(&head[9..12]).to_string()
    };
    assert_eq!(upgrade("http://evil.example"), "403");
    assert_eq!(upgrade(&format!("http://{ws}")), "101");
    assert_eq!(upgrade("https://viewer.example"), "101");
    let out = host.wait_with_output().unwrap();
    assert!(out.status.success());
    let h = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(num(&h, "ws_refused_origins"), 1.0, "{h}");
    assert!(num(&h, "handshake_failures") >= 1.0, "{h}");
    let said: Vec<String> = stderr.iter().collect();
    assert!(
        said.iter().any(|l| l.contains("a desktop is private")),
        "{said:?}"
    );
    assert!(
        said.iter()
            .any(|l| l.contains("udp viewer") && l.contains("handshake failed")),
        "the host says why: {said:?}"
    );

    // --no-auth: no key, a warning, and a viewer without one sees it.
    let (host, joins, stderr) = start_host_joins(
        &[
            "--udp",
            "127.0.0.1:0",
            "--source",
            &source,
            "--fps",
            "10",
            "--no-auth",
            "--seconds",
            "4",
        ],
        1,
    );
    assert_eq!(joins[0].len(), 1, "no key in the join command: {joins:?}");
    let out = client(&joins[0], "2").wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(
        num(
            &json(&String::from_utf8_lossy(&out.stdout)),
            "frames_decoded"
        ) > 0.0
    );
    assert!(host.wait_with_output().unwrap().status.success());
    let said: Vec<String> = stderr.iter().collect();
    assert!(said.iter().any(|l| l.contains("WITHOUT a key")), "{said:?}");
}

// r[verify cli.capture.damage]
/// A desktop nobody draws on is captured and encoded about once a second
/// (the refresh), not at --fps, a viewer still gets its pictures, and the
/// session does not fill the quiet with probes.
#[test]
fn a_still_desktop_is_encoded_at_the_refresh_rate() {
    let x = Xvfb::start("640x360x24");
    let source = format!("x11:{}", x.display);
    let (host, joins, _) = start_host_joins(
        &[
            "--udp",
            "127.0.0.1:0",
            "--source",
            &source,
            "--fps",
            "30",
            "--no-auth",
            "--seconds",
            "6",
        ],
        1,
    );
    let out = client(&joins[0], "4").wait_with_output().unwrap();
    assert!(out.status.success());
    let r = json(&String::from_utf8_lossy(&out.stdout));
    let h = json(&String::from_utf8_lossy(
        &host.wait_with_output().unwrap().stdout,
    ));
    assert!(
        h["capture_path"].as_str().unwrap().contains("XDamage"),
        "{h}"
    );
    let encoded = num(&h, "frames_encoded");
    assert!((3.0..=8.0).contains(&encoded), "6 s still: {h}");
    assert!(num(&r, "frames_decoded") >= 2.0, "{r}");
    assert_eq!(num(&r, "decode_errors"), 0.0, "{r}");
    // What went on the wire: a few KB of pictures, and the start's two
    // probe clusters (about 20 datagrams each) but no probes while still
    // (session.bwe.quiet; before it, 589 padding datagrams in 10 s).
    let v = &h["viewers"][0];
    assert!(num(v, "frame_bytes_sent") < 50_000.0, "{v}");
    assert!(num(v, "padding_sent") <= 60.0, "{v}");
}
