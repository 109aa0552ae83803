//! Which IP addresses a webhook may be delivered to: the address classifier behind the SSRF guard.
//!
//! The list is explicit because `IpAddr::is_global` is not stable, and because a webhook service must
//! refuse more than "not global": cloud metadata endpoints, NAT64 and 6to4 prefixes that embed private
//! IPv4 addresses, and IPv4 addresses wrapped in IPv6 forms.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

/// Why an address may not be a webhook target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockedClass {
    Unspecified,
    Loopback,
    Private,
    LinkLocal,
    SharedCgnat,
    Multicast,
    Reserved,
    Documentation,
    UniqueLocal,
    Ipv4Translated,
    Broadcast,
}

impl BlockedClass {
    pub fn describe(self) -> &'static str {
        match self {
            BlockedClass::Unspecified => "an unspecified address",
            BlockedClass::Loopback => "a loopback address",
            BlockedClass::Private => "a private network address",
            BlockedClass::LinkLocal => "a link-local or cloud metadata address",
            BlockedClass::SharedCgnat => "a carrier-grade NAT address",
            BlockedClass::Multicast => "a multicast address",
            BlockedClass::Reserved => "a reserved address",
            BlockedClass::Documentation => "a documentation address",
            BlockedClass::UniqueLocal => "a unique-local IPv6 address",
            BlockedClass::Ipv4Translated => "an IPv6 translation address (NAT64 or 6to4)",
            BlockedClass::Broadcast => "the broadcast address",
        }
    }
}

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> (Ipv4Addr, u8) {
    (Ipv4Addr::new(a, b, c, d), len)
}

const BLOCKED_V4: &[((Ipv4Addr, u8), BlockedClass)] = &[
    (v4(0, 0, 0, 0, 8), BlockedClass::Unspecified),
    (v4(10, 0, 0, 0, 8), BlockedClass::Private),
    (v4(100, 64, 0, 0, 10), BlockedClass::SharedCgnat),
    (v4(127, 0, 0, 0, 8), BlockedClass::Loopback),
    (v4(169, 254, 0, 0, 16), BlockedClass::LinkLocal),
    (v4(172, 16, 0, 0, 12), BlockedClass::Private),
    (v4(192, 0, 0, 0, 24), BlockedClass::Reserved),
    (v4(192, 0, 2, 0, 24), BlockedClass::Documentation),
    (v4(192, 88, 99, 0, 24), BlockedClass::Reserved),
    (v4(192, 168, 0, 0, 16), BlockedClass::Private),
    (v4(198, 18, 0, 0, 15), BlockedClass::Reserved),
    (v4(198, 51, 100, 0, 24), BlockedClass::Documentation),
    (v4(203, 0, 113, 0, 24), BlockedClass::Documentation),
    (v4(224, 0, 0, 0, 4), BlockedClass::Multicast),
    (v4(255, 255, 255, 255, 32), BlockedClass::Broadcast),
    (v4(240, 0, 0, 0, 4), BlockedClass::Reserved),
];

const fn v6(segments: [u16; 8], len: u8) -> (Ipv6Addr, u8) {
    let [a, b, c, d, e, f, g, h] = segments;
    (Ipv6Addr::new(a, b, c, d, e, f, g, h), len)
}

const BLOCKED_V6: &[((Ipv6Addr, u8), BlockedClass)] = &[
    (v6([0, 0, 0, 0, 0, 0, 0, 0], 128), BlockedClass::Unspecified),
    (v6([0, 0, 0, 0, 0, 0, 0, 1], 128), BlockedClass::Loopback),
    // IPv4-compatible (deprecated) addresses.
    (v6([0, 0, 0, 0, 0, 0, 0, 0], 96), BlockedClass::Reserved),
    (
        v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96),
        BlockedClass::Ipv4Translated,
    ),
    (
        v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48),
        BlockedClass::Ipv4Translated,
    ),
    (v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64), BlockedClass::Reserved),
    // IETF protocol assignments, Teredo included.
    (
        v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23),
        BlockedClass::Reserved,
    ),
    (
        v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32),
        BlockedClass::Documentation,
    ),
    (
        v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16),
        BlockedClass::Ipv4Translated,
    ),
    (
        v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20),
        BlockedClass::Documentation,
    ),
    (
        v6([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16),
        BlockedClass::Reserved,
    ),
    (
        v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
        BlockedClass::UniqueLocal,
    ),
    (
        v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),
        BlockedClass::LinkLocal,
    ),
    (
        v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10),
        BlockedClass::Reserved,
    ),
    (
        v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8),
        BlockedClass::Multicast,
    ),
];

fn contains_v4(net: (Ipv4Addr, u8), ip: Ipv4Addr) -> bool {
    Ipv4Net::new(net.0, net.1).is_ok_and(|net| net.contains(&ip))
}

fn contains_v6(net: (Ipv6Addr, u8), ip: Ipv6Addr) -> bool {
    Ipv6Net::new(net.0, net.1).is_ok_and(|net| net.contains(&ip))
}

/// Classifies an address: `None` when it is a public unicast address a webhook may reach.
pub fn blocked_class(ip: IpAddr) -> Option<BlockedClass> {
    match ip {
        IpAddr::V4(ip) => BLOCKED_V4
            .iter()
            .find(|(net, _)| contains_v4(*net, ip))
            .map(|(_, class)| *class),
        IpAddr::V6(ip) => {
            // An IPv4-mapped address (::ffff:a.b.c.d) reaches the IPv4 host it wraps.
            if let Some(mapped) = ip.to_ipv4_mapped() {
                return blocked_class(IpAddr::V4(mapped));
            }
            BLOCKED_V6
                .iter()
                .find(|(net, _)| contains_v6(*net, ip))
                .map(|(_, class)| *class)
        }
    }
}

/// Strips IPv4-mapped wrapping, so an address is compared and logged in the form it is reached by.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(address: &str, expected: Option<BlockedClass>) {
        let ip: IpAddr = address.parse().expect("test address parses");
        assert_eq!(blocked_class(ip), expected, "{address}");
    }

    #[test]
    fn known_addresses_are_classified() {
        use BlockedClass::*;
        check("8.8.8.8", None);
        check("1.1.1.1", None);
        check("2606:4700:4700::1111", None);
        check("127.0.0.1", Some(Loopback));
        check("127.255.255.254", Some(Loopback));
        check("::1", Some(Loopback));
        check("0.0.0.0", Some(Unspecified));
        check("::", Some(Unspecified));
        check("10.1.2.3", Some(Private));
        check("172.16.0.1", Some(Private));
        check("172.31.255.255", Some(Private));
        check("172.32.0.1", None);
        check("192.168.1.1", Some(Private));
        check("169.254.169.254", Some(LinkLocal));
        check("100.100.100.200", Some(SharedCgnat));
        check("100.64.0.1", Some(SharedCgnat));
        check("100.128.0.1", None);
        check("224.0.0.1", Some(Multicast));
        check("239.255.255.250", Some(Multicast));
        check("240.0.0.1", Some(Reserved));
        check("255.255.255.255", Some(Broadcast));
        check("192.0.2.10", Some(Documentation));
        check("198.18.0.1", Some(Reserved));
        check("fd00:ec2::254", Some(UniqueLocal));
        check("fc00::1", Some(UniqueLocal));
        check("fe80::1", Some(LinkLocal));
        check("ff02::1", Some(Multicast));
        check("::ffff:127.0.0.1", Some(Loopback));
        check("::ffff:169.254.169.254", Some(LinkLocal));
        check("::ffff:8.8.8.8", None);
        check("64:ff9b::a00:1", Some(Ipv4Translated));
        check("64:ff9b::808:808", Some(Ipv4Translated));
        check("2002:7f00:1::", Some(Ipv4Translated));
        check("2001:db8::1", Some(Documentation));
        check("2001::1", Some(Reserved));
        check("::127.0.0.1", Some(Reserved));
    }

    proptest! {
        #[test]
        fn mapped_v4_is_classified_like_the_v4_it_wraps(bits in any::<u32>()) {
            let v4 = Ipv4Addr::from(bits);
            let mapped = IpAddr::V6(v4.to_ipv6_mapped());
            prop_assert_eq!(blocked_class(mapped), blocked_class(IpAddr::V4(v4)));
        }

        #[test]
        fn every_private_loopback_and_link_local_v4_is_blocked(bits in any::<u32>()) {
            let ip = Ipv4Addr::from(bits);
            if ip.is_private() || ip.is_loopback() || ip.is_link_local() || ip.is_multicast()
                || ip.is_broadcast() || ip.is_unspecified() || ip.is_documentation() {
                prop_assert!(blocked_class(IpAddr::V4(ip)).is_some(), "{} allowed", ip);
            }
        }

        #[test]
        fn every_v6_loopback_ula_link_local_and_multicast_is_blocked(bits in any::<u128>()) {
            let ip = Ipv6Addr::from(bits);
            let top = ip.segments()[0];
            let special = ip.is_loopback() || ip.is_unspecified() || ip.is_multicast()
                || (top & 0xfe00) == 0xfc00 || (top & 0xffc0) == 0xfe80;
            if special {
                prop_assert!(blocked_class(IpAddr::V6(ip)).is_some(), "{} allowed", ip);
            }
        }

        #[test]
        fn nat64_is_blocked_whatever_it_embeds(bits in any::<u32>()) {
            let [a, b, c, d] = bits.to_be_bytes();
            let ip = Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]));
            prop_assert_eq!(blocked_class(IpAddr::V6(ip)), Some(BlockedClass::Ipv4Translated));
        }

        #[test]
        fn global_unicast_v6_outside_special_prefixes_is_allowed(low in any::<u64>(), mid in 0x2400u16..0x2fff) {
            let ip = Ipv6Addr::from((u128::from(mid) << 112) | u128::from(low));
            prop_assert_eq!(blocked_class(IpAddr::V6(ip)), None);
        }

        #[test]
        fn canonical_unwraps_mapped_addresses(bits in any::<u32>()) {
            let v4 = Ipv4Addr::from(bits);
            prop_assert_eq!(canonical(IpAddr::V6(v4.to_ipv6_mapped())), IpAddr::V4(v4));
        }
    }
}
