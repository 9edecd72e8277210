//! OTLP over https: a receiver with a certificate from a CA made in the
//! test. A node whose `SSL_CERT_FILE` names that CA exports its spans; a
//! node trusting another CA drops them, counts them in
//! `spans_dropped_total` and says so in one log line, not one per batch.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use signal_manager_client::Connection;
use signal_manager_service::protocol::Codec;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::support::*;
use crate::tracing::receiver_with;

const WARNING: &str = "OTLP span export failed";

/// A CA made here; `pem` is its certificate.
struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        TestCa { issuer }
    }

    fn write_pem(&self, path: &Path) {
        fs::write(path, self.issuer.pem()).unwrap();
    }

    /// A TLS server configuration with a certificate for `localhost` and
    /// 127.0.0.1 signed by this CA.
    fn server(&self) -> TlsAcceptor {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let chain = vec![CertificateDer::from(cert.der().to_vec())];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let config = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        TlsAcceptor::from(Arc::new(config))
    }
}

/// A single node in a child process exporting to `endpoint`, trusting only
/// the CA in `ca_file`; its log goes to a file.
struct LoggedNode {
    child: Child,
    url: String,
    admin: String,
    log: PathBuf,
}

impl LoggedNode {
    async fn spawn(dir: &Path, endpoint: &str, ca_file: &Path) -> LoggedNode {
        let (port, admin_port) = (free_port(), free_port());
        let log = dir.join("node.log");
        let child = Command::new(binary())
            .args(["--port", &port.to_string()])
            .args(["--admin-port", &admin_port.to_string()])
            .env_remove("RUST_LOG")
            .env_remove("SSL_CERT_DIR")
            .env("SSL_CERT_FILE", ca_file)
            .env("SIGNAL_MANAGER_TELEMETRY_OTLP_ENDPOINT", endpoint)
            .env("SIGNAL_MANAGER_TELEMETRY_SAMPLE_RATIO", "1.0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn node binary");
        let node = LoggedNode {
            child,
            url: format!("ws://127.0.0.1:{port}"),
            admin: format!("127.0.0.1:{admin_port}"),
            log,
        };
        let admin = node.admin.clone();
        eventually("node ready", Duration::from_secs(15), || {
            let admin = admin.clone();
            async move { http_get(&admin, "/readyz").await.0 == 200 }
        })
        .await;
        node
    }

    /// Opens a session (its CONNECT is a traced root span).
    async fn connect(&self, client: &str, token: &str) -> Connection {
        let mut conn = Connection::open(&self.url).await.unwrap();
        conn.authenticate(client, token, Codec::Json).await.unwrap();
        conn
    }

    async fn dropped_spans(&self) -> f64 {
        let text = http_get(&self.admin, "/metrics").await.1;
        text.lines()
            .find(|l| l.starts_with("signal_manager_spans_dropped_total "))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    }

    fn warnings(&self) -> usize {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(WARNING))
            .count()
    }
}

impl Drop for LoggedNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn spans_reach_an_https_collector_whose_ca_the_node_trusts() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("signal-manager test OTLP CA");
    let ca_file = dir.path().join("ca.pem");
    ca.write_pem(&ca_file);
    let (endpoint, spans) = receiver_with(Some(ca.server())).await;
    assert!(endpoint.starts_with("https://"), "{endpoint}");

    let node = LoggedNode::spawn(dir.path(), &endpoint, &ca_file).await;
    let _alice = node.connect("test_client_1", "test_token_1").await;
    eventually(
        "CONNECT span over https",
        Duration::from_secs(15),
        || async { spans.lock().unwrap().iter().any(|s| s.name == "CONNECT") },
    )
    .await;
    assert_eq!(node.dropped_spans().await, 0.0);
    assert_eq!(node.warnings(), 0, "{:?}", fs::read_to_string(&node.log));
}

#[tokio::test]
async fn an_untrusted_collector_certificate_drops_spans_and_logs_once() {
    let dir = tempfile::tempdir().unwrap();
    let collector_ca = TestCa::new("collector CA");
    let other_ca = TestCa::new("some other CA");
    let other_file = dir.path().join("other.pem");
    other_ca.write_pem(&other_file);
    let (endpoint, spans) = receiver_with(Some(collector_ca.server())).await;

    let node = LoggedNode::spawn(dir.path(), &endpoint, &other_file).await;
    // Two sessions one after the other: at least two failed exports.
    let _alice = node.connect("test_client_1", "test_token_1").await;
    eventually("first drop counted", Duration::from_secs(20), || async {
        node.dropped_spans().await >= 1.0
    })
    .await;
    let first = node.dropped_spans().await;
    let _bob = node.connect("test_client_2", "test_token_2").await;
    eventually("second drop counted", Duration::from_secs(20), || async {
        node.dropped_spans().await > first
    })
    .await;
    // The second export failed after the first one had logged.
    let log = fs::read_to_string(&node.log).unwrap_or_default();
    assert_eq!(node.warnings(), 1, "one warning per outage:\n{log}");
    assert!(
        log.contains(&endpoint),
        "the warning names the endpoint:\n{log}"
    );
    assert!(spans.lock().unwrap().is_empty(), "nothing got through");
    assert_eq!(http_get(&node.admin, "/readyz").await.0, 200);
}
