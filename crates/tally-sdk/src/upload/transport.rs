//! How batches reach the collector: a [`Transport`] trait, and the default
//! blocking HTTP implementation on `ureq` with rustls.
//!
//! Contract: `send` performs one request and returns the collector's
//! answer, whatever its status, or a [`TransportError`] when no answer
//! arrived (connection refused, reset, timeout). It never retries: retry
//! policy belongs to the uploader, which is also what lets tests wrap the
//! real transport in a fault-injecting one.

use std::fmt;
use std::time::Duration;

use super::policy::REQUEST_TIMEOUT_MS;

/// Largest answer body read: the collector's batch answer lists one small
/// result per message, about 80 bytes for each of at most 10,000 messages.
const MAX_RESPONSE_BYTES: u64 = 4 * 1024 * 1024;

/// HTTP method of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET` (`/v1/time`).
    Get,
    /// `POST` (`/v1/batch`).
    Post,
}

/// One request to the collector.
#[derive(Debug, Clone)]
pub struct Request {
    /// `GET` or `POST`.
    pub method: Method,
    /// Path and query under the endpoint (`/v1/batch`).
    pub path: String,
    /// Headers other than those the transport sets itself.
    pub headers: Vec<(&'static str, String)>,
    /// The body as sent.
    pub body: Vec<u8>,
}

/// The collector's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// The `Retry-After` header, if any.
    pub retry_after: Option<String>,
    /// The body (bounded by the transport).
    pub body: Vec<u8>,
}

/// Why no answer arrived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// No answer within the timeout (the request may have been processed).
    #[error("request timed out")]
    Timeout,
    /// The connection could not be made (refused, no route, DNS).
    #[error("could not connect: {0}")]
    Connect(String),
    /// The connection broke during the exchange (the request may have been
    /// processed).
    #[error("connection failed mid-request: {0}")]
    Io(String),
    /// The endpoint URL or a header could not be used.
    #[error("invalid request: {0}")]
    Invalid(String),
}

/// The host of `endpoint` when it is plain `http://` to a host that is not
/// loopback (`localhost`, `*.localhost`, `127.0.0.0/8`, `::1`): events and
/// the write key would cross the network unencrypted. `None` for
/// `https://`, for loopback, and for anything else.
pub fn insecure_http_host(endpoint: &str) -> Option<String> {
    let endpoint = endpoint.trim();
    let scheme = endpoint.get(..7)?;
    if !scheme.eq_ignore_ascii_case("http://") {
        return None;
    }
    let authority = endpoint[7..].split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host_port.split(':').next().unwrap_or(""),
    };
    let lower = host.to_ascii_lowercase();
    let loopback = lower == "localhost"
        || lower.ends_with(".localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    (!loopback).then(|| host.to_owned())
}

/// Sends requests to one collector.
pub trait Transport: Send + Sync + fmt::Debug {
    /// Performs `request` once.
    fn send(&self, request: &Request) -> Result<Response, TransportError>;
}

/// The default transport: blocking HTTP/1.1 with keep-alive, rustls for
/// `https://` endpoints.
pub struct HttpTransport {
    endpoint: String,
    agent: ureq::Agent,
}

impl fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpTransport")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl HttpTransport {
    /// A transport to the collector at `endpoint` (`http://host:port`,
    /// a trailing `/` is ignored).
    pub fn new(endpoint: &str) -> Self {
        Self::with_timeout(endpoint, Duration::from_millis(REQUEST_TIMEOUT_MS))
    }

    /// A transport with a request timeout other than the default.
    pub fn with_timeout(endpoint: &str, timeout: Duration) -> Self {
        Self::build(endpoint, timeout, None)
    }

    /// A transport that trusts, for `https://`, only the CA certificates in
    /// `ca_pem` (one or more PEM `CERTIFICATE` blocks) instead of the public
    /// web PKI: a collector behind a private CA, or a pinned one.
    pub fn with_trusted_ca(endpoint: &str, ca_pem: &[u8]) -> Result<Self, TransportError> {
        let mut roots = Vec::new();
        for item in ureq::tls::parse_pem(ca_pem) {
            match item {
                Ok(ureq::tls::PemItem::Certificate(cert)) => roots.push(cert),
                Ok(_) => {}
                Err(e) => return Err(TransportError::Invalid(format!("CA PEM: {e}"))),
            }
        }
        if roots.is_empty() {
            return Err(TransportError::Invalid(
                "CA PEM holds no certificate".to_owned(),
            ));
        }
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(roots)))
            .build();
        Ok(Self::build(
            endpoint,
            Duration::from_millis(REQUEST_TIMEOUT_MS),
            Some(tls),
        ))
    }

    fn build(endpoint: &str, timeout: Duration, tls: Option<ureq::tls::TlsConfig>) -> Self {
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout));
        if let Some(tls) = tls {
            config = config.tls_config(tls);
        }
        Self {
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            agent: ureq::Agent::new_with_config(config.build()),
        }
    }
}

impl Transport for HttpTransport {
    fn send(&self, request: &Request) -> Result<Response, TransportError> {
        let url = format!("{}{}", self.endpoint, request.path);
        let result = match request.method {
            Method::Get => {
                let mut builder = self.agent.get(&url);
                for (name, value) in &request.headers {
                    builder = builder.header(*name, value);
                }
                builder.call()
            }
            Method::Post => {
                let mut builder = self.agent.post(&url);
                for (name, value) in &request.headers {
                    builder = builder.header(*name, value);
                }
                builder.send(&request.body[..])
            }
        };
        let mut response = result.map_err(map_error)?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_to_vec()
            .map_err(map_error)?;
        Ok(Response {
            status,
            retry_after,
            body,
        })
    }
}

fn map_error(e: ureq::Error) -> TransportError {
    match e {
        ureq::Error::Timeout(_) => TransportError::Timeout,
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => {
            TransportError::Connect(e.to_string())
        }
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            TransportError::Connect(io.to_string())
        }
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => TransportError::Timeout,
        ureq::Error::BadUri(_) | ureq::Error::Http(_) => TransportError::Invalid(e.to_string()),
        other => TransportError::Io(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_insecure_unless_loopback() {
        for (endpoint, host) in [
            ("http://collector.example:8080", Some("collector.example")),
            ("HTTP://10.0.0.5", Some("10.0.0.5")),
            ("http://user:pw@192.0.2.1:80/v1", Some("192.0.2.1")),
            ("http://[2001:db8::1]:8080", Some("2001:db8::1")),
            (
                "http://localhost.example.com",
                Some("localhost.example.com"),
            ),
            ("http://127.0.0.1:8080", None),
            ("http://127.9.9.9", None),
            ("http://[::1]:8080/", None),
            ("http://localhost:8080", None),
            ("http://LocalHost", None),
            ("http://app.localhost:3000", None),
            ("https://collector.example", None),
        ] {
            assert_eq!(insecure_http_host(endpoint).as_deref(), host, "{endpoint}");
        }
    }
}
