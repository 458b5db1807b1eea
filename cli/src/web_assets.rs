//! The browser page, embedded: `index.html`, the wasm-bindgen JS glue and
//! the `.wasm` built from the `web/` crate by `build.rs`, served by
//! `linkstream host --ws` on the WebSocket port (`/` and `/assets/...`),
//! and the TLS setup for serving it over `https://`/`wss://`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use link_video::stream::{STREAM_PATH, psk_fragment};
use link_ws::{HttpRoutes, ServerOptions, TlsServer};

/// The page.
pub const INDEX_HTML: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/web/index.html"));
/// The wasm-bindgen JS glue.
pub const GLUE_JS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/web/linkstream_web.js"));
/// The page's code.
pub const WASM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/web/linkstream_web_bg.wasm"));

/// The route table: the page at `/` (and `/index.html`), its assets under
/// `/assets/`, `/stream` upgraded to WebSocket.
pub fn routes() -> HttpRoutes {
    let html = "text/html; charset=utf-8";
    HttpRoutes::new(STREAM_PATH)
        .with("/", html, INDEX_HTML)
        .with("/index.html", html, INDEX_HTML)
        .with(
            "/assets/linkstream_web.js",
            "text/javascript; charset=utf-8",
            GLUE_JS,
        )
        .with("/assets/linkstream_web_bg.wasm", "application/wasm", WASM)
}

/// How `--tls-cert/--tls-key` or `--self-signed` were given.
#[derive(Debug, Clone, Default)]
pub struct TlsChoice {
    /// PEM certificate chain.
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
    /// Make a certificate at start.
    pub self_signed: bool,
}

/// The server options for `--ws ADDR` (routes, and TLS if asked), and the
/// lines to print about the certificate.
pub fn server_options(
    tls: &TlsChoice,
    addr: SocketAddr,
) -> Result<(ServerOptions, Vec<String>), String> {
    let mut notes = Vec::new();
    let identity = match (&tls.cert, &tls.key, tls.self_signed) {
        (None, None, false) => None,
        (Some(cert), Some(key), false) => Some(
            TlsServer::from_pem_files(cert, key)
                .map_err(|e| format!("--tls-cert/--tls-key: {e}"))?,
        ),
        (None, None, true) => {
            let names = certificate_names(addr);
            let (server, made) =
                TlsServer::self_signed(&names).map_err(|e| format!("--self-signed: {e}"))?;
            notes.push(format!("self-signed certificate for {}", names.join(", ")));
            notes.push(format!("  SHA-256 fingerprint: {}", made.cert_sha256));
            notes.push(format!(
                "  SPKI SHA-256 (base64, for chromium --ignore-certificate-errors-spki-list): {}",
                made.spki_sha256_base64
            ));
            Some(server)
        }
        (_, _, true) => {
            return Err("--self-signed and --tls-cert/--tls-key exclude each other".into());
        }
        _ => return Err("--tls-cert and --tls-key go together".into()),
    };
    Ok((
        ServerOptions {
            tls: identity,
            http: Some(routes()),
        },
        notes,
    ))
}

/// The address other machines most likely reach this one at (the source
/// address of the default route; no packet is sent), if any.
fn lan_address() -> Option<IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    // connect() on UDP only picks a route and a source address.
    s.connect("192.0.2.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_unspecified() && !ip.is_loopback()).then_some(ip)
}

fn certificate_names(addr: SocketAddr) -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    if !addr.ip().is_unspecified() && !addr.ip().is_loopback() {
        names.push(addr.ip().to_string());
    }
    if let Some(ip) = lan_address() {
        names.push(ip.to_string());
    }
    if let Ok(h) = std::fs::read_to_string("/etc/hostname") {
        let h = h.trim();
        if !h.is_empty()
            && h.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            names.push(h.to_string());
        }
    }
    names.dedup();
    names
}

/// The URLs to open the page at: `http(s)://HOST:PORT/`, with `#psk=<hex>`
/// when a PSK is used (the fragment never reaches the server).
pub fn join_urls(local: SocketAddr, tls: bool, psk: Option<&[u8]>) -> Vec<String> {
    let scheme = if tls { "https" } else { "http" };
    let frag = psk.map_or(String::new(), psk_fragment);
    let port = local.port();
    let host = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => format!("[{v6}]"),
        v4 => v4.to_string(),
    };
    let mut urls = Vec::new();
    if local.ip().is_unspecified() {
        urls.push(format!("{scheme}://localhost:{port}/{frag}"));
        if let Some(ip) = lan_address() {
            urls.push(format!("{scheme}://{}:{port}/{frag}", host(ip)));
        }
    } else {
        urls.push(format!("{scheme}://{}:{port}/{frag}", host(local.ip())));
    }
    urls
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_are_embedded_and_routed() {
        assert!(INDEX_HTML.starts_with(b"<!doctype html>"));
        assert!(WASM.starts_with(b"\0asm"), "a wasm module");
        let glue = std::str::from_utf8(GLUE_JS).unwrap();
        assert!(
            glue.contains("__wbg_init as default"),
            "the default export index.html calls"
        );
        let r = routes();
        assert_eq!(r.stream_path, STREAM_PATH);
        assert_eq!(r.assets["/"].body.len(), INDEX_HTML.len());
        assert_eq!(
            r.assets["/assets/linkstream_web_bg.wasm"].content_type,
            "application/wasm"
        );
        // The page loads its glue and module from where they are served.
        let html = std::str::from_utf8(INDEX_HTML).unwrap();
        assert!(html.contains("./assets/linkstream_web.js"));
        assert!(html.contains("./assets/linkstream_web_bg.wasm"));
    }

    #[test]
    fn join_urls_carry_the_psk_in_the_fragment() {
        let local: SocketAddr = "127.0.0.1:9001".parse().unwrap();
        assert_eq!(
            join_urls(local, true, Some(&[0xab, 0x01])),
            ["https://127.0.0.1:9001/#psk=ab01"]
        );
        assert_eq!(join_urls(local, false, None), ["http://127.0.0.1:9001/"]);
        let any: SocketAddr = "0.0.0.0:9001".parse().unwrap();
        assert_eq!(join_urls(any, false, None)[0], "http://localhost:9001/");
    }

    #[test]
    fn tls_choices() {
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let (o, notes) = server_options(&TlsChoice::default(), addr).unwrap();
        assert!(o.tls.is_none() && o.http.is_some() && notes.is_empty());
        let ss = TlsChoice {
            self_signed: true,
            ..Default::default()
        };
        let (o, notes) = server_options(&ss, addr).unwrap();
        assert!(o.tls.is_some());
        assert!(notes.iter().any(|n| n.contains("SHA-256 fingerprint")));
        let half = TlsChoice {
            cert: Some("c.pem".into()),
            ..Default::default()
        };
        assert!(server_options(&half, addr).is_err());
        let both = TlsChoice {
            cert: Some("c.pem".into()),
            key: Some("k.pem".into()),
            self_signed: true,
        };
        assert!(server_options(&both, addr).is_err());
    }
}
