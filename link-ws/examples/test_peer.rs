//! The native peer that the browser tests and the Autobahn run talk to.
//!
//! ```text
//! test_peer browser <addr>          serve the browser test routes
//! test_peer echo <addr>             echo every message back (text as text)
//! test_peer autobahn-client <url>   run an Autobahn fuzzing server's cases
//! ```
//!
//! Servers print `LISTENING <addr>` once they accept connections.
//!
//! Browser routes (path of the upgrade request):
//! - `/pair/<id>`: the first two connections with the same id are relayed
//!   to each other, message by message, with close and abrupt ends passed
//!   on; the browser conformance suite runs over such pairs;
//! - `/stall/<ms>`: read nothing for `ms` milliseconds, then read; on an
//!   empty message reply with `count:u64 le, bytes:u64 le` of what came
//!   before it;
//! - `/text`: send one text message;
//! - `/big/<n>`: send one binary message of `n` bytes;
//! - `/firehose/<count>/<size>`: send `count` messages of `size` bytes, then
//!   close.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use link_types::{Link, LinkRx, LinkTx, LinkTxExt, LinkTxPermit, WriteSlot};
use link_ws::{WsConfig, WsLink, WsRx, WsServer, WsTx};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: test_peer (browser <addr> | echo <addr> | autobahn-client <url>)";
    let (mode, arg) = match (args.get(1), args.get(2)) {
        (Some(m), Some(a)) => (m.as_str(), a.as_str()),
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    };
    let result = match mode {
        "browser" => browser(arg.parse().expect("address")).await,
        "echo" => echo_server(arg.parse().expect("address")).await,
        "autobahn-client" => autobahn_client(arg).await,
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("test_peer: {e}");
        std::process::exit(1);
    }
}

async fn browser(addr: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    let mut server = WsServer::bind(addr, WsConfig::default()).await?;
    println!("LISTENING {}", server.local_addr());
    let mut waiting: HashMap<String, WsLink> = HashMap::new();
    loop {
        let acc = server.accept().await?;
        let parts: Vec<&str> = acc.path.trim_start_matches('/').split('/').collect();
        match parts.as_slice() {
            ["pair", id] => match waiting.remove(*id) {
                Some(first) => {
                    let (atx, arx) = first.split();
                    let (btx, brx) = acc.link.split();
                    tokio::spawn(relay(arx, btx));
                    tokio::spawn(relay(brx, atx));
                }
                None => {
                    waiting.insert(id.to_string(), acc.link);
                }
            },
            ["stall", ms] => {
                let ms = ms.parse().unwrap_or(0);
                tokio::spawn(stall(acc.link, ms));
            }
            ["text"] => {
                tokio::spawn(async move {
                    let (mut tx, mut rx) = acc.link.split();
                    let _ = tx.send_text("not binary").await;
                    let _ = tx.flush().await;
                    // Wait for the client to end the connection.
                    while let Ok(Some(_)) = rx.recv().await {}
                });
            }
            ["big", n] => {
                let n: usize = n.parse().unwrap_or(0);
                tokio::spawn(async move {
                    // A server configured for big messages sends it.
                    let (mut tx, mut rx) = acc.link.split();
                    let data = vec![7u8; n];
                    if tx.send(&data).await.is_ok() {
                        let _ = tx.flush().await;
                    }
                    while let Ok(Some(_)) = rx.recv().await {}
                });
            }
            ["firehose", count, size] => {
                let count: u64 = count.parse().unwrap_or(0);
                let size: usize = size.parse().unwrap_or(0);
                tokio::spawn(async move {
                    let (mut tx, _rx) = acc.link.split();
                    for i in 0..count {
                        let Ok(p) = tx.reserve().await else { return };
                        let Ok(mut s) = p.alloc(size) else { return };
                        s.as_mut_slice()[..8.min(size)]
                            .copy_from_slice(&i.to_le_bytes()[..8.min(size)]);
                        if s.commit().is_err() {
                            return;
                        }
                    }
                    let _ = tx.close().await;
                    tokio::time::sleep(Duration::from_secs(5)).await;
                });
            }
            _ => eprintln!("test_peer: unknown route {}", acc.path),
        }
    }
}

/// Pass messages from `rx` on to `tx`; pass a close on as a close and an
/// error or a vanished receiver on as an abrupt end.
async fn relay(mut rx: WsRx, mut tx: WsTx) {
    loop {
        match rx.recv().await {
            Ok(Some(m)) => {
                let sent = async {
                    let p = tx.reserve().await?;
                    let mut s = p.alloc(m.len())?;
                    s.as_mut_slice().copy_from_slice(&m);
                    s.commit()?;
                    tx.flush().await
                };
                if sent.await.is_err() {
                    // The other side is gone: end this one abruptly too.
                    return;
                }
            }
            Ok(None) => {
                let _ = tx.close().await;
                // Keep the receiving half until the peer finishes closing.
                let _ = rx.recv().await;
                return;
            }
            Err(_) => return,
        }
    }
}

async fn stall(link: WsLink, ms: u64) {
    let (mut tx, mut rx) = link.split();
    tokio::time::sleep(Duration::from_millis(ms)).await;
    let (mut count, mut bytes) = (0u64, 0u64);
    while let Ok(Some(m)) = rx.recv().await {
        if m.is_empty() {
            let mut reply = count.to_le_bytes().to_vec();
            reply.extend_from_slice(&bytes.to_le_bytes());
            let _ = tx.send(&reply).await;
            let _ = tx.flush().await;
        } else {
            count += 1;
            bytes += m.len() as u64;
        }
    }
}

fn echo_config() -> WsConfig {
    WsConfig {
        accept_text: true,
        max_payload: 64 << 20,
        ..WsConfig::default()
    }
}

/// Echo messages back with their kind until the peer closes.
async fn echo(link: WsLink) {
    let (mut tx, mut rx) = link.split();
    loop {
        match rx.recv_message().await {
            Ok(Some(m)) => {
                let r = if m.text {
                    match std::str::from_utf8(&m.data) {
                        Ok(t) => tx.send_text(t).await,
                        Err(_) => return,
                    }
                } else {
                    tx.send(&m.data).await
                };
                if r.is_err() || tx.flush().await.is_err() {
                    return;
                }
            }
            Ok(None) => {
                let _ = tx.close().await;
                return;
            }
            Err(_) => return,
        }
    }
}

async fn echo_server(addr: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    let mut server = WsServer::bind(addr, echo_config()).await?;
    println!("LISTENING {}", server.local_addr());
    loop {
        let acc = server.accept().await?;
        tokio::spawn(echo(acc.link));
    }
}

/// The Autobahn client protocol: ask the case count, run each case as an
/// echo, then ask for the report to be written.
async fn autobahn_client(base: &str) -> Result<(), Box<dyn std::error::Error>> {
    let agent = "linkstream";
    let config = echo_config();
    let link = WsLink::connect(&format!("{base}/getCaseCount"), &config).await?;
    let (_tx, mut rx) = link.split();
    let count: u32 = match rx.recv_message().await? {
        Some(m) => std::str::from_utf8(&m.data)?.trim().parse()?,
        None => return Err("no case count".into()),
    };
    eprintln!("autobahn: {count} cases");
    for case in 1..=count {
        let url = format!("{base}/runCase?case={case}&agent={agent}");
        match WsLink::connect(&url, &config).await {
            Ok(link) => echo(link).await,
            Err(e) => eprintln!("autobahn: case {case}: connect failed: {e}"),
        }
    }
    let link = WsLink::connect(&format!("{base}/updateReports?agent={agent}"), &config).await?;
    let (mut tx, mut rx) = link.split();
    let _ = tx.close().await;
    let _ = rx.recv().await;
    Ok(())
}
