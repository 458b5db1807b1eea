//! The retry gate: stateless address validation for a many-peer endpoint.

use crate::crypto::{ct_eq, random};
use crate::wire::{Kind, OUTER_LEN, read_outer, write_outer};

use super::messages::{Hello, Retry, hello_token};

/// Bytes of a token made by [`RetryGate`]: its time bucket and a 16-byte MAC.
pub const TOKEN_LEN: usize = 4 + 16;

/// How long one key of a [`RetryGate`] mints tokens; a token stays valid
/// for this long to twice this long (the current and the previous key).
pub const TOKEN_PERIOD: std::time::Duration = std::time::Duration::from_secs(10);

struct TokenKeys {
    bucket: u64,
    current: [u8; 32],
    previous: [u8; 32],
}

// r[impl session.handshake.retry]
/// Stateless address validation for a many-peer endpoint (a
/// [`link_types::AdmissionGate`]): under load it answers a Hello from an
/// unknown source with a Retry message carrying a token, the MAC
/// (HMAC-SHA-256, truncated to 16 bytes) of the source address and a time
/// bucket under a random key that changes every 10 s (the previous key is
/// kept, so a token is valid for one to two periods); it keeps no state per
/// source. A Hello carrying a valid token is admitted with its address
/// validated.
pub struct RetryGate {
    keys: std::sync::Mutex<TokenKeys>,
    epoch: web_time::Instant,
    period: std::time::Duration,
}

impl RetryGate {
    /// A gate with fresh random keys rotating every 10 s
    /// (`handshake::TOKEN_PERIOD`).
    pub fn new() -> Result<RetryGate, getrandom::Error> {
        Self::with_period(TOKEN_PERIOD)
    }

    /// A gate whose keys rotate every `period` (at least 1 ms).
    pub fn with_period(period: std::time::Duration) -> Result<RetryGate, getrandom::Error> {
        let mut current = [0; 32];
        let mut previous = [0; 32];
        random(&mut current)?;
        random(&mut previous)?;
        Ok(RetryGate {
            keys: std::sync::Mutex::new(TokenKeys {
                bucket: 0,
                current,
                previous,
            }),
            epoch: web_time::Instant::now(),
            period: period.max(std::time::Duration::from_millis(1)),
        })
    }

    fn bucket_now(&self) -> u64 {
        (self.epoch.elapsed().as_nanos() / self.period.as_nanos()) as u64
    }

    /// The keys of the current and the previous bucket, rotated to `now`.
    fn keys(&self, now: u64) -> (u64, [u8; 32], [u8; 32]) {
        let mut k = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if now > k.bucket {
            let (mut a, mut b) = ([0; 32], [0; 32]);
            // Without randomness the old keys stay: tokens still verify,
            // they just live longer.
            if random(&mut a).is_ok() && random(&mut b).is_ok() {
                k.previous = if now == k.bucket + 1 { k.current } else { b };
                k.current = a;
            }
            k.bucket = now;
        }
        (k.bucket, k.current, k.previous)
    }

    fn mac(key: &[u8; 32], source: std::net::SocketAddr, bucket: u32) -> [u8; 16] {
        let mut data = Vec::with_capacity(1 + 16 + 2 + 4);
        match source.ip() {
            std::net::IpAddr::V4(a) => {
                data.push(4);
                data.extend_from_slice(&a.octets());
            }
            std::net::IpAddr::V6(a) => {
                data.push(6);
                data.extend_from_slice(&a.octets());
            }
        }
        data.extend_from_slice(&source.port().to_be_bytes());
        data.extend_from_slice(&bucket.to_le_bytes());
        let (prk, _) = hkdf::Hkdf::<sha2::Sha256>::extract(Some(key), &data);
        prk[..16].try_into().expect("16 of 32")
    }

    /// A token for `source`, valid now.
    pub fn token(&self, source: std::net::SocketAddr) -> [u8; TOKEN_LEN] {
        self.token_at(source, self.bucket_now())
    }

    fn token_at(&self, source: std::net::SocketAddr, now: u64) -> [u8; TOKEN_LEN] {
        let (bucket, current, _) = self.keys(now);
        let b = bucket as u32;
        let mut t = [0; TOKEN_LEN];
        t[..4].copy_from_slice(&b.to_le_bytes());
        t[4..].copy_from_slice(&Self::mac(&current, source, b));
        t
    }

    /// Whether `token` was made by this gate for `source` in the current or
    /// the previous bucket.
    pub fn verify(&self, source: std::net::SocketAddr, token: &[u8]) -> bool {
        self.verify_at(source, token, self.bucket_now())
    }

    fn verify_at(&self, source: std::net::SocketAddr, token: &[u8], now: u64) -> bool {
        if token.len() != TOKEN_LEN {
            return false;
        }
        let (bucket, current, previous) = self.keys(now);
        let b = u32::from_le_bytes(token[..4].try_into().expect("4"));
        let key = if b == bucket as u32 {
            current
        } else if bucket > 0 && b == (bucket - 1) as u32 {
            previous
        } else {
            return false;
        };
        ct_eq(&Self::mac(&key, source, b), &token[4..])
    }
}

impl link_types::AdmissionGate for RetryGate {
    fn admit(
        &self,
        source: std::net::SocketAddr,
        datagram: &[u8],
        demand_proof: bool,
        reply: &mut Vec<u8>,
    ) -> link_types::Admission {
        use link_types::Admission;
        let hello = read_outer(datagram)
            .ok()
            .filter(|o| o.kind == Kind::Hello)
            .and_then(|_| {
                let body = &datagram[OUTER_LEN..];
                Hello::read(body).ok().map(|h| (h, hello_token(body)))
            });
        let Some((hello, token)) = hello else {
            // Not a Hello: no handshake can start with it.
            return if demand_proof {
                Admission::Drop
            } else {
                Admission::Admit
            };
        };
        if token.is_some_and(|t| self.verify(source, t)) {
            return Admission::AdmitValidated;
        }
        if !demand_proof {
            return Admission::Admit;
        }
        let body = Retry {
            client_random: hello.random,
            token: self.token(source).to_vec(),
        }
        .to_bytes();
        reply.resize(OUTER_LEN, 0);
        write_outer(reply, Kind::Retry, 0);
        reply.extend_from_slice(&body);
        Admission::Reply
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{RANDOM_LEN, VERSION};
    use link_types::{Admission, AdmissionGate};

    use crate::handshake::messages::hello_with_token;

    fn hello_datagram(token: &[u8]) -> Vec<u8> {
        let h = Hello {
            min_version: VERSION,
            max_version: VERSION,
            random: [3; RANDOM_LEN],
            encryption: false,
            max_frame: 1 << 20,
            max_message: 1472,
        };
        let mut m = vec![0; OUTER_LEN];
        write_outer(&mut m, Kind::Hello, 0);
        m.extend_from_slice(&hello_with_token(&h.to_bytes(), token));
        m
    }

    // r[verify session.handshake.retry]
    #[test]
    fn tokens_bind_the_address_and_expire_after_two_periods() {
        let g = RetryGate::new().unwrap();
        let a: std::net::SocketAddr = "198.18.0.1:4000".parse().unwrap();
        let t = g.token_at(a, 5);
        assert!(g.verify_at(a, &t, 5));
        assert!(
            !g.verify_at("198.18.0.1:4001".parse().unwrap(), &t, 5),
            "other port"
        );
        assert!(
            !g.verify_at("198.18.0.2:4000".parse().unwrap(), &t, 5),
            "other address"
        );
        assert!(
            !g.verify_at("[::1]:4000".parse().unwrap(), &t, 5),
            "other family"
        );
        for i in 0..TOKEN_LEN {
            let mut bad = t;
            bad[i] ^= 1;
            assert!(!g.verify_at(a, &bad, 5), "byte {i} flipped");
        }
        assert!(!g.verify_at(a, &t[..TOKEN_LEN - 1], 5));
        // Another gate's keys do not verify it.
        let other = RetryGate::new().unwrap();
        assert!(!other.verify_at(a, &t, 5));
        // The previous key still verifies; two periods later it is gone
        // (the keys rotated: a new key for every bucket).
        assert!(g.verify_at(a, &t, 6), "one period later");
        let t6 = g.token_at(a, 6);
        assert_ne!(t6[4..], t[4..], "a new key each period");
        assert!(!g.verify_at(a, &t, 7), "two periods later");
        assert!(g.verify_at(a, &t6, 7));
        assert!(!g.verify_at(a, &t6, 9), "after a gap both keys are new");
        // Now-based tokens verify now.
        assert!(g.verify(a, &g.token(a)));
    }

    // r[verify session.handshake.retry]
    #[test]
    fn the_gate_answers_a_hello_with_a_small_retry_and_admits_the_token() {
        let g = RetryGate::new().unwrap();
        let a: std::net::SocketAddr = "198.18.0.9:5000".parse().unwrap();
        let hello = hello_datagram(&[]);
        let mut reply = Vec::new();
        assert_eq!(g.admit(a, &hello, false, &mut reply), Admission::Admit);
        assert!(reply.is_empty());
        assert_eq!(g.admit(a, &hello, true, &mut reply), Admission::Reply);
        assert!(
            reply.len() <= 3 * hello.len(),
            "{} for {}",
            reply.len(),
            hello.len()
        );
        assert_eq!(reply.len(), 63);
        let o = read_outer(&reply).unwrap();
        assert_eq!(o.kind, Kind::Retry);
        let r = Retry::read(&reply[OUTER_LEN..]).unwrap();
        assert_eq!(r.client_random, [3; RANDOM_LEN]);
        let with = hello_datagram(&r.token);
        let mut reply2 = Vec::new();
        assert_eq!(
            g.admit(a, &with, true, &mut reply2),
            Admission::AdmitValidated
        );
        assert!(reply2.is_empty());
        // From another address the token is worthless.
        let b: std::net::SocketAddr = "198.18.0.10:5000".parse().unwrap();
        assert_eq!(g.admit(b, &with, true, &mut reply2), Admission::Reply);
        assert_eq!(g.admit(b, &with, false, &mut Vec::new()), Admission::Admit);
        // Not a Hello: dropped under load, admitted otherwise.
        assert_eq!(g.admit(a, b"junk", true, &mut Vec::new()), Admission::Drop);
        assert_eq!(
            g.admit(a, b"junk", false, &mut Vec::new()),
            Admission::Admit
        );
    }
}
