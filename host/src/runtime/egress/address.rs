//! Which IP addresses an agent may reach through a host *name*.
//!
//! An address in any special range — loopback, private, link-local (which holds the
//! cloud metadata service, 169.254.169.254), unspecified, shared, multicast,
//! documentation, reserved, and the IPv6 forms that embed such an IPv4 address — is
//! only reachable through a rule that names the address itself. [`special_range`] says
//! which range an address is in, or `None` for an ordinary public unicast address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The special range `ip` falls in, named for people, or `None` when it is an ordinary
/// public unicast address.
pub fn special_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => special_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, network: [u8; 4], prefix: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(network)) & mask
}

fn special_v4(ip: Ipv4Addr) -> Option<&'static str> {
    const RANGES: &[([u8; 4], u32, &str)] = &[
        ([0, 0, 0, 0], 8, "unspecified (\"this network\", 0.0.0.0/8)"),
        ([10, 0, 0, 0], 8, "private (10.0.0.0/8)"),
        (
            [100, 64, 0, 0],
            10,
            "shared (carrier-grade NAT, 100.64.0.0/10)",
        ),
        ([127, 0, 0, 0], 8, "loopback (127.0.0.0/8)"),
        ([169, 254, 0, 0], 16, "link-local (169.254.0.0/16)"),
        ([172, 16, 0, 0], 12, "private (172.16.0.0/12)"),
        (
            [192, 0, 0, 0],
            24,
            "IETF protocol assignments (192.0.0.0/24)",
        ),
        ([192, 0, 2, 0], 24, "documentation (192.0.2.0/24)"),
        ([192, 88, 99, 0], 24, "6to4 relay anycast (192.88.99.0/24)"),
        ([192, 168, 0, 0], 16, "private (192.168.0.0/16)"),
        ([198, 18, 0, 0], 15, "benchmarking (198.18.0.0/15)"),
        ([198, 51, 100, 0], 24, "documentation (198.51.100.0/24)"),
        ([203, 0, 113, 0], 24, "documentation (203.0.113.0/24)"),
        ([224, 0, 0, 0], 4, "multicast (224.0.0.0/4)"),
        ([240, 0, 0, 0], 4, "reserved or broadcast (240.0.0.0/4)"),
    ];
    RANGES
        .iter()
        .find(|(network, prefix, _)| in_v4(ip, *network, *prefix))
        .map(|(_, _, name)| *name)
}

fn in_v6(ip: Ipv6Addr, network: [u16; 8], prefix: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
    u128::from(ip) & mask == u128::from(Ipv6Addr::from(network)) & mask
}

fn special_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if ip.is_unspecified() {
        return Some("unspecified (::)");
    }
    if ip.is_loopback() {
        return Some("loopback (::1)");
    }
    // Forms that carry an IPv4 address: judge the address they carry.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return special_v4(v4);
    }
    let bits = u128::from(ip);
    if in_v6(ip, [0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96) {
        return special_v4(Ipv4Addr::from(bits as u32));
    }
    if in_v6(ip, [0x2002, 0, 0, 0, 0, 0, 0, 0], 16) {
        return special_v4(Ipv4Addr::from((bits >> 80) as u32))
            .or(Some("6to4 (2002::/16), which tunnels to any IPv4 address"));
    }
    const RANGES: &[([u16; 8], u32, &str)] = &[
        (
            [0, 0, 0, 0, 0, 0, 0, 0],
            96,
            "IPv4-compatible (::/96, deprecated)",
        ),
        (
            [0x64, 0xff9b, 1, 0, 0, 0, 0, 0],
            48,
            "local-use NAT64 (64:ff9b:1::/48)",
        ),
        ([0x100, 0, 0, 0, 0, 0, 0, 0], 64, "discard-only (100::/64)"),
        (
            [0x2001, 0, 0, 0, 0, 0, 0, 0],
            32,
            "Teredo (2001::/32), which tunnels to any IPv4 address",
        ),
        (
            [0x2001, 0x2, 0, 0, 0, 0, 0, 0],
            48,
            "benchmarking (2001:2::/48)",
        ),
        (
            [0x2001, 0xdb8, 0, 0, 0, 0, 0, 0],
            32,
            "documentation (2001:db8::/32)",
        ),
        (
            [0xfc00, 0, 0, 0, 0, 0, 0, 0],
            7,
            "unique local, private (fc00::/7)",
        ),
        ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, "link-local (fe80::/10)"),
        (
            [0xfec0, 0, 0, 0, 0, 0, 0, 0],
            10,
            "site-local (fec0::/10, deprecated)",
        ),
        ([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, "multicast (ff00::/8)"),
    ];
    RANGES
        .iter()
        .find(|(network, prefix, _)| in_v6(ip, *network, *prefix))
        .map(|(_, _, name)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(ip: &str) -> Option<&'static str> {
        special_range(ip.parse().unwrap())
    }

    #[test]
    fn public_addresses_are_ordinary() {
        for ip in [
            "93.184.216.34",
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700:4700::1111",
            "2a00:1450:4001:81b::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert_eq!(class(ip), None, "{ip}");
        }
    }

    #[test]
    fn loopback_private_link_local_and_unspecified_are_special() {
        let cases = [
            ("127.0.0.1", "loopback"),
            ("127.255.255.254", "loopback"),
            ("::1", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("fd00::1", "unique local"),
            ("fc00::1", "unique local"),
            ("169.254.169.254", "link-local"),
            ("169.254.0.1", "link-local"),
            ("fe80::1", "link-local"),
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "unspecified"),
            ("::", "unspecified"),
        ];
        for (ip, expected) in cases {
            let got = class(ip).unwrap_or_else(|| panic!("{ip} must be special"));
            assert!(got.starts_with(expected), "{ip}: {got}");
        }
    }

    #[test]
    fn other_special_ranges_are_special_too() {
        for ip in [
            "100.64.0.1",
            "192.0.0.8",
            "192.0.2.1",
            "198.18.0.1",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "ff02::1",
            "2001:db8::1",
            "fec0::1",
            "100::1",
            "2001::1",
            "::127.0.0.1",
        ] {
            assert!(class(ip).is_some(), "{ip} must be special");
        }
    }

    #[test]
    fn ipv6_forms_carrying_a_special_ipv4_address_are_judged_by_it() {
        assert!(class("::ffff:127.0.0.1").unwrap().starts_with("loopback"));
        assert!(
            class("::ffff:169.254.169.254")
                .unwrap()
                .starts_with("link-local")
        );
        assert!(
            class("64:ff9b::a9fe:a9fe")
                .unwrap()
                .starts_with("link-local")
        );
        assert!(class("2002:7f00:1::1").unwrap().starts_with("loopback"));
        assert!(class("2002:808:808::1").unwrap().starts_with("6to4"));
    }
}
