//! Who may read: the RESP passwords and users, the HTTP bearer token, and the [`Secret`] type
//! that keeps them out of logs and `check-config`.
//!
//! Checks compare in constant time, so the time an answer takes says nothing about how much
//! of a guess was right.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A password or token. `Debug` never shows it; an empty secret means "not set".
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "SecretText", into = "String")]
pub struct Secret(String);

/// What a secret may be written as in TOML or the environment: an override such as
/// `HELLO_STREAMS__QUERY__RESP_PASSWORD=1234` parses as an integer, and a type error must not
/// echo the value.
#[derive(Deserialize)]
#[serde(untagged)]
enum SecretText {
    Text(String),
    Integer(i64),
    Float(f64),
    Flag(bool),
}

impl From<SecretText> for Secret {
    fn from(text: SecretText) -> Self {
        Secret(match text {
            SecretText::Text(s) => s,
            SecretText::Integer(i) => i.to_string(),
            SecretText::Float(f) => f.to_string(),
            SecretText::Flag(b) => b.to_string(),
        })
    }
}

impl From<Secret> for String {
    fn from(secret: Secret) -> Self {
        secret.0
    }
}

impl Secret {
    pub fn new(text: impl Into<String>) -> Self {
        Secret(text.into())
    }

    pub fn is_set(&self) -> bool {
        !self.0.is_empty()
    }

    /// The secret itself, for the one place that must send it (forwarding logs in as a client).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time equality with what a client sent.
    pub fn matches(&self, offered: &[u8]) -> bool {
        let expected = self.0.as_bytes();
        // The length is not secret enough to hide at this cost; the bytes are.
        if expected.len() != offered.len() {
            return false;
        }
        let diff = expected
            .iter()
            .zip(offered)
            .fold(0_u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(diff) == 0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_set() {
            "<redacted>"
        } else {
            "<unset>"
        })
    }
}

/// RESP's users, as Redis has them: `default` with `requirepass`, plus named ACL users.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RespAuth {
    /// The `default` user's password; unset with no users: no authentication.
    pub password: Secret,
    pub users: BTreeMap<String, Secret>,
}

/// The user Redis assumes when `AUTH` gets only a password.
pub const DEFAULT_USER: &str = "default";

impl RespAuth {
    pub fn required(&self) -> bool {
        self.password.is_set() || !self.users.is_empty()
    }

    /// True when `user` (or `default`) exists and `password` is its password.
    pub fn check(&self, user: Option<&[u8]>, password: &[u8]) -> bool {
        let user = user.unwrap_or(DEFAULT_USER.as_bytes());
        if user == DEFAULT_USER.as_bytes() && self.password.is_set() {
            return self.password.matches(password);
        }
        let Ok(name) = std::str::from_utf8(user) else {
            return false;
        };
        self.users
            .get(name)
            .is_some_and(|secret| secret.is_set() && secret.matches(password))
    }

    /// What a forwarding instance logs in with: the named user, else `default`.
    pub fn credentials(&self, forward_user: &str) -> Option<(String, Secret)> {
        if !forward_user.is_empty() {
            let secret = self.users.get(forward_user)?;
            return Some((forward_user.to_owned(), secret.clone()));
        }
        if self.password.is_set() {
            return Some((DEFAULT_USER.to_owned(), self.password.clone()));
        }
        let (name, secret) = self.users.iter().next()?;
        Some((name.clone(), secret.clone()))
    }
}

/// HTTP: one bearer token for the state API (and `/metrics` when asked).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpAuth {
    pub token: Secret,
    pub metrics_need_token: bool,
}

impl HttpAuth {
    /// Whether the `Authorization` header value lets a request for `path` through.
    pub fn allows(&self, path: &str, authorization: Option<&[u8]>) -> bool {
        // `/` is the dashboard: a static page with no data in it, which a browser cannot ask
        // for with a header; its own API calls send the token it reads from `#token=`.
        if !self.token.is_set() || matches!(path, "/" | "/healthz" | "/readyz") {
            return true;
        }
        if path == "/metrics" && !self.metrics_need_token {
            return true;
        }
        authorization
            .and_then(|value| value.strip_prefix(b"Bearer "))
            .is_some_and(|offered| self.token.matches(offered))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_a_secret() {
        let auth = RespAuth {
            password: Secret::new("hunter2"),
            users: BTreeMap::from([("app".to_owned(), Secret::new("s3cret"))]),
        };
        let shown = format!("{auth:?} {:?}", Secret::default());
        assert!(
            !shown.contains("hunter2") && !shown.contains("s3cret"),
            "{shown}"
        );
        assert!(shown.contains("<redacted>") && shown.contains("<unset>"));
    }

    #[test]
    fn resp_users_and_default_password() {
        let auth = RespAuth {
            password: Secret::new("pw"),
            users: BTreeMap::from([("app".to_owned(), Secret::new("apppw"))]),
        };
        assert!(auth.required());
        assert!(auth.check(None, b"pw"));
        assert!(auth.check(Some(b"default"), b"pw"));
        assert!(auth.check(Some(b"app"), b"apppw"));
        assert!(!auth.check(Some(b"app"), b"pw"));
        assert!(!auth.check(None, b"p"));
        assert!(!auth.check(Some(b"nobody"), b"pw"));
        assert!(!RespAuth::default().required());
        assert_eq!(auth.credentials("").unwrap().0, "default");
        assert_eq!(auth.credentials("app").unwrap().1, Secret::new("apppw"));
        assert!(auth.credentials("nobody").is_none());
    }

    #[test]
    fn http_token_guards_all_but_health() {
        let auth = HttpAuth {
            token: Secret::new("t0k"),
            metrics_need_token: false,
        };
        assert!(auth.allows("/healthz", None) && auth.allows("/readyz", None));
        assert!(auth.allows("/", None), "the dashboard page itself is open");
        assert!(auth.allows("/metrics", None));
        assert!(!auth.allows("/v1/state/a", None));
        assert!(!auth.allows("/v1/state/a", Some(b"Bearer nope")));
        assert!(auth.allows("/v1/state/a", Some(b"Bearer t0k")));
        let strict = HttpAuth {
            metrics_need_token: true,
            ..auth
        };
        assert!(!strict.allows("/metrics", None));
        assert!(HttpAuth::default().allows("/v1/status", None));
    }

    #[test]
    fn secrets_accept_any_scalar() {
        #[derive(Deserialize)]
        struct T {
            a: Secret,
            b: Secret,
        }
        let t: T = toml::from_str("a = 1234\nb = \"x\"").unwrap();
        assert_eq!((t.a.expose(), t.b.expose()), ("1234", "x"));
    }
}
