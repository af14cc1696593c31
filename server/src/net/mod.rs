//! Every socket of a node. `client` serves RESP clients, `admin` the HTTP
//! endpoints, `gossip` runs membership on the cluster port (UDP), `peer`
//! accepts and `link` makes the peer TCP connections on the same port
//! number, and `exec` runs requests wherever the cluster says (forwarding,
//! splitting, replication, quorums). Tasks here drive the pure modules;
//! nothing below `net` knows about sockets.

pub mod admin;
pub mod antientropy;
pub mod batch;
pub mod client;
pub mod exec;
pub mod gossip;
pub mod link;
pub mod peer;
pub mod rebalance;

pub use crate::process::unix_ms;

/// The local address this host sends from to reach `to` (a UDP "connect"
/// only asks the routing table; nothing is sent). None without a route.
pub async fn route_source(to: std::net::SocketAddr) -> Option<std::net::IpAddr> {
    let any: std::net::SocketAddr = if to.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let socket = tokio::net::UdpSocket::bind(any).await.ok()?;
    socket.connect(to).await.ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

/// This host's first address that is up and not loopback or link-local
/// (IPv6 when `v6`, else IPv4), from the interface list.
pub fn first_interface_ip(v6: bool) -> Option<std::net::IpAddr> {
    let mut found = None;
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list we only read and
    // free once with freeifaddrs; every pointer is checked for null and
    // sockaddrs are read as the type their family names.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            return None;
        }
        let mut cur = list;
        while !cur.is_null() && found.is_none() {
            let ifa = &*cur;
            cur = ifa.ifa_next;
            let up = ifa.ifa_flags & (libc::IFF_UP as u32) != 0;
            if ifa.ifa_addr.is_null() || !up || ifa.ifa_flags & (libc::IFF_LOOPBACK as u32) != 0 {
                continue;
            }
            let family = i32::from((*ifa.ifa_addr).sa_family);
            let ip: std::net::IpAddr = if family == libc::AF_INET && !v6 {
                let sa = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                std::net::Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr)).into()
            } else if family == libc::AF_INET6 && v6 {
                let sa = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                std::net::Ipv6Addr::from(sa.sin6_addr.s6_addr).into()
            } else {
                continue;
            };
            let link_local = match ip {
                std::net::IpAddr::V4(a) => a.is_link_local(),
                std::net::IpAddr::V6(a) => a.is_unicast_link_local(),
            };
            if !ip.is_loopback() && !link_local {
                found = Some(ip);
            }
        }
        libc::freeifaddrs(list);
    }
    found
}
