//! The second process of the shared-memory tests.
//!
//! ```text
//! shm_peer relay <socket path>   connect twice and relay link 1 <-> link 2
//! shm_peer hold                  (spawned) send 3 messages, then wait forever
//! shm_peer scribble <seed>       (spawned) write random bytes over the segment
//! ```

use link_shm::{ShmConfig, ShmLink, ShmRx, ShmTx};
use link_types::{Link, LinkRx, LinkTx, LinkTxExt};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("relay") => {
            let path = args.get(2).expect("socket path");
            let config = ShmConfig::default();
            let l1 = ShmLink::connect(path, &config).await.expect("connect 1");
            let l2 = ShmLink::connect(path, &config).await.expect("connect 2");
            let (t1, r1) = l1.split();
            let (t2, r2) = l2.split();
            let a = tokio::spawn(relay(r1, t2));
            let b = tokio::spawn(relay(r2, t1));
            let _ = tokio::join!(a, b);
        }
        Some("hold") => {
            let link = ShmLink::from_parent(&ShmConfig::default())
                .await
                .expect("join");
            let (mut tx, _rx) = link.split();
            for i in 0..3u8 {
                tx.send(&[i; 100]).await.expect("send");
            }
            std::future::pending::<()>().await;
        }
        Some("scribble") => {
            let seed = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
            link_shm::hostile::scribble_from_parent(seed)
                .await
                .expect("scribble");
        }
        _ => {
            eprintln!("usage: shm_peer (relay <path> | hold | scribble <seed>)");
            std::process::exit(2);
        }
    }
}

/// Pass messages on; a close as a close, an error or a vanished receiver as
/// an abrupt end (dropping the half without closing it).
async fn relay(mut rx: ShmRx, mut tx: ShmTx) {
    loop {
        match rx.recv().await {
            Ok(Some(m)) => {
                if tx.send(&m).await.is_err() {
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
