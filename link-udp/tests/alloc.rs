//! The steady state allocates nothing per datagram: counted with a global
//! allocator around a send/receive loop on loopback. (One test in this
//! binary, so no other test allocates while it counts.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::UdpSocket;
use std::sync::atomic::{AtomicU64, Ordering};

use link_types::{Link, LinkRx, LinkTx, LinkTxPermit, WriteSlot};
use link_udp::{UdpConfig, UdpLink};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Send `rounds` batches of 64 datagrams a → b and receive them all.
async fn traffic<T: LinkTx, R: LinkRx>(tx: &mut T, rx: &mut R, rounds: usize, len: usize) -> usize {
    let mut received = 0;
    for _ in 0..rounds {
        for i in 0..64u8 {
            let mut slot = tx.reserve().await.unwrap().alloc(len).unwrap();
            slot.as_mut_slice().fill(i);
            slot.commit().unwrap();
        }
        tx.flush().await.unwrap();
        for _ in 0..64 {
            let m = rx.recv().await.unwrap().unwrap();
            received += usize::from(m.len() == len);
        }
    }
    received
}

// r[verify udp.recv.ring]
// r[verify udp.send.ring]
#[test]
fn steady_state_allocates_nothing_per_datagram() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for (gso, gro) in [(false, false), (true, true)] {
            let cfg = UdpConfig {
                gso,
                gro,
                ..UdpConfig::default()
            };
            let sa = UdpSocket::bind("127.0.0.1:0").unwrap();
            let sb = UdpSocket::bind("127.0.0.1:0").unwrap();
            let (aa, ba) = (sa.local_addr().unwrap(), sb.local_addr().unwrap());
            let a = UdpLink::from_std(sa, ba, &cfg).unwrap();
            let b = UdpLink::from_std(sb, aa, &cfg).unwrap();
            let ((mut tx, _arx), (_btx, mut rx)) = (a.split(), b.split());
            // Warm-up: rings, tokio's registration, lazily built state.
            assert_eq!(traffic(&mut tx, &mut rx, 50, 1200).await, 50 * 64);
            let before = ALLOCS.load(Ordering::Relaxed);
            let n = traffic(&mut tx, &mut rx, 300, 1200).await;
            let allocs = ALLOCS.load(Ordering::Relaxed) - before;
            assert_eq!(n, 300 * 64);
            assert_eq!(
                allocs, 0,
                "gso={gso} gro={gro}: {allocs} allocations for {n} datagrams"
            );
        }
    });
}
