//! `soak rebind`: a client that vanished, then new clients on its address
//! and port (it prints, it checks nothing; see the module docs of `main`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use crate::Args;
use crate::status::read_status;
use crate::viewer::udp_viewer;

/// A client that vanished, then a new one on the same address and port.
pub(crate) async fn rebind(a: Arc<Args>) -> Result<bool, String> {
    let bind = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 29_999);
    let r = udp_viewer(a.clone(), 0, bind, false, Some(3), true, None).await;
    println!(
        "first client: {} frames, error {:?}; vanished",
        r.delivered, r.error
    );
    let t = Instant::now();
    let r = udp_viewer(a.clone(), 1, bind, false, Some(3), false, None).await;
    println!(
        "second client, same address and port: {} frames, error {:?}, after {:.1} s",
        r.delivered,
        r.error,
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let r = udp_viewer(a.clone(), 2, bind, false, Some(3), false, None).await;
    println!(
        "third client, same address and port: {} frames, error {:?}, after {:.1} s",
        r.delivered,
        r.error,
        t.elapsed().as_secs_f64()
    );
    println!("host: {:?}", read_status(&a.status));
    Ok(true)
}
