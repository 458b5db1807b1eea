//! The second process of the `shm` suite: `link-bench __shm-child <role>`,
//! pinned to CPU 1. One function per role; the parent names the role with
//! [`Role`], never with a bare string.

use std::time::Duration;

use link_shm::ShmLink;
use link_types::{Link, LinkRx, LinkTx, LinkTxPermit, WriteSlot};

use super::common::{Role, link_config, read_all, runtime};
use super::{iox, raw};
use crate::harness::pin;

/// The child side of every case.
pub fn child(name: &str) {
    let Some(role) = Role::from_name(name) else {
        eprintln!("link-bench: unknown shm child role `{name}`");
        std::process::exit(2);
    };
    pin(1);
    match role {
        Role::LinkEchoSpin => link_echo(true),
        Role::LinkEchoSleep => link_echo(false),
        Role::LinkSink => link_sink(),
        Role::IoxEcho => iox::peer(false),
        Role::IoxSink => iox::peer(true),
        Role::IoxEchoOwn => iox::echo_own(),
        Role::AtomicEcho => raw::atomic_echo(),
        Role::RingEcho => raw::ring_echo(),
        Role::PipeSink => raw::pipe_sink(),
        Role::EventfdEcho => raw::eventfd_echo(),
        Role::UdsEcho => raw::uds_echo(),
        Role::UdsSink => raw::uds_sink(),
    }
}

fn link_echo(spin: bool) {
    runtime().block_on(async {
        let spin = if spin {
            Duration::from_secs(1)
        } else {
            Duration::ZERO
        };
        let link = ShmLink::from_parent(&link_config(spin))
            .await
            .expect("join");
        let (mut tx, mut rx) = link.split();
        while let Ok(Some(m)) = rx.recv().await {
            let mut s = tx
                .reserve()
                .await
                .expect("reserve")
                .alloc(m.len())
                .expect("alloc");
            s.as_mut_slice().copy_from_slice(&m);
            s.commit().expect("commit");
        }
    })
}

fn link_sink() {
    runtime().block_on(async {
        let link = ShmLink::from_parent(&link_config(Duration::from_micros(50)))
            .await
            .expect("join");
        let (mut tx, mut rx) = link.split();
        let mut sum = 0u64;
        while let Ok(Some(m)) = rx.recv().await {
            if m.len() == 8 {
                // End marker: report what was read.
                let mut s = tx
                    .reserve()
                    .await
                    .expect("reserve")
                    .alloc(8)
                    .expect("alloc");
                s.as_mut_slice().copy_from_slice(&sum.to_le_bytes());
                s.commit().expect("commit");
            } else {
                sum = sum.wrapping_add(read_all(&m));
            }
        }
    })
}
