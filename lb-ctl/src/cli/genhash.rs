//! `lb-ctl genhash`: fetches a page as the `http_get`/`https_get` check does and prints the
//! MD5 of its body like keepalived's `genhash` (`MD5SUM = ...`), to fill a check's `digest`.

use std::{
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use anyhow::{Result, anyhow};

use crate::health::http;

/// What to fetch.
#[derive(Clone, Debug)]
pub struct Request {
    pub server: IpAddr,
    pub port: u16,
    pub url: String,
    pub ssl: bool,
    pub host: Option<String>,
    pub timeout: Duration,
}

/// What was fetched.
#[derive(Clone, Debug)]
pub struct Fetched {
    pub status: u16,
    pub headers: String,
    /// MD5 of the body, 32 lowercase hex digits.
    pub md5: String,
}

impl Fetched {
    /// `MD5SUM = <hex>`, as keepalived's genhash prints it; with `verbose`, the headers first.
    pub fn render(&self, verbose: bool) -> String {
        let mut out = String::new();
        if verbose {
            let _ = writeln!(out, "{}\n", self.headers);
        }
        let _ = writeln!(out, "MD5SUM = {}", self.md5);
        out
    }
}

/// Fetches the page.
pub fn genhash(req: &Request) -> Result<Fetched> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let host = req
        .host
        .clone()
        .unwrap_or_else(|| http::default_host(req.server, req.port, req.ssl));
    let addr = SocketAddr::from((req.server, req.port));
    let r = rt
        .block_on(http::get(addr, &host, &req.url, req.ssl, req.timeout))
        .map_err(|e| anyhow!("{e}"))?;
    Ok(Fetched {
        status: r.status,
        headers: r.headers,
        md5: http::md5_hex(&r.body),
    })
}
