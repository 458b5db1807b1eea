//! `linkstream host --source x11` end to end: an X server (Xvfb), the
//! project's own X client drawing the test pattern on it, the host
//! capturing the screen, a native viewer over UDP checking every picture
//! against the pattern as drawn.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, Xvfb, json, num, start_host, start_host_keeping_stderr};

fn draw_pattern(display: &str, seconds: &str, log: &std::path::Path) -> std::process::Child {
    Command::new(BIN)
        .args(["__x11-pattern", "--display", display, "--fps", "30"])
        .args(["--seconds", seconds, "--log"])
        .arg(log)
        .spawn()
        .unwrap()
}

fn client(url: &str, seconds: &str) -> std::process::Child {
    Command::new(BIN)
        .args(["client", url, "--json", "--seconds", seconds])
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
/// Every picture the viewer decodes is the pattern the X client drew:
/// readable, never older than one shown before, within 35 dB of the
/// pattern as drawn; the host says it captured through GetImage.
#[test]
fn the_host_streams_an_x_screen_and_every_picture_is_what_was_drawn() {
    let x = Xvfb::start("640x360x24");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("drawn");
    let mut drawer = draw_pattern(&x.display, "12", &log);
    wait_drawn(&log);
    let source = format!("x11:{}", x.display);
    let (host, urls) = start_host(
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
    let out = client(&urls[0], "4").wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = json(&String::from_utf8_lossy(&out.stdout));
    let out = host.wait_with_output().unwrap();
    assert!(out.status.success());
    let h = json(&String::from_utf8_lossy(&out.stdout));
    drawer.kill().unwrap();
    drawer.wait().unwrap();

    assert!(
        h["capture_path"].as_str().unwrap().starts_with("GetImage"),
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
    let (mut host, urls, _stderr) = start_host_keeping_stderr(
        &["--udp", "127.0.0.1:0", "--source", &source, "--fps", "30"],
        1,
    );
    let mut viewer = client(&urls[0], "60");
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
    std::io::Read::read_to_string(&mut host.stdout.take().unwrap(), &mut String::new()).ok();
    while let Ok(l) = _stderr.recv_timeout(Duration::from_secs(1)) {
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
