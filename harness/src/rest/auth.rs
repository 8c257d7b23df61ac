//! Who may use the REST API: bearer tokens with read-only and admin roles, and the switches
//! that turn submission and cancellation through REST off (Flink's `web.submit.enable` and
//! `web.cancel.enable`). No CORS headers are ever sent, so a browser page of another origin
//! cannot read answers or send anything but simple requests, which the tokens refuse.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sluice_core::paths::PathPolicy;
use tokio_rustls::rustls::ServerConfig;

use super::ApiError;
use crate::config::Config;
use crate::security::{Role, Tokens};
use crate::HarnessError;

/// The REST API's security settings.
#[derive(Clone)]
pub struct RestSecurity {
    /// HTTPS with this configuration; plain HTTP if `None`.
    pub tls: Option<Arc<ServerConfig>>,
    /// Bearer tokens every request must carry; anyone may call if `None`.
    pub tokens: Option<Tokens>,
    /// `POST /jobs` allowed.
    pub submit_enabled: bool,
    /// Cancelling and stopping allowed.
    pub cancel_enabled: bool,
    /// Where savepoint targets may be.
    pub paths: PathPolicy,
    /// Where savepoints go when a request names no directory.
    pub savepoint_dir: Option<String>,
    /// Where refusals are logged.
    pub log: slog::Logger,
}

impl Default for RestSecurity {
    fn default() -> Self {
        RestSecurity {
            tls: None,
            tokens: None,
            submit_enabled: true,
            cancel_enabled: true,
            paths: PathPolicy::default(),
            savepoint_dir: None,
            log: slog::Logger::root(slog::Discard, slog::o!()),
        }
    }
}

impl std::fmt::Debug for RestSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestSecurity")
            .field("tls", &self.tls.is_some())
            .field("tokens", &self.tokens)
            .field("submit_enabled", &self.submit_enabled)
            .field("cancel_enabled", &self.cancel_enabled)
            .finish_non_exhaustive()
    }
}

impl RestSecurity {
    /// The settings of `[rest]` and `[security]`.
    pub fn from_config(config: &Config, log: slog::Logger) -> Result<Self, HarnessError> {
        let r = &config.rest;
        let tls = match (&r.tls_cert, &r.tls_key) {
            (Some(cert), Some(key)) => {
                crate::security::check_private(Path::new(key), "rest.tls-key")?;
                Some(sluice_transport::tls::rest_server_config(
                    Path::new(cert),
                    Path::new(key),
                )?)
            }
            _ => None,
        };
        let tokens = r
            .tokens_file
            .as_deref()
            .map(|f| Tokens::load(Path::new(f)))
            .transpose()?;
        Ok(RestSecurity {
            tls,
            tokens,
            submit_enabled: r.submit_enabled,
            cancel_enabled: r.cancel_enabled,
            paths: crate::security::path_policy(config)?,
            savepoint_dir: config.security.savepoint_dir.clone(),
            log,
        })
    }

    /// Whether callers must authenticate.
    pub fn authenticated(&self) -> bool {
        self.tokens.is_some()
    }

    /// Refuses to serve tokens in clear text beyond this machine: anyone on the path could
    /// read an admin's token and replay it. (Behind a TLS-terminating proxy on the same
    /// host, bind loopback.)
    pub fn check_bind(&self, bind: &str) -> Result<(), HarnessError> {
        if self.tokens.is_some() && self.tls.is_none() && !crate::security::is_loopback(bind) {
            return Err(HarnessError::BadOption(format!(
                "rest.tokens-file is set but the REST API at {bind} would take the tokens over plain HTTP: set rest.tls-cert and rest.tls-key, or bind loopback"
            )));
        }
        Ok(())
    }
}

/// The peer's address, put on each request by the server.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub(crate) SocketAddr);

/// Checks the bearer token of every request but `GET /healthz` (and `HEAD`), and logs every
/// refusal (401, 403: tokens, switches, paths) with the peer's address, method and path.
pub(crate) async fn authorize(State(sec): State<Arc<RestSecurity>>, req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<Peer>()
        .map(|p| p.0.to_string())
        .unwrap_or_default();
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let response = match check_token(&sec, &req) {
        Err((status, why)) => {
            slog::warn!(sec.log, "REST: refused a request"; "peer" => &peer, "method" => method.as_str(),
                "path" => &path, "status" => status.as_u16(), "reason" => why);
            let mut r = ApiError(status, why.to_string()).into_response();
            if status == StatusCode::UNAUTHORIZED {
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
            }
            return r;
        }
        Ok(()) => next.run(req).await,
    };
    if response.status() == StatusCode::FORBIDDEN {
        slog::warn!(sec.log, "REST: refused a request"; "peer" => &peer, "method" => method.as_str(),
            "path" => &path, "status" => 403, "reason" => "a switch or the allowed paths");
    }
    response
}

/// Whether `req` carries a token that allows it (always, without a token file).
fn check_token(sec: &RestSecurity, req: &Request) -> Result<(), (StatusCode, &'static str)> {
    let Some(tokens) = &sec.tokens else { return Ok(()) };
    let reads = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if req.uri().path() == "/healthz" && reads {
        return Ok(());
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        // The scheme's name is case-insensitive (RFC 9110).
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let Some(presented) = presented else {
        return Err((
            StatusCode::UNAUTHORIZED,
            "this API needs a bearer token (Authorization: Bearer <token>)",
        ));
    };
    let Some((role, _name)) = tokens.check(presented) else {
        return Err((StatusCode::UNAUTHORIZED, "the bearer token is not valid"));
    };
    if role == Role::ReadOnly && !reads {
        return Err((
            StatusCode::FORBIDDEN,
            "this token is read-only: it cannot submit, cancel or take savepoints",
        ));
    }
    Ok(())
}
