//! Outbound HTTP: denied by default, granted per invocation by an allowlist.
//!
//! [`Egress`] is the `WasiHttpHooks` of every store. Each `wasi:http/outgoing-handler`
//! request goes through [`Egress::admit`] and then `send_checked`, in this order:
//!
//! 1. Without an [`HttpGrant`], refused (`not_granted`).
//! 2. Past the grant's `max_requests` (denied requests count), refused (`request_limit`).
//! 3. Scheme, host and port must match a [`HostRule`] (`not_allowed` otherwise).
//! 4. A host *name* is resolved here, under the connect timeout, and every address it
//!    resolves to is checked: one in a special range ([`address::special_range`]:
//!    loopback, private, link-local, …) refuses the whole request
//!    (`prohibited_address`) unless a rule names that address literally on the same
//!    scheme and port. A host given as an IP literal only ever matches a rule naming
//!    that address, which is what allows it. `localhost` is an ordinary name: it gets no
//!    exception, so `http://localhost:8080` alone never reaches loopback.
//! 5. The connection goes to the checked addresses themselves ([`connect::send`]),
//!    never to a fresh lookup, so a second DNS answer cannot slip in between.
//!
//! `wasi:http` does not follow redirects; a guest that follows one makes a new
//! request, checked again from step 1. Raw sockets (`wasi:sockets`) stay closed
//! whatever is granted here.
//!
//! A refused request fails in the guest with a `wasi:http` error code
//! (`HTTP-request-denied`, `destination-IP-prohibited` or `connection-limit-reached`)
//! and is recorded as a [`Denial`] for the execution record. What the requests used is
//! counted in [`HttpUsage`].

pub mod address;
pub mod connect;
pub mod rule;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use rustls::pki_types::ServerName;
use tokio::time::Instant;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use self::connect::{Connection, Timeouts};
pub use self::rule::{Host, HostPattern, HostRule, RuleError, Scheme, Target};
use super::outcome::{Denial, DenialReason, HttpUsage};
use crate::policy::HttpGrant;

/// Denials listed in full per invocation; `HttpUsage::requests_denied` counts them all.
pub const MAX_LISTED_DENIALS: usize = 64;

/// What one invocation's requests used and which were refused. Shared with the
/// request futures, which run outside the store.
#[derive(Debug, Default)]
pub struct Ledger {
    usage: HttpUsage,
    denials: Vec<Denial>,
}

impl Ledger {
    /// Records a refusal and returns the error the guest gets for it.
    fn deny(&mut self, target: String, reason: DenialReason, detail: String) -> Error {
        tracing::debug!(%target, ?reason, %detail, "outbound HTTP request denied");
        self.usage.requests_denied += 1;
        if self.denials.len() < MAX_LISTED_DENIALS {
            self.denials.push(Denial {
                capability: "http".into(),
                target,
                reason,
                detail,
            });
        }
        match reason {
            DenialReason::NotGranted | DenialReason::NotAllowed => Error::HttpRequestDenied,
            DenialReason::ProhibitedAddress => Error::DestinationIpProhibited,
            DenialReason::RequestLimit => Error::ConnectionLimitReached,
            // Reasons of other capabilities; never given here.
            DenialReason::CallDepth | DenialReason::CallCycle | DenialReason::Refused => {
                Error::HttpRequestDenied
            }
        }
    }
}

/// The outbound-HTTP hooks of one invocation. See the module docs.
pub struct Egress {
    grant: Option<Arc<HttpGrant>>,
    attempts: u64,
    ledger: Arc<Mutex<Ledger>>,
    /// The execution's span: every admitted request carries it as `traceparent`
    /// (replacing the guest's own), so the upstream's spans join the execution's trace.
    pub trace: Option<opentelemetry::trace::SpanContext>,
}

impl Egress {
    /// Hooks that allow what `grant` allows, or nothing when it is `None`.
    pub fn new(grant: Option<HttpGrant>) -> Egress {
        Egress {
            grant: grant.map(Arc::new),
            attempts: 0,
            ledger: Arc::default(),
            trace: None,
        }
    }

    /// What the requests used so far, and the denials (the first
    /// [`MAX_LISTED_DENIALS`]).
    pub fn report(&self) -> (HttpUsage, Vec<Denial>) {
        let ledger = self.ledger.lock().expect("egress ledger");
        (ledger.usage, ledger.denials.clone())
    }

    /// Steps 1 to 3 of the module docs: the checks that need no lookup.
    pub fn admit(&mut self, uri: &http::Uri) -> Result<(Arc<HttpGrant>, Target), Error> {
        self.attempts += 1;
        let mut ledger = self.ledger.lock().expect("egress ledger");
        let target = Target::of(uri);
        // Never the path, query or credentials: they may carry secrets.
        let shown = match &target {
            Ok(target) => target.to_string(),
            Err(_) => Target::shown(uri),
        };
        let Some(grant) = &self.grant else {
            return Err(ledger.deny(
                shown,
                DenialReason::NotGranted,
                "this agent has no HTTP grant".into(),
            ));
        };
        let target =
            target.map_err(|why| ledger.deny(shown.clone(), DenialReason::NotAllowed, why))?;
        if self.attempts > grant.max_requests {
            return Err(ledger.deny(
                shown,
                DenialReason::RequestLimit,
                format!(
                    "the invocation already made the {} requests its grant allows",
                    grant.max_requests
                ),
            ));
        }
        if !grant.allow.iter().any(|rule| rule.matches(&target)) {
            let rules: Vec<String> = grant.allow.iter().map(ToString::to_string).collect();
            return Err(ledger.deny(
                shown,
                DenialReason::NotAllowed,
                format!(
                    "{target} matches no rule of the grant ({})",
                    rules.join(", ")
                ),
            ));
        }
        Ok((grant.clone(), target))
    }
}

/// Steps 4 and 5 of the module docs: resolve, check every address, connect to them.
async fn send_checked(
    grant: Arc<HttpGrant>,
    target: Target,
    request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
    ledger: Arc<Mutex<Ledger>>,
) -> Result<(http::Response<WasiBody>, Connection), Error> {
    let timeouts = Timeouts::new(grant.timeout(), options);
    let deadline = Instant::now() + timeouts.connect;
    let addrs = match &target.host {
        Host::Ip(ip) => vec![SocketAddr::new(*ip, target.port)],
        Host::Name(name) => {
            let resolved = tokio::time::timeout_at(
                deadline,
                tokio::net::lookup_host((name.as_str(), target.port)),
            )
            .await
            .map_err(|_| Error::DnsTimeout)?
            .map_err(|e| Error::DnsError {
                rcode: Some(e.to_string()),
                info_code: None,
            })?;
            let addrs: Vec<SocketAddr> = resolved
                .map(|a| SocketAddr::new(a.ip().to_canonical(), a.port()))
                .collect();
            if addrs.is_empty() {
                return Err(Error::DestinationNotFound);
            }
            if let Err(detail) = check_resolved(&grant, &target, name, &addrs) {
                return Err(ledger.lock().expect("egress ledger").deny(
                    target.to_string(),
                    DenialReason::ProhibitedAddress,
                    detail,
                ));
            }
            addrs
        }
    };
    let tls = match (target.scheme, &target.host) {
        (Scheme::Http, _) => None,
        (Scheme::Https, Host::Ip(ip)) => Some(ServerName::from(*ip)),
        (Scheme::Https, Host::Name(name)) => Some(ServerName::try_from(name.clone())?),
    };
    ledger.lock().expect("egress ledger").usage.requests += 1;
    connect::send(
        request,
        addrs,
        tls,
        timeouts,
        deadline,
        grant.max_response_bytes,
        ledger,
    )
    .await
}

/// A request the host makes itself on a guest's behalf (a model call), under the same
/// checks as a guest's: it must match `grant`'s rules, every address its host resolves
/// to is checked, and the connection goes to those addresses. The whole answer is
/// read, up to the grant's `max_response_bytes`.
pub async fn host_request(
    grant: Arc<HttpGrant>,
    request: http::Request<bytes::Bytes>,
) -> Result<http::Response<bytes::Bytes>, Error> {
    use http_body_util::BodyExt;
    let target = Target::of(request.uri()).map_err(|_| Error::HttpRequestUriInvalid)?;
    if !grant.allow.iter().any(|rule| rule.matches(&target)) {
        return Err(Error::HttpRequestDenied);
    }
    let request = request.map(|body| {
        http_body_util::Full::new(body)
            .map_err(|never| match never {})
            .boxed_unsync()
    });
    let ledger = Arc::default();
    let (response, connection) = send_checked(grant, target, request, None, ledger).await?;
    // The connection is driven while the body is read, and dropped with it.
    let connection = Box::into_pin(connection);
    let (parts, body) = response.into_parts();
    let read = body.collect();
    tokio::pin!(read);
    let mut connection = Some(connection);
    let collected = loop {
        match &mut connection {
            Some(driving) => tokio::select! {
                body = &mut read => break body?,
                done = driving => {
                    done?;
                    connection = None;
                }
            },
            None => break read.await?,
        }
    };
    Ok(http::Response::from_parts(parts, collected.to_bytes()))
}

/// Step 4 of the module docs for the addresses `name` resolved to: the explanation of
/// the first one in a special range that no rule names on the target's scheme and port.
fn check_resolved(
    grant: &HttpGrant,
    target: &Target,
    name: &str,
    addrs: &[SocketAddr],
) -> Result<(), String> {
    for addr in addrs {
        let ip = addr.ip().to_canonical();
        let Some(range) = address::special_range(ip) else {
            continue;
        };
        let named = grant
            .allow
            .iter()
            .any(|rule| rule.names_address(target.scheme, ip, target.port));
        if !named {
            let literal = Target {
                host: Host::Ip(ip),
                ..target.clone()
            };
            return Err(format!(
                "{name} resolved to {ip}, a {range} address; only a rule naming the address itself ({literal}) allows it"
            ));
        }
    }
    Ok(())
}

impl WasiHttpHooks for Egress {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<
        dyn Future<
                Output = wasmtime_wasi_http::Result<(
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
                )>,
            > + Send,
    > {
        match self.admit(request.uri()) {
            Err(denied) => Box::new(async move { Err(denied) }),
            Ok((grant, target)) => {
                if let Some(trace) = &self.trace {
                    crate::telemetry::context::inject(trace, request.headers_mut());
                }
                Box::new(send_checked(
                    grant,
                    target,
                    request,
                    options,
                    self.ledger.clone(),
                ))
            }
        }
    }

    fn p2_error_from_tls(
        &mut self,
        err: &std::io::Error,
    ) -> wasmtime_wasi_http::p2::bindings::http::types::ErrorCode {
        use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode;
        let certificate = err
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
            .is_some_and(|e| matches!(e, rustls::Error::InvalidCertificate(_)));
        if certificate {
            ErrorCode::TlsCertificateError
        } else {
            ErrorCode::TlsProtocolError
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(rules: &[&str], max_requests: u64) -> HttpGrant {
        HttpGrant {
            max_requests,
            ..HttpGrant::new(rules.iter().map(|r| r.parse().unwrap()).collect())
        }
    }

    fn uri(text: &str) -> http::Uri {
        text.parse().unwrap()
    }

    #[test]
    fn without_a_grant_every_request_is_denied_and_recorded() {
        let mut egress = Egress::new(None);
        let denied = egress
            .admit(&uri("https://api.example.com/secret?token=1"))
            .unwrap_err();
        assert!(matches!(denied, Error::HttpRequestDenied));
        let (usage, denials) = egress.report();
        assert_eq!(usage.requests_denied, 1);
        assert_eq!(usage.requests, 0);
        assert_eq!(denials[0].reason, DenialReason::NotGranted);
        // The path and query are not recorded: they may carry secrets.
        assert_eq!(denials[0].target, "https://api.example.com:443");
    }

    #[test]
    fn the_allowlist_is_checked_before_anything_is_resolved() {
        let mut egress = Egress::new(Some(grant(&["https://api.example.com"], 10)));
        assert!(egress.admit(&uri("https://api.example.com/v1")).is_ok());
        for bad in [
            "http://api.example.com/",
            "https://api.example.com:8443/",
            "https://example.com/",
        ] {
            assert!(
                matches!(egress.admit(&uri(bad)), Err(Error::HttpRequestDenied)),
                "{bad}"
            );
        }
        let (usage, denials) = egress.report();
        assert_eq!(usage.requests_denied, 3);
        assert!(denials.iter().all(|d| d.reason == DenialReason::NotAllowed));
        assert!(
            denials[2]
                .detail
                .contains("matches no rule of the grant (https://api.example.com)")
        );
    }

    #[test]
    fn requests_past_the_limit_are_refused_counting_denied_ones() {
        let mut egress = Egress::new(Some(grant(&["https://api.example.com"], 2)));
        assert!(egress.admit(&uri("https://elsewhere.example/")).is_err());
        assert!(egress.admit(&uri("https://api.example.com/")).is_ok());
        let third = egress.admit(&uri("https://api.example.com/"));
        assert!(matches!(third, Err(Error::ConnectionLimitReached)));
        let (usage, denials) = egress.report();
        assert_eq!(usage.requests_denied, 2);
        assert_eq!(denials[1].reason, DenialReason::RequestLimit);
    }

    #[test]
    fn the_denial_list_is_bounded_but_the_count_is_not() {
        let mut egress = Egress::new(None);
        for _ in 0..MAX_LISTED_DENIALS + 10 {
            let _ = egress.admit(&uri("http://example.com/"));
        }
        let (usage, denials) = egress.report();
        assert_eq!(usage.requests_denied, MAX_LISTED_DENIALS as u64 + 10);
        assert_eq!(denials.len(), MAX_LISTED_DENIALS);
    }

    fn resolved(ips: &[&str], port: u16) -> Vec<SocketAddr> {
        ips.iter()
            .map(|ip| SocketAddr::new(ip.parse().unwrap(), port))
            .collect()
    }

    #[test]
    fn a_name_resolving_to_the_metadata_address_is_refused() {
        let grant = grant(&["http://*.example.com"], 10);
        let target = Target::of(&uri("http://metadata.example.com/")).unwrap();
        let detail = check_resolved(
            &grant,
            &target,
            "metadata.example.com",
            &resolved(&["169.254.169.254"], 80),
        )
        .unwrap_err();
        assert_eq!(
            detail,
            "metadata.example.com resolved to 169.254.169.254, a link-local (169.254.0.0/16) \
             address; only a rule naming the address itself (http://169.254.169.254:80) allows it"
        );
    }

    #[test]
    fn every_resolved_address_is_checked_not_just_the_first() {
        let grant = grant(&["https://api.example.com"], 10);
        let target = Target::of(&uri("https://api.example.com/")).unwrap();
        let check =
            |ips: &[&str]| check_resolved(&grant, &target, "api.example.com", &resolved(ips, 443));
        assert!(check(&["93.184.216.34", "2606:2800:220:1::1"]).is_ok());
        let mixed = check(&["93.184.216.34", "10.0.0.5"]).unwrap_err();
        assert!(mixed.contains("10.0.0.5, a private"), "{mixed}");
        let mapped = check(&["::ffff:192.168.0.1"]).unwrap_err();
        assert!(mapped.contains("192.168.0.1, a private"), "{mapped}");
    }

    #[test]
    fn a_special_address_named_by_a_rule_on_the_same_scheme_and_port_is_allowed() {
        let target = Target::of(&uri("http://localhost:8080/")).unwrap();
        let addrs = resolved(&["127.0.0.1"], 8080);
        let named = grant(&["http://localhost:8080", "http://127.0.0.1:8080"], 10);
        assert!(check_resolved(&named, &target, "localhost", &addrs).is_ok());
        let other_port = grant(&["http://localhost:8080", "http://127.0.0.1:9090"], 10);
        assert!(check_resolved(&other_port, &target, "localhost", &addrs).is_err());
        let other_scheme = grant(&["http://localhost:8080", "https://127.0.0.1:8080"], 10);
        assert!(check_resolved(&other_scheme, &target, "localhost", &addrs).is_err());
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused_unless_the_address_is_named() {
        let request = || {
            http::Request::get("http://localhost:9/")
                .body(WasiBody::default())
                .unwrap()
        };
        let mut egress = Egress::new(Some(grant(&["http://localhost:9"], 10)));
        let (grant, target) = egress.admit(&uri("http://localhost:9/")).unwrap();
        let result = send_checked(grant, target, request(), None, egress.ledger.clone()).await;
        assert!(matches!(result, Err(Error::DestinationIpProhibited)));
        let (usage, denials) = egress.report();
        assert_eq!((usage.requests, usage.requests_denied), (0, 1));
        assert_eq!(denials[0].reason, DenialReason::ProhibitedAddress);
        assert!(
            denials[0].detail.contains("a loopback"),
            "{}",
            denials[0].detail
        );
    }
}
