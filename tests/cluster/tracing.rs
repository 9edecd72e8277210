//! Tracing: a real OTLP/HTTP receiver in the test collects what two nodes
//! export; one cross-node signal must be one trace whose delivery span on
//! node B is a child of the routing span on node A.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message as _;
use signal_manager_client::Connection;
use signal_manager_service::protocol::{Codec, Message, MessageType, Payload, SignalPayload};

use crate::support::redis_server::RedisServer;
use crate::support::*;
use crate::*;

/// One exported span, flattened with its resource.
#[derive(Clone, Debug)]
pub(crate) struct Exported {
    pub(crate) instance: String,
    service: String,
    version: String,
    pub(crate) name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent: Vec<u8>,
    attributes: Vec<(String, String)>,
}

fn text(attrs: &[KeyValue], key: &str) -> String {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
        .map(|v| match v {
            Value::StringValue(s) => s.clone(),
            other => format!("{other:?}"),
        })
        .unwrap_or_default()
}

/// Starts an OTLP/HTTP receiver; returns its base URL and what it got.
async fn receiver() -> (String, Arc<Mutex<Vec<Exported>>>) {
    receiver_with(None).await
}

/// Starts an OTLP/HTTP receiver, over https when `tls` is given (its base
/// URL then names `localhost`, the name in the test certificates); returns
/// its base URL and what it got.
pub(crate) async fn receiver_with(
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> (String, Arc<Mutex<Vec<Exported>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let base = match tls {
        Some(_) => format!("https://localhost:{port}"),
        None => format!("http://127.0.0.1:{port}"),
    };
    let spans = Arc::new(Mutex::new(Vec::new()));
    let store = Arc::clone(&spans);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let store = Arc::clone(&store);
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    // A client that does not trust the certificate aborts
                    // the handshake: nothing is received from it.
                    Some(tls) => {
                        if let Ok(stream) = tls.accept(stream).await {
                            serve_otlp(stream, store).await;
                        }
                    }
                    None => serve_otlp(stream, store).await,
                }
            });
        }
    });
    (base, spans)
}

/// Answers OTLP/HTTP trace exports on one connection, storing their spans.
async fn serve_otlp<S>(stream: S, store: Arc<Mutex<Vec<Exported>>>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
        let store = Arc::clone(&store);
        async move {
            assert_eq!(req.uri().path(), "/v1/traces");
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
            let mut out = store.lock().unwrap();
            for rs in request.resource_spans {
                let attrs = rs.resource.map(|r| r.attributes).unwrap_or_default();
                for ss in rs.scope_spans {
                    for span in ss.spans {
                        out.push(Exported {
                            instance: text(&attrs, "service.instance.id"),
                            service: text(&attrs, "service.name"),
                            version: text(&attrs, "service.version"),
                            name: span.name.clone(),
                            trace_id: span.trace_id.clone(),
                            span_id: span.span_id.clone(),
                            parent: span.parent_span_id.clone(),
                            attributes: span
                                .attributes
                                .iter()
                                .map(|kv| (kv.key.clone(), text(&span.attributes, &kv.key)))
                                .collect(),
                        });
                    }
                }
            }
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
        }
    });
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

async fn traced_node(
    redis: &RedisServer,
    prefix: &str,
    node_id: &str,
    endpoint: &str,
) -> ChildNode {
    let url = redis.url();
    ChildNode::spawn(
        &["--redis-url", &url, "--node-id", node_id],
        &[
            ("SIGNAL_MANAGER_CLUSTER_KEY_PREFIX", prefix),
            ("SIGNAL_MANAGER_TELEMETRY_OTLP_ENDPOINT", endpoint),
            ("SIGNAL_MANAGER_TELEMETRY_SAMPLE_RATIO", "1.0"),
        ],
    )
    .await
}

/// Redis, two traced nodes, alice on node-a (JSON) and bob on node-b.
async fn traced_pair(
    name: &str,
    endpoint: &str,
    bob_codec: Codec,
) -> (RedisServer, ChildNode, ChildNode, Connection, Connection) {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix(name);
    let a = traced_node(&redis, &prefix, "node-a", endpoint).await;
    let b = traced_node(&redis, &prefix, "node-b", endpoint).await;
    let mut alice = Connection::open(&a.url).await.unwrap();
    alice
        .authenticate("test_client_1", "test_token_1", Codec::Json)
        .await
        .unwrap();
    let mut bob = Connection::open(&b.url).await.unwrap();
    bob.authenticate("test_client_2", "test_token_2", bob_codec)
        .await
        .unwrap();
    (redis, a, b, alice, bob)
}

fn attr<'a>(span: &'a Exported, key: &str) -> &'a str {
    span.attributes
        .iter()
        .find(|(k, _)| k == key)
        .map_or("", |(_, v)| v.as_str())
}

#[tokio::test]
async fn one_cross_node_signal_is_one_trace_across_two_nodes() {
    let (endpoint, spans) = receiver().await;
    let (_redis, _a, b, mut alice, mut bob) = traced_pair("trace", &endpoint, Codec::Cbor).await;
    let offer = Message::new(
        MessageType::SignalOffer,
        Payload::SignalOffer(SignalPayload {
            target_client_id: "test_client_2".into(),
            signal_data: "v=0".into(),
        }),
    );
    alice.send(&offer, Codec::Json).await.unwrap();
    assert_eq!(recv_message(&mut bob).await.message_id, offer.message_id);
    let id = offer.message_id.to_string();

    let find = |instance: &str, name: &str| {
        spans
            .lock()
            .unwrap()
            .iter()
            .find(|s| {
                s.instance == instance && s.name == name && attr(s, "messaging.message.id") == id
            })
            .cloned()
    };
    eventually("spans from both nodes", Duration::from_secs(15), || async {
        find("node-a", "SIGNAL_OFFER route").is_some()
            && find("node-b", "SIGNAL_OFFER deliver").is_some()
    })
    .await;
    let route = find("node-a", "SIGNAL_OFFER route").unwrap();
    let deliver = find("node-b", "SIGNAL_OFFER deliver").unwrap();
    assert_eq!(route.trace_id, deliver.trace_id, "one signal, one trace");
    assert_eq!(
        deliver.parent, route.span_id,
        "delivery is a child of the routing span"
    );
    assert_eq!(attr(&route, "signal_manager.route"), "remote");
    assert_eq!(attr(&route, "signal_manager.source"), "test_client_1");
    assert_eq!(attr(&route, "signal_manager.target"), "test_client_2");
    assert_eq!(attr(&deliver, "signal_manager.origin_node"), "node-a");
    for span in [&route, &deliver] {
        assert_eq!(span.service, "signal-manager");
        assert_eq!(span.version, env!("CARGO_PKG_VERSION"));
    }
    // The publish through Redis is its own span under the routing span.
    eventually("publish span", Duration::from_secs(15), || async {
        spans.lock().unwrap().iter().any(|s| {
            s.name == "publish" && s.parent == route.span_id && s.trace_id == route.trace_id
        })
    })
    .await;
    // CONNECT handling is traced with the auth result and codec.
    let connects: Vec<Exported> = spans
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.name == "CONNECT")
        .cloned()
        .collect();
    assert!(connects
        .iter()
        .any(|s| attr(s, "signal_manager.auth_result") == "ok"
            && attr(s, "signal_manager.codec") == "cbor"));

    // A token refresh on the live session is traced too.
    let refresh = Message::new(
        MessageType::Connect,
        Payload::Connect(signal_manager_service::protocol::ConnectPayload {
            client_id: "test_client_1".into(),
            auth_token: "test_token_1".into(),
        }),
    );
    alice.send(&refresh, Codec::Json).await.unwrap();
    assert_eq!(
        recv_message(&mut alice).await.message_id,
        refresh.message_id
    );
    eventually("refresh span", Duration::from_secs(15), || async {
        spans.lock().unwrap().iter().any(|s| {
            s.name == "CONNECT"
                && attr(s, "signal_manager.refresh").contains("true")
                && attr(s, "signal_manager.auth_result") == "ok"
        })
    })
    .await;

    // Cross-node metrics moved as the signal flowed.
    let metrics_b = http_get(&b.admin, "/metrics").await.1;
    assert!(
        metrics_b.contains("signal_manager_cross_node_delivery_seconds_count 1"),
        "{metrics_b}"
    );
}

#[tokio::test]
async fn a_node_keeps_serving_when_the_collector_is_unreachable() {
    let dead = format!("http://127.0.0.1:{}", free_port());
    let (_redis, a, _b, mut alice, mut bob) = traced_pair("nocollector", &dead, Codec::Json).await;
    for _ in 0..20 {
        let offer = Message::new(
            MessageType::SignalOffer,
            Payload::SignalOffer(SignalPayload {
                target_client_id: "test_client_2".into(),
                signal_data: "x".into(),
            }),
        );
        alice.send(&offer, Codec::Json).await.unwrap();
        assert_eq!(recv_message(&mut bob).await.message_id, offer.message_id);
    }
    let admin = a.admin.clone();
    eventually("dropped spans are counted", Duration::from_secs(15), || {
        let admin = admin.clone();
        async move {
            let text = http_get(&admin, "/metrics").await.1;
            text.lines()
                .find(|l| l.starts_with("signal_manager_spans_dropped_total "))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
                .is_some_and(|v| v > 0.0)
        }
    })
    .await;
    assert_eq!(http_get(&a.admin, "/readyz").await.0, 200);
}
