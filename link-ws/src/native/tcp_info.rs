//! The kernel's view of a TCP connection (`getsockopt(TCP_INFO)`), read
//! for [`link_types::PathSample`]. Linux only; elsewhere there is none.
#![allow(unsafe_code)]

use std::time::Duration;

use link_types::PathSample;

/// The kernel's counters the sample is made from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TcpCounters {
    pub delivered_bytes: u64,
    pub delivery_rate: u64,
    pub rtt_us: u32,
    pub min_rtt_us: u32,
    pub notsent_bytes: u32,
    pub unacked_packets: u32,
    pub snd_mss: u32,
    pub app_limited: bool,
}

impl TcpCounters {
    /// The sample, with `queued` more bytes that the link itself still
    /// holds (not yet written to the socket).
    pub(crate) fn sample(&self, queued: u64) -> PathSample {
        PathSample {
            delivered_bytes: self.delivered_bytes,
            delivery_rate: self.delivery_rate,
            rtt: Duration::from_micros(self.rtt_us as u64),
            min_rtt: Duration::from_micros(self.min_rtt_us as u64),
            unsent_bytes: self.notsent_bytes as u64 + queued,
            in_flight_bytes: self.unacked_packets as u64 * self.snd_mss as u64,
            app_limited: self.app_limited,
        }
    }
}

/// The head of Linux's `struct tcp_info` (include/uapi/linux/tcp.h) up to
/// `tcpi_delivery_rate`, in its layout. The kernel copies at most the
/// length it is given and returns how much it wrote: a kernel older than
/// a field leaves it out, and the length says so.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[repr(C)]
#[derive(Default)]
struct RawTcpInfo {
    state: u8,
    ca_state: u8,
    retransmits: u8,
    probes: u8,
    backoff: u8,
    options: u8,
    wscale: u8,
    /// Bit 0: `tcpi_delivery_rate_app_limited`.
    flags: u8,
    rto: u32,
    ato: u32,
    snd_mss: u32,
    rcv_mss: u32,
    unacked: u32,
    sacked: u32,
    lost: u32,
    retrans: u32,
    fackets: u32,
    last_data_sent: u32,
    last_ack_sent: u32,
    last_data_recv: u32,
    last_ack_recv: u32,
    pmtu: u32,
    rcv_ssthresh: u32,
    rtt: u32,
    rttvar: u32,
    snd_ssthresh: u32,
    snd_cwnd: u32,
    advmss: u32,
    reordering: u32,
    rcv_rtt: u32,
    rcv_space: u32,
    total_retrans: u32,
    pacing_rate: u64,
    max_pacing_rate: u64,
    bytes_acked: u64,
    bytes_received: u64,
    segs_out: u32,
    segs_in: u32,
    notsent_bytes: u32,
    min_rtt: u32,
    data_segs_in: u32,
    data_segs_out: u32,
    delivery_rate: u64,
}

#[cfg(any(target_os = "linux", target_os = "android"))]
const _: () = assert!(std::mem::size_of::<RawTcpInfo>() == 168);

/// Read the connection's counters; `None` when the call fails or the
/// kernel's struct ends before `tcpi_delivery_rate` (Linux before 4.9).
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn read(tcp: &tokio::net::TcpStream) -> Option<TcpCounters> {
    use std::os::fd::AsRawFd;
    let mut raw = RawTcpInfo::default();
    let mut len = std::mem::size_of::<RawTcpInfo>() as libc::socklen_t;
    // SAFETY: the descriptor is the open socket `tcp` borrows for the whole
    // call; the kernel writes at most `len` bytes into `raw`, which is
    // exactly `len` bytes of plain integers (any bit pattern is valid), and
    // `len` is a valid `socklen_t` it updates with the length written.
    let r = unsafe {
        libc::getsockopt(
            tcp.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut raw as *mut RawTcpInfo).cast::<libc::c_void>(),
            &mut len,
        )
    };
    if r != 0 || (len as usize) < std::mem::size_of::<RawTcpInfo>() {
        return None;
    }
    Some(TcpCounters {
        delivered_bytes: raw.bytes_acked,
        delivery_rate: raw.delivery_rate,
        rtt_us: raw.rtt,
        min_rtt_us: raw.min_rtt,
        notsent_bytes: raw.notsent_bytes,
        unacked_packets: raw.unacked,
        snd_mss: raw.snd_mss,
        app_limited: raw.flags & 1 != 0,
    })
}

/// Not Linux: the kernel's counters are not read.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn read(_tcp: &tokio::net::TcpStream) -> Option<TcpCounters> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_adds_the_links_own_queue_and_counts_flight_in_bytes() {
        let c = TcpCounters {
            delivered_bytes: 10_000,
            delivery_rate: 375_000,
            rtt_us: 40_000,
            min_rtt_us: 20_000,
            notsent_bytes: 3000,
            unacked_packets: 4,
            snd_mss: 1448,
            app_limited: true,
        };
        let s = c.sample(500);
        assert_eq!(s.delivered_bytes, 10_000);
        assert_eq!(s.delivery_rate, 375_000);
        assert_eq!(s.rtt, Duration::from_millis(40));
        assert_eq!(s.min_rtt, Duration::from_millis(20));
        assert_eq!(s.unsent_bytes, 3500);
        assert_eq!(s.in_flight_bytes, 4 * 1448);
        assert!(s.app_limited);
    }
}
