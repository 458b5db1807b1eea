//! Seed corpora from real traffic: a real `Host` and a real `Client` of
//! `link-session` run a session (frames of several sizes, input events,
//! Bye) through a relay that records every message, once per link kind
//! (stream, lossy) and FEC variant; the recorded messages are written in
//! each target's input format under `corpus/<target>/`. The shared-memory
//! seeds are a real segment's offer and ring.
//!
//! Run from `fuzz/`: `cargo run --bin gen_corpus` (stable is enough).

use std::path::Path;

use futures::executor::block_on;
use link_session::wire::{Kind, OUTER_LEN};
use link_session::{Client, FrameFlags, Host, InputEvent};
use link_types::{Link, LinkRx, LinkTx, LinkTxPermit, WriteSlot};
use linkstream_fuzz::{client_config, encode, host_config, mode};

async fn forward<R: LinkRx, T: LinkTx>(mut rx: R, mut tx: T, log: &mut Vec<Vec<u8>>) {
    while let Ok(Some(m)) = rx.recv().await {
        let b = m.as_slice().to_vec();
        let Ok(p) = tx.reserve().await else { break };
        let Ok(mut s) = p.alloc(b.len()) else { break };
        s.as_mut_slice().copy_from_slice(&b);
        if s.commit().is_err() {
            break;
        }
        let _ = tx.flush().await;
        log.push(b);
    }
    let _ = tx.close().await;
}

/// One session; returns (host -> client, client -> host) messages.
fn session(lossy: bool, rs16: bool) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let (host_end, relay_h) = linkstream_fuzz::test_link_pair(lossy);
    let (relay_c, client_end) = linkstream_fuzz::test_link_pair(lossy);
    let (mut down, mut up) = (Vec::new(), Vec::new());
    let (htx, hrx) = relay_h.split();
    let (ctx, crx) = relay_c.split();
    let relay = futures::future::join(forward(hrx, ctx, &mut down), forward(crx, htx, &mut up));
    let host = async {
        let mut config = host_config(false, false);
        if rs16 {
            config.fec = link_session::FecScheme::Rs16;
        }
        let (mut host, mut events) = Host::accept(host_end, config).await.expect("accept");
        let sender = async {
            for (i, len) in [40usize, 700, 3000, 9000].into_iter().enumerate() {
                let frame: Vec<u8> = (0..len).map(|k| (k * 7 + i) as u8).collect();
                let flags = if i == 0 {
                    FrameFlags::KEYFRAME
                } else {
                    FrameFlags::NONE
                };
                host.send_frame(&frame, i as u64 * 3000, flags)
                    .await
                    .expect("send frame");
            }
            host.close().await.expect("host close");
        };
        let receiver = async {
            let mut n = 0;
            while let Some(_ev) = events.next_event().await.expect("host events") {
                n += 1;
            }
            n
        };
        futures::future::join(sender, receiver).await
    };
    let client = async {
        let (mut client, mut input) = Client::connect(client_end, client_config(false))
            .await
            .expect("connect");
        for i in 0..4 {
            input
                .send_input(InputEvent::MouseMove { dx: i, dy: 1 })
                .await
                .expect("input");
        }
        input
            .send_input(InputEvent::Key {
                code: 4,
                down: true,
                mods: 0,
            })
            .await
            .expect("input");
        let mut frames = 0;
        while let Some(ev) = client.next_frame().await.expect("client") {
            if matches!(ev, link_session::ClientEvent::Frame(_)) {
                frames += 1;
            }
        }
        assert_eq!(frames, 4, "every frame arrives");
    };
    block_on(futures::future::join3(relay, host, client));
    (down, up)
}

fn write(dir: &Path, name: &str, data: &[u8]) {
    std::fs::create_dir_all(dir).expect("mkdir");
    std::fs::write(dir.join(name), data).expect("write seed");
}

fn kind(m: &[u8]) -> Option<u8> {
    m.get(1).copied()
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for (lossy, rs16, tag) in [
        (false, false, "stream"),
        (true, false, "lossy"),
        (true, true, "rs16"),
    ] {
        let (down, up) = session(lossy, rs16);
        println!(
            "{tag}: {} messages host -> client, {} client -> host",
            down.len(),
            up.len()
        );
        let hs = |m: &Vec<u8>| {
            kind(m).is_some_and(|k| {
                k == Kind::Hello as u8 || k == Kind::Welcome as u8 || k == Kind::Reject as u8
            })
        };
        let down_post: Vec<Vec<u8>> = down.iter().filter(|m| !hs(m)).cloned().collect();
        let up_post: Vec<Vec<u8>> = up.iter().filter(|m| !hs(m)).cloned().collect();
        let base = if lossy { mode::LOSSY } else { 0 };
        let variant = if rs16 { mode::VARIANT } else { 0 };
        for extra in [0, mode::ENCRYPTED, mode::TRAFFIC] {
            let m = base | variant | extra;
            write(
                &root.join("client"),
                &format!("{tag}-{m:02x}"),
                &encode(m, &down_post),
            );
            write(
                &root.join("host"),
                &format!("{tag}-{m:02x}"),
                &encode(m, &up_post),
            );
        }
        // Handshake: the host's real answer to the client, and the client's
        // real opening to the host.
        let welcome: Vec<Vec<u8>> = down.iter().filter(|m| hs(m)).cloned().collect();
        let hello: Vec<Vec<u8>> = up.iter().take(2).cloned().collect();
        write(
            &root.join("handshake"),
            &format!("{tag}-welcome"),
            &encode(base | 0x20, &welcome),
        );
        write(
            &root.join("handshake"),
            &format!("{tag}-hello"),
            &encode(base | 0x10, &hello),
        );
        let reject = {
            let body = link_session::handshake::reject_body(
                link_session::RejectReason::Version,
                "host speaks version 1",
            );
            let mut m = vec![0u8; OUTER_LEN];
            link_session::wire::write_outer(&mut m, Kind::Reject, 0);
            m.extend_from_slice(&body);
            m
        };
        write(&root.join("handshake"), "reject", &encode(0, &[reject]));
        // Wire: each distinct kind's first message, whole and without the
        // outer header (where the shard and frame headers start).
        let mut seen = std::collections::BTreeSet::new();
        for m in down.iter().chain(up.iter()) {
            let k = kind(m).unwrap_or(0);
            if seen.insert(k) {
                let m = &m[..m.len().min(256)];
                write(&root.join("wire"), &format!("{tag}-kind{k}"), m);
                write(
                    &root.join("wire"),
                    &format!("{tag}-kind{k}-body"),
                    &m[OUTER_LEN..],
                );
            }
        }
    }
    write(
        &root.join("shm_offer"),
        "real",
        &link_shm::fuzzing::real_offer(),
    );
    // Rings: every number of pre-published messages, with a few word
    // writes at the start of the segment.
    for pre in 0..8u8 {
        let mut d = vec![pre];
        for (off, v) in [(0u16, 0u32), (4000, 1), (9000, 0xffff_ffff)] {
            d.extend_from_slice(&off.wrapping_mul(pre as u16 + 1).to_le_bytes());
            d.extend_from_slice(&v.to_le_bytes());
        }
        write(&root.join("shm_ring"), &format!("pre{pre}"), &d);
    }
    println!("corpus written under {}", root.display());
}
