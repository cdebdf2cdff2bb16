//! [`HostRule`]: one entry of an HTTP allowlist, and [`Target`]: what a request names.
//!
//! A rule names a scheme, a host and a port, nothing else:
//!
//! | rule | allows |
//! |---|---|
//! | `https://api.example.com` | `https`, exactly `api.example.com`, port 443 |
//! | `http://127.0.0.1:8080` | `http`, exactly the address 127.0.0.1, port 8080 |
//! | `https://*.example.com:8443` | `https`, any name *below* `example.com` (never `example.com` itself), port 8443 |
//! | `https://[2001:db8::1]` | `https`, exactly that IPv6 address, port 443 |
//!
//! The port is the scheme's default (80, 443) when the rule does not name one. Names
//! are compared in lowercase without a trailing dot. A rule has no path, query,
//! credentials or wildcard other than one leading `*.`; anything else is refused with
//! a message saying what to remove.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS.
    Https,
}

impl Scheme {
    /// 80 or 443.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    /// `http` or `https`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    fn parse(text: &str) -> Option<Scheme> {
        match text.to_ascii_lowercase().as_str() {
            "http" => Some(Scheme::Http),
            "https" => Some(Scheme::Https),
            _ => None,
        }
    }
}

/// The host part of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// Exactly this DNS name (lowercase, no trailing dot).
    Name(String),
    /// Any name with at least one more label in front of this one: `*.example.com`
    /// holds `example.com` here and matches `api.example.com` and `a.b.example.com`,
    /// never `example.com`.
    Subdomains(String),
    /// Exactly this address. The only way to allow a loopback, private, link-local or
    /// other special address (see `address.rs`).
    Ip(IpAddr),
}

/// One allowlist entry: scheme, host and port. Parses from, and prints as, text such as
/// `https://*.example.com:8443` (see the module docs); serialized as that text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HostRule {
    /// The scheme the request must use.
    pub scheme: Scheme,
    /// The host the request must name.
    pub host: HostPattern,
    /// The port the request must use (the scheme's default when the rule names none).
    pub port: u16,
}

/// The host a request names: a DNS name or an IP literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A name, lowercase, without a trailing dot.
    Name(String),
    /// An IP literal, IPv4-mapped IPv6 addresses turned into IPv4.
    Ip(IpAddr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(name) => f.write_str(name),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// Where a request goes: scheme, host and port (the scheme's default when the URL
/// names none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The request's scheme.
    pub scheme: Scheme,
    /// The request's host.
    pub host: Host,
    /// The request's port.
    pub port: u16,
}

impl Target {
    /// The target of a request URI, or why it has none we can check. Neither names
    /// the URI's path, query or credentials, which may carry secrets.
    pub fn of(uri: &http::Uri) -> Result<Target, String> {
        let scheme = uri
            .scheme_str()
            .and_then(Scheme::parse)
            .ok_or_else(|| format!("{} does not use http or https", Self::shown(uri)))?;
        let host = uri
            .host()
            .ok_or_else(|| format!("{} names no host", Self::shown(uri)))?;
        let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(v6) => Host::Ip(
                v6.parse::<Ipv6Addr>()
                    .map_err(|_| format!("{host} is not an IPv6 address"))?
                    .to_canonical(),
            ),
            None => match host.parse::<Ipv4Addr>() {
                Ok(v4) => Host::Ip(IpAddr::V4(v4)),
                Err(_) => Host::Name(normalize_name(host)),
            },
        };
        let port = uri.port_u16().unwrap_or(scheme.default_port());
        Ok(Target { scheme, host, port })
    }

    /// `scheme://host:port` of any URI, as far as it has them: what a record may show
    /// of a request that has no target.
    pub fn shown(uri: &http::Uri) -> String {
        let port = uri.port().map(|p| format!(":{p}")).unwrap_or_default();
        format!(
            "{}://{}{port}",
            uri.scheme_str().unwrap_or_default(),
            uri.host().unwrap_or_default()
        )
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme.as_str(), self.host, self.port)
    }
}

impl HostRule {
    /// Whether a request to `target` is allowed by this rule.
    pub fn matches(&self, target: &Target) -> bool {
        if self.scheme != target.scheme || self.port != target.port {
            return false;
        }
        match (&self.host, &target.host) {
            (HostPattern::Name(name), Host::Name(host)) => name == host,
            (HostPattern::Subdomains(suffix), Host::Name(host)) => host
                .strip_suffix(suffix.as_str())
                .is_some_and(|front| front.len() > 1 && front.ends_with('.')),
            (HostPattern::Ip(ip), Host::Ip(host)) => ip.to_canonical() == *host,
            _ => false,
        }
    }

    /// Whether this rule names `ip` literally, on `scheme` and `port`.
    pub fn names_address(&self, scheme: Scheme, ip: IpAddr, port: u16) -> bool {
        self.scheme == scheme
            && self.port == port
            && matches!(self.host, HostPattern::Ip(named) if named.to_canonical() == ip.to_canonical())
    }
}

fn normalize_name(name: &str) -> String {
    let name = name.to_ascii_lowercase();
    match name.strip_suffix('.') {
        Some(stripped) => stripped.to_string(),
        None => name,
    }
}

/// Why a rule could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("HTTP rule {rule:?}: {problem}")]
pub struct RuleError {
    rule: String,
    problem: String,
}

impl FromStr for HostRule {
    type Err = RuleError;

    fn from_str(text: &str) -> Result<HostRule, RuleError> {
        let fail = |problem: String| RuleError {
            rule: text.to_string(),
            problem,
        };
        let (scheme, rest) = text.split_once("://").ok_or_else(|| {
            fail("write scheme://host[:port], e.g. https://api.example.com".into())
        })?;
        let scheme = Scheme::parse(scheme)
            .ok_or_else(|| fail(format!("the scheme must be http or https, not {scheme:?}")))?;
        // A single trailing slash is harmless; anything after it is a path.
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if let Some(i) = rest.find(['/', '?', '#']) {
            return Err(fail(format!(
                "a rule names scheme, host and port only; remove {:?}",
                &rest[i..]
            )));
        }
        if rest.contains('@') {
            return Err(fail(
                "a rule cannot hold credentials; remove the part up to '@'".into(),
            ));
        }
        let (host, port) = split_host_port(rest).map_err(fail)?;
        let port = match port {
            None => scheme.default_port(),
            Some(p) => match p.parse::<u16>() {
                Ok(0) | Err(_) => {
                    return Err(fail(format!("the port must be 1 to 65535, not {p:?}")));
                }
                Ok(p) => p,
            },
        };
        let host = parse_host_pattern(host).map_err(fail)?;
        Ok(HostRule { scheme, host, port })
    }
}

/// `host[:port]`, where an IPv6 host is in brackets.
fn split_host_port(text: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(after) = text.strip_prefix('[') {
        let (v6, rest) = after
            .split_once(']')
            .ok_or_else(|| "an IPv6 address needs its closing ']'".to_string())?;
        return match rest {
            "" => Ok((v6, None)),
            _ => match rest.strip_prefix(':') {
                Some(port) => Ok((v6, Some(port))),
                None => Err(format!("unexpected {rest:?} after the IPv6 address")),
            },
        };
    }
    match text.matches(':').count() {
        0 => Ok((text, None)),
        1 => {
            let (host, port) = text.split_once(':').expect("one colon");
            Ok((host, Some(port)))
        }
        _ => Err("write an IPv6 address in brackets, e.g. http://[::1]:8080".into()),
    }
}

fn parse_host_pattern(host: &str) -> Result<HostPattern, String> {
    if host.is_empty() {
        return Err("the host is empty".into());
    }
    if let Ok(v6) = host.parse::<Ipv6Addr>() {
        return Ok(HostPattern::Ip(IpAddr::V6(v6).to_canonical()));
    }
    if let Ok(v4) = host.parse::<Ipv4Addr>() {
        return Ok(HostPattern::Ip(IpAddr::V4(v4)));
    }
    let (wildcard, name) = match host.strip_prefix("*.") {
        Some(suffix) => (true, suffix),
        None => (false, host),
    };
    if name.contains('*') {
        return Err("the only wildcard allowed is a leading \"*.\", e.g. *.example.com".into());
    }
    let name = normalize_name(name);
    check_dns_name(&name)?;
    Ok(if wildcard {
        HostPattern::Subdomains(name)
    } else {
        HostPattern::Name(name)
    })
}

/// Letters, digits and inner hyphens in labels of 1 to 63 characters, at most 253 in
/// all, and a last label that is not all digits (so `127.1` is neither a name nor, to
/// us, an address).
fn check_dns_name(name: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("{name:?} is not a host name or IP address: {why}"));
    if name.is_empty() || name.len() > 253 {
        return bad("a name has 1 to 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return bad("each label has 1 to 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return bad("labels hold letters, digits and '-' only");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return bad("a label cannot start or end with '-'");
        }
    }
    if name
        .rsplit('.')
        .next()
        .is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit()))
    {
        return bad("the last label is all digits");
    }
    Ok(())
}

impl fmt::Display for HostRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.scheme.as_str())?;
        match &self.host {
            HostPattern::Name(name) => f.write_str(name)?,
            HostPattern::Subdomains(suffix) => write!(f, "*.{suffix}")?,
            HostPattern::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]")?,
            HostPattern::Ip(ip) => write!(f, "{ip}")?,
        }
        if self.port != self.scheme.default_port() {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}

impl TryFrom<String> for HostRule {
    type Error = RuleError;

    fn try_from(text: String) -> Result<HostRule, RuleError> {
        text.parse()
    }
}

impl From<HostRule> for String {
    fn from(rule: HostRule) -> String {
        rule.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(text: &str) -> HostRule {
        text.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    fn target(url: &str) -> Target {
        Target::of(&url.parse().unwrap()).unwrap()
    }

    fn problem(text: &str) -> String {
        text.parse::<HostRule>().unwrap_err().to_string()
    }

    #[test]
    fn a_rule_without_a_port_takes_the_schemes_default() {
        assert_eq!(
            rule("https://api.example.com"),
            HostRule {
                scheme: Scheme::Https,
                host: HostPattern::Name("api.example.com".into()),
                port: 443
            }
        );
        assert_eq!(rule("http://example.com").port, 80);
        assert_eq!(rule("http://127.0.0.1:8080").port, 8080);
        assert_eq!(
            rule("http://127.0.0.1:8080").host,
            HostPattern::Ip("127.0.0.1".parse().unwrap())
        );
        assert_eq!(
            rule("https://[::1]:8443").host,
            HostPattern::Ip("::1".parse().unwrap())
        );
    }

    #[test]
    fn rules_are_normalized_and_print_back_in_canonical_form() {
        assert_eq!(
            rule("HTTPS://API.Example.COM.:443/").to_string(),
            "https://api.example.com"
        );
        assert_eq!(
            rule("https://*.example.com:8443").to_string(),
            "https://*.example.com:8443"
        );
        assert_eq!(
            rule("http://[::ffff:10.0.0.1]").to_string(),
            "http://10.0.0.1"
        );
        for text in [
            "https://a.example.com",
            "http://127.0.0.1:8080",
            "https://[2001:db8::1]:444",
        ] {
            assert_eq!(rule(text).to_string(), text);
            assert_eq!(rule(&rule(text).to_string()), rule(text));
        }
    }

    #[test]
    fn bad_rules_are_refused_saying_what_is_wrong() {
        assert!(problem("api.example.com").contains("scheme://host"));
        assert!(problem("ftp://example.com").contains("http or https"));
        assert!(problem("https://example.com/v1").contains("remove \"/v1\""));
        assert!(problem("https://example.com?x=1").contains("remove \"?x=1\""));
        assert!(problem("https://user:pw@example.com").contains("credentials"));
        assert!(problem("https://example.com:0").contains("1 to 65535"));
        assert!(problem("https://example.com:99999").contains("1 to 65535"));
        assert!(problem("https://example.com:").contains("1 to 65535"));
        assert!(problem("https://*").contains("leading \"*.\""));
        assert!(problem("https://*.").contains("not a host name"));
        assert!(problem("https://api.*.example.com").contains("leading \"*.\""));
        assert!(problem("https://*.*.example.com").contains("leading \"*.\""));
        assert!(problem("https://*.10.0.0.1").contains("all digits"));
        assert!(problem("https://127.1").contains("all digits"));
        assert!(problem("https://::1").contains("brackets"));
        assert!(problem("https://[::1").contains("closing"));
        assert!(problem("https://exa_mple.com").contains("letters, digits"));
        assert!(problem("https://-x.com").contains("start or end"));
        assert!(problem("https://").contains("empty"));
    }

    #[test]
    fn an_exact_rule_matches_only_its_scheme_host_and_port() {
        let r = rule("https://api.example.com");
        assert!(r.matches(&target("https://api.example.com/v1?q=1")));
        assert!(r.matches(&target("https://API.example.com.:443/")));
        assert!(!r.matches(&target("http://api.example.com/")), "scheme");
        assert!(!r.matches(&target("https://api.example.com:8443/")), "port");
        assert!(!r.matches(&target("https://example.com/")), "apex");
        assert!(
            !r.matches(&target("https://x.api.example.com/")),
            "subdomain"
        );
        assert!(
            !r.matches(&target("https://api.example.com.evil.net/")),
            "suffix trick"
        );
    }

    #[test]
    fn a_wildcard_matches_subdomains_but_never_the_apex() {
        let r = rule("https://*.example.com");
        assert!(r.matches(&target("https://api.example.com/")));
        assert!(r.matches(&target("https://a.b.example.com/")));
        assert!(!r.matches(&target("https://example.com/")));
        assert!(!r.matches(&target("https://badexample.com/")));
        assert!(!r.matches(&target("http://api.example.com/")));
        assert!(!r.matches(&target("https://api.example.com:444/")));
        let local = rule("http://*.localhost:8080");
        assert!(local.matches(&target("http://a.localhost:8080/")));
        assert!(!local.matches(&target("http://localhost:8080/")));
    }

    #[test]
    fn an_address_rule_matches_only_that_literal_address() {
        let r = rule("http://127.0.0.1:8080");
        assert!(r.matches(&target("http://127.0.0.1:8080/")));
        assert!(
            r.matches(&target("http://[::ffff:127.0.0.1]:8080/")),
            "mapped form"
        );
        assert!(
            !r.matches(&target("http://localhost:8080/")),
            "a name is not the address"
        );
        assert!(!r.matches(&target("http://127.0.0.2:8080/")));
        assert!(
            !r.matches(&target("http://127.1:8080/")),
            "shorthand is a name"
        );
        assert!(r.names_address(Scheme::Http, "127.0.0.1".parse().unwrap(), 8080));
        assert!(!r.names_address(Scheme::Https, "127.0.0.1".parse().unwrap(), 8080));
        let v6 = rule("https://[2001:db8::1]");
        assert!(v6.matches(&target("https://[2001:DB8:0::1]/")));
        assert!(!rule("https://example.com").matches(&target("https://93.184.216.34/")));
    }

    #[test]
    fn a_uri_without_a_target_is_shown_without_path_query_or_credentials() {
        let uri: http::Uri = "ftp://user:pw@example.com:21/secret?token=1"
            .parse()
            .unwrap();
        assert_eq!(Target::shown(&uri), "ftp://example.com:21");
        let why = Target::of(&uri).unwrap_err();
        assert_eq!(why, "ftp://example.com:21 does not use http or https");
    }

    #[test]
    fn rules_serialize_as_their_text() {
        let r = rule("https://*.example.com:8443");
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#""https://*.example.com:8443""#
        );
        let back: HostRule = serde_json::from_str(r#""https://*.example.com:8443""#).unwrap();
        assert_eq!(back, r);
        let err = serde_json::from_str::<HostRule>(r#""https://example.com/x""#).unwrap_err();
        assert!(err.to_string().contains("remove"), "{err}");
    }
}
