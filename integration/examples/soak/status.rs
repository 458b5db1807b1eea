//! The host's status file as the swarm reads it (`key=value` words, see
//! [`crate::host`]).

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

pub(crate) type Status = HashMap<String, u64>;

pub(crate) fn read_status(path: &Path) -> Option<Status> {
    let s = std::fs::read_to_string(path).ok()?;
    let m: Status = s
        .split_whitespace()
        .filter_map(|w| {
            let (k, v) = w.split_once('=')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect();
    m.contains_key("pid").then_some(m)
}

pub(crate) fn get(s: &Status, k: &str) -> u64 {
    s.get(k).copied().unwrap_or(0)
}

/// The host's status once `ok` holds, or an error after `timeout`.
pub(crate) async fn wait_for(
    path: &Path,
    timeout: Duration,
    what: &str,
    ok: impl Fn(&Status) -> bool,
) -> Result<Status, String> {
    let end = Instant::now() + timeout;
    loop {
        let s = read_status(path);
        if let Some(s) = &s
            && ok(s)
        {
            return Ok(s.clone());
        }
        if Instant::now() >= end {
            return Err(format!(
                "host not {what} after {timeout:?}: {}",
                s.map(|s| format!("{s:?}"))
                    .unwrap_or_else(|| "no status".into())
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The host has no session and no handshake running, and no UDP peer.
pub(crate) fn quiet(s: &Status) -> bool {
    get(s, "live") == 0
        && get(s, "handshaking") == 0
        && get(s, "udp_peers") == 0
        && get(s, "udp_unvalidated") == 0
}

/// KiB of receive slabs the host's UDP endpoint added between two samples
/// (`rx_buffer_growth` times the slab size it reports).
pub(crate) fn slab_kib(later: &Status, earlier: &Status) -> u64 {
    (get(later, "udp_rx_buffer_growth") - get(earlier, "udp_rx_buffer_growth"))
        * get(later, "udp_slab_kib")
}
