//! The lossy-link conformance suite on loopback, for connected links (IPv4
//! with and without GSO/GRO, IPv6) and for endpoint links.

use std::net::{SocketAddr, UdpSocket};

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
}

/// Two endpoints on loopback, each with a link to the other.
struct Endpoints(&'static str);

impl LinkFactory for Endpoints {
    type Link = UdpLink;
    async fn pair(&self) -> (UdpLink, UdpLink) {
        let any: SocketAddr = format!("{}:0", self.0).parse().unwrap();
        let ea = UdpEndpoint::bind(any, EndpointConfig::default()).expect("endpoint a");
        let eb = UdpEndpoint::bind(any, EndpointConfig::default()).expect("endpoint b");
        let a = ea.connect(eb.local_addr()).expect("a → b");
        let b = eb.connect(ea.local_addr()).expect("b → a");
        (a, b)
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
    link_tests::lossy_suite!(#[tokio::test], Endpoints("127.0.0.1"));
}

mod endpoint_v6 {
    use super::*;
    link_tests::lossy_suite!(#[tokio::test], Endpoints("[::1]"));
}
