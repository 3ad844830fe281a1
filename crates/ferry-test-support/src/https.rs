//! A client of the appliance's HTTPS API for tests against an in-process server on 127.0.0.1:
//! it pins the store's CA as the agents do and returns every status instead of failing on 4xx/5xx.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ferry_format::signing::TrustBundle;
use serde::de::DeserializeOwned;
use ureq::tls::{Certificate, RootCerts, TlsConfig};

/// The trust bundle (`ca.pem`) `appliance init` wrote at `path`.
pub fn load_trust(path: &Path) -> TrustBundle {
    TrustBundle::from_pem(&std::fs::read_to_string(path).unwrap()).unwrap()
}

pub struct Client {
    agent: ureq::Agent,
    base: String,
}

impl Client {
    /// A client of `https://127.0.0.1:PORT/api/v1` trusting only `trust`'s CAs; a request that
    /// takes longer than `timeout` fails (long polls need more than the default of a test).
    pub fn new(trust: &TrustBundle, addr: SocketAddr, timeout: Duration) -> Client {
        let roots = trust
            .ca_certs
            .iter()
            .map(|c| Certificate::from_der(c).to_owned())
            .collect();
        let tls = TlsConfig::builder()
            .root_certs(RootCerts::Specific(Arc::new(roots)))
            .build();
        let agent = ureq::Agent::config_builder()
            .tls_config(tls)
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .build()
            .into();
        Client {
            agent,
            base: format!("https://127.0.0.1:{}/api/v1", addr.port()),
        }
    }

    /// The same client for the routes outside the API prefix (`/healthz`, `/metrics`).
    pub fn at_root(&self) -> Client {
        Client {
            agent: self.agent.clone(),
            base: self.base.trim_end_matches("/api/v1").to_string(),
        }
    }

    /// A browser-like request without a bearer token and without following redirects:
    /// (status, headers as lowercase name → values, body). `form` is sent as
    /// `application/x-www-form-urlencoded`.
    pub fn page(
        &self,
        method: &str,
        path: &str,
        cookie: Option<&str>,
        form: Option<&str>,
    ) -> (u16, Vec<(String, String)>, String) {
        let url = format!("{}{path}", self.base);
        let res = match method {
            "GET" => {
                let mut r = self.agent.get(&url).config().max_redirects(0).build();
                if let Some(c) = cookie {
                    r = r.header("Cookie", c);
                }
                r.call()
            }
            _ => {
                let mut r = self.agent.post(&url).config().max_redirects(0).build();
                if let Some(c) = cookie {
                    r = r.header("Cookie", c);
                }
                r.header("Content-Type", "application/x-www-form-urlencoded")
                    .send(form.unwrap_or_default())
            }
        };
        let mut res = res.unwrap();
        let status = res.status().as_u16();
        let headers = res
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let body = res.body_mut().read_to_string().unwrap_or_default();
        (status, headers, body)
    }

    /// (status, body) of a request with `token` as bearer; `body` None sends none. Errs only
    /// when no answer came (TLS, connection, timeout).
    pub fn try_call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<&[u8]>,
    ) -> Result<(u16, Vec<u8>), ureq::Error> {
        let url = format!("{}{path}", self.base);
        let auth = format!("Bearer {token}");
        let mut res = match (method, body) {
            ("GET", _) => self.agent.get(&url).header("Authorization", &auth).call()?,
            ("DELETE", _) => self
                .agent
                .delete(&url)
                .header("Authorization", &auth)
                .call()?,
            ("POST", b) => self
                .agent
                .post(&url)
                .header("Authorization", &auth)
                .send(b.unwrap_or_default())?,
            ("PUT", b) => self
                .agent
                .put(&url)
                .header("Authorization", &auth)
                .send(b.unwrap_or_default())?,
            ("PATCH", b) => self
                .agent
                .patch(&url)
                .header("Authorization", &auth)
                .send(b.unwrap_or_default())?,
            _ => unreachable!("method {method}"),
        };
        let status = res.status().as_u16();
        let bytes = res.body_mut().with_config().limit(1 << 30).read_to_vec()?;
        Ok((status, bytes))
    }

    /// The status of a GET that carries no Authorization header at all.
    pub fn status_without_token(&self, path: &str) -> u16 {
        let url = format!("{}{path}", self.base);
        self.agent.get(&url).call().unwrap().status().as_u16()
    }

    /// [`Client::try_call`] that panics when no answer came.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<&[u8]>,
    ) -> (u16, Vec<u8>) {
        self.try_call(method, path, token, body).unwrap()
    }

    /// The body of a request that must answer `want`.
    pub fn ok(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<&[u8]>,
        want: u16,
    ) -> Vec<u8> {
        let (status, bytes) = self.call(method, path, token, body);
        assert_eq!(
            status,
            want,
            "{method} {path}: {}",
            String::from_utf8_lossy(&bytes)
        );
        bytes
    }

    /// [`Client::ok`] as text.
    pub fn want(&self, method: &str, path: &str, token: &str, body: &[u8], want: u16) -> String {
        String::from_utf8_lossy(&self.ok(method, path, token, Some(body), want)).into_owned()
    }

    /// The JSON body of a request that must answer 200.
    pub fn json<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<&[u8]>,
    ) -> T {
        serde_json::from_slice(&self.ok(method, path, token, body, 200)).unwrap()
    }
}
