//! The receiving side's pieces shared by host and client (and their
//! handshakes): a receive with a deadline, and the checks of every message
//! (outer header, replay window, authentication).

use std::future::Future;
use std::pin::pin;

use futures::future::{Either, select};
use futures_timer::Delay;
use web_time::Instant;

use crate::crypto::{Opener, Replay, ReplayWindow};
use crate::wire::{Kind, OUTER_LEN, TAG_LEN, read_outer};

/// Wait for `fut` until `until`; `None` on timeout.
pub(crate) async fn with_deadline<F: Future>(fut: F, until: Instant) -> Option<F::Output> {
    let wait = until.saturating_duration_since(Instant::now());
    match select(pin!(fut), Delay::new(wait)).await {
        Either::Left((v, _)) => Some(v),
        Either::Right(_) => None,
    }
}

/// Why a received message was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dropped {
    Malformed,
    Auth,
    Replay,
}

pub(crate) struct Guard {
    pub(crate) opener: Option<Opener>,
    replay: ReplayWindow,
    scratch: Vec<u8>,
    /// Distinct packet numbers accepted, and the highest, for loss estimates.
    pub(crate) accepted: u64,
    pub(crate) highest: Option<u64>,
}

impl Guard {
    pub(crate) fn new() -> Self {
        Guard {
            opener: None,
            replay: ReplayWindow::default(),
            scratch: Vec::new(),
            accepted: 0,
            highest: None,
        }
    }

    // r[impl session.crypto.drop]
    /// Check and (when encrypting) decrypt one message. Handshake messages
    /// pass unopened; everything else must be fresh and, when encrypting,
    /// authentic. Returns the kind, packet number and plaintext body.
    pub(crate) fn open<'a>(&'a mut self, msg: &'a [u8]) -> Result<(Kind, u64, &'a [u8]), Dropped> {
        let outer = read_outer(msg).map_err(|_| Dropped::Malformed)?;
        if outer.kind.is_handshake() {
            return Ok((outer.kind, 0, &msg[OUTER_LEN..]));
        }
        if self.replay.check(outer.pn) != Replay::Fresh {
            return Err(Dropped::Replay);
        }
        let body: &[u8] = match &mut self.opener {
            None => &msg[OUTER_LEN..],
            Some(o) => {
                if msg.len() < OUTER_LEN + TAG_LEN {
                    return Err(Dropped::Malformed);
                }
                let (head, rest) = msg.split_at(OUTER_LEN);
                let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
                self.scratch.clear();
                self.scratch.extend_from_slice(ct);
                if !o.open(outer.pn, head, &mut self.scratch, tag) {
                    return Err(Dropped::Auth);
                }
                &self.scratch
            }
        };
        self.replay.accept(outer.pn);
        self.accepted += 1;
        self.highest = Some(self.highest.map_or(outer.pn, |h| h.max(outer.pn)));
        Ok((outer.kind, outer.pn, body))
    }
}
