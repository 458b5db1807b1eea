//! What the command-line tests share: the binary, JSON reports, starting a
//! host, an Xvfb server.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_linkstream");

pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

pub fn num(v: &serde_json::Value, path: &str) -> f64 {
    let mut cur = v;
    for k in path.split('.') {
        cur = &cur[k];
    }
    cur.as_f64()
        .unwrap_or_else(|| panic!("no number {path} in {v}"))
}

/// Start `linkstream host` with `args` (plus `--json`) and return it with
/// the `count` join URLs it prints (the bound ports); its remaining stderr
/// is drained so it never blocks.
pub fn start_host(args: &[&str], count: usize) -> (Child, Vec<String>) {
    let (host, joins, _) = start_host_joins(args, count);
    (host, joins.into_iter().map(|j| j[0].clone()).collect())
}

/// As [`start_host`], with each join command's arguments after
/// `linkstream client` (the URL, then `--psk-file PATH` when the host made
/// a key), and the host's later stderr lines as they come.
pub fn start_host_joins(
    args: &[&str],
    count: usize,
) -> (Child, Vec<Vec<String>>, std::sync::mpsc::Receiver<String>) {
    let mut host = Command::new(BIN)
        .arg("host")
        .args(args)
        .arg("--json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(host.stderr.take().unwrap()).lines();
    let mut joins = Vec::new();
    let (tx, rx) = std::sync::mpsc::channel();
    while joins.len() < count {
        let line = lines.next().expect("host stderr ended").unwrap();
        if let Some(rest) = line.split("linkstream client ").nth(1) {
            joins.push(rest.split_whitespace().map(String::from).collect());
        }
        let _ = tx.send(line);
    }
    std::thread::spawn(move || {
        for l in lines.map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    (host, joins, rx)
}

/// An Xvfb server on a display number it picked itself (`-displayfd`);
/// killed when dropped. A missing Xvfb fails the test (the test command
/// installs it).
pub struct Xvfb {
    pub child: Child,
    pub display: String,
}

impl Xvfb {
    pub fn start(screen: &str) -> Xvfb {
        let mut child = Command::new("Xvfb")
            .args([
                "-displayfd",
                "1",
                "-nolisten",
                "tcp",
                "-screen",
                "0",
                screen,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb is missing: install the xvfb package (scripts/test.sh does)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let n: u32 = line
            .trim()
            .parse()
            .expect("Xvfb printed its display number");
        Xvfb {
            child,
            display: format!(":{n}"),
        }
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
