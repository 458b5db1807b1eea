//! The sending half shared by a session's two handles: every message goes
//! through here, gets its packet number and, after the handshake, its seal.

use futures::FutureExt;
use link_types::{LinkTx, LinkTxPermit, WriteSlot};

use crate::SessionError;
use crate::crypto::{MAX_PN, Sealer};
use crate::stats::add;
use crate::wire::{Kind, OUTER_LEN, TAG_LEN, write_outer};

pub(crate) struct TxState<T> {
    pub(crate) tx: T,
    pub(crate) sealer: Option<Sealer>,
    pub(crate) pn: u64,
}

impl<T: LinkTx> TxState<T> {
    pub(crate) fn new(tx: T) -> Self {
        TxState {
            tx,
            sealer: None,
            pn: 0,
        }
    }

    /// Bytes a message with a body of `body` bytes takes on the link.
    pub(crate) fn wire_len(&self, kind: Kind, body: usize) -> usize {
        let tag = if self.sealer.is_some() && !kind.is_handshake() {
            TAG_LEN
        } else {
            0
        };
        OUTER_LEN + body + tag
    }

    /// Reserve (waiting for capacity), write and commit one message whose
    /// body `fill` writes.
    pub(crate) async fn send(
        &mut self,
        kind: Kind,
        body_len: usize,
        fill: impl FnOnce(&mut [u8]),
        sent: &link_types::Counter,
    ) -> Result<(), SessionError> {
        let len = self.wire_len(kind, body_len);
        let permit = self.tx.reserve().await?;
        let slot = permit.alloc(len)?;
        finish(&mut self.sealer, &mut self.pn, slot, kind, body_len, fill)?;
        add(sent, 1);
        Ok(())
    }

    /// Like [`send`](Self::send) but only if capacity is free now; `None`
    /// when the link is full (the caller keeps the message for later).
    pub(crate) fn try_send(
        &mut self,
        kind: Kind,
        body_len: usize,
        fill: impl FnOnce(&mut [u8]),
        sent: &link_types::Counter,
    ) -> Option<Result<(), SessionError>> {
        let len = self.wire_len(kind, body_len);
        let permit = match self.tx.reserve().now_or_never()? {
            Ok(p) => p,
            Err(e) => return Some(Err(e.into())),
        };
        let r = permit
            .alloc(len)
            .map_err(SessionError::from)
            .and_then(|slot| finish(&mut self.sealer, &mut self.pn, slot, kind, body_len, fill));
        if r.is_ok() {
            add(sent, 1);
        }
        Some(r)
    }

    /// Push out what a batching link queued, without waiting.
    pub(crate) fn try_flush(&mut self) -> Result<(), SessionError> {
        match self.tx.flush().now_or_never() {
            Some(Err(e)) => Err(e.into()),
            _ => Ok(()),
        }
    }
}

/// Send the `Bye` that ends a session: once on a stream link, three times
/// on a lossy one.
pub(crate) async fn send_bye<T: LinkTx>(
    tx: &mut TxState<T>,
    value: u32,
    stream: bool,
    sent: &link_types::Counter,
) -> Result<(), SessionError> {
    for _ in 0..if stream { 1 } else { 3 } {
        tx.send(
            Kind::Bye,
            4,
            |b| b.copy_from_slice(&crate::wire::u32_body(value)),
            sent,
        )
        .await?;
    }
    tx.tx.flush().await?;
    Ok(())
}

// r[impl session.wire.sealed]
fn finish<S: WriteSlot>(
    sealer: &mut Option<Sealer>,
    pn: &mut u64,
    mut slot: S,
    kind: Kind,
    body_len: usize,
    fill: impl FnOnce(&mut [u8]),
) -> Result<(), SessionError> {
    let handshake = kind.is_handshake();
    let number = if handshake { 0 } else { *pn };
    if !handshake && number >= MAX_PN {
        return Err(SessionError::CounterExhausted);
    }
    let buf = slot.as_mut_slice();
    write_outer(buf, kind, number);
    let (head, rest) = buf.split_at_mut(OUTER_LEN);
    let (body, tail) = rest.split_at_mut(body_len);
    fill(body);
    match sealer {
        Some(s) if !handshake => {
            let tag = s.seal(number, head, body);
            tail[..TAG_LEN].copy_from_slice(&tag);
        }
        _ => {}
    }
    slot.commit()?;
    if !handshake {
        *pn += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Direction, Opener, Secret};
    use link_types::{Link, LinkRx, MemoryConfig, memory_pair};

    // r[verify session.wire.sealed]
    #[test]
    fn sealed_messages_encrypt_the_body_and_number_each_message() {
        futures::executor::block_on(async {
            let (a, b) = memory_pair(MemoryConfig::default());
            let (tx, _) = a.split();
            let (_, mut rx) = b.split();
            let secret = Secret::derive(b"key", &[1; 32], &[2; 32]);
            let mut t = TxState::new(tx);
            t.sealer = Some(Sealer::new(secret.clone(), Direction::HostToClient, 23));
            let n = link_types::Counter::default();
            let body = *b"plain text body!";
            t.send(Kind::Hello, 4, |b| b.copy_from_slice(b"helo"), &n)
                .await
                .unwrap();
            for _ in 0..2 {
                t.send(Kind::Input, 16, |b| b.copy_from_slice(&body), &n)
                    .await
                    .unwrap();
            }
            // The handshake message: clear, packet number 0, no tag.
            let hello = rx.recv().await.unwrap().unwrap();
            assert_eq!(
                hello.as_slice(),
                &[1, 1, 0, 0, 0, 0, 0, 0, 0, 0, b'h', b'e', b'l', b'o']
            );
            let mut open = Opener::new(secret, Direction::HostToClient, 23);
            for pn in 0..2u64 {
                let m = rx.recv().await.unwrap().unwrap();
                let m = m.as_slice();
                assert_eq!(m.len(), OUTER_LEN + 16 + TAG_LEN);
                assert_eq!(m[2..10], pn.to_le_bytes(), "numbered from 0");
                let mut ct = m[OUTER_LEN..OUTER_LEN + 16].to_vec();
                assert_ne!(ct, body, "the body is encrypted");
                assert!(open.open(pn, &m[..OUTER_LEN], &mut ct, &m[OUTER_LEN + 16..]));
                assert_eq!(ct, body);
            }
            assert_eq!(n.get(), 3);
        });
    }

    // r[verify session.crypto.nonce]
    /// A direction stops before its packet number reaches 2^62: the last
    /// two numbers below it go out (sealed, keys changing by epoch as
    /// usual), the next send fails with `CounterExhausted` and puts
    /// nothing on the link, and so does every later one.
    #[test]
    fn packet_numbers_stop_before_2_pow_62() {
        futures::executor::block_on(async {
            let (a, b) = memory_pair(MemoryConfig::default());
            let (tx, _) = a.split();
            let (_, mut rx) = b.split();
            let secret = Secret::derive(b"key", &[1; 32], &[2; 32]);
            let mut t = TxState::new(tx);
            t.sealer = Some(Sealer::new(secret.clone(), Direction::HostToClient, 23));
            t.pn = MAX_PN - 2;
            let n = link_types::Counter::default();
            for _ in 0..2 {
                t.send(Kind::Input, 4, |b| b.copy_from_slice(b"last"), &n)
                    .await
                    .expect("numbers below 2^62 still go out");
            }
            for _ in 0..3 {
                match t
                    .send(Kind::Input, 4, |b| b.copy_from_slice(b"more"), &n)
                    .await
                {
                    Err(SessionError::CounterExhausted) => {}
                    other => panic!("packet number 2^62 gave {other:?}"),
                }
            }
            assert_eq!(t.pn, MAX_PN, "the counter stopped at 2^62");
            assert_eq!(n.get(), 2);
            let mut open = Opener::new(secret, Direction::HostToClient, 23);
            for pn in [MAX_PN - 2, MAX_PN - 1] {
                let m = rx.recv().await.unwrap().unwrap();
                let m = m.as_slice();
                assert_eq!(m[2..10], pn.to_le_bytes());
                let mut ct = m[OUTER_LEN..OUTER_LEN + 4].to_vec();
                assert!(open.open(pn, &m[..OUTER_LEN], &mut ct, &m[OUTER_LEN + 4..]));
                assert_eq!(ct, b"last");
            }
            use futures::FutureExt;
            assert!(
                rx.recv().now_or_never().is_none(),
                "a message went out at 2^62"
            );
        });
    }
}
