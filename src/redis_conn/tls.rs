//! TLS material for Redis connections: the CA bundle, the client
//! certificate and key for mutual TLS, and the "accept anything" switch.
//! Files are read and parsed once at start-up, so a bad file stops the
//! node with the key's name instead of failing every connection later.

use redis::{ClientTlsConfig, ConnectionAddr, ConnectionInfo, TlsCertificates};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::RedisSetupError;
use crate::config::ClusterSettings;

/// How `rediss://` connections verify and present certificates.
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    certificates: Option<TlsCertificates>,
    insecure: bool,
}

impl TlsOptions {
    /// Reads the `cluster.redis_tls_*` files.
    pub fn from_settings(cluster: &ClusterSettings) -> Result<TlsOptions, RedisSetupError> {
        let root_cert = cluster
            .redis_tls_ca_path
            .as_deref()
            .map(|path| read_certificates("cluster.redis_tls_ca_path", path))
            .transpose()?;
        let client_tls = match (&cluster.redis_tls_cert_path, &cluster.redis_tls_key_path) {
            (Some(cert), Some(key)) => Some(ClientTlsConfig {
                client_cert: read_certificates("cluster.redis_tls_cert_path", cert)?,
                client_key: read_key("cluster.redis_tls_key_path", key)?,
            }),
            _ => None,
        };
        let certificates =
            (root_cert.is_some() || client_tls.is_some()).then_some(TlsCertificates {
                client_tls,
                root_cert,
            });
        Ok(TlsOptions {
            certificates,
            insecure: cluster.redis_tls_insecure,
        })
    }

    /// Whether any certificate is accepted.
    pub fn is_insecure(&self) -> bool {
        self.insecure
    }

    /// The certificates for clients that take them separately (cluster).
    pub fn certificates(&self) -> Option<&TlsCertificates> {
        self.certificates.as_ref()
    }

    /// `info` with the insecure switch applied to a `rediss://` address.
    pub fn apply(&self, mut info: ConnectionInfo) -> ConnectionInfo {
        if let ConnectionAddr::TcpTls {
            host,
            port,
            tls_params,
            ..
        } = info.addr().clone()
        {
            info = info.set_addr(ConnectionAddr::TcpTls {
                host,
                port,
                insecure: self.insecure,
                tls_params,
            });
        }
        info
    }

    /// A client for `info`, carrying the certificates when it uses TLS.
    pub fn client(&self, info: ConnectionInfo) -> redis::RedisResult<redis::Client> {
        let info = self.apply(info);
        let tls = matches!(info.addr(), ConnectionAddr::TcpTls { .. });
        match &self.certificates {
            Some(certificates) if tls => redis::Client::build_with_tls(info, certificates.clone()),
            _ => redis::Client::open(info),
        }
    }
}

fn read(key: &'static str, path: &std::path::Path) -> Result<Vec<u8>, RedisSetupError> {
    std::fs::read(path).map_err(|e| RedisSetupError::TlsFile {
        key,
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

fn read_certificates(
    key: &'static str,
    path: &std::path::Path,
) -> Result<Vec<u8>, RedisSetupError> {
    let pem = read(key, path)?;
    let bad = |reason: String| RedisSetupError::TlsFile {
        key,
        path: path.display().to_string(),
        reason,
    };
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        cert.map_err(|e| bad(format!("not a PEM certificate: {e}")))?;
        count += 1;
    }
    if count == 0 {
        return Err(bad("holds no PEM certificate".into()));
    }
    Ok(pem)
}

fn read_key(key: &'static str, path: &std::path::Path) -> Result<Vec<u8>, RedisSetupError> {
    let pem = read(key, path)?;
    // The parse error never quotes the key material.
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| RedisSetupError::TlsFile {
        key,
        path: path.display().to_string(),
        reason: "holds no PEM private key".into(),
    })?;
    Ok(pem)
}
