//! `http_get` and `https_get`: a minimal HTTP/1.0 client on tokio (one request per connection,
//! the body read to the end), keepalived's MD5 digest of the body, and TLS with rustls that
//! does NOT verify the server's certificate (as keepalived's SSL_GET: a health check asks
//! "does it answer", not "is it who it claims to be").

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use md5::{Digest as _, Md5};
use rustls::{
    DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    pki_types::{CertificateDer, ServerName, UnixTime},
};
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    net::TcpStream,
};

use super::{Outcome, Target, show};
use crate::config::{CheckConfig, CheckKind};

/// Largest response read.
pub const MAX_RESPONSE: usize = 16 << 20;

/// A response: the status code and the body (after the headers; cut to `Content-Length` when
/// given).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: String,
    pub body: Vec<u8>,
}

/// The body's MD5 as 32 lowercase hex digits.
pub fn md5_hex(body: &[u8]) -> String {
    Md5::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The Host header for `addr:port` when none is configured: the address (an IPv6 one in
/// brackets, as RFC 3986 writes it in a URI), and the port when it is not the scheme's default.
pub fn default_host(addr: IpAddr, port: u16, tls: bool) -> String {
    if port == if tls { 443 } else { 80 } {
        match addr {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => format!("[{a}]"),
        }
    } else {
        SocketAddr::new(addr, port).to_string()
    }
}

/// Parses a whole HTTP/1.x response.
pub fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Err(if raw.is_empty() {
            "empty response".to_string()
        } else {
            "the response has no end of headers".to_string()
        });
    };
    let headers = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = headers.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    let version = parts.next().unwrap_or_default();
    let status = parts.next().and_then(|s| s.parse::<u16>().ok());
    let status = match status {
        Some(s) if version.starts_with("HTTP/") => s,
        _ => return Err(format!("not an HTTP response: {:?}", truncate(status_line))),
    };
    let mut body = raw[end + 4..].to_vec();
    let length = lines.find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())?
    });
    if let Some(n) = length
        && body.len() > n
    {
        body.truncate(n);
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

/// GETs `path` from `addr` (over TLS when `tls`) with the Host header `host`, all within
/// `limit`.
pub async fn get(
    addr: SocketAddr,
    host: &str,
    path: &str,
    tls: bool,
    limit: Duration,
) -> Result<Response, String> {
    let work = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connecting to {addr}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let request = format!(
            "GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: lb-ctl-health\r\n\
             Connection: close\r\n\r\n"
        );
        let raw = if tls {
            let connector = tokio_rustls::TlsConnector::from(tls_config()?);
            let name = server_name(host, addr);
            let stream = connector
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
            exchange(stream, request.as_bytes()).await?
        } else {
            exchange(tcp, request.as_bytes()).await?
        };
        parse_response(&raw)
    };
    match tokio::time::timeout(limit, work).await {
        Ok(r) => r,
        Err(_) => Err(format!("{addr}: no complete answer within {}", show(limit))),
    }
}

/// Sends `request` and reads until the server closes (or [`MAX_RESPONSE`]).
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &[u8],
) -> Result<Vec<u8>, String> {
    stream
        .write_all(request)
        .await
        .map_err(|e| format!("sending the request: {e}"))?;
    stream
        .flush()
        .await
        .map_err(|e| format!("sending the request: {e}"))?;
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 16 << 10];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                raw.extend_from_slice(&buf[..n]);
                if raw.len() > MAX_RESPONSE {
                    return Err(format!("the response is larger than {MAX_RESPONSE} bytes"));
                }
            }
            // A TLS server that closes without close_notify: what came is the answer.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => break,
            Err(e) => return Err(format!("reading the response: {e}")),
        }
    }
    Ok(raw)
}

/// An http(s)_get check of `target`.
pub async fn check(check: &CheckConfig, target: &Target) -> Outcome {
    let tls = check.kind == CheckKind::HttpsGet;
    let host = check
        .host
        .clone()
        .unwrap_or_else(|| default_host(target.address, target.port, tls));
    let addr = SocketAddr::from((target.address, target.port));
    let scheme = if tls { "https" } else { "http" };
    let r = get(addr, &host, &check.path, tls, check.timeout).await?;
    let what = format!("{scheme} GET {}{}", target.shown(), check.path);
    if !check.status.contains(&r.status) {
        return Err(format!(
            "{what}: status {} (expected {})",
            r.status,
            check
                .status
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(" or ")
        ));
    }
    if let Some(want) = &check.digest {
        let got = md5_hex(&r.body);
        if &got != want {
            return Err(format!("{what}: body digest {got}, expected {want}"));
        }
        return Ok(format!("{what}: status {}, digest matches", r.status));
    }
    Ok(format!("{what}: status {}", r.status))
}

/// The TLS name to present: the Host header's name when it is one, else the address.
fn server_name(host: &str, addr: SocketAddr) -> ServerName<'static> {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map_or(v6, |(h, _)| h),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    ServerName::try_from(name.to_string()).unwrap_or_else(|_| ServerName::from(addr.ip()))
}

fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(NoVerification(provider.clone()));
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Accepts any certificate (signatures are still checked to complete the handshake).
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn md5_of_known_strings() {
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(md5_hex(b"real-server-1\n"), md5_hex(b"real-server-1\n"));
        assert_eq!(
            md5_hex(b"The quick brown fox jumps over the lazy dog"),
            "9e107d9d372bb6826bd81d3542a419d6"
        );
    }

    #[test]
    fn parses_responses() {
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello, and more",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
        let r = parse_response(b"HTTP/1.0 503 Busy\r\n\r\nno").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((r.status, r.body.as_slice()), (503, &b"no"[..]));
        assert!(parse_response(b"").is_err());
        assert!(parse_response(b"HTTP/1.0 200 OK\r\n").is_err());
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.0 abc\r\n\r\n").is_err());
    }

    #[test]
    fn host_header_default() {
        let a = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(default_host(a, 80, false), "10.0.0.1");
        assert_eq!(default_host(a, 8080, false), "10.0.0.1:8080");
        assert_eq!(default_host(a, 443, true), "10.0.0.1");
        let v6: IpAddr = "fd00:58::135".parse().expect("address");
        assert_eq!(default_host(v6, 80, false), "[fd00:58::135]");
        assert_eq!(default_host(v6, 8080, false), "[fd00:58::135]:8080");
        assert_eq!(default_host(v6, 443, true), "[fd00:58::135]");
    }

    #[test]
    fn tls_config_builds() {
        assert!(tls_config().is_ok());
        let addr = SocketAddr::from((Ipv4Addr::new(10, 0, 0, 1), 443));
        assert!(matches!(
            server_name("www.example.com:8443", addr),
            ServerName::DnsName(_)
        ));
        assert!(matches!(
            server_name("10.0.0.1", addr),
            ServerName::IpAddress(_)
        ));
        let v6 = SocketAddr::from((IpAddr::from([0xfd00, 0x58, 0, 0, 0, 0, 0, 0x135]), 443));
        match server_name("[fd00:58::135]:8443", v6) {
            ServerName::IpAddress(ip) => {
                assert_eq!(IpAddr::from(ip), v6.ip())
            }
            other => panic!("expected the IPv6 address, got {other:?}"),
        }
    }
}
