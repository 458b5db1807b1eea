//! `linkstream demo` end to end: the real binary, every link, JSON output.

use std::process::Command;

fn field<'a>(obj: &'a str, name: &str) -> &'a str {
    let key = format!("\"{name}\":");
    let at = obj
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {obj}"))
        + key.len();
    let rest = &obj[at..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end].trim_matches('"')
}

fn num(obj: &str, name: &str) -> f64 {
    field(obj, name).parse().unwrap()
}

// r[verify session.links]
#[test]
fn demo_streams_over_every_link_and_reports_json() {
    let out = Command::new(env!("CARGO_BIN_EXE_linkstream"))
        .args([
            "demo",
            "--seconds",
            "2.5",
            "--fps",
            "240",
            "--bitrate",
            "80",
            "--json",
        ])
        .output()
        .expect("run linkstream");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let json = stdout.trim();
    assert!(json.starts_with('[') && json.ends_with(']'), "{json}");
    let rows: Vec<&str> = json[1..json.len() - 1].split("},{").collect();
    assert_eq!(rows.len(), 3, "{json}");
    for row in rows {
        let link = field(row, "link").to_string();
        let sent = num(row, "frames_sent");
        let delivered = num(row, "frames_delivered");
        let lost = num(row, "frames_lost");
        assert_eq!(sent, 600.0, "{link}");
        assert_eq!(delivered + lost, sent, "{link}: every frame accounted for");
        assert_eq!(num(row, "corrupt"), 0.0, "{link}: no corrupt frame");
        assert_eq!(field(row, "input_in_order"), "true", "{link}");
        assert_eq!(
            num(row, "input_sent"),
            num(row, "input_received"),
            "{link}: input exactly once"
        );
        assert!(num(row, "goodput_mbps") > 0.0);
        match link.as_str() {
            // 5% loss each way, 20% parity: at least 99.5% of frames.
            "udp" => {
                assert!(
                    delivered >= 0.995 * sent,
                    "udp delivered {delivered} of {sent}"
                );
                assert!(num(row, "fec_recovered") > 0.0, "parity rebuilt frames");
                assert_eq!(field(row, "encrypted"), "true");
            }
            // Across two processes, every frame read in the slot the host wrote.
            "shm" => {
                assert_eq!(delivered, sent);
                assert_eq!(num(row, "zero_copy"), sent, "shm frames are zero-copy");
            }
            "ws" => assert_eq!(delivered, sent),
            other => panic!("unexpected link {other}"),
        }
    }
}

#[test]
fn bad_options_are_refused_with_usage() {
    let out = Command::new(env!("CARGO_BIN_EXE_linkstream"))
        .args(["demo", "--links", "carrier-pigeon"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown link") && err.to_lowercase().contains("usage"),
        "{err}"
    );
}
