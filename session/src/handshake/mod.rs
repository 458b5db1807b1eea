//! The handshake (`session.handshake.*`): what the two ends say, how the
//! host keeps a flood of forged Hellos cheap, and how they agree the
//! session's parameters.
//!
//! Client → `Hello` (versions, its random, encryption wanted, its largest
//! acceptable frame, its link's maximum payload); host → `Welcome` (the
//! agreed parameters, its random, and when encrypting a confirmation value
//! that proves it holds the pre-shared key, bound to every parameter) or
//! `Reject` (a reason code and text); client → `Finish`, sealed with the new
//! keys when encrypting, which proves the client holds the key too. Hello is
//! resent until a Welcome or Reject arrives, Welcome until a Finish arrives.
//!
//! - `messages`: the message bodies' codecs (Hello, Welcome and its
//!   [`Params`], Reject, Retry and the token a Hello carries).
//! - `gate`: [`RetryGate`], the stateless address validation a many-peer
//!   endpoint asks about a new source.
//! - `negotiate`: the host's choice of parameters for a Hello and the one
//!   check both ends run on them.
//! - `exchange`: the two ends' loops (`host_side`, which `Host::accept`
//!   runs, and `client_side`, which `Client::connect` runs): resends, the
//!   anti-amplification budget, keys, address validation.

mod exchange;
mod gate;
mod messages;
mod negotiate;

pub(crate) use exchange::{client_side, host_side};
// Beyond `RetryGate` and `Params`, for the workspace's tests, fuzzers and
// benchmarks (`internals`).
#[cfg_attr(not(feature = "internals"), allow(unused_imports))]
pub use gate::{RetryGate, TOKEN_LEN, TOKEN_PERIOD};
#[cfg_attr(not(feature = "internals"), allow(unused_imports))]
pub use messages::{
    HELLO_LEN, Hello, Params, Retry, TOKEN_MAX, WELCOME_LEN, Welcome, hello_token,
    hello_with_token, read_reject, reject_body,
};
