//! Optional bearer tokens: which clients may call, and which channels each may pull.
//!
//! The tokens file has one client per line: `NAME TOKEN CHANNELS`, where CHANNELS is a
//! comma-separated list of the channels the client may pull, or `*` for all (and for the
//! operators' tooling). Blank lines and lines starting with `#` are skipped. A push sender
//! configured with `push` cannot pull email, whatever it asks for.
//!
//! Tokens are compared in constant time, against every configured token, so neither the timing
//! of a refusal nor which entry matched leaks how much of a guess was right.

use std::path::Path;
use std::sync::Arc;

use tonic::{Request, Status};

/// A configured client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub name: String,
    token: Vec<u8>,
    /// `None`: every channel.
    pub channels: Option<Vec<String>>,
}

impl Client {
    /// Whether this client may pull `channel`.
    pub fn may_pull(&self, channel: &str) -> bool {
        self.channels
            .as_ref()
            .is_none_or(|cs| cs.iter().any(|c| c == channel))
    }
}

/// The configured clients; an empty set means authentication is off.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    clients: Arc<Vec<Client>>,
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

impl Tokens {
    /// No authentication.
    pub fn none() -> Tokens {
        Tokens::default()
    }

    pub fn is_enabled(&self) -> bool {
        !self.clients.is_empty()
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
            let [name, token, channels] = fields[..] else {
                return Err(bad(format!(
                    "expected `NAME TOKEN CHANNELS`, found {} field(s)",
                    fields.len()
                )));
            };
            if token.len() < 16 {
                return Err(bad(format!(
                    "the token of {name:?} is {} characters; use at least 16",
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
            let channels = if channels == "*" {
                None
            } else {
                let list: Vec<String> = channels.split(',').map(str::to_string).collect();
                if list.iter().any(|c| c.is_empty()) {
                    return Err(bad("an empty channel name in the list".into()));
                }
                Some(list)
            };
            clients.push(Client {
                name: name.to_string(),
                token: token.as_bytes().to_vec(),
                channels,
            });
        }
        Ok(Tokens {
            clients: Arc::new(clients),
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

    /// The interceptor: with tokens configured, a request without a known bearer token is
    /// UNAUTHENTICATED; a known one travels on as the request's [`Client`] extension.
    pub fn check(&self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if !self.is_enabled() {
            return Ok(request);
        }
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                Status::unauthenticated("an `authorization: Bearer TOKEN` header is required")
            })?;
        let token = header.strip_prefix("Bearer ").ok_or_else(|| {
            Status::unauthenticated("the authorization header must be `Bearer TOKEN`")
        })?;
        let client = self
            .find(token.trim().as_bytes())
            .ok_or_else(|| Status::unauthenticated("unknown token"))?;
        request.extensions_mut().insert(client);
        Ok(request)
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

    #[test]
    fn the_file_is_read_line_by_line_and_mistakes_are_located() {
        let t = Tokens::parse(
            "# comment\npush-sender 0123456789abcdef0123 push\nops fedcba9876543210fedc *\n",
            "tokens",
        )
        .unwrap();
        let push = t.find(b"0123456789abcdef0123").unwrap();
        assert!(push.may_pull("push") && !push.may_pull("email"));
        assert!(t.find(b"fedcba9876543210fedc").unwrap().may_pull("email"));
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
    fn constant_time_equality_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
