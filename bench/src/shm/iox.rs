//! iceoryx2, the shared-memory library a user would pick instead, in two
//! setups, both labelled in the results:
//! - **ours**: the setup of our comparison: subscriber buffer of
//!   `FRAME_SLOTS`, no safe overflow, `RetryUntilDelivered` publishers, a
//!   sample loaned and written on the critical path (as our link reserves
//!   and writes a slot there);
//! - **own**: as iceoryx2's own publish-subscribe benchmark runs it:
//!   history 0, subscriber buffer 1, safe overflow, one publisher and one
//!   subscriber per service, and the next sample loaned (and written) before
//!   waiting for the reply, so only `send` is on the critical path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::common::{FRAME, FRAME_SLOTS, Role, child_command, finish_graceful, read_all};
use crate::harness::pin;

/// Which iceoryx2 setup a case uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Setup {
    /// The setup of our comparison.
    Ours,
    /// iceoryx2's own benchmark's setup.
    Own,
}

static IOX_N: AtomicU64 = AtomicU64::new(0);

/// A service name unique to this run and sample.
fn iox_base() -> String {
    format!(
        "linkstream-bench/{}/{}",
        std::process::id(),
        IOX_N.fetch_add(1, Ordering::Relaxed)
    )
}

type IoxService = iceoryx2::service::port_factory::publish_subscribe::PortFactory<
    iceoryx2::service::ipc::Service,
    [u8],
    (),
>;

fn iox_node() -> iceoryx2::node::Node<iceoryx2::service::ipc::Service> {
    iceoryx2::node::NodeBuilder::new()
        .create::<iceoryx2::service::ipc::Service>()
        .expect("iceoryx2 node")
}

/// Wait until the other process has its ports on both services.
fn iox_wait_for_peer(out: &IoxService, back: &IoxService) {
    use iceoryx2::service::port_factory::PortFactory as _;
    let deadline = Instant::now() + Duration::from_secs(20);
    while out.dynamic_config().number_of_subscribers() == 0
        || back.dynamic_config().number_of_publishers() == 0
    {
        assert!(Instant::now() < deadline, "iceoryx2 peer did not appear");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Open (or create) a `[u8]` publish-subscribe service; both processes use
/// the same settings.
fn iox_service(
    node: &iceoryx2::node::Node<iceoryx2::service::ipc::Service>,
    name: &str,
    setup: Setup,
) -> IoxService {
    let name: iceoryx2::service::service_name::ServiceName = name.try_into().expect("service name");
    let builder = node.service_builder(&name).publish_subscribe::<[u8]>();
    let builder = match setup {
        Setup::Ours => builder
            .subscriber_max_buffer_size(FRAME_SLOTS)
            .enable_safe_overflow(false),
        Setup::Own => builder
            .max_publishers(1)
            .max_subscribers(1)
            .history_size(0)
            .subscriber_max_buffer_size(1)
            .enable_safe_overflow(true),
    };
    builder.open_or_create().expect("iceoryx2 service")
}

/// iceoryx2, 64 B round trips with polling subscribers, in `setup`;
/// one-way µs.
pub(super) fn latency(count: usize, setup: Setup) -> f64 {
    pin(0);
    let base = iox_base();
    let node = iox_node();
    let (out, back) = (
        iox_service(&node, &format!("{base}/out"), setup),
        iox_service(&node, &format!("{base}/back"), setup),
    );
    let publ = out.publisher_builder().initial_max_slice_len(64);
    let publ = match setup {
        Setup::Ours => publ.backpressure_strategy(
            iceoryx2::port::backpressure_strategy::BackpressureStrategy::RetryUntilDelivered,
        ),
        Setup::Own => publ,
    }
    .create()
    .expect("publisher");
    let sub = back.subscriber_builder().create().expect("subscriber");
    let role = match setup {
        Setup::Ours => Role::IoxEcho,
        Setup::Own => Role::IoxEchoOwn,
    };
    let child = child_command(role)
        .env("BENCH_IOX", &base)
        .spawn()
        .expect("spawn");
    iox_wait_for_peer(&out, &back);
    let wait_reply = || loop {
        if let Some(s) = sub.receive().expect("receive") {
            assert_eq!(s.payload().len(), 64);
            break;
        }
        std::hint::spin_loop();
    };
    let loan = |i: usize| {
        publ.loan_slice_uninit(64)
            .expect("loan")
            .write_from_fn(move |k| (k + i) as u8)
    };
    let us = match setup {
        Setup::Ours => {
            // Loan, write and send on the critical path.
            let rt = |i: usize| {
                loan(i).send().expect("send");
                wait_reply();
            };
            (0..count / 10).for_each(rt);
            let start = Instant::now();
            (0..count).for_each(rt);
            start.elapsed()
        }
        Setup::Own => {
            // Send the sample loaned last time, loan the next, then wait
            // (iceoryx2's benchmark loop).
            let mut next = Some(loan(0));
            let mut rt = |i: usize| {
                next.take().expect("a loaned sample").send().expect("send");
                next = Some(loan(i + 1));
                wait_reply();
            };
            (0..count / 10).for_each(&mut rt);
            let start = Instant::now();
            (0..count).for_each(&mut rt);
            // Give the last loaned sample back before the stop message.
            drop(next);
            start.elapsed()
        }
    };
    let us = us.as_secs_f64() / count as f64 / 2.0 * 1e6;
    let _ = publ
        .loan_slice_uninit(1)
        .map(|s| s.write_from_fn(|_| 0).send());
    finish_graceful(child);
    us
}

/// iceoryx2, 8 MiB frames written into loaned samples and read in full.
pub(super) fn frames(frames: usize) -> f64 {
    pin(0);
    let base = iox_base();
    let node = iox_node();
    let (out, back) = (
        iox_service(&node, &format!("{base}/out"), Setup::Ours),
        iox_service(&node, &format!("{base}/back"), Setup::Ours),
    );
    let publ = out
        .publisher_builder()
        .initial_max_slice_len(FRAME)
        .backpressure_strategy(
            iceoryx2::port::backpressure_strategy::BackpressureStrategy::RetryUntilDelivered,
        )
        .create()
        .expect("publisher");
    let sub = back.subscriber_builder().create().expect("subscriber");
    let child = child_command(Role::IoxSink)
        .env("BENCH_IOX", &base)
        .spawn()
        .expect("spawn");
    iox_wait_for_peer(&out, &back);
    let start = Instant::now();
    for i in 0..frames {
        publ.loan_slice_uninit(FRAME)
            .expect("loan")
            .write_from_fn(|_| i as u8)
            .send()
            .expect("send");
    }
    publ.loan_slice_uninit(8)
        .expect("loan")
        .write_from_fn(|_| 0)
        .send()
        .expect("send");
    loop {
        if let Some(s) = sub.receive().expect("receive") {
            assert_eq!(s.payload().len(), 8);
            break;
        }
        std::hint::spin_loop();
    }
    let gbs = (frames * FRAME) as f64 / start.elapsed().as_secs_f64() / 1e9;
    let _ = publ
        .loan_slice_uninit(1)
        .map(|s| s.write_from_fn(|_| 0).send());
    finish_graceful(child);
    gbs
}

pub(super) fn peer(sink: bool) {
    let base = std::env::var("BENCH_IOX").expect("service name");
    let node = iox_node();
    let (inbound, outbound) = (
        iox_service(&node, &format!("{base}/out"), Setup::Ours),
        iox_service(&node, &format!("{base}/back"), Setup::Ours),
    );
    let sub = inbound.subscriber_builder().create().expect("subscriber");
    let publ = outbound
        .publisher_builder()
        .initial_max_slice_len(64)
        .backpressure_strategy(
            iceoryx2::port::backpressure_strategy::BackpressureStrategy::RetryUntilDelivered,
        )
        .create()
        .expect("publisher");
    let mut sum = 0u64;
    loop {
        match sub.receive().expect("receive") {
            Some(sample) => {
                let p = sample.payload();
                if !sink {
                    if p.len() == 1 {
                        return;
                    }
                    publ.loan_slice_uninit(p.len())
                        .expect("loan")
                        .write_from_slice(p)
                        .send()
                        .expect("send");
                } else if p.len() == 1 {
                    return;
                } else if p.len() == 8 {
                    publ.loan_slice_uninit(8)
                        .expect("loan")
                        .write_from_slice(&sum.to_le_bytes())
                        .send()
                        .expect("send");
                } else {
                    sum = sum.wrapping_add(read_all(p));
                }
            }
            None => std::hint::spin_loop(),
        }
    }
}

/// The echo side as iceoryx2's own benchmark writes it: the reply sample is
/// loaned (and written) before the request is awaited.
pub(super) fn echo_own() {
    let base = std::env::var("BENCH_IOX").expect("service name");
    let node = iox_node();
    let (inbound, outbound) = (
        iox_service(&node, &format!("{base}/out"), Setup::Own),
        iox_service(&node, &format!("{base}/back"), Setup::Own),
    );
    let sub = inbound.subscriber_builder().create().expect("subscriber");
    let publ = outbound
        .publisher_builder()
        .initial_max_slice_len(64)
        .create()
        .expect("publisher");
    loop {
        let reply = publ
            .loan_slice_uninit(64)
            .expect("loan")
            .write_from_fn(|k| k as u8);
        let len = loop {
            if let Some(s) = sub.receive().expect("receive") {
                break s.payload().len();
            }
            std::hint::spin_loop();
        };
        if len == 1 {
            return;
        }
        reply.send().expect("send");
    }
}
