//! Helpers for the checks: timeouts, patterned messages, bulk send/receive.

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use futures::future::{Either, select};
use futures_timer::Delay;
use link_types::{Backing, LinkError, LinkRx, LinkTx, LinkTxPermit, WriteSlot};

/// How long any single step may take before the suite calls it a hang.
pub const HANG: Duration = Duration::from_secs(10);

/// Run `fut`, or give up after `d`.
pub async fn timeout<T>(d: Duration, fut: impl Future<Output = T>) -> Option<T> {
    match select(pin!(fut), Delay::new(d)).await {
        Either::Left((v, _)) => Some(v),
        Either::Right(_) => None,
    }
}

/// Run `fut`, panicking with `what` if it takes longer than [`HANG`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match timeout(HANG, fut).await {
        Some(v) => v,
        None => panic!("{what}: no progress within {HANG:?}"),
    }
}

/// Sleep without a runtime.
pub async fn sleep(d: Duration) {
    Delay::new(d).await
}

/// A message of `len` bytes that identifies itself: bytes 0..4 are `seq`,
/// bytes 4..8 the length, the rest a pattern derived from both. Shorter
/// messages hold a prefix of that.
pub fn pattern(seq: u32, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    fill_pattern(seq, &mut v);
    v
}

/// Write [`pattern`] into `buf`.
pub fn fill_pattern(seq: u32, buf: &mut [u8]) {
    let len = buf.len() as u32;
    let mut header = [0u8; 8];
    header[..4].copy_from_slice(&seq.to_le_bytes());
    header[4..].copy_from_slice(&len.to_le_bytes());
    let mut x = seq.wrapping_mul(0x9E37_79B9) ^ len;
    for (i, b) in buf.iter_mut().enumerate() {
        *b = if i < 8 {
            header[i]
        } else {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (x >> 24) as u8
        };
    }
}

/// If `bytes` is an intact [`pattern`] message of at least 8 bytes, its
/// sequence number.
pub fn check_pattern(bytes: &[u8]) -> Option<u32> {
    if bytes.len() < 8 {
        return None;
    }
    let seq = u32::from_le_bytes(bytes[..4].try_into().ok()?);
    (pattern(seq, bytes.len()) == bytes).then_some(seq)
}

/// Send one patterned message of `len` bytes.
pub async fn send_seq<T: LinkTx>(tx: &mut T, seq: u32, len: usize) -> Result<(), LinkError> {
    let permit = tx.reserve().await?;
    let mut slot = permit.alloc(len)?;
    fill_pattern(seq, slot.as_mut_slice());
    slot.commit()
}

/// Receive one message, panicking on a hang, an error or end-of-stream.
pub async fn recv_one<R: LinkRx>(rx: &mut R) -> Backing {
    match within("recv", rx.recv()).await {
        Ok(Some(b)) => b,
        Ok(None) => panic!("recv: unexpected end-of-stream"),
        Err(e) => panic!("recv: unexpected error: {e}"),
    }
}

/// How long the first message of a burst may take on a slow or loaded
/// machine before the suite calls it lost.
pub const FIRST: Duration = Duration::from_secs(5);

/// Receive until the link stays silent for `quiet` (lossy links), an end or
/// `limit` messages. The first message may take up to [`FIRST`]: a busy
/// machine (or valgrind) can delay it well beyond `quiet`.
pub async fn recv_until_quiet<R: LinkRx>(
    rx: &mut R,
    quiet: Duration,
    limit: usize,
) -> Vec<Backing> {
    let mut out = Vec::new();
    while out.len() < limit {
        let wait = if out.is_empty() {
            quiet.max(FIRST)
        } else {
            quiet
        };
        match timeout(wait, rx.recv()).await {
            Some(Ok(Some(b))) => out.push(b),
            Some(Ok(None)) | None => break,
            Some(Err(e)) => panic!("recv: unexpected error: {e}"),
        }
    }
    out
}

/// Commit patterned messages of `len` bytes until `reserve` stays pending
/// for `settle`; returns how many were sent. Panics if more than
/// `limit_bytes` go out without the link ever pushing back.
pub async fn fill_until_blocked<T: LinkTx>(
    tx: &mut T,
    len: usize,
    settle: Duration,
    limit_bytes: usize,
) -> u32 {
    let mut n = 0u32;
    loop {
        match timeout(settle, tx.reserve()).await {
            None => return n,
            Some(Err(e)) => panic!("reserve failed while filling: {e}"),
            Some(Ok(permit)) => {
                let mut slot = permit.alloc(len).expect("alloc within max payload");
                fill_pattern(n, slot.as_mut_slice());
                slot.commit().expect("commit");
                n += 1;
            }
        }
        assert!(
            (n as usize) * len <= limit_bytes,
            "{n} messages of {len} bytes sent and reserve never waited: no backpressure"
        );
    }
}
