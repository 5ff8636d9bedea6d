//! ward's own web page at `/ui/`: plain HTML, CSS and JavaScript compiled
//! into the binary (no build step, nothing fetched from elsewhere), served
//! without the secret. The page asks for the secret once and sends it with
//! every API call it makes; it polls the JSON routes (`/tree`, `/proxies`,
//! `/dialers`, `/connections`, `/stats`) and draws its charts itself.
//! It is not an API: nothing here reads or changes ward's state.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

/// Only this origin: the page loads nothing from anywhere else.
const POLICY: &str = "default-src 'self'; img-src 'self' data:; object-src 'none'; \
                      base-uri 'none'; frame-ancestors 'none'";

/// Every file of the page: its name under `/ui/`, its media type, its text.
const FILES: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("page/index.html"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("page/style.css"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_str!("page/favicon.svg"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_str!("page/api.js"),
    ),
    (
        "charts.js",
        "text/javascript; charset=utf-8",
        include_str!("page/charts.js"),
    ),
    (
        "tree.js",
        "text/javascript; charset=utf-8",
        include_str!("page/tree.js"),
    ),
    (
        "dialers.js",
        "text/javascript; charset=utf-8",
        include_str!("page/dialers.js"),
    ),
    (
        "flows.js",
        "text/javascript; charset=utf-8",
        include_str!("page/flows.js"),
    ),
    (
        "dns.js",
        "text/javascript; charset=utf-8",
        include_str!("page/dns.js"),
    ),
    (
        "main.js",
        "text/javascript; charset=utf-8",
        include_str!("page/main.js"),
    ),
];

/// The page's routes; they sit outside the token check.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(|| async { file("index.html") }))
        .route(
            "/ui/{name}",
            get(|Path(name): Path<String>| async move { file(&name) }),
        )
}

fn file(name: &str) -> Response {
    let Some((_, media, text)) = FILES.iter().find(|(n, _, _)| *n == name) else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    (
        [
            (header::CONTENT_TYPE, *media),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            // The page changes with the binary: check on every load.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        *text,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_script_the_page_names_is_served() {
        let index = FILES[0].2;
        for (name, _, _) in &FILES[1..] {
            assert!(index.contains(name), "index.html does not load {name}");
        }
        assert_eq!(file("index.html").status(), StatusCode::OK);
        assert_eq!(file("../Cargo.toml").status(), StatusCode::NOT_FOUND);
    }
}
