//! `[kafka.security]`: how every Kafka client of the daemon authenticates and encrypts, in one
//! place. The consumer, the producers, the admin client, the restore and end-offset readers
//! and the ownership announcer all get it through [`super::client_config`], so a secured
//! cluster needs no raw option repeated under `[kafka.consumer]` and `[kafka.producer]`.

use std::path::Path;

use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

use crate::query::auth::Secret;

/// The section as written; every field optional.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSecurity {
    pub security_protocol: String,
    pub sasl_mechanism: String,
    pub sasl_username: String,
    pub sasl_password: Secret,
    pub sasl_password_file: String,
    pub sasl_password_env: String,
    pub ssl_ca_location: String,
    pub ssl_certificate_location: String,
    pub ssl_key_location: String,
    pub ssl_key_password: Secret,
    pub ssl_verify_hostname: bool,
}

impl Default for RawSecurity {
    fn default() -> Self {
        RawSecurity {
            security_protocol: "plaintext".into(),
            sasl_mechanism: String::new(),
            sasl_username: String::new(),
            sasl_password: Secret::default(),
            sasl_password_file: String::new(),
            sasl_password_env: String::new(),
            ssl_ca_location: String::new(),
            ssl_certificate_location: String::new(),
            ssl_key_location: String::new(),
            ssl_key_password: Secret::default(),
            ssl_verify_hostname: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl Protocol {
    /// librdkafka's `security.protocol` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Plaintext => "plaintext",
            Protocol::Ssl => "ssl",
            Protocol::SaslPlaintext => "sasl_plaintext",
            Protocol::SaslSsl => "sasl_ssl",
        }
    }

    pub fn uses_sasl(self) -> bool {
        matches!(self, Protocol::SaslPlaintext | Protocol::SaslSsl)
    }

    pub fn uses_tls(self) -> bool {
        matches!(self, Protocol::Ssl | Protocol::SaslSsl)
    }
}

/// `Debug` shows the password as `<redacted>` (see [`Secret`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Sasl {
    pub mechanism: &'static str,
    pub username: String,
    /// Resolved at start from the inline value, the file or the environment variable.
    pub password: Secret,
}

/// The validated section.
#[derive(Debug, Clone, PartialEq)]
pub struct Security {
    pub protocol: Protocol,
    pub sasl: Option<Sasl>,
    pub ssl_ca_location: Option<String>,
    pub ssl_certificate_location: Option<String>,
    pub ssl_key_location: Option<String>,
    pub ssl_key_password: Secret,
    pub ssl_verify_hostname: bool,
}

impl Default for Security {
    fn default() -> Self {
        Security {
            protocol: Protocol::Plaintext,
            sasl: None,
            ssl_ca_location: None,
            ssl_certificate_location: None,
            ssl_key_location: None,
            ssl_key_password: Secret::default(),
            ssl_verify_hostname: true,
        }
    }
}

/// What is wrong with one field, and how to fix it; the config turns it into its error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: &'static str,
    pub problem: String,
    pub fix: String,
}

fn invalid(field: &'static str, problem: impl Into<String>, fix: impl Into<String>) -> Invalid {
    Invalid {
        field,
        problem: problem.into(),
        fix: fix.into(),
    }
}

const MECHANISMS: &[&str] = &["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

impl RawSecurity {
    /// Validates the section; `env` resolves `sasl_password_env`. Files named here are read
    /// (the password) or checked for existence now, so a typo stops the start with the field
    /// rather than surfacing later as a librdkafka handshake error.
    pub fn validate(&self, env: &[(String, String)]) -> Result<Security, Invalid> {
        let protocol = match self.security_protocol.to_ascii_lowercase().as_str() {
            "plaintext" => Protocol::Plaintext,
            "ssl" => Protocol::Ssl,
            "sasl_plaintext" => Protocol::SaslPlaintext,
            "sasl_ssl" => Protocol::SaslSsl,
            other => {
                return Err(invalid(
                    "kafka.security.security_protocol",
                    format!("`{other}` is not a security protocol"),
                    "use plaintext, ssl, sasl_plaintext or sasl_ssl",
                ))
            }
        };
        let sasl = if protocol.uses_sasl() {
            Some(self.sasl(env)?)
        } else {
            let stray = [
                (
                    "kafka.security.sasl_mechanism",
                    !self.sasl_mechanism.is_empty(),
                ),
                (
                    "kafka.security.sasl_username",
                    !self.sasl_username.is_empty(),
                ),
                ("kafka.security.sasl_password", self.sasl_password.is_set()),
                (
                    "kafka.security.sasl_password_file",
                    !self.sasl_password_file.is_empty(),
                ),
                (
                    "kafka.security.sasl_password_env",
                    !self.sasl_password_env.is_empty(),
                ),
            ];
            if let Some((field, _)) = stray.iter().find(|(_, set)| *set) {
                return Err(invalid(
                    field,
                    format!("is set but security_protocol is {}", protocol.as_str()),
                    "set kafka.security.security_protocol = \"sasl_ssl\" (or \"sasl_plaintext\"), or remove the sasl_* fields",
                ));
            }
            None
        };
        let path = |field: &'static str, value: &str| -> Result<Option<String>, Invalid> {
            if value.is_empty() {
                return Ok(None);
            }
            if !protocol.uses_tls() {
                return Err(invalid(
                    field,
                    format!("is set but security_protocol is {}", protocol.as_str()),
                    "set kafka.security.security_protocol = \"ssl\" or \"sasl_ssl\", or remove it",
                ));
            }
            // librdkafka's "probe" looks in the system's usual CA locations.
            if value != "probe" && !Path::new(value).exists() {
                return Err(invalid(
                    field,
                    format!("{value} does not exist"),
                    "give the path of a PEM file the daemon can read",
                ));
            }
            Ok(Some(value.to_owned()))
        };
        let ssl_ca_location = path("kafka.security.ssl_ca_location", &self.ssl_ca_location)?;
        let ssl_certificate_location = path(
            "kafka.security.ssl_certificate_location",
            &self.ssl_certificate_location,
        )?;
        let ssl_key_location = path("kafka.security.ssl_key_location", &self.ssl_key_location)?;
        if ssl_certificate_location.is_some() != ssl_key_location.is_some() {
            let missing = if ssl_key_location.is_none() {
                "kafka.security.ssl_key_location"
            } else {
                "kafka.security.ssl_certificate_location"
            };
            return Err(invalid(
                missing,
                "is empty, but a client certificate needs both the certificate and its key",
                "set both ssl_certificate_location and ssl_key_location, or neither",
            ));
        }
        if self.ssl_key_password.is_set() && ssl_key_location.is_none() {
            return Err(invalid(
                "kafka.security.ssl_key_password",
                "is set without kafka.security.ssl_key_location",
                "set ssl_key_location to the encrypted key, or remove the password",
            ));
        }
        Ok(Security {
            protocol,
            sasl,
            ssl_ca_location,
            ssl_certificate_location,
            ssl_key_location,
            ssl_key_password: self.ssl_key_password.clone(),
            ssl_verify_hostname: self.ssl_verify_hostname,
        })
    }

    fn sasl(&self, env: &[(String, String)]) -> Result<Sasl, Invalid> {
        let wanted = self.sasl_mechanism.to_ascii_uppercase();
        let Some(mechanism) = MECHANISMS.iter().copied().find(|m| *m == wanted) else {
            let problem = if wanted.is_empty() {
                "is empty, but security_protocol uses SASL".to_owned()
            } else {
                format!("`{}` is not supported", self.sasl_mechanism)
            };
            return Err(invalid(
                "kafka.security.sasl_mechanism",
                problem,
                "use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
            ));
        };
        if self.sasl_username.is_empty() {
            return Err(invalid(
                "kafka.security.sasl_username",
                "is empty, but security_protocol uses SASL",
                "set the user the brokers know this application as",
            ));
        }
        let sources = [
            self.sasl_password.is_set(),
            !self.sasl_password_file.is_empty(),
            !self.sasl_password_env.is_empty(),
        ];
        let password = match sources {
            [true, false, false] => self.sasl_password.clone(),
            [false, true, false] => {
                let text = std::fs::read_to_string(&self.sasl_password_file).map_err(|e| {
                    invalid(
                        "kafka.security.sasl_password_file",
                        format!("cannot read {}: {e}", self.sasl_password_file),
                        "give a file the daemon can read that holds only the password",
                    )
                })?;
                // Files written by `echo` or editors end with a newline that is not the password's.
                let password = text.trim_end_matches(['\n', '\r']);
                if password.is_empty() {
                    return Err(invalid(
                        "kafka.security.sasl_password_file",
                        format!("{} is empty", self.sasl_password_file),
                        "write the password into the file",
                    ));
                }
                Secret::new(password)
            }
            [false, false, true] => {
                let name = &self.sasl_password_env;
                match env.iter().find(|(k, _)| k == name) {
                    Some((_, value)) if !value.is_empty() => Secret::new(value.clone()),
                    _ => {
                        return Err(invalid(
                            "kafka.security.sasl_password_env",
                            format!("the environment variable {name} is not set or empty"),
                            format!("export {name} with the password before starting"),
                        ))
                    }
                }
            }
            _ => {
                return Err(invalid(
                    "kafka.security.sasl_password",
                    "needs exactly one source of the SASL password",
                    "set one of sasl_password, sasl_password_file or sasl_password_env",
                ))
            }
        };
        Ok(Sasl {
            mechanism,
            username: self.sasl_username.clone(),
            password,
        })
    }
}

impl Security {
    /// Sets the librdkafka options this section stands for.
    pub fn apply(&self, client: &mut ClientConfig) {
        client.set("security.protocol", self.protocol.as_str());
        if let Some(sasl) = &self.sasl {
            client
                .set("sasl.mechanism", sasl.mechanism)
                .set("sasl.username", &sasl.username)
                .set("sasl.password", sasl.password.expose());
        }
        if !self.protocol.uses_tls() {
            return;
        }
        for (option, value) in [
            ("ssl.ca.location", &self.ssl_ca_location),
            ("ssl.certificate.location", &self.ssl_certificate_location),
            ("ssl.key.location", &self.ssl_key_location),
        ] {
            if let Some(value) = value {
                client.set(option, value);
            }
        }
        if self.ssl_key_password.is_set() {
            client.set("ssl.key.password", self.ssl_key_password.expose());
        }
        client.set(
            "ssl.endpoint.identification.algorithm",
            if self.ssl_verify_hostname {
                "https"
            } else {
                "none"
            },
        );
    }
}

/// Raw librdkafka options this section owns: setting them under `[kafka.consumer]` or
/// `[kafka.producer]` would apply to one kind of client only, which is the trap the section
/// exists to close.
pub fn owned_option(option: &str) -> Option<&'static str> {
    Some(match option {
        "security.protocol" => "kafka.security.security_protocol",
        "sasl.mechanism" | "sasl.mechanisms" => "kafka.security.sasl_mechanism",
        "sasl.username" => "kafka.security.sasl_username",
        "sasl.password" => {
            "kafka.security.sasl_password (or sasl_password_file / sasl_password_env)"
        }
        "ssl.ca.location" => "kafka.security.ssl_ca_location",
        "ssl.certificate.location" => "kafka.security.ssl_certificate_location",
        "ssl.key.location" => "kafka.security.ssl_key_location",
        "ssl.key.password" => "kafka.security.ssl_key_password",
        "ssl.endpoint.identification.algorithm" => "kafka.security.ssl_verify_hostname",
        _ => return None,
    })
}

/// Whether a raw librdkafka option holds a secret that must not be printed.
pub fn is_secret_option(option: &str) -> bool {
    option.contains("password")
        || option.contains("secret")
        || option == "ssl.key.pem"
        || option == "sasl.oauthbearer.config"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sasl_ssl() -> RawSecurity {
        RawSecurity {
            security_protocol: "SASL_SSL".into(),
            sasl_mechanism: "scram-sha-512".into(),
            sasl_username: "app".into(),
            ..RawSecurity::default()
        }
    }

    #[test]
    fn the_password_comes_from_exactly_one_place() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "from-file\n").unwrap();
        let env = vec![("PW".to_owned(), "from-env".to_owned())];

        let inline = RawSecurity {
            sasl_password: Secret::new("inline"),
            ..sasl_ssl()
        };
        let by_file = RawSecurity {
            sasl_password_file: file.display().to_string(),
            ..sasl_ssl()
        };
        let by_env = RawSecurity {
            sasl_password_env: "PW".into(),
            ..sasl_ssl()
        };
        for (raw, want) in [
            (inline, "inline"),
            (by_file, "from-file"),
            (by_env, "from-env"),
        ] {
            let security = raw.validate(&env).unwrap();
            let sasl = security.sasl.unwrap();
            assert_eq!(sasl.mechanism, "SCRAM-SHA-512");
            assert_eq!(sasl.password.expose(), want);
        }

        let both = RawSecurity {
            sasl_password: Secret::new("x"),
            sasl_password_env: "PW".into(),
            ..sasl_ssl()
        };
        assert_eq!(
            both.validate(&env).unwrap_err().field,
            "kafka.security.sasl_password"
        );
        let unset = RawSecurity {
            sasl_password_env: "NOPE".into(),
            ..sasl_ssl()
        };
        let error = unset.validate(&env).unwrap_err();
        assert_eq!(error.field, "kafka.security.sasl_password_env");
        assert!(error.fix.contains("export NOPE"), "{error:?}");
    }

    #[test]
    fn settings_that_do_not_fit_the_protocol_name_their_field() {
        let cases = [
            (
                RawSecurity {
                    security_protocol: "tls".into(),
                    ..RawSecurity::default()
                },
                "kafka.security.security_protocol",
            ),
            (
                RawSecurity {
                    sasl_username: "app".into(),
                    ..RawSecurity::default()
                },
                "kafka.security.sasl_username",
            ),
            (
                RawSecurity {
                    sasl_mechanism: "GSSAPI".into(),
                    ..sasl_ssl()
                },
                "kafka.security.sasl_mechanism",
            ),
            (
                RawSecurity {
                    ssl_ca_location: "/etc/hostname".into(),
                    ..RawSecurity::default()
                },
                "kafka.security.ssl_ca_location",
            ),
            (
                RawSecurity {
                    security_protocol: "ssl".into(),
                    ssl_ca_location: "/no/such/ca.pem".into(),
                    ..RawSecurity::default()
                },
                "kafka.security.ssl_ca_location",
            ),
            (
                RawSecurity {
                    security_protocol: "ssl".into(),
                    ssl_certificate_location: "/etc/hostname".into(),
                    ..RawSecurity::default()
                },
                "kafka.security.ssl_key_location",
            ),
        ];
        for (raw, field) in cases {
            let error = raw.validate(&[]).unwrap_err();
            assert_eq!(error.field, field, "{error:?}");
            assert!(!error.fix.is_empty());
        }
    }

    #[test]
    fn the_password_never_shows_in_debug_output() {
        let security = RawSecurity {
            sasl_password: Secret::new("hunter2"),
            ..sasl_ssl()
        }
        .validate(&[])
        .unwrap();
        let shown = format!("{security:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("<redacted>"),
            "{shown}"
        );
    }
}
