//! The API's OpenAPI description (`server/openapi.yaml`), embedded in the binary and served,
//! public, at `GET /v1/openapi.yaml`.
//!
//! `tests/openapi.rs` keeps it honest: every route of the router is described and every
//! described operation is routed. `scripts/api-fuzz` runs schemathesis against a live server
//! from the served file.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::api::AppState;

/// The OpenAPI 3.1 description of the API (YAML).
pub const OPENAPI_YAML: &str = include_str!("../openapi.yaml");

/// The route serving it (merged into [`crate::api::router`]).
pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/openapi.yaml", get(openapi))
}

async fn openapi() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/yaml"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        OPENAPI_YAML,
    )
        .into_response()
}
