//! Optional bearer tokens: which clients may call, and what each may do.
//!
//! # The tokens file
//! One client per line: `NAME TOKEN SCOPES`. Blank lines and lines starting with `#` are
//! skipped. TOKEN is at least 16 characters. SCOPES is a comma-separated list of what the
//! client may do (see [`Scope`]):
//!
//! | scope | methods |
//! | --- | --- |
//! | `submit` | `OpportunityService.Submit`, `OpportunityService.SubmitEvents` |
//! | `pull:CHANNEL` | `ScheduleService.Pull` for that channel (repeat it for more; `pull:*`: every channel) |
//! | `ack` | `ScheduleService.Ack`, `ScheduleService.ExtendLease` |
//! | `report` | `FeedbackService.Report`, `FeedbackService.ReportActivity` |
//! | `users` | `UserService.Upsert` |
//! | `admin` | `AdminService.Replan`, `AdminService.AdvanceClock` |
//! | `read` | `ScheduleService.GetUserSchedule`, `AdminService.GetStatus` |
//! | `*` | every scope, pulling every channel |
//!
//! A delivery service for push is `push-sender TOKEN pull:push,ack,report`.
//!
//! **The older format** `NAME TOKEN CHANNELS` (the channels a client may pull) is still read: a
//! third field none of whose items is a scope is such a channel list, and is read as a delivery
//! service for those channels, `pull:C1,pull:C2,ack,report`; a warning at start says how to write
//! it. `*` means every scope in both formats, so an old operators' line `ops TOKEN *` keeps every
//! right it had. A list that names a scope and something unknown is refused, with the known
//! scopes.
//!
//! # The check
//! [`AuthLayer`] wraps the whole server and sees each call's path
//! (`/tern.v1.ScheduleService/Pull`): with tokens configured, a call without a known bearer
//! token is UNAUTHENTICATED, and a call whose method needs a scope the client lacks is
//! PERMISSION_DENIED, naming the client, the method and the scope. [`METHOD_SCOPES`] is the one
//! table from method to scope; a method missing from it is denied (fail closed). Health and
//! reflection ([`OPEN_SERVICES`]) never need a token. The client travels on as the request's
//! [`Client`] extension, so `Pull` can refuse the channels it may not pull.
//!
//! Tokens are compared in constant time, against every configured token, so neither the timing
//! of a refusal nor which entry matched leaks how much of a guess was right.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::codegen::http;
use tonic::Status;

/// The shortest accepted token.
pub const MIN_TOKEN_LEN: usize = 16;

/// What a client may do; each tern.v1 method needs exactly one (see [`METHOD_SCOPES`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Submit opportunities and events.
    Submit,
    /// Pull due items (on the channels the client's `pull:` entries name).
    Pull,
    /// Acknowledge items and extend leases.
    Ack,
    /// Report outcomes and activity.
    Report,
    /// Create and update users and their preferences.
    Users,
    /// Replan and move the simulated clock.
    Admin,
    /// Read a user's schedule and the daemon's status.
    Read,
}

impl Scope {
    pub const ALL: [Scope; 7] = [
        Scope::Submit,
        Scope::Pull,
        Scope::Ack,
        Scope::Report,
        Scope::Users,
        Scope::Admin,
        Scope::Read,
    ];

    /// The scope's name in the tokens file (`pull` is written `pull:CHANNEL`).
    pub fn name(self) -> &'static str {
        match self {
            Scope::Submit => "submit",
            Scope::Pull => "pull",
            Scope::Ack => "ack",
            Scope::Report => "report",
            Scope::Users => "users",
            Scope::Admin => "admin",
            Scope::Read => "read",
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Every tern.v1 method (as its gRPC path) and the scope it needs. A method that is not here is
/// denied to every client.
pub const METHOD_SCOPES: &[(&str, Scope)] = &[
    ("/tern.v1.OpportunityService/Submit", Scope::Submit),
    ("/tern.v1.OpportunityService/SubmitEvents", Scope::Submit),
    ("/tern.v1.ScheduleService/Pull", Scope::Pull),
    ("/tern.v1.ScheduleService/Ack", Scope::Ack),
    ("/tern.v1.ScheduleService/ExtendLease", Scope::Ack),
    ("/tern.v1.ScheduleService/GetUserSchedule", Scope::Read),
    ("/tern.v1.UserService/Upsert", Scope::Users),
    ("/tern.v1.FeedbackService/Report", Scope::Report),
    ("/tern.v1.FeedbackService/ReportActivity", Scope::Report),
    ("/tern.v1.AdminService/Replan", Scope::Admin),
    ("/tern.v1.AdminService/AdvanceClock", Scope::Admin),
    ("/tern.v1.AdminService/GetStatus", Scope::Read),
];

/// The services that never need a token: probes and `grpcurl list` must work without one.
pub const OPEN_SERVICES: &[&str] = &[
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// The scope a method (`/package.Service/Method`) needs; `None` for a method tern does not know.
pub fn scope_of(path: &str) -> Option<Scope> {
    METHOD_SCOPES
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, s)| *s)
}

/// Whether `path` belongs to a service that needs no token.
fn is_open(path: &str) -> bool {
    let service = path.trim_start_matches('/').split('/').next().unwrap_or("");
    OPEN_SERVICES.contains(&service)
}

/// A configured client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub name: String,
    token: Vec<u8>,
    /// Sorted, without repeats.
    scopes: Vec<Scope>,
    /// The channels of the pull scope; `None`: every channel.
    pub channels: Option<Vec<String>>,
}

impl Client {
    /// Whether this client may pull `channel`.
    pub fn may_pull(&self, channel: &str) -> bool {
        self.has(Scope::Pull)
            && self
                .channels
                .as_ref()
                .is_none_or(|cs| cs.iter().any(|c| c == channel))
    }

    /// Whether this client holds `scope`.
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }

    /// The scopes as the tokens file writes them: `pull:push,ack,report`.
    pub fn scopes(&self) -> String {
        let mut out = Vec::new();
        for s in &self.scopes {
            match (s, &self.channels) {
                (Scope::Pull, None) => out.push("pull:*".to_string()),
                (Scope::Pull, Some(cs)) => out.extend(cs.iter().map(|c| format!("pull:{c}"))),
                (s, _) => out.push(s.name().to_string()),
            }
        }
        if out.is_empty() {
            "none".into()
        } else {
            out.join(",")
        }
    }
}

/// The configured clients; an empty set means authentication is off.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    clients: Arc<Vec<Client>>,
    /// One sentence per line written in the older `NAME TOKEN CHANNELS` format.
    warnings: Arc<Vec<String>>,
}

/// A tokens file that cannot be used, with the line at fault.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Line {
        path: String,
        line: usize,
        message: String,
    },
}

/// The scopes as the errors list them.
const KNOWN: &str = "submit, pull:CHANNEL, pull:*, ack, report, users, admin, read, *";

/// Reads a SCOPES field; `Ok(None)` when it names no scope at all (the older CHANNELS format).
#[allow(clippy::type_complexity)]
fn parse_scopes(field: &str) -> Result<Option<(Vec<Scope>, Option<Vec<String>>)>, String> {
    let items: Vec<&str> = field.split(',').collect();
    let is_scope = |item: &str| {
        item == "*"
            || item.starts_with("pull:")
            || Scope::ALL
                .iter()
                .any(|s| s.name() == item && *s != Scope::Pull)
    };
    if !items.iter().any(|i| is_scope(i)) {
        return Ok(None);
    }
    let mut scopes = Vec::new();
    let mut channels: Option<Vec<String>> = Some(Vec::new());
    for item in items {
        if item.is_empty() {
            return Err("an empty entry in the scope list".into());
        }
        if item == "*" {
            scopes.extend(Scope::ALL);
            channels = None;
        } else if let Some(channel) = item.strip_prefix("pull:") {
            scopes.push(Scope::Pull);
            match channel {
                "" => return Err("`pull:` needs a channel (or `pull:*`)".into()),
                "*" => channels = None,
                c => {
                    if let Some(cs) = &mut channels {
                        if !cs.iter().any(|x| x == c) {
                            cs.push(c.to_string());
                        }
                    }
                }
            }
        } else if let Some(s) = Scope::ALL
            .iter()
            .find(|s| s.name() == item && **s != Scope::Pull)
        {
            scopes.push(*s);
        } else if item == "pull" {
            return Err(format!(
                "unknown scope \"pull\" (known: {KNOWN}); name the channels, e.g. pull:push"
            ));
        } else {
            return Err(format!(
                "unknown scope {item:?} (known: {KNOWN}); to let the client pull channel \
                 {item:?}, write pull:{item}"
            ));
        }
    }
    scopes.sort();
    scopes.dedup();
    if !scopes.contains(&Scope::Pull) {
        channels = Some(Vec::new());
    }
    Ok(Some((scopes, channels)))
}

impl Tokens {
    /// No authentication.
    pub fn none() -> Tokens {
        Tokens::default()
    }

    pub fn is_enabled(&self) -> bool {
        !self.clients.is_empty()
    }

    /// The configured clients, in file order.
    pub fn clients(&self) -> &[Client] {
        &self.clients
    }

    /// Lines read in the older `NAME TOKEN CHANNELS` format, each as `path:line: ...` saying
    /// what it was read as; the server prints them as warnings at start.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    pub fn load(path: &Path) -> Result<Tokens, TokensError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokensError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Tokens::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, path: &str) -> Result<Tokens, TokensError> {
        let mut clients = Vec::new();
        let mut warnings = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |message: String| TokensError::Line {
                path: path.to_string(),
                line: i + 1,
                message,
            };
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [name, token, scopes] = fields[..] else {
                return Err(bad(format!(
                    "expected `NAME TOKEN SCOPES`, found {} field(s)",
                    fields.len()
                )));
            };
            if token.len() < MIN_TOKEN_LEN {
                return Err(bad(format!(
                    "the token of {name:?} is {} characters; use at least {MIN_TOKEN_LEN}",
                    token.len()
                )));
            }
            if clients.iter().any(|c: &Client| c.name == name) {
                return Err(bad(format!("client {name:?} is listed twice")));
            }
            if clients.iter().any(|c: &Client| c.token == token.as_bytes()) {
                return Err(bad(format!(
                    "the token of {name:?} is also another client's"
                )));
            }
            let (scopes, channels) = match parse_scopes(scopes).map_err(bad)? {
                Some(parsed) => parsed,
                None => {
                    // The older format: the channels a delivery service may pull.
                    let list: Vec<String> = scopes.split(',').map(str::to_string).collect();
                    if list.iter().any(|c| c.is_empty()) {
                        return Err(bad("an empty channel name in the list".into()));
                    }
                    let client = Client {
                        name: name.to_string(),
                        token: Vec::new(),
                        scopes: vec![Scope::Pull, Scope::Ack, Scope::Report],
                        channels: Some(list),
                    };
                    warnings.push(format!(
                        "{path}:{}: {scopes:?} names no scope, so it is read as the channels of \
                         a delivery service: {}; write that to silence this warning (scopes: \
                         {KNOWN})",
                        i + 1,
                        client.scopes()
                    ));
                    (client.scopes, client.channels)
                }
            };
            clients.push(Client {
                name: name.to_string(),
                token: token.as_bytes().to_vec(),
                scopes,
                channels,
            });
        }
        Ok(Tokens {
            clients: Arc::new(clients),
            warnings: Arc::new(warnings),
        })
    }

    /// The client presenting `token`, comparing against every entry in constant time.
    fn find(&self, token: &[u8]) -> Option<Client> {
        let mut found = None;
        for c in self.clients.iter() {
            if constant_time_eq(&c.token, token) {
                found = Some(c.clone());
            }
        }
        found
    }

    /// Who is calling, from the `authorization: Bearer TOKEN` header.
    fn client(&self, headers: &http::HeaderMap) -> Result<Client, Status> {
        let header = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                Status::unauthenticated("an `authorization: Bearer TOKEN` header is required")
            })?;
        let token = header.strip_prefix("Bearer ").ok_or_else(|| {
            Status::unauthenticated("the authorization header must be `Bearer TOKEN`")
        })?;
        self.find(token.trim().as_bytes())
            .ok_or_else(|| Status::unauthenticated("unknown token"))
    }

    /// The decision for one call: `Ok(None)` when no token is needed (authentication off, or an
    /// open service), `Ok(Some(client))` when the client holds the method's scope.
    pub fn authorize(
        &self,
        path: &str,
        headers: &http::HeaderMap,
    ) -> Result<Option<Client>, Status> {
        if !self.is_enabled() || is_open(path) {
            return Ok(None);
        }
        let client = self.client(headers)?;
        let method = path.trim_start_matches('/');
        let Some(scope) = scope_of(path) else {
            return Err(Status::permission_denied(format!(
                "client {:?} may not call {method}: no scope grants it",
                client.name
            )));
        };
        if !client.has(scope) {
            let wanted = match scope {
                Scope::Pull => "pull:CHANNEL".to_string(),
                s => s.name().to_string(),
            };
            return Err(Status::permission_denied(format!(
                "client {:?} may not call {method}: it lacks the {wanted} scope (it has {})",
                client.name,
                client.scopes()
            )));
        }
        Ok(Some(client))
    }
}

/// The tower layer that checks every call against the [`Tokens`] (see the module docs).
#[derive(Debug, Clone)]
pub struct AuthLayer {
    tokens: Tokens,
}

impl AuthLayer {
    pub fn new(tokens: Tokens) -> AuthLayer {
        AuthLayer { tokens }
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = Authorize<S>;

    fn layer(&self, inner: S) -> Authorize<S> {
        Authorize {
            inner,
            tokens: self.tokens.clone(),
        }
    }
}

/// A service behind the token check.
#[derive(Debug, Clone)]
pub struct Authorize<S> {
    inner: S,
    tokens: Tokens,
}

impl<S, B, R> tower_service::Service<http::Request<B>> for Authorize<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        match self
            .tokens
            .authorize(request.uri().path(), request.headers())
        {
            Ok(client) => {
                if let Some(client) = client {
                    request.extensions_mut().insert(client);
                }
                Box::pin(self.inner.call(request))
            }
            Err(status) => {
                let response = status.into_http();
                Box::pin(async move { Ok(response) })
            }
        }
    }
}

/// Equality whose time depends only on the lengths, not on where the bytes differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    // Keep the optimiser from turning the loop into an early exit.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(token: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert("authorization", format!("Bearer {token}").parse().unwrap());
        h
    }

    #[test]
    fn the_file_is_read_line_by_line_and_mistakes_are_located() {
        let t = Tokens::parse(
            "# comment\npush-sender 0123456789abcdef0123 pull:push,ack,report\n\
             ops fedcba9876543210fedc *\n",
            "tokens",
        )
        .unwrap();
        let push = t.find(b"0123456789abcdef0123").unwrap();
        assert!(push.may_pull("push") && !push.may_pull("email"));
        assert!(push.has(Scope::Ack) && push.has(Scope::Report) && !push.has(Scope::Admin));
        assert_eq!(push.scopes(), "pull:push,ack,report");
        let ops = t.find(b"fedcba9876543210fedc").unwrap();
        assert!(ops.may_pull("email"));
        assert!(Scope::ALL.iter().all(|s| ops.has(*s)));
        assert!(t.warnings().is_empty());
        assert!(
            t.find(b"0123456789abcdef012").is_none(),
            "a prefix is not the token"
        );
        let e = Tokens::parse("a short push\n", "tokens").unwrap_err();
        assert_eq!(
            e.to_string(),
            "tokens:1: the token of \"a\" is 5 characters; use at least 16"
        );
        let e =
            Tokens::parse("a 0123456789abcdef push\n\na 0123456789abcdeX push\n", "t").unwrap_err();
        assert!(e.to_string().starts_with("t:3: "), "{e}");
    }

    #[test]
    fn scopes_combine_and_unknown_ones_are_listed_with_the_known() {
        let t = Tokens::parse(
            "d 0123456789abcdef pull:push,pull:sms,ack\nu 0123456789abcdeg submit,users\n\
             p 0123456789abcdeh pull:*,read\n",
            "t",
        )
        .unwrap();
        let d = t.find(b"0123456789abcdef").unwrap();
        assert!(d.may_pull("push") && d.may_pull("sms") && !d.may_pull("email"));
        let u = t.find(b"0123456789abcdeg").unwrap();
        assert!(!u.may_pull("push"), "no pull scope, no channel");
        assert_eq!(u.scopes(), "submit,users");
        let p = t.find(b"0123456789abcdeh").unwrap();
        assert!(p.may_pull("anything") && p.has(Scope::Read));

        let e = Tokens::parse("\nx 0123456789abcdef submit,amdin\n", "t").unwrap_err();
        assert_eq!(
            e.to_string(),
            "t:2: unknown scope \"amdin\" (known: submit, pull:CHANNEL, pull:*, ack, report, \
             users, admin, read, *); to let the client pull channel \"amdin\", write pull:amdin"
        );
        let e = Tokens::parse("x 0123456789abcdef pull:,ack\n", "t").unwrap_err();
        assert!(
            e.to_string().starts_with("t:1: `pull:` needs a channel"),
            "{e}"
        );
        let e = Tokens::parse("x 0123456789abcdef ack,pull\n", "t").unwrap_err();
        assert!(e.to_string().contains("unknown scope \"pull\""), "{e}");
        let e = Tokens::parse("x 0123456789abcdef ack,,read\n", "t").unwrap_err();
        assert!(e.to_string().contains("empty entry"), "{e}");
    }

    #[test]
    fn an_old_channels_line_is_a_delivery_service_and_an_old_star_everything() {
        let t = Tokens::parse(
            "push-sender 0123456789abcdef0123 push,sms\nops fedcba9876543210fedc *\n",
            "tokens",
        )
        .unwrap();
        let push = t.find(b"0123456789abcdef0123").unwrap();
        assert_eq!(push.scopes(), "pull:push,pull:sms,ack,report");
        assert!(!push.has(Scope::Admin) && !push.has(Scope::Users) && !push.has(Scope::Read));
        let ops = t.find(b"fedcba9876543210fedc").unwrap();
        assert!(Scope::ALL.iter().all(|s| ops.has(*s)));
        assert_eq!(t.warnings().len(), 1);
        assert!(
            t.warnings()[0].starts_with("tokens:1: \"push,sms\" names no scope")
                && t.warnings()[0].contains("pull:push,pull:sms,ack,report"),
            "{:?}",
            t.warnings()
        );
    }

    #[test]
    fn each_method_needs_its_scope_and_open_services_need_nothing() {
        let t = Tokens::parse(
            "push-sender 0123456789abcdef0123 pull:push,ack,report\n",
            "tokens",
        )
        .unwrap();
        let h = bearer("0123456789abcdef0123");
        let ok = t.authorize("/tern.v1.ScheduleService/Pull", &h).unwrap();
        assert_eq!(ok.unwrap().name, "push-sender");
        let e = t.authorize("/tern.v1.AdminService/Replan", &h).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert_eq!(
            e.message(),
            "client \"push-sender\" may not call tern.v1.AdminService/Replan: it lacks the admin \
             scope (it has pull:push,ack,report)"
        );
        let e = t
            .authorize("/tern.v1.AdminService/Unheard", &h)
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "fail closed");
        let e = t
            .authorize("/tern.v1.UserService/Upsert", &http::HeaderMap::new())
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        for open in [
            "/grpc.health.v1.Health/Check",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ] {
            assert!(t
                .authorize(open, &http::HeaderMap::new())
                .unwrap()
                .is_none());
        }
        let e = t
            .authorize("/some.Other/Thing", &http::HeaderMap::new())
            .unwrap_err();
        assert_eq!(
            e.code(),
            tonic::Code::Unauthenticated,
            "only listed services are open"
        );
        assert!(Tokens::none()
            .authorize("/tern.v1.AdminService/Replan", &http::HeaderMap::new())
            .unwrap()
            .is_none());
    }

    #[test]
    fn every_method_of_every_tern_service_has_a_scope() {
        use prost::Message;
        let set = prost_types::FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET).unwrap();
        let mut paths = Vec::new();
        for file in &set.file {
            if file.package() != "tern.v1" {
                continue;
            }
            for service in &file.service {
                for method in &service.method {
                    paths.push(format!("/tern.v1.{}/{}", service.name(), method.name()));
                }
            }
        }
        assert!(paths.len() >= 12, "{paths:?}");
        for p in &paths {
            assert!(
                scope_of(p).is_some(),
                "{p} has no scope: add it to METHOD_SCOPES"
            );
        }
        for (p, _) in METHOD_SCOPES {
            assert!(
                paths.contains(&p.to_string()),
                "{p} is no method of tern.v1"
            );
        }
        assert_eq!(paths.len(), METHOD_SCOPES.len());
    }

    #[test]
    fn constant_time_equality_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
