//! The two ends' handshake loops, one beside the other; `Host::accept` and
//! `Client::connect` run them and build the session from what they settle.

use link_types::{LinkCaps, LinkRx, LinkTx};
use web_time::Instant;

use crate::config::{ClientConfig, HostConfig};
use crate::crypto::{Direction, Opener, Sealer, Secret, ct_eq, random};
use crate::error::SessionError;
use crate::open::{Guard, with_deadline};
use crate::stats::{ClientCounters, HostCounters, add, set};
use crate::tx::TxState;
use crate::wire::{Kind, RANDOM_LEN, VERSION};

use super::messages::{
    Hello, Params, Retry, WELCOME_LEN, Welcome, hello_with_token, read_reject, reject_body,
};
use super::negotiate::{agree, check_welcome};

/// Retry messages the client follows in one handshake.
const MAX_RETRIES: u32 = 3;

/// Retransmission schedule of a handshake message: the first wait is
/// `first`, doubling to 1 s; on a reliable link one send waits the whole
/// time.
struct Backoff {
    interval: std::time::Duration,
    deadline: web_time::Instant,
    reliable: bool,
}

impl Backoff {
    fn new(first: std::time::Duration, deadline: web_time::Instant, reliable: bool) -> Self {
        Backoff {
            interval: first,
            deadline,
            reliable,
        }
    }

    /// Until when to wait for an answer after sending now.
    fn next_wait(&mut self) -> web_time::Instant {
        let until = if self.reliable {
            self.deadline
        } else {
            (web_time::Instant::now() + self.interval).min(self.deadline)
        };
        self.interval = (self.interval * 2).min(std::time::Duration::from_secs(1));
        until
    }
}

// r[impl session.handshake.amplification]
/// The host's anti-amplification budget before the client's address is
/// validated: it sends at most `factor` times the bytes it received.
#[derive(Debug, Clone, Copy)]
struct Budget {
    received: u64,
    sent: u64,
    factor: u64,
    /// No limit (stream links: their peer is validated by construction).
    unlimited: bool,
}

impl Budget {
    fn new(factor: u64, unlimited: bool) -> Self {
        Budget {
            received: 0,
            sent: 0,
            factor,
            unlimited,
        }
    }

    /// `n` bytes arrived from the client's address.
    fn received(&mut self, n: usize) {
        self.received += n as u64;
    }

    /// Bytes that may still be sent.
    fn room(&self) -> u64 {
        if self.unlimited {
            return u64::MAX;
        }
        (self.received * self.factor).saturating_sub(self.sent)
    }

    /// Take `n` bytes if the budget has them.
    fn spend(&mut self, n: usize) -> bool {
        if self.room() < n as u64 {
            return false;
        }
        self.sent += n as u64;
        true
    }
}

/// The host's side: wait for a Hello, agree the parameters (or Reject),
/// resend the Welcome within the amplification budget until the client's
/// Finish (or, encrypting, another authentic message) arrives. Sets the
/// keys on `txs` and `guard`, marks the link validated when the client
/// proved its address, and returns the agreed parameters.
pub(crate) async fn host_side<T: LinkTx, R: LinkRx>(
    txs: &mut TxState<T>,
    rx: &mut R,
    guard: &mut Guard,
    config: &HostConfig,
    caps: LinkCaps,
    stats: &HostCounters,
    deadline: Instant,
) -> Result<Params, SessionError> {
    let timeout = |stats: &HostCounters| SessionError::HandshakeTimeout {
        waited: config.handshake_timeout,
        auth_failures: stats.auth_failures.get(),
    };
    // Everything sent before the client's address is validated stays
    // within 3x what arrived from it (stream links: validated by
    // construction).
    let mut budget = Budget::new(3, caps.reliable);
    // Wait for a Hello.
    let hello = loop {
        let Some(r) = with_deadline(rx.recv(), deadline).await else {
            return Err(timeout(stats));
        };
        let Some(msg) = r? else {
            return Err(SessionError::ClosedDuringHandshake);
        };
        budget.received(msg.len());
        add(&stats.handshake_bytes_received, msg.len() as u64);
        match guard.open(msg.as_slice()) {
            Ok((Kind::Hello, _, body)) => match Hello::read(body) {
                Ok(h) => break h,
                Err(_) => add(&stats.malformed_dropped, 1),
            },
            Ok(_) => add(&stats.unexpected_dropped, 1),
            Err(d) => stats.count_drop(d),
        }
    };
    let params = match agree(&hello, config, caps) {
        Ok(p) => p,
        Err((reason, detail)) => {
            // The reason's text is cut to fit the budget.
            let room = budget.room().min(4096) as usize;
            let fixed = txs.wire_len(Kind::Reject, 2);
            let text = room.saturating_sub(fixed);
            let mut body = reject_body(reason, &detail);
            if body.len() > 2 + text {
                body = reject_body(reason, &detail[..floor_char(&detail, text)]);
            }
            let wire = txs.wire_len(Kind::Reject, body.len());
            if budget.spend(wire) {
                txs.send(
                    Kind::Reject,
                    body.len(),
                    |b| b.copy_from_slice(&body),
                    &stats.messages_sent,
                )
                .await?;
                txs.tx.flush().await?;
                add(&stats.handshake_bytes_sent, wire as u64);
            } else {
                add(&stats.amplification_held, 1);
            }
            return Err(SessionError::Rejected { reason, detail });
        }
    };
    let mut host_random = [0u8; RANDOM_LEN];
    random(&mut host_random).map_err(SessionError::Random)?;
    let mut welcome = Welcome {
        client_random: hello.random,
        host_random,
        params,
        confirm: [0; 16],
    };
    if let Some(psk) = &config.psk {
        let secret = Secret::derive(psk, &hello.random, &host_random);
        welcome.confirm = secret.confirm(b"host", &welcome.signed_part());
        txs.sealer = Some(Sealer::new(
            secret.clone(),
            Direction::HostToClient,
            params.rekey_shift,
        ));
        guard.opener = Some(Opener::new(
            secret,
            Direction::ClientToHost,
            params.rekey_shift,
        ));
    }
    let welcome = welcome.to_bytes();
    let welcome_wire = txs.wire_len(Kind::Welcome, WELCOME_LEN);
    let encrypted = config.psk.is_some();
    let mut backoff = Backoff::new(config.retransmit, deadline, caps.reliable);
    // Whether the client proved its address (it received our Welcome).
    let validated = 'hs: loop {
        // r[impl session.handshake.amplification]
        let until = if budget.spend(welcome_wire) {
            txs.send(
                Kind::Welcome,
                WELCOME_LEN,
                |b| b.copy_from_slice(&welcome),
                &stats.messages_sent,
            )
            .await?;
            txs.tx.flush().await?;
            add(&stats.handshake_bytes_sent, welcome_wire as u64);
            backoff.next_wait()
        } else {
            // Over budget: wait for more bytes from the client (its
            // Hello resends) rather than resend on a timer.
            add(&stats.amplification_held, 1);
            deadline
        };
        loop {
            let Some(r) = with_deadline(rx.recv(), until).await else {
                if Instant::now() >= deadline {
                    return Err(timeout(stats));
                }
                continue 'hs;
            };
            let Some(msg) = r? else {
                return Err(SessionError::ClosedDuringHandshake);
            };
            budget.received(msg.len());
            add(&stats.handshake_bytes_received, msg.len() as u64);
            match guard.open(msg.as_slice()) {
                // The client did not hear the Welcome: answer at once.
                Ok((Kind::Hello, _, body)) => {
                    if Hello::read(body).is_ok_and(|h| h.random == hello.random) {
                        continue 'hs;
                    }
                    add(&stats.unexpected_dropped, 1);
                }
                // r[impl session.handshake.validation]
                // A Finish proves the address when it is authentic
                // (encrypting: sealed with keys only our Welcome's
                // random gives) or echoes our random (in the clear).
                Ok((Kind::Finish, _, body)) => {
                    break 'hs encrypted || ct_eq(body, &host_random);
                }
                // Anything authentic after the Finish: proof when
                // encrypting. In the clear it proves nothing, so the
                // Welcome is resent (the client answers with a Finish).
                Ok((Kind::Feedback | Kind::Input | Kind::Arrivals, _, _)) => {
                    if encrypted {
                        break 'hs true;
                    }
                    continue 'hs;
                }
                Ok(_) => add(&stats.unexpected_dropped, 1),
                Err(d) => stats.count_drop(d),
            }
        }
    };
    if validated {
        set(&stats.address_validated, 1);
        txs.tx.mark_validated();
    }
    Ok(params)
}

/// The client's side: send the Hello (again on a timer on lossy links,
/// with the host's token after a Retry) until a Welcome or Reject arrives,
/// check the Welcome's parameters and confirmation, set the keys on `txs`
/// and `guard`, and send the Finish. Returns the agreed parameters and the
/// host's random.
pub(crate) async fn client_side<T: LinkTx, R: LinkRx>(
    txs: &mut TxState<T>,
    rx: &mut R,
    guard: &mut Guard,
    config: &ClientConfig,
    caps: LinkCaps,
    stats: &ClientCounters,
) -> Result<(Params, [u8; RANDOM_LEN]), SessionError> {
    let mut client_random = [0u8; RANDOM_LEN];
    random(&mut client_random).map_err(SessionError::Random)?;
    let hello = Hello {
        min_version: VERSION,
        max_version: VERSION,
        random: client_random,
        encryption: config.psk.is_some(),
        max_frame: config.max_frame as u32,
        max_message: caps.max_payload.min(u32::MAX as usize) as u32,
    }
    .to_bytes();
    let start = Instant::now();
    let deadline = start + config.handshake_timeout;
    let mut backoff = Backoff::new(config.retransmit, deadline, caps.reliable);
    // The Hello as sent: with the host's retry token once it asked.
    let mut sent_hello = hello.clone();
    let mut retries = 0;
    let welcome = 'hs: loop {
        txs.send(
            Kind::Hello,
            sent_hello.len(),
            |b| b.copy_from_slice(&sent_hello),
            &stats.messages_sent,
        )
        .await?;
        txs.tx.flush().await?;
        let until = backoff.next_wait();
        loop {
            let Some(r) = with_deadline(rx.recv(), until).await else {
                if Instant::now() >= deadline {
                    return Err(SessionError::HandshakeTimeout {
                        waited: config.handshake_timeout,
                        auth_failures: stats.auth_failures.get(),
                    });
                }
                continue 'hs;
            };
            let Some(msg) = r? else {
                return Err(SessionError::ClosedDuringHandshake);
            };
            let (kind, body) = match guard.open(msg.as_slice()) {
                Ok((k, _, b)) => (k, b.to_vec()),
                Err(d) => {
                    stats.count_drop(d);
                    continue;
                }
            };
            match kind {
                Kind::Welcome => match Welcome::read(&body) {
                    Ok(w) if w.client_random == client_random => break 'hs w,
                    Ok(_) => add(&stats.unexpected_dropped, 1),
                    Err(_) => add(&stats.malformed_dropped, 1),
                },
                Kind::Reject => match read_reject(&body) {
                    Ok((reason, detail)) => {
                        return Err(SessionError::Rejected { reason, detail });
                    }
                    Err(_) => add(&stats.malformed_dropped, 1),
                },
                // r[impl session.handshake.retry]
                // The host wants proof of address: resend the Hello
                // with its token at once (a few times at most, so a
                // forged stream of Retries cannot keep us busy).
                Kind::Retry => match Retry::read(&body) {
                    Ok(r) if r.client_random == client_random && retries < MAX_RETRIES => {
                        retries += 1;
                        add(&stats.retries_followed, 1);
                        sent_hello = hello_with_token(&hello, &r.token);
                        continue 'hs;
                    }
                    Ok(_) => add(&stats.unexpected_dropped, 1),
                    Err(_) => add(&stats.malformed_dropped, 1),
                },
                _ => add(&stats.unexpected_dropped, 1),
            }
        }
    };
    check_welcome(&welcome, config, caps)?;
    let p = welcome.params;
    if let Some(psk) = &config.psk {
        let secret = Secret::derive(psk, &client_random, &welcome.host_random);
        let expect = secret.confirm(b"host", &welcome.signed_part());
        if !ct_eq(&expect, &welcome.confirm) {
            return Err(SessionError::AuthFailed);
        }
        txs.sealer = Some(Sealer::new(
            secret.clone(),
            Direction::ClientToHost,
            p.rekey_shift,
        ));
        guard.opener = Some(Opener::new(secret, Direction::HostToClient, p.rekey_shift));
    }
    // r[impl session.handshake.validation]
    // The Finish echoes the host's random: proof that we received the
    // Welcome at our address.
    let host_random = welcome.host_random;
    txs.send(
        Kind::Finish,
        RANDOM_LEN,
        |b| b.copy_from_slice(&host_random),
        &stats.messages_sent,
    )
    .await?;
    txs.tx.flush().await?;
    Ok((p, host_random))
}

/// The longest prefix of `s` of at most `n` bytes that ends on a char boundary.
fn floor_char(s: &str, n: usize) -> usize {
    let mut cut = n.min(s.len());
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    // r[verify session.handshake.amplification]
    #[test]
    fn the_budget_is_three_times_what_arrived() {
        let mut b = Budget::new(3, false);
        assert!(!b.spend(1), "nothing received, nothing sent");
        b.received(53);
        assert!(b.spend(109));
        assert!(!b.spend(109), "a second Welcome needs a second Hello");
        assert_eq!(b.room(), 50);
        b.received(53);
        assert!(b.spend(109));
        let mut s = Budget::new(3, true);
        assert!(s.spend(1 << 20), "stream links are exempt");
    }
}
