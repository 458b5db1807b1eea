#![cfg(not(target_arch = "wasm32"))]
//! The reliable conformance suite over native WebSocket links on loopback:
//! plain `ws://` and `wss://` with a certificate made for the test.

use link_tests::LinkFactory;
use link_ws::{ClientTls, TlsServer, WsConfig, WsLink, WsServer};

/// A fresh server per pair; the client end is `a`, the server end `b`.
struct Plain(WsConfig);

impl LinkFactory for Plain {
    type Link = WsLink;
    fn exact_capacity(&self) -> bool {
        false
    }
    async fn pair(&self) -> (WsLink, WsLink) {
        let mut server = WsServer::bind("127.0.0.1:0".parse().unwrap(), self.0.clone())
            .await
            .expect("bind");
        let url = format!("ws://{}/suite", server.local_addr());
        let (client, accepted) = tokio::join!(WsLink::connect(&url, &self.0), server.accept());
        (client.expect("connect"), accepted.expect("accept").link)
    }
}

/// The same over TLS: a self-signed certificate for `localhost`.
struct Tls {
    server: TlsServer,
    client: ClientTls,
}

impl Tls {
    fn new() -> Tls {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let (cert_pem, key_pem) = (cert.cert.pem(), cert.signing_key.serialize_pem());
        Tls {
            server: TlsServer::from_pem(cert_pem.as_bytes(), key_pem.as_bytes()).unwrap(),
            client: ClientTls::from_ca_pem(cert_pem.as_bytes()).unwrap(),
        }
    }
}

impl LinkFactory for Tls {
    type Link = WsLink;
    fn exact_capacity(&self) -> bool {
        false
    }
    async fn pair(&self) -> (WsLink, WsLink) {
        let config = WsConfig::default();
        let mut server = WsServer::bind_tls(
            "127.0.0.1:0".parse().unwrap(),
            config.clone(),
            self.server.clone(),
        )
        .await
        .expect("bind");
        let url = format!("wss://localhost:{}/suite", server.local_addr().port());
        let (client, accepted) = tokio::join!(
            WsLink::connect_with_tls(&url, &config, &self.client),
            server.accept()
        );
        (client.expect("connect"), accepted.expect("accept").link)
    }
}

mod plain {
    use super::*;
    link_tests::reliable_suite!(#[tokio::test], Plain(WsConfig::default()));
}

mod plain_small {
    use super::*;
    // A small maximum payload and queue: the limits are reached quickly.
    link_tests::reliable_suite!(
        #[tokio::test],
        Plain(WsConfig {
            max_payload: 4096,
            queue: 1,
            ..WsConfig::default()
        })
    );
}

mod tls {
    use super::*;
    link_tests::reliable_suite!(#[tokio::test], Tls::new());
}
