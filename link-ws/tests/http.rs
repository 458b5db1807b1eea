#![cfg(not(target_arch = "wasm32"))]
//! Plain HTTP on the WebSocket port (`ws.http.routes`) and self-signed
//! certificates (`ws.tls.self-signed`).

use std::net::SocketAddr;
use std::time::Duration;

use link_types::{Link, LinkRx, LinkTx, LinkTxExt};
use link_ws::{ClientTls, HttpRoutes, ServerOptions, TlsServer, WsConfig, WsLink, WsServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const T: Duration = Duration::from_secs(10);

fn routes() -> HttpRoutes {
    HttpRoutes::new("/stream")
        .with("/", "text/html; charset=utf-8", &b"<!doctype html>page"[..])
        .with(
            "/assets/app.wasm",
            "application/wasm",
            vec![0u8, 97, 115, 109],
        )
}

/// Send `request` as is and read the whole response (the server closes).
async fn http(addr: SocketAddr, request: &str) -> (u16, String, Vec<u8>) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(T, tcp.read_to_end(&mut out))
        .await
        .expect("response in time")
        .unwrap();
    let end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head")
        + 4;
    let head = String::from_utf8(out[..end].to_vec()).unwrap();
    let status = head[9..12].parse().unwrap();
    (status, head, out[end..].to_vec())
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n")
}

// r[verify ws.http.routes]
/// With a route table, plain GETs are answered from it (404 otherwise, 405
/// for other methods), only the stream path is upgraded, and a link on it
/// works both ways; every answer is counted.
#[tokio::test]
async fn http_routes_and_stream_path_share_the_port() {
    let options = ServerOptions {
        tls: None,
        http: Some(routes()),
    };
    let mut s = WsServer::bind_with("127.0.0.1:0".parse().unwrap(), WsConfig::default(), options)
        .await
        .unwrap();
    let addr = s.local_addr();

    let (status, head, body) = http(addr, &get("/?x=1")).await;
    assert_eq!(status, 200, "{head}");
    assert!(
        head.contains("Content-Type: text/html; charset=utf-8\r\n"),
        "{head}"
    );
    assert!(head.contains("Content-Length: 19\r\n"), "{head}");
    assert_eq!(body, b"<!doctype html>page");

    let (status, head, body) = http(addr, &get("/assets/app.wasm")).await;
    assert_eq!(status, 200);
    assert!(
        head.contains("Content-Type: application/wasm\r\n"),
        "{head}"
    );
    assert_eq!(body, [0, 97, 115, 109]);

    let (status, head, body) = http(addr, "HEAD / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status, 200);
    assert!(head.contains("Content-Length: 19\r\n"), "{head}");
    assert!(body.is_empty(), "HEAD has no body");

    assert_eq!(http(addr, &get("/missing")).await.0, 404);
    // The stream path without an upgrade is not an asset.
    assert_eq!(http(addr, &get("/stream")).await.0, 404);
    assert_eq!(
        http(addr, "POST / HTTP/1.1\r\nHost: x\r\n\r\n").await.0,
        405
    );
    assert_eq!(http(addr, "\x01\x02 nonsense\r\n\r\n").await.0, 400);

    // An upgrade of another path is refused: the client's handshake fails.
    let cfg = WsConfig::default();
    let other = WsLink::connect(&format!("ws://{addr}/other"), &cfg).await;
    assert!(other.is_err(), "upgrade of /other must fail");

    // The stream path (with a query) becomes a link that works both ways.
    let url = format!("ws://{addr}/stream?v=1");
    let (client, accepted) = tokio::join!(WsLink::connect(&url, &cfg), async {
        tokio::time::timeout(T, s.accept()).await.unwrap()
    });
    let accepted = accepted.unwrap();
    assert_eq!(accepted.path, "/stream?v=1");
    let (mut ctx, mut crx) = client.unwrap().split();
    let (mut stx, mut srx) = accepted.link.split();
    let big = vec![7u8; 100_000];
    ctx.send(&big).await.unwrap();
    ctx.flush().await.unwrap();
    assert_eq!(srx.recv().await.unwrap().unwrap().as_slice(), &big[..]);
    stx.send(b"back").await.unwrap();
    stx.flush().await.unwrap();
    assert_eq!(crx.recv().await.unwrap().unwrap().as_slice(), b"back");

    let c = s.counts();
    assert_eq!((c.http_ok, c.http_refused, c.accepted), (3, 5, 1), "{c:?}");
}

/// A raw upgrade request for `/stream` with these extra headers.
fn upgrade(host: &str, origin: Option<&str>) -> String {
    let origin = origin.map_or(String::new(), |o| format!("Origin: {o}\r\n"));
    format!(
        "GET /stream HTTP/1.1\r\nHost: {host}\r\n{origin}Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// Send an upgrade request and read the status line of the answer.
async fn upgrade_status(addr: SocketAddr, request: &str) -> u16 {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut out = vec![0u8; 12];
    tokio::time::timeout(T, tcp.read_exact(&mut out))
        .await
        .expect("an answer in time")
        .unwrap();
    String::from_utf8_lossy(&out[9..12]).parse().unwrap()
}

// r[verify ws.http.origin]
/// Same-origin only: a browser's upgrade from another origin gets 403 and
/// is counted; the server's own origin (as `Host` names it), an origin
/// allowed besides, and a request without `Origin` (a native client) are
/// upgraded. Without the policy any origin is upgraded.
#[tokio::test]
async fn only_the_servers_own_origin_and_allowed_ones_are_upgraded() {
    let options = ServerOptions {
        tls: None,
        http: Some(routes().same_origin_only(vec!["https://viewer.example".into()])),
    };
    let mut s = WsServer::bind_with("127.0.0.1:0".parse().unwrap(), WsConfig::default(), options)
        .await
        .unwrap();
    let addr = s.local_addr();
    let host = addr.to_string();
    for origin in [
        "http://evil.example",
        "https://evil.example",
        &format!("http://{host}.evil.example"),
        &format!("ftp://{host}"),
        "null",
    ] {
        assert_eq!(
            upgrade_status(addr, &upgrade(&host, Some(origin))).await,
            403,
            "{origin}"
        );
    }
    for origin in [
        Some(format!("http://{host}")),
        Some(format!("HTTPS://{}", host.to_uppercase())),
        Some("https://viewer.example".to_string()),
        None,
    ] {
        assert_eq!(
            upgrade_status(addr, &upgrade(&host, origin.as_deref())).await,
            101,
            "{origin:?}"
        );
        tokio::time::timeout(T, s.accept()).await.unwrap().unwrap();
    }
    let c = s.counts();
    assert_eq!((c.origin_refused, c.accepted), (5, 4), "{c:?}");

    let mut open = WsServer::bind_with(
        "127.0.0.1:0".parse().unwrap(),
        WsConfig::default(),
        ServerOptions {
            tls: None,
            http: Some(routes()),
        },
    )
    .await
    .unwrap();
    let a = open.local_addr();
    let req = upgrade(&a.to_string(), Some("http://evil.example"));
    assert_eq!(upgrade_status(a, &req).await, 101);
    tokio::time::timeout(T, open.accept())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(open.counts().origin_refused, 0);
}

/// Without a route table every request is an upgrade, whatever its path
/// (the behaviour before routes existed).
#[tokio::test]
async fn without_routes_every_path_upgrades() {
    let mut s = WsServer::bind("127.0.0.1:0".parse().unwrap(), WsConfig::default())
        .await
        .unwrap();
    let addr = s.local_addr();
    let (url, cfg) = (format!("ws://{addr}/anything"), WsConfig::default());
    let (client, accepted) = tokio::join!(WsLink::connect(&url, &cfg), async {
        tokio::time::timeout(T, s.accept()).await.unwrap()
    });
    client.unwrap();
    assert_eq!(accepted.unwrap().path, "/anything");
}

/// An oversized request head is refused with 431 without reading on.
#[tokio::test]
async fn oversized_request_head_is_refused() {
    let options = ServerOptions {
        tls: None,
        http: Some(routes()),
    };
    let s = WsServer::bind_with("127.0.0.1:0".parse().unwrap(), WsConfig::default(), options)
        .await
        .unwrap();
    let long = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
    assert_eq!(http(s.local_addr(), &long).await.0, 431);
    assert_eq!(s.counts().http_refused, 1);
}

// r[verify ws.tls.self-signed]
/// A self-signed certificate: its fingerprints are SHA-256 of the DER
/// certificate and of the SubjectPublicKeyInfo inside it, and a client that
/// trusts it gets the page over https and a link over wss on one port.
#[tokio::test]
async fn self_signed_certificate_serves_https_and_wss() {
    use base64::Engine as _;
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let (server_tls, cert) = TlsServer::self_signed(&names).unwrap();
    assert!(cert.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(cert.key_pem.contains("PRIVATE KEY"));
    let sha = |b: &[u8]| ring::digest::digest(&ring::digest::SHA256, b);
    let hex: Vec<String> = sha(&cert.cert_der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    assert_eq!(cert.cert_sha256, hex.join(":"));
    // The SPKI is a DER SEQUENCE found verbatim inside the certificate.
    assert_eq!(cert.spki_der[0], 0x30);
    assert!(
        cert.cert_der
            .windows(cert.spki_der.len())
            .any(|w| w == &cert.spki_der[..])
    );
    let spki = base64::engine::general_purpose::STANDARD
        .decode(&cert.spki_sha256_base64)
        .unwrap();
    assert_eq!(spki, sha(&cert.spki_der).as_ref());
    // Two certificates made in a row differ.
    let (_, again) = TlsServer::self_signed(&names).unwrap();
    assert_ne!(again.spki_sha256_base64, cert.spki_sha256_base64);
    assert!(TlsServer::self_signed(&[]).is_err());

    let options = ServerOptions {
        tls: Some(server_tls),
        http: Some(routes()),
    };
    let mut s = WsServer::bind_with("127.0.0.1:0".parse().unwrap(), WsConfig::default(), options)
        .await
        .unwrap();
    let addr = s.local_addr();
    let trust = ClientTls::from_ca_pem(cert.cert_pem.as_bytes()).unwrap();

    // https GET through rustls, trusting only this certificate.
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(
            cert.cert_der.clone(),
        ))
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(get("/").as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(T, tls.read_to_end(&mut out))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.ends_with("<!doctype html>page"), "{text}");

    let (url, cfg) = (
        format!("wss://localhost:{}/stream", addr.port()),
        WsConfig::default(),
    );
    let (client, accepted) = tokio::join!(WsLink::connect_with_tls(&url, &cfg, &trust), async {
        tokio::time::timeout(T, s.accept()).await.unwrap()
    });
    let (mut ctx, _crx) = client.unwrap().split();
    let (_stx, mut srx) = accepted.unwrap().link.split();
    ctx.send(b"over wss").await.unwrap();
    ctx.flush().await.unwrap();
    assert_eq!(srx.recv().await.unwrap().unwrap().as_slice(), b"over wss");
}
