//! Who sent a request: the peer address the server stores in each
//! request's extensions ([`ClientAddr`]), and the unit per-client limits
//! count by ([`AddrBucket`]).
//!
//! The address is the TCP peer's. Behind a reverse proxy every request
//! comes from the proxy, so the per-client limits become per-proxy limits:
//! forwarded headers are not read, because any client can write them.

use std::net::{IpAddr, SocketAddr};

use axum::http::Extensions;

/// The TCP peer of the connection a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

impl ClientAddr {
    /// The address of the request's connection, when it came through
    /// [`crate::server::serve`] (requests made in-process have none).
    pub fn of(extensions: &Extensions) -> Option<ClientAddr> {
        extensions.get::<ClientAddr>().copied()
    }

    /// The bucket this client counts in.
    pub fn bucket(self) -> AddrBucket {
        match self.0.ip() {
            IpAddr::V4(v4) => AddrBucket::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => AddrBucket::V4(v4.octets()),
                None => {
                    let mut prefix = [0u8; 8];
                    prefix.copy_from_slice(&v6.octets()[..8]);
                    AddrBucket::V6(prefix)
                }
            },
        }
    }
}

/// What per-client limits count by: an IPv4 address, or an IPv6 /64 (the
/// prefix one subscriber's network gets, inside which a host may take any
/// address it likes, so counting single IPv6 addresses would count
/// nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddrBucket {
    /// One IPv4 address (an IPv4-mapped IPv6 address counts as IPv4).
    V4([u8; 4]),
    /// The first 64 bits of an IPv6 address.
    V6([u8; 8]),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_counts_by_its_64_prefix_and_mapped_ipv4_as_ipv4() {
        let a = |s: &str| ClientAddr(SocketAddr::new(s.parse().unwrap(), 1)).bucket();
        assert_eq!(a("2001:db8:1:2::1"), a("2001:db8:1:2:ffff::9"));
        assert_ne!(a("2001:db8:1:2::1"), a("2001:db8:1:3::1"));
        assert_eq!(a("::ffff:192.0.2.7"), a("192.0.2.7"));
        assert_ne!(a("192.0.2.7"), a("192.0.2.8"));
    }
}
