//! The lossy-link conformance suite on loopback, for connected links (IPv4
//! with and without GSO/GRO, IPv6) and for endpoint links.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use link_tests::LinkFactory;
use link_udp::{EndpointConfig, UdpConfig, UdpEndpoint, UdpLink};

/// Two connected links on loopback.
struct Connected {
    ip: &'static str,
    config: UdpConfig,
}

impl LinkFactory for Connected {
    type Link = UdpLink;
    async fn pair(&self) -> (UdpLink, UdpLink) {
        let any: SocketAddr = format!("{}:0", self.ip).parse().unwrap();
        let a = UdpSocket::bind(any).expect("bind a");
        let b = UdpSocket::bind(any).expect("bind b");
        let (aa, ba) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        (
            UdpLink::from_std(a, ba, &self.config).expect("link a"),
            UdpLink::from_std(b, aa, &self.config).expect("link b"),
        )
    }

    /// UDP has no close on the wire.
    fn sees_close(&self) -> bool {
        false
    }

    /// A connected socket has no way to learn that its peer went away.
    fn sees_drop(&self) -> bool {
        false
    }
}

/// Two endpoints on loopback, each with a link to the other; `idle` is
/// the endpoints' idle timeout (`None`: the default, 30 s).
struct Endpoints(&'static str, Option<Duration>);

impl LinkFactory for Endpoints {
    type Link = UdpLink;
    async fn pair(&self) -> (UdpLink, UdpLink) {
        let any: SocketAddr = format!("{}:0", self.0).parse().unwrap();
        let mut config = EndpointConfig::default();
        if let Some(idle) = self.1 {
            config.idle_timeout = Some(idle);
        }
        let ea = UdpEndpoint::bind(any, config.clone()).expect("endpoint a");
        let eb = UdpEndpoint::bind(any, config).expect("endpoint b");
        let a = ea.connect(eb.local_addr()).expect("a → b");
        let b = eb.connect(ea.local_addr()).expect("b → a");
        (a, b)
    }

    /// UDP has no close on the wire.
    fn sees_close(&self) -> bool {
        false
    }

    /// A silent peer's link ends with `PeerGone` after the idle timeout;
    /// with the default (30 s) no check waits that long, and none may end.
    fn sees_drop(&self) -> bool {
        self.1.is_some()
    }
}

mod v4_offloads {
    use super::*;
    link_tests::lossy_suite!(
        #[tokio::test],
        Connected {
            ip: "127.0.0.1",
            config: UdpConfig::default()
        }
    );
}

mod v4_plain {
    use super::*;
    link_tests::lossy_suite!(
        #[tokio::test],
        Connected {
            ip: "127.0.0.1",
            config: UdpConfig {
                gso: false,
                gro: false,
                ..UdpConfig::default()
            }
        }
    );
}

mod v6 {
    use super::*;
    link_tests::lossy_suite!(
        #[tokio::test],
        Connected {
            ip: "[::1]",
            config: UdpConfig::default()
        }
    );
}

mod endpoint {
    use super::*;
    link_tests::lossy_suite!(#[tokio::test], Endpoints("127.0.0.1", None));
}

/// The stickiness of the error an idle peer ends with (`link.error.sticky`
/// on the endpoint link, whose idle timeout is the way it learns of a gone
/// peer): a 300 ms idle timeout.
mod endpoint_idle {
    use super::*;
    link_tests::__suite!(#[tokio::test], Endpoints("127.0.0.1", Some(Duration::from_millis(300)));
        errors_are_sticky,
    );
}

mod endpoint_v6 {
    use super::*;
    link_tests::lossy_suite!(#[tokio::test], Endpoints("[::1]", None));
}
