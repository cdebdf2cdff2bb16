//! Egress rules and request URLs (`host/src/runtime/egress/`): the allowlist a grant
//! holds, the URL a guest asks for, and the address ranges only a literal rule opens.
//!
//! An input is text: the first line a URL, each further line a rule. Properties:
//! nothing panics; a rule that parses prints back to itself; [`Egress::admit`] lets a
//! request through only to a host a rule names — an IP literal only when a rule names
//! that very address (so never a loopback, private or link-local one otherwise), a
//! name below a wildcard only when it has a label of its own in front of it — on the
//! rule's scheme and port; the request count is enforced; a denial never records the
//! path, query or credentials of the URL; and every address std calls loopback,
//! private, link-local, unspecified, multicast or documentation is special.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use corral_host::policy::HttpGrant;
use corral_host::runtime::egress::address::special_range;
use corral_host::runtime::egress::{Egress, Host, HostPattern, HostRule, Scheme, Target};
use proptest::prelude::*;
use proptest::strategy::BoxedStrategy;
use wasmtime_wasi_http::Error;

use super::{Target as FuzzTarget, Verdict, mutate};

pub const TARGET: FuzzTarget = FuzzTarget {
    name: "egress",
    inputs,
    check,
};

/// Markers the generated URLs carry in the parts a denial must not record.
const SECRETS: &[&str] = &[
    "SECRETPATH",
    "SECRETQUERY",
    "SECRETPASSWORD",
    "SECRETFRAGMENT",
];

/// Hosts the URLs and the rules draw from, so that they often meet.
const HOSTS: &[&str] = &[
    "api.example.com",
    "example.com",
    "a.b.example.com",
    "badexample.com",
    "localhost",
    "a.localhost",
    "EXAMPLE.COM.",
    "api.example.com.",
    "..example.com",
    "a..example.com",
    "-x.example.com",
    "127.0.0.1",
    "127.1",
    "0x7f.1",
    "2130706433",
    "10.0.0.5",
    "0.0.0.0",
    "169.254.169.254",
    "192.168.1.1",
    "172.16.0.1",
    "100.64.0.1",
    "8.8.8.8",
    "[::1]",
    "[::]",
    "[::ffff:127.0.0.1]",
    "[::ffff:10.0.0.1]",
    "[fe80::1]",
    "[fd00::1]",
    "[64:ff9b::a9fe:a9fe]",
    "[2002:7f00:1::1]",
    "[2001:db8::1]",
    "[2606:4700::1111]",
    "[::127.0.0.1]",
    "xn--nxasmq6b.example",
];

fn ip() -> BoxedStrategy<IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|o| IpAddr::V4(Ipv4Addr::from(o))),
        any::<[u16; 8]>().prop_map(|s| IpAddr::V6(Ipv6Addr::from(s))),
        any::<[u8; 4]>().prop_map(|o| IpAddr::V6(Ipv4Addr::from(o).to_ipv6_mapped())),
        (
            prop::sample::select(&[0x2002u16, 0xfe80, 0xfc00, 0xfd12, 0xff02, 0x2001, 0x64][..]),
            any::<[u16; 7]>()
        )
            .prop_map(|(first, rest)| {
                let mut s = [first; 8];
                s[1..].copy_from_slice(&rest);
                IpAddr::V6(Ipv6Addr::from(s))
            }),
    ]
    .boxed()
}

fn host() -> BoxedStrategy<String> {
    prop_oneof![
        6 => prop::sample::select(HOSTS).prop_map(str::to_string),
        2 => ip().prop_map(|ip| match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        }),
        2 => "[a-z0-9-]{1,8}(\\.[a-z0-9-]{1,8}){0,3}",
        1 => "[a-zA-Z0-9.*:%_~\\[\\]-]{0,16}",
    ]
    .boxed()
}

fn port() -> BoxedStrategy<String> {
    prop_oneof![
        3 => Just(String::new()),
        2 => prop::sample::select(&[":80", ":443", ":8080", ":9"][..]).prop_map(str::to_string),
        1 => prop::sample::select(&[":0", ":65535", ":65536", ":99999", ":", ":+80", ":08080"][..])
            .prop_map(str::to_string),
        1 => any::<u16>().prop_map(|p| format!(":{p}")),
    ]
    .boxed()
}

fn url() -> BoxedStrategy<String> {
    let scheme = prop::sample::select(&["http", "https", "HTTPS", "ftp", "ws", ""][..]);
    let credentials = prop::sample::select(&["", "", "", "user:SECRETPASSWORD@"][..]);
    let path = prop::sample::select(&["", "/", "/SECRETPATH", "/a/SECRETPATH/b"][..]);
    let query = prop::sample::select(&["", "", "?token=SECRETQUERY"][..]);
    let fragment = prop::sample::select(&["", "", "#SECRETFRAGMENT"][..]);
    (scheme, credentials, host(), port(), path, query, fragment)
        .prop_map(|(scheme, credentials, host, port, path, query, fragment)| {
            let start = if scheme.is_empty() {
                String::new()
            } else {
                format!("{scheme}://")
            };
            format!("{start}{credentials}{host}{port}{path}{query}{fragment}")
        })
        .boxed()
}

fn rule() -> BoxedStrategy<String> {
    let scheme = prop::sample::select(&["http", "https", "HTTPS", "ftp"][..]);
    let host = prop_oneof![
        3 => host(),
        2 => prop::sample::select(HOSTS).prop_map(|h| format!("*.{h}")),
        1 => prop::sample::select(&["*", "*.", "*.*.example.com", "api.*.example.com"][..])
            .prop_map(str::to_string),
    ];
    let tail = prop::sample::select(&["", "", "", "/", "/v1", "?x", "#f", "@x"][..]);
    (scheme, host, port(), tail)
        .prop_map(|(scheme, host, port, tail)| format!("{scheme}://{host}{port}{tail}"))
        .boxed()
}

fn inputs() -> BoxedStrategy<Vec<u8>> {
    let seeds: Vec<Vec<u8>> = super::corpus("egress")
        .into_iter()
        .map(|(_, b)| b)
        .collect();
    prop_oneof![
        6 => (url(), prop::collection::vec(rule(), 0..4))
            .prop_map(|(url, rules)| format!("{url}\n{}", rules.join("\n")).into_bytes()),
        2 => mutate::mutated(seeds),
        1 => prop::collection::vec(any::<u8>(), 0..48),
    ]
    .boxed()
}

/// What std's own predicates call special must be special to the host too.
fn check_address(ip: IpAddr) -> Verdict {
    let std_special = match ip.to_canonical() {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || first & 0xfe00 == 0xfc00
                || first & 0xffc0 == 0xfe80
        }
    };
    if std_special {
        prop_assert!(special_range(ip).is_some(), "{} is special but allowed", ip);
    }
    // An address carried in a 6to4 or NAT64 prefix is judged by that address.
    if let IpAddr::V4(v4) = ip {
        let octets = v4.octets();
        let [a, b, c, d] = octets.map(u16::from);
        let six_to_four = Ipv6Addr::new(0x2002, a << 8 | b, c << 8 | d, 0, 0, 0, 0, 1);
        let nat64 = Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, a << 8 | b, c << 8 | d);
        if special_range(ip).is_some() {
            for carrier in [six_to_four, nat64, v4.to_ipv6_mapped()] {
                prop_assert!(
                    special_range(IpAddr::V6(carrier)).is_some(),
                    "{} carries {} but is allowed",
                    carrier,
                    v4
                );
            }
        }
    }
    Ok(())
}

fn check(bytes: &[u8]) -> Verdict {
    let text = String::from_utf8_lossy(bytes);
    let mut lines = text.split('\n');
    let url = lines.next().unwrap_or_default();
    let mut rules = Vec::new();
    for line in lines {
        if let Ok(ip) = line.parse::<IpAddr>() {
            check_address(ip)?;
        }
        let Ok(rule) = line.parse::<HostRule>() else {
            continue;
        };
        let printed = rule.to_string();
        prop_assert_eq!(
            printed.parse::<HostRule>(),
            Ok(rule.clone()),
            "{} prints as {}",
            line,
            printed
        );
        prop_assert_eq!(
            printed.parse::<HostRule>().map(|r| r.to_string()),
            Ok(printed.clone())
        );
        if let HostPattern::Ip(ip) = rule.host {
            check_address(ip)?;
            let target = Target {
                scheme: rule.scheme,
                host: Host::Ip(ip.to_canonical()),
                port: rule.port,
            };
            prop_assert!(rule.matches(&target));
            prop_assert!(rule.names_address(rule.scheme, ip, rule.port));
        }
        rules.push(rule);
    }

    let Ok(uri) = url.parse::<http::Uri>() else {
        return Ok(());
    };
    let target = Target::of(&uri);
    if let Ok(Target {
        host: Host::Ip(ip), ..
    }) = &target
    {
        check_address(*ip)?;
    }

    // Without a grant nothing passes.
    let mut closed = Egress::new(None);
    prop_assert!(matches!(closed.admit(&uri), Err(Error::HttpRequestDenied)));
    check_denials(&closed, &uri, 1)?;

    if rules.is_empty() || rules.len() > HttpGrant::CEILING_RULES {
        return Ok(());
    }
    const MAX_REQUESTS: u64 = 3;
    let grant = HttpGrant {
        max_requests: MAX_REQUESTS,
        ..HttpGrant::new(rules.clone())
    };
    let mut egress = Egress::new(Some(grant));
    let first = egress.admit(&uri);
    let admitted = first.is_ok();
    match first {
        Ok((_, admitted)) => {
            prop_assert_eq!(Ok(&admitted), target.as_ref());
            check_admitted(&uri, &admitted, &rules)?;
        }
        Err(error) => prop_assert!(
            matches!(error, Error::HttpRequestDenied),
            "{:?} for {}",
            error,
            url
        ),
    }
    // The same request is treated the same until the count runs out, denied or not.
    for _ in 1..MAX_REQUESTS {
        prop_assert_eq!(egress.admit(&uri).is_ok(), admitted);
    }
    let past = egress.admit(&uri);
    if target.is_ok() {
        prop_assert!(
            matches!(past, Err(Error::ConnectionLimitReached)),
            "{:?}",
            past
        );
    } else {
        prop_assert!(past.is_err());
    }
    let denied = if admitted { 1 } else { MAX_REQUESTS + 1 };
    check_denials(&egress, &uri, denied)
}

/// An admitted target is the URL's own scheme, host and port, and a rule names it.
fn check_admitted(uri: &http::Uri, target: &Target, rules: &[HostRule]) -> Verdict {
    let scheme = uri.scheme_str().unwrap_or_default().to_ascii_lowercase();
    prop_assert_eq!(target.scheme.as_str(), scheme.as_str());
    let default = match target.scheme {
        Scheme::Http => 80,
        Scheme::Https => 443,
    };
    if let Some(port) = uri.port() {
        prop_assert_eq!(
            Some(target.port),
            port.as_str().parse::<u16>().ok(),
            "{}",
            uri
        );
    } else {
        prop_assert_eq!(target.port, default);
    }
    let on_target = |rule: &&HostRule| rule.scheme == target.scheme && rule.port == target.port;
    match &target.host {
        Host::Ip(ip) => {
            let named = rules
                .iter()
                .filter(on_target)
                .any(|rule| matches!(rule.host, HostPattern::Ip(r) if r.to_canonical() == *ip));
            prop_assert!(
                named,
                "{} reaches the address {} ({:?}) that no rule names: {:?}",
                uri,
                ip,
                special_range(*ip),
                rules
            );
        }
        Host::Name(name) => {
            prop_assert!(name.parse::<Ipv4Addr>().is_err(), "{} is an address", name);
            let allowed = rules.iter().filter(on_target).any(|rule| match &rule.host {
                HostPattern::Name(n) => n == name,
                HostPattern::Subdomains(suffix) => name
                    .strip_suffix(suffix.as_str())
                    .and_then(|front| front.strip_suffix('.'))
                    .is_some_and(|label| !label.is_empty()),
                HostPattern::Ip(_) => false,
            });
            prop_assert!(
                allowed,
                "{} reaches {} that no rule names: {:?}",
                uri,
                name,
                rules
            );
        }
    }
    Ok(())
}

/// `count` denials are counted and listed, none with the URL's path, query, fragment
/// or credentials.
fn check_denials(egress: &Egress, uri: &http::Uri, count: u64) -> Verdict {
    // A marker the mutations moved into the scheme or host may be shown: those are no
    // secret.
    let host = format!(
        "{}{}",
        uri.scheme_str().unwrap_or_default(),
        uri.host().unwrap_or_default()
    );
    let (usage, denials) = egress.report();
    prop_assert_eq!(usage.requests_denied, count);
    prop_assert_eq!(usage.requests, 0);
    prop_assert_eq!(denials.len() as u64, count);
    for denial in &denials {
        for secret in SECRETS.iter().filter(|s| !host.contains(*s)) {
            prop_assert!(
                !denial.target.contains(secret) && !denial.detail.contains(secret),
                "a denial records {}: {:?}",
                secret,
                denial
            );
        }
    }
    Ok(())
}
