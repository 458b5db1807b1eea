//! Bad input to `linkstream host` and `linkstream client`: each gets a
//! clear one-line error and a non-zero exit, never a panic or a hang. The
//! real binary runs for every case.

mod common;

use std::io::Write;
use std::net::{TcpListener, UdpSocket};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_linkstream");

fn run(args: &[&str]) -> (Output, Duration) {
    let t = Instant::now();
    let out = Command::new(BIN)
        .args(args)
        .output()
        .expect("run linkstream");
    (out, t.elapsed())
}

/// The run failed with exactly one `linkstream:` error line containing
/// every one of `needles`, and nothing panicked.
fn assert_one_line_error(out: &Output, needles: &[&str]) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "exit status {}: {err}", out.status);
    assert!(!err.contains("panicked"), "{err}");
    let errors: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("linkstream: ") || l.starts_with("error:"))
        .filter(|l| !l.contains("WARNING") && !l.contains("join with"))
        .collect();
    assert_eq!(errors.len(), 1, "one error line expected: {err}");
    for n in needles {
        assert!(
            errors[0].to_lowercase().contains(&n.to_lowercase()),
            "{n:?} not in {:?}",
            errors[0]
        );
    }
    errors[0].to_string()
}

fn temp_file(name: &str, bytes: &[u8]) -> tempfile::TempPath {
    let mut f = tempfile::Builder::new()
        .prefix(name)
        .tempfile()
        .expect("temp file");
    f.write_all(bytes).unwrap();
    f.into_temp_path()
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Host(Child);

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_host(args: &[&str]) -> Host {
    let child = Command::new(BIN)
        .arg("host")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start host");
    // Give it time to bind.
    std::thread::sleep(Duration::from_millis(700));
    Host(child)
}

// r[verify cli.errors.psk]
#[test]
fn wrong_psk_is_a_clear_error() {
    let host_key = temp_file("host-key", b"0123456789abcdef0123456789abcdef\n");
    let client_key = temp_file("client-key", b"another key, also long enough\n");
    let port = free_udp_port();
    let addr = format!("127.0.0.1:{port}");
    let _host = start_host(&[
        "--udp",
        &addr,
        "--psk-file",
        host_key.to_str().unwrap(),
        "--source",
        "testsrc:640x360@15",
        "--seconds",
        "15",
    ]);
    let url = format!("udp://{addr}");
    let (out, took) = run(&[
        "client",
        &url,
        "--psk-file",
        client_key.to_str().unwrap(),
        "--timeout",
        "2",
    ]);
    assert_one_line_error(&out, &["pre-shared key"]);
    assert!(
        took < Duration::from_secs(10),
        "took {took:?}; the bound is 5x the 2 s --timeout, for loaded machines"
    );
    // And no key at all against an encrypted host.
    let (out, _) = run(&["client", &url, "--timeout", "2"]);
    assert_one_line_error(&out, &[&url]);
}

// r[verify cli.errors.unreachable]
#[test]
fn unreachable_host_is_a_clear_error() {
    let port = free_udp_port();
    let (out, took) = run(&[
        "client",
        &format!("udp://127.0.0.1:{port}"),
        "--timeout",
        "2",
    ]);
    assert_one_line_error(&out, &["udp://127.0.0.1"]);
    assert!(
        took < Duration::from_secs(10),
        "took {took:?}; the bound is 5x the 2 s --timeout, for loaded machines"
    );
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp = closed.local_addr().unwrap().port();
    drop(closed);
    let (out, _) = run(&["client", &format!("ws://127.0.0.1:{tcp}"), "--timeout", "2"]);
    assert_one_line_error(&out, &["ws://127.0.0.1"]);
    let (out, _) = run(&["client", "carrier-pigeon://somewhere"]);
    assert_one_line_error(&out, &["udp://HOST:PORT"]);
    let (out, _) = run(&[
        "client",
        "udp://no-such-host.invalid:7000",
        "--timeout",
        "2",
    ]);
    assert_one_line_error(&out, &["no-such-host.invalid"]);
}

// r[verify cli.errors.y4m]
#[test]
fn bad_y4m_files_are_clear_errors() {
    let psk = temp_file("key", b"0123456789abcdef0123456789abcdef");
    let not_y4m = temp_file("not", b"this is not a video file at all\n");
    // A valid header and half a frame.
    let mut truncated = b"YUV4MPEG2 W640 H360 F30:1 Ip A1:1 C420jpeg\nFRAME\n".to_vec();
    truncated.extend(std::iter::repeat_n(100u8, 640 * 360));
    let truncated = temp_file("trunc", &truncated);
    let missing = "/nonexistent/linkstream-test.y4m";
    for (file, needle) in [
        (not_y4m.to_str().unwrap(), "y4m"),
        (truncated.to_str().unwrap(), "truncated"),
        (missing, "nonexistent"),
    ] {
        let (out, took) = run(&[
            "host",
            "--udp",
            "127.0.0.1:0",
            "--psk-file",
            psk.to_str().unwrap(),
            "--source",
            &format!("y4m:{file}"),
            "--seconds",
            "20",
        ]);
        assert_one_line_error(&out, &[needle]);
        assert!(
            took < Duration::from_secs(10),
            "{file}: took {took:?}; the host must fail at start, long before its 20 s run"
        );
    }
}

// r[verify cli.errors.port]
#[test]
fn port_in_use_is_a_clear_error() {
    let psk = temp_file("key", b"0123456789abcdef0123456789abcdef");
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = udp.local_addr().unwrap().to_string();
    let (out, _) = run(&[
        "host",
        "--udp",
        &addr,
        "--psk-file",
        psk.to_str().unwrap(),
        "--seconds",
        "5",
    ]);
    assert_one_line_error(&out, &[&addr]);
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = tcp.local_addr().unwrap().to_string();
    let (out, _) = run(&[
        "host",
        "--ws",
        &addr,
        "--psk-file",
        psk.to_str().unwrap(),
        "--seconds",
        "5",
    ]);
    assert_one_line_error(&out, &[&addr]);
    // Neither transport, a short key, a missing key file.
    let (out, _) = run(&["host"]);
    assert_one_line_error(&out, &["--udp"]);
    let short = temp_file("short", b"short");
    let (out, _) = run(&[
        "host",
        "--udp",
        "127.0.0.1:0",
        "--psk-file",
        short.to_str().unwrap(),
    ]);
    assert_one_line_error(&out, &["16"]);
}

// r[verify cli.host.renditions]
#[test]
fn renditions_default_to_two_where_the_picture_halves_and_to_one_where_it_does_not() {
    let summary = |out: &Output| -> serde_json::Value {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        serde_json::from_slice(&out.stdout).expect("JSON summary")
    };
    let sizes = |j: &serde_json::Value| -> Vec<(u64, u64)> {
        j["renditions"]
            .as_array()
            .expect("renditions")
            .iter()
            .map(|r| (r["width"].as_u64().unwrap(), r["height"].as_u64().unwrap()))
            .collect()
    };
    let host = |source: &str, extra: &[&str]| {
        let mut args = vec![
            "host",
            "--udp",
            "127.0.0.1:0",
            "--source",
            source,
            "--seconds",
            "0.5",
            "--json",
        ];
        args.extend_from_slice(extra);
        run(&args).0
    };
    // 640x360: two renditions by default, the second half the size.
    let out = host("testsrc:640x360@30", &[]);
    assert_eq!(sizes(&summary(&out)), [(640, 360), (320, 180)]);
    // 642x362 does not halve into even sizes: one, said at start.
    let out = host("testsrc:642x362@30", &[]);
    assert_eq!(sizes(&summary(&out)), [(642, 362)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("one rendition") && err.contains("642x362"),
        "{err}"
    );
    // Asked for explicitly, it is an error naming the size.
    let (out, _) = run(&[
        "host",
        "--udp",
        "127.0.0.1:0",
        "--source",
        "testsrc:642x362@30",
        "--seconds",
        "0.5",
        "--renditions",
        "2",
    ]);
    assert_one_line_error(&out, &["--renditions 2", "642x362"]);
    // --renditions 1 keeps one where two would fit.
    let out = host("testsrc:640x360@30", &["--renditions", "1"]);
    assert_eq!(sizes(&summary(&out)), [(640, 360)]);
}

// r[verify cli.errors.x11]
/// No X server, no display at all, a region outside the screen, an
/// output the display does not have, `--fps` for a file: one line each,
/// before anything starts.
#[test]
fn bad_x11_sources_are_clear_errors() {
    let xvfb = common::Xvfb::start("640x360x24");
    let display = xvfb.display.clone();
    let host = |source: &str, extra: &[&str]| {
        let mut args = vec!["host", "--udp", "127.0.0.1:0", "--source", source];
        args.extend_from_slice(extra);
        let (out, took) = run(&args);
        assert!(took < Duration::from_secs(10), "{source}: took {took:?}");
        out
    };
    assert_one_line_error(&host("x11::4321", &[]), &[":4321", "cannot connect"]);
    let out = Command::new(BIN)
        .args(["host", "--udp", "127.0.0.1:0", "--source", "x11"])
        .env_remove("DISPLAY")
        .output()
        .unwrap();
    assert_one_line_error(&out, &["$DISPLAY is not set"]);
    assert_one_line_error(
        &host(&format!("x11:{display}+600,0,64x64"), &[]),
        &[&display, "outside the 640x360 screen"],
    );
    assert_one_line_error(
        &host(&format!("x11:{display}@DP-7"), &[]),
        &[&display, "no output named \"DP-7\""],
    );
    assert_one_line_error(&host("x11:+1,1,3x3", &[]), &["even"]);
    assert_one_line_error(
        &host(&format!("x11:{display}"), &["--fps", "0"]),
        &["1 to 240"],
    );
    let y4m = temp_file("a.y4m", b"YUV4MPEG2 W16 H8 F30:1 C420\nFRAME\n");
    let y4m = format!("y4m:{}", y4m.to_str().unwrap());
    assert_one_line_error(&host(&y4m, &["--fps", "30"]), &["rate it declares"]);
    drop(xvfb);
}
