//! The operator API on the admin port, under `/v1`: `GET
//! /v1/clients/<id>` (where is this client online) and `POST
//! /v1/clients/<id>/disconnect` (end its session, wherever it is). It exists
//! only when `admin.api_token` is set, and every request needs
//! `Authorization: Bearer <admin.api_token>`, compared in constant time.
//! This file owns the HTTP side; finding and ending sessions is
//! `node/kick.rs`.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Body;
use hyper::{header, Method, Request, Response, StatusCode};
use subtle::ConstantTimeEq;

use crate::access_metrics::AdminOutcome;
use crate::node::{KickOutcome, Node};
use crate::protocol::is_valid_client_id;

/// Largest request body accepted (the endpoints take none).
const MAX_BODY: u64 = 1024;

/// Whether `path` belongs to the API (everything under `/v1`).
pub fn is_api_path(path: &str) -> bool {
    path == "/v1" || path.starts_with("/v1/")
}

/// Answers one request under `/v1`.
pub async fn handle<B: Body>(node: &Node, request: &Request<B>) -> Response<Full<Bytes>> {
    let (endpoint, route) = route(request.method(), request.uri().path());
    // Boxed: the presence and bus futures below are deep, and an admin
    // request is rare.
    let (outcome, response) = Box::pin(answer(node, request, route)).await;
    node.metrics().access.admin_request(endpoint, outcome);
    response
}

/// What a request asks for.
enum Route<'a> {
    Client(&'a str),
    Disconnect(&'a str),
    WrongMethod(&'static str),
    Unknown,
}

fn route<'a>(method: &Method, path: &'a str) -> (&'static str, Route<'a>) {
    let rest = path.strip_prefix("/v1/clients/").unwrap_or("");
    match rest.split_once('/') {
        _ if rest.is_empty() => ("other", Route::Unknown),
        None if method == Method::GET || method == Method::HEAD => ("client", Route::Client(rest)),
        None => ("client", Route::WrongMethod("GET")),
        Some((id, "disconnect")) if method == Method::POST => ("disconnect", Route::Disconnect(id)),
        Some((_, "disconnect")) => ("disconnect", Route::WrongMethod("POST")),
        Some(_) => ("other", Route::Unknown),
    }
}

async fn answer<B: Body>(
    node: &Node,
    request: &Request<B>,
    route: Route<'_>,
) -> (AdminOutcome, Response<Full<Bytes>>) {
    let Some(expected) = &node.settings().admin.api_token else {
        return (
            AdminOutcome::Disabled,
            json(StatusCode::NOT_FOUND, r#"{"error":"not found"}"#),
        );
    };
    if !authorized(request, expected.expose()) {
        let mut response = json(StatusCode::UNAUTHORIZED, r#"{"error":"unauthorized"}"#);
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return (AdminOutcome::Unauthorized, response);
    }
    // The body is never read; a declared large one is refused outright.
    if request.body().size_hint().lower() > MAX_BODY {
        return (
            AdminOutcome::BadRequest,
            json(
                StatusCode::PAYLOAD_TOO_LARGE,
                r#"{"error":"request body too large"}"#,
            ),
        );
    }
    let id = match route {
        Route::Client(id) | Route::Disconnect(id) => id,
        Route::WrongMethod(allowed) => {
            let mut response = json(
                StatusCode::METHOD_NOT_ALLOWED,
                r#"{"error":"method not allowed"}"#,
            );
            response
                .headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static(allowed));
            return (AdminOutcome::BadRequest, response);
        }
        Route::Unknown => {
            return (
                AdminOutcome::NotFound,
                json(StatusCode::NOT_FOUND, r#"{"error":"not found"}"#),
            )
        }
    };
    if !is_valid_client_id(id) {
        return (
            AdminOutcome::BadRequest,
            json(
                StatusCode::BAD_REQUEST,
                r#"{"error":"client id must be 1 to 128 characters of [A-Za-z0-9._:@-]"}"#,
            ),
        );
    }
    let unavailable = || {
        (
            AdminOutcome::Unavailable,
            json(
                StatusCode::SERVICE_UNAVAILABLE,
                r#"{"error":"cluster backend unavailable"}"#,
            ),
        )
    };
    match route {
        Route::Client(_) => match node.find_client(id).await {
            Ok(Some(at)) => {
                let body = serde_json::json!({
                    "online": true,
                    "node_id": at.node_id.as_str(),
                    "session_id": at.session_id.0.to_string(),
                });
                (
                    AdminOutcome::Ok,
                    json_owned(StatusCode::OK, body.to_string()),
                )
            }
            Ok(None) => (
                AdminOutcome::NotFound,
                json(StatusCode::NOT_FOUND, r#"{"online":false}"#),
            ),
            Err(_) => unavailable(),
        },
        _ => match node.kick(id).await {
            Ok(KickOutcome::Disconnected) => {
                tracing::info!(client = id, "session ended through the admin API");
                (
                    AdminOutcome::Ok,
                    json(StatusCode::OK, r#"{"disconnected":true}"#),
                )
            }
            Ok(KickOutcome::NotOnline) => (
                AdminOutcome::NotFound,
                json(StatusCode::NOT_FOUND, r#"{"disconnected":false}"#),
            ),
            Err(_) => unavailable(),
        },
    }
}

/// Whether the request carries `Authorization: Bearer <expected>`. The
/// comparison takes the same time wherever the tokens differ.
fn authorized<B>(request: &Request<B>, expected: &str) -> bool {
    let Some(given) = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
    else {
        return false;
    };
    bool::from(given.ct_eq(expected.as_bytes()))
}

fn json(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    json_owned(status, body.to_owned())
}

fn json_owned(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let get = Method::GET;
        let post = Method::POST;
        assert!(matches!(
            route(&get, "/v1/clients/alice"),
            ("client", Route::Client("alice"))
        ));
        assert!(matches!(
            route(&post, "/v1/clients/alice/disconnect"),
            ("disconnect", Route::Disconnect("alice"))
        ));
        assert!(matches!(
            route(&get, "/v1/clients/alice/disconnect"),
            (_, Route::WrongMethod(_))
        ));
        assert!(matches!(
            route(&post, "/v1/clients/alice"),
            (_, Route::WrongMethod(_))
        ));
        assert!(matches!(route(&get, "/v1/other"), (_, Route::Unknown)));
        assert!(matches!(route(&get, "/v1/clients/"), (_, Route::Unknown)));
        assert!(matches!(
            route(&get, "/v1/clients/a/b/c"),
            (_, Route::Unknown)
        ));
        assert!(is_api_path("/v1") && is_api_path("/v1/x") && !is_api_path("/v10"));
    }
}
