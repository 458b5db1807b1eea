//! The native WebSocket client.

use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::ClientHandshake;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::framed::{self, Framed, Sock};
use super::link::WsLink;
use super::stream::{Spare, Stream};
use super::tls::ClientTls;
use crate::{WsConfig, WsError};

impl WsLink {
    /// Connect to a `ws://` or `wss://` URL. For `wss://` the system's root
    /// certificates are trusted; use [`WsLink::connect_with_tls`] for a
    /// private CA.
    pub async fn connect(url: &str, config: &WsConfig) -> Result<WsLink, WsError> {
        Self::connect_inner(url, config, None).await
    }

    /// Connect to a `ws://` or `wss://` URL, trusting `tls` for `wss://`.
    pub async fn connect_with_tls(
        url: &str,
        config: &WsConfig,
        tls: &ClientTls,
    ) -> Result<WsLink, WsError> {
        Self::connect_inner(url, config, Some(tls)).await
    }

    async fn connect_inner(
        url: &str,
        config: &WsConfig,
        tls: Option<&ClientTls>,
    ) -> Result<WsLink, WsError> {
        config.validate().map_err(WsError::InvalidConfig)?;
        let request = url
            .into_client_request()
            .map_err(|e| WsError::InvalidUrl(format!("{url}: {e}")))?;
        let uri = request.uri().clone();
        let secure = match uri.scheme_str() {
            Some("ws") => false,
            Some("wss") => true,
            other => {
                return Err(WsError::InvalidUrl(format!(
                    "{url}: scheme {other:?} is neither ws nor wss"
                )));
            }
        };
        let host = uri
            .host()
            .ok_or_else(|| WsError::InvalidUrl(format!("{url}: no host")))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        let work = async {
            let tcp = TcpStream::connect((host.as_str(), port))
                .await
                .map_err(crate::error::io("connect"))?;
            super::tune_socket(&tcp, config);
            let stream = if secure {
                let owned;
                let tls = match tls {
                    Some(t) => t,
                    None => {
                        owned = ClientTls::system_roots()?;
                        &owned
                    }
                };
                let name = rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|e| WsError::InvalidUrl(format!("{url}: host name: {e}")))?;
                let s = tls
                    .connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| WsError::Handshake(Box::new(e)))?;
                Stream::Tls(Box::new(tokio_rustls::TlsStream::Client(s)))
            } else {
                Stream::Plain(tcp)
            };
            let start = ClientHandshake::start(
                Sock::new(Spare::new(stream)),
                request,
                Some(super::ws_config(config)),
            )
            .map_err(|e| WsError::Handshake(Box::new(e)))?;
            let (ws, _resp) = framed::handshake(start)
                .await
                .map_err(|e| WsError::Handshake(Box::new(e)))?;
            Ok(WsLink::new(Framed::new(ws, false), config))
        };
        tokio::time::timeout(config.handshake_timeout, work)
            .await
            .map_err(|_| WsError::Timeout)?
    }
}
