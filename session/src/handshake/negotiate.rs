//! Parameter negotiation: the host's choice for a Hello, and the one check
//! of agreed parameters both ends run.

use link_types::LinkCaps;

use crate::config::{AUTO_RS16_ABOVE, ClientConfig, HostConfig};
use crate::error::{RejectReason, SessionError};
use crate::wire::{FRAME_HEADER_LEN, OUTER_LEN, SHARD_HEADER_LEN, TAG_LEN, VERSION};

use super::messages::{Hello, Params, Welcome};

/// What one end accepts of agreed parameters: whether the client encrypts,
/// the largest frame the client accepts, and the largest message and kind
/// of the link they travel on.
struct Limits {
    encryption: bool,
    max_frame: usize,
    max_payload: usize,
    stream: bool,
}

fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

/// The one check of agreed parameters, the same on both ends: the host
/// runs it before it sends them (its refusal becomes a Reject with the
/// reason), the client on the Welcome it received.
fn check_params(p: &Params, l: &Limits) -> Result<(), (RejectReason, String)> {
    use RejectReason::*;
    if p.version != VERSION {
        return Err((
            Version,
            format!("wire version {}, this end speaks {VERSION}", p.version),
        ));
    }
    if p.encryption != l.encryption {
        return Err((
            Encryption,
            format!(
                "host encryption {}, client {}",
                on_off(p.encryption),
                on_off(l.encryption)
            ),
        ));
    }
    if p.max_frame as usize > l.max_frame {
        return Err((
            MaxFrame,
            format!(
                "host frames up to {} bytes, client accepts {}",
                p.max_frame, l.max_frame
            ),
        ));
    }
    let m = p.max_message as usize;
    let tag = if p.encryption { TAG_LEN } else { 0 };
    if m > l.max_payload {
        return Err((
            ShardSize,
            format!("messages of {m} bytes exceed the link's {}", l.max_payload),
        ));
    }
    if m < crate::wire::MIN_MESSAGE {
        return Err((
            ShardSize,
            format!(
                "messages of {m} bytes; a session needs {}",
                crate::wire::MIN_MESSAGE
            ),
        ));
    }
    if p.stream {
        if !l.stream {
            return Err((
                ShardSize,
                "frames sent whole need a stream link; this link is lossy".into(),
            ));
        }
        if m <= OUTER_LEN + FRAME_HEADER_LEN + tag {
            return Err((
                ShardSize,
                format!("messages of {m} bytes are too small for a frame part"),
            ));
        }
    } else {
        let s = p.shard_size as usize;
        if s < 64 || !s.is_multiple_of(2) || OUTER_LEN + SHARD_HEADER_LEN + s + tag > m {
            return Err((
                ShardSize,
                format!(
                    "shard size {s} in messages of {m} bytes (at least 64, even, and it must fit)"
                ),
            ));
        }
    }
    Ok(())
}

// r[impl session.handshake.host]
/// The host's answer to a Hello: the parameters it runs, or why not.
pub(super) fn agree(
    hello: &Hello,
    config: &HostConfig,
    caps: LinkCaps,
) -> Result<Params, (RejectReason, String)> {
    if !hello.speaks_ours() {
        return Err((
            RejectReason::Version,
            format!(
                "host speaks version {VERSION}, client {}..={}",
                hello.min_version, hello.max_version
            ),
        ));
    }
    let max_payload = caps
        .max_payload
        .min(hello.max_message as usize)
        .min(u32::MAX as usize);
    let tag = if config.psk.is_some() { TAG_LEN } else { 0 };
    let stream = caps.is_stream();
    let shard_size = if stream {
        0
    } else {
        let room = max_payload.saturating_sub(OUTER_LEN + SHARD_HEADER_LEN + tag);
        config.shard_size.min(room) & !1
    };
    let p = Params {
        version: VERSION,
        encryption: config.psk.is_some(),
        stream,
        fec: config.fec,
        auto_threshold: AUTO_RS16_ABOVE as u16,
        shard_size: shard_size as u16,
        max_frame: config.max_frame as u32,
        max_message: max_payload as u32,
        parity_pct: config.parity_pct,
        min_parity: config.min_parity,
        rekey_shift: config.rekey_shift,
    };
    check_params(
        &p,
        &Limits {
            encryption: hello.encryption,
            max_frame: hello.max_frame as usize,
            max_payload,
            stream,
        },
    )?;
    Ok(p)
}

// r[impl session.handshake.client]
/// The client's check of a Welcome: the same check as the host's, and the
/// ranges the host's own configuration guarantees.
pub(super) fn check_welcome(
    w: &Welcome,
    config: &ClientConfig,
    caps: LinkCaps,
) -> Result<(), SessionError> {
    let p = &w.params;
    let limits = Limits {
        encryption: config.psk.is_some(),
        max_frame: config.max_frame,
        max_payload: caps.max_payload,
        stream: caps.is_stream(),
    };
    check_params(p, &limits).map_err(|(_, detail)| SessionError::Incompatible(detail))?;
    if p.parity_pct > 100
        || p.min_parity as usize > crate::fec::MAX_MIN_PARITY
        || !(10..=40).contains(&p.rekey_shift)
    {
        return Err(SessionError::Incompatible(
            "parity or rekey parameters out of range".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::RANDOM_LEN;

    // r[verify session.handshake.host]
    // r[verify session.handshake.client]
    /// Both ends run one parameter check: what the host agrees the client
    /// accepts, and each parameter the client cannot run is refused with
    /// the same wording the host's Reject would carry.
    #[test]
    fn the_host_and_the_client_check_parameters_alike() {
        let caps = LinkCaps::datagram(1472);
        let hello = Hello {
            min_version: VERSION,
            max_version: VERSION,
            random: [1; RANDOM_LEN],
            encryption: true,
            max_frame: 1 << 20,
            max_message: 1472,
        };
        let host = HostConfig {
            psk: Some(vec![7; 32]),
            max_frame: 1 << 20,
            ..Default::default()
        };
        let client = ClientConfig {
            psk: Some(vec![7; 32]),
            max_frame: 1 << 20,
            ..Default::default()
        };
        let p = agree(&hello, &host, caps).expect("agreed");
        let welcome = |p: Params| Welcome {
            client_random: [1; RANDOM_LEN],
            host_random: [2; RANDOM_LEN],
            params: p,
            confirm: [0; 16],
        };
        check_welcome(&welcome(p), &client, caps).expect("the client runs what the host agreed");
        let refused =
            |q: Params, c: &ClientConfig, caps: LinkCaps| match check_welcome(&welcome(q), c, caps)
            {
                Err(SessionError::Incompatible(s)) => s,
                other => panic!("expected Incompatible, got {other:?}"),
            };
        assert!(refused(Params { version: 9, ..p }, &client, caps).contains("version 9"));
        assert!(refused(p, &ClientConfig::default(), caps).contains("encryption on, client off"));
        let small = ClientConfig {
            max_frame: 1000,
            ..client.clone()
        };
        let host_said = agree(
            &Hello {
                max_frame: 1000,
                ..hello.clone()
            },
            &host,
            caps,
        )
        .unwrap_err();
        assert_eq!(host_said.0, RejectReason::MaxFrame);
        assert_eq!(
            refused(p, &small, caps),
            host_said.1,
            "one check, one wording"
        );
        for shard_size in [62, 65, 1460] {
            let s = refused(Params { shard_size, ..p }, &client, caps);
            assert!(s.contains("shard size"), "{shard_size}: {s}");
        }
        assert!(refused(Params { stream: true, ..p }, &client, caps).contains("stream link"));
        assert!(refused(p, &client, LinkCaps::datagram(1200)).contains("exceed the link"));
        assert!(
            refused(
                Params {
                    rekey_shift: 50,
                    ..p
                },
                &client,
                caps
            )
            .contains("rekey")
        );
    }
}
