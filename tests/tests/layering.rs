//! The workspace's dependency direction, checked on the real dependency
//! graph (`cargo metadata`, the graph `cargo tree` prints): every edge
//! between workspace crates, normal, build or dev, must point to a lower
//! layer, and the session must not pull in tokio. An edge that breaks this
//! fails the test, unless it is one of the few listed in `KNOWN` (edges that
//! exist today and are to be moved; the test also fails once one of them is
//! gone, so that the list only ever shrinks).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::process::Command;

/// The layer of each workspace crate: a crate may depend only on crates of
/// a lower layer.
fn layer(name: &str) -> Option<u8> {
    Some(match name {
        // The foundation, and the spec tooling (independent of everything).
        "link-types" | "link-spec" => 0,
        // The conformance suite every link runs: needs only the traits.
        "link-tests" => 1,
        // The transports and the session, side by side: none knows another.
        "link-udp" | "link-shm" | "link-ws" | "link-session" => 2,
        // The video layer: pictures, codecs and the fan-out over sessions.
        "link-video" => 3,
        // On top: may use everything.
        "link-bench" | "linkstream" | "linkstream-web" | "link-integration" => 4,
        _ => return None,
    })
}

/// Upward edges that exist today, each with why and where it goes. Empty
/// since the browser session test moved from `link-ws` to
/// `link-integration` (issue 15, "Layers"); a new entry needs a reason.
const KNOWN: &[(&str, &str, &str)] = &[];

struct Graph {
    /// Package id → name.
    names: HashMap<String, String>,
    /// Package id → (dependency id, whether any of its kinds is normal or build).
    deps: HashMap<String, Vec<(String, bool)>>,
    members: HashSet<String>,
}

fn graph() -> Graph {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata is JSON");
    let names = m["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| {
            (
                p["id"].as_str().expect("id").to_owned(),
                p["name"].as_str().expect("name").to_owned(),
            )
        })
        .collect();
    let members = m["workspace_members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|v| v.as_str().expect("member id").to_owned())
        .collect();
    let deps = m["resolve"]["nodes"]
        .as_array()
        .expect("resolve graph")
        .iter()
        .map(|n| {
            let edges = n["deps"]
                .as_array()
                .expect("deps")
                .iter()
                .map(|d| {
                    let kinds = d["dep_kinds"].as_array().expect("dep_kinds");
                    let non_dev = kinds.iter().any(|k| k["kind"].as_str() != Some("dev"));
                    (d["pkg"].as_str().expect("pkg").to_owned(), non_dev)
                })
                .collect();
            (n["id"].as_str().expect("node id").to_owned(), edges)
        })
        .collect();
    Graph {
        names,
        deps,
        members,
    }
}

#[test]
fn no_workspace_crate_depends_on_a_crate_of_its_own_or_a_higher_layer() {
    let g = graph();
    let mut upward = BTreeSet::new();
    for id in &g.members {
        let from = &g.names[id];
        let Some(lf) = layer(from) else {
            panic!("workspace crate {from} has no layer: add it to `layer`");
        };
        for (dep, _) in &g.deps[id] {
            if !g.members.contains(dep) {
                continue;
            }
            let to = &g.names[dep];
            let lt = layer(to).expect("every member has a layer");
            if lt >= lf {
                upward.insert((from.clone(), to.clone()));
            }
        }
    }
    let known: BTreeSet<(String, String)> = KNOWN
        .iter()
        .map(|(a, b, _)| (a.to_string(), b.to_string()))
        .collect();
    let new: Vec<_> = upward.difference(&known).collect();
    assert!(
        new.is_empty(),
        "dependencies that point up or sideways between layers: {new:?}"
    );
    let gone: Vec<_> = known.difference(&upward).collect();
    assert!(
        gone.is_empty(),
        "these listed exceptions no longer exist; remove them from KNOWN: {gone:?}"
    );
}

#[test]
fn the_session_pulls_in_no_tokio_and_no_transport() {
    let g = graph();
    let start = g
        .members
        .iter()
        .find(|id| g.names[*id] == "link-session")
        .expect("link-session is a member");
    let mut seen = HashSet::new();
    let mut stack = vec![start.clone()];
    while let Some(id) = stack.pop() {
        if !seen.insert(id.clone()) {
            continue;
        }
        for (dep, non_dev) in &g.deps[&id] {
            if *non_dev {
                stack.push(dep.clone());
            }
        }
    }
    let names: BTreeSet<&str> = seen.iter().map(|id| g.names[id].as_str()).collect();
    for banned in ["tokio", "link-udp", "link-shm", "link-ws"] {
        assert!(
            !names.contains(banned),
            "link-session depends (normal or build) on {banned}"
        );
    }
    assert!(names.contains("link-types"), "the walk saw the graph");
}

#[test]
fn the_video_core_has_no_dependency() {
    // The browser viewer builds link-video without default features: its
    // core (envelope, index code, slot header, stream path, PSK fragment)
    // must pull in nothing, so that it stays wasm32-clean and light.
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "link-video",
            "--no-default-features",
            "-e",
            "normal,build",
            "--prefix",
            "none",
            "--locked",
        ])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let crates: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        crates,
        BTreeSet::from(["link-video"]),
        "link-video's core depends on more than std"
    );
}
