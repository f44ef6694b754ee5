//! TLS for both query servers and for forwarding between instances (rustls, with ring).
//!
//! One certificate and key serve HTTP and RESP. The handshake runs in the connection's own
//! task, under its place in the connection cap and within `handshake_timeout`, so a client
//! that opens TCP and never says hello holds neither the accept loop nor a slot for long.
//! Forwarding connects with TLS too, trusting `ca_file` (or, without one, the certificates
//! of `cert_file` itself: a group sharing one self-signed certificate trusts itself), and
//! presents the instance's own certificate when the servers require client certificates.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::TcpStream;
use tokio_rustls::{client, server, TlsAcceptor, TlsConnector};

/// Where the PEM files are, as `[query.tls]` names them (validated by `config.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// The certificate chain the servers present, leaf first.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// CAs forwarding trusts for other instances' certificates; `None`: those of `cert_file`.
    pub ca_file: Option<PathBuf>,
    /// `Some`: clients must present a certificate signed by one of these CAs.
    pub client_ca_file: Option<PathBuf>,
    /// Time a client has to complete the handshake after connecting.
    pub handshake_timeout: Duration,
}

/// Which setting a [`TlsError`] is about, so configuration errors can name the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFile {
    Cert,
    Key,
    Ca,
    ClientCa,
}

impl TlsFile {
    pub fn field(self) -> &'static str {
        match self {
            TlsFile::Cert => "query.tls.cert_file",
            TlsFile::Key => "query.tls.key_file",
            TlsFile::Ca => "query.tls.ca_file",
            TlsFile::ClientCa => "query.tls.client_ca_file",
        }
    }

    /// How to put it right, in a few words.
    pub fn fix(self) -> &'static str {
        match self {
            TlsFile::Cert | TlsFile::Ca | TlsFile::ClientCa => {
                "point it at a readable PEM file of certificates (-----BEGIN CERTIFICATE-----)"
            }
            TlsFile::Key => {
                "point it at the PEM private key (PKCS#8, PKCS#1 or SEC1) of cert_file's certificate"
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        file: TlsFile,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} holds no usable PEM item: {source}")]
    Pem {
        file: TlsFile,
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{path} was refused: {source}")]
    Refused {
        file: TlsFile,
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("the CAs of {path} were refused: {source}")]
    Verifier {
        file: TlsFile,
        path: PathBuf,
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
}

impl TlsError {
    pub fn file(&self) -> TlsFile {
        match self {
            TlsError::Read { file, .. }
            | TlsError::Pem { file, .. }
            | TlsError::Refused { file, .. }
            | TlsError::Verifier { file, .. } => *file,
        }
    }
}

/// The loaded certificates: an acceptor for the servers and a connector for forwarding.
pub struct Tls {
    acceptor: TlsAcceptor,
    client: Arc<ClientConfig>,
    handshake_timeout: Duration,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Reads and checks every file; the first problem is the error.
    pub fn load(settings: &TlsSettings) -> Result<Tls, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = certificates(TlsFile::Cert, &settings.cert_file)?;
        let key = private_key(&settings.key_file)?;
        let refused = |file: TlsFile, path: &Path| {
            let path = path.to_owned();
            move |source| TlsError::Refused { file, path, source }
        };
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(refused(TlsFile::Cert, &settings.cert_file))?;
        let server = match &settings.client_ca_file {
            None => server.with_no_client_auth(),
            Some(path) => {
                let roots = roots(TlsFile::ClientCa, path)?;
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .map_err(|source| TlsError::Verifier {
                            file: TlsFile::ClientCa,
                            path: path.clone(),
                            source,
                        })?;
                server.with_client_cert_verifier(verifier)
            }
        };
        let server = server
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(refused(TlsFile::Key, &settings.key_file))?;

        let trusted = match &settings.ca_file {
            Some(path) => roots(TlsFile::Ca, path)?,
            None => {
                let mut roots = RootCertStore::empty();
                for cert in &chain {
                    roots
                        .add(cert.clone())
                        .map_err(refused(TlsFile::Cert, &settings.cert_file))?;
                }
                roots
            }
        };
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(refused(TlsFile::Cert, &settings.cert_file))?
            .with_root_certificates(trusted);
        let client = if settings.client_ca_file.is_some() {
            client
                .with_client_auth_cert(chain, key)
                .map_err(refused(TlsFile::Key, &settings.key_file))?
        } else {
            client.with_no_client_auth()
        };
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            client: Arc::new(client),
            handshake_timeout: settings.handshake_timeout,
        })
    }

    /// The server side of the handshake, bounded by the handshake timeout.
    pub async fn accept(&self, stream: TcpStream) -> io::Result<server::TlsStream<TcpStream>> {
        match tokio::time::timeout(self.handshake_timeout, self.acceptor.accept(stream)).await {
            Ok(done) => done,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "tls handshake not completed within the handshake timeout",
            )),
        }
    }

    /// The client side towards another instance at `addr` (`host:port`); the certificate
    /// must name `host`.
    pub async fn connect(
        &self,
        addr: &str,
        stream: TcpStream,
    ) -> io::Result<client::TlsStream<TcpStream>> {
        let name = server_name(addr)?;
        TlsConnector::from(self.client.clone())
            .connect(name, stream)
            .await
    }

    /// What HTTP forwarding builds its https connector from.
    pub fn client_config(&self) -> ClientConfig {
        (*self.client).clone()
    }
}

/// The host of `host:port` (IPv6 in brackets) as a name the certificate must match.
fn server_name(addr: &str) -> io::Result<ServerName<'static>> {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{host} is not a host name or ip address"),
        )
    })
}

fn certificates(file: TlsFile, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = |source| TlsError::Pem {
        file,
        path: path.to_owned(),
        source,
    };
    let text = read(file, path)?;
    let mut chain = Vec::new();
    for cert in CertificateDer::pem_slice_iter(&text) {
        chain.push(cert.map_err(pem)?);
    }
    if chain.is_empty() {
        return Err(pem(rustls::pki_types::pem::Error::NoItemsFound));
    }
    Ok(chain)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let text = read(TlsFile::Key, path)?;
    PrivateKeyDer::from_pem_slice(&text).map_err(|source| TlsError::Pem {
        file: TlsFile::Key,
        path: path.to_owned(),
        source,
    })
}

fn roots(file: TlsFile, path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(file, path)? {
        roots.add(cert).map_err(|source| TlsError::Refused {
            file,
            path: path.to_owned(),
            source,
        })?;
    }
    Ok(roots)
}

fn read(file: TlsFile, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        file,
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_come_from_the_host_of_an_address() {
        assert!(matches!(
            server_name("127.0.0.1:6380").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("[::1]:6380").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("node-a.internal:8080").unwrap(),
            ServerName::DnsName(_)
        ));
        assert!(server_name("bad host:1").is_err());
    }

    #[test]
    fn missing_and_malformed_files_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not pem").unwrap();
        let settings = |cert: &Path, key: &Path| TlsSettings {
            cert_file: cert.to_owned(),
            key_file: key.to_owned(),
            ca_file: None,
            client_ca_file: None,
            handshake_timeout: Duration::from_secs(1),
        };
        let missing = dir.path().join("missing.pem");
        let error = Tls::load(&settings(&missing, &junk)).unwrap_err();
        assert_eq!(error.file(), TlsFile::Cert);
        assert!(error.to_string().contains("missing.pem"), "{error}");
        let error = Tls::load(&settings(&junk, &junk)).unwrap_err();
        assert_eq!(error.file(), TlsFile::Cert);
        assert!(matches!(error, TlsError::Pem { .. }), "{error}");
    }
}
