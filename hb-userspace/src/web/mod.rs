//! The live view: a page served by the agent's HTTP API at `GET /`, with
//! its script modules and style sheet under `GET /ui/{file}`, all embedded
//! in the binary (no CDN, nothing fetched at run time, no framework).
//!
//! The page reads what any client of the API reads: a snapshot of every
//! node's state (`GET /api/v1/fleet`), the event stream from the
//! snapshot's cursor (`GET /api/v1/events?since=CURSOR`, read with
//! `fetch()` so that it can carry the bearer token), and `GET
//! /api/v1/status`, `GET /api/v1/nodes/{id}` and `GET /metrics`. The files
//! hold no data, so they are served without the token (a browser cannot
//! send a header when it navigates); with `[http] token_file` the page asks
//! for the token once, keeps it in the tab's session storage and sends it
//! with every request.
//!
//! - `index.html`, `style.css`: the layout;
//! - `app.js`: the connection (snapshot, stream, reconnection), the model,
//!   the header, counts, feed and node detail, and `window.hbStats` (the
//!   time each update took, read by the tests);
//! - `stream.js`: the server-sent events reader;
//! - `grid.js`: the canvas grid, one cell per node or one block per group
//!   of nodes, redrawing only what changed;
//! - `charts.js`: `/metrics` parsing and the two plots.

use axum::{
    Router,
    extract::Path,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

/// Every file of the page: `index.html` at `/`, the others under `/ui/`.
const ASSETS: [Asset; 7] = [
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        body: include_str!("index.html"),
    },
    Asset {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("style.css"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("app.js"),
    },
    Asset {
        name: "stream.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("stream.js"),
    },
    Asset {
        name: "grid.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("grid.js"),
    },
    Asset {
        name: "charts.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("charts.js"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_str!("favicon.svg"),
    },
];

/// The page's own origin only: no inline script, nothing from elsewhere,
/// not to be framed by another site.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `GET /` and `GET /ui/{file}`, for any router state.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { serve("index.html") }))
        .route(
            "/ui/{file}",
            get(|Path(file): Path<String>| async move { serve(&file) }),
        )
}

/// The file `name`, or 404. Revalidated on every load (`no-cache`), so an
/// upgraded agent serves its own page at once.
fn serve(name: &str) -> Response {
    let Some(asset) = ASSETS.iter().find(|asset| asset.name == name) else {
        return (StatusCode::NOT_FOUND, "no such file\n").into_response();
    };
    let mut response = asset.body.into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, asset.content_type),
        (header::CACHE_CONTROL, "no-cache"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asset(name: &str) -> &'static Asset {
        ASSETS
            .iter()
            .find(|asset| asset.name == name)
            .unwrap_or_else(|| panic!("no asset {name}"))
    }

    /// The quoted strings of `text` that follow `marker` (up to the next
    /// quote).
    fn references<'a>(text: &'a str, marker: &str) -> Vec<&'a str> {
        text.split(marker)
            .skip(1)
            .filter_map(|rest| rest.split(['"', '\'']).next())
            .collect()
    }

    #[test]
    fn every_file_the_page_names_is_embedded() {
        let page = asset("index.html").body;
        let named = references(page, "\"/ui/");
        assert!(named.len() >= 3, "{named:?}");
        for name in named {
            asset(name);
        }
        for script in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            for import in references(script.body, "from './") {
                asset(import);
            }
        }
        // Every file is reachable from the page.
        for file in &ASSETS {
            let named_by_page = page.contains(&format!("/ui/{}", file.name));
            let imported = ASSETS
                .iter()
                .any(|other| other.body.contains(&format!("from './{}'", file.name)));
            assert!(
                file.name == "index.html" || named_by_page || imported,
                "{} is embedded but nothing loads it",
                file.name
            );
        }
    }

    #[test]
    fn files_are_served_with_their_type_and_a_strict_policy() {
        let page = serve("index.html");
        assert_eq!(page.status(), StatusCode::OK);
        let headers = page.headers();
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        let policy = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(policy.starts_with("default-src 'self'"), "{policy}");
        assert_eq!(
            serve("app.js").headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert_eq!(serve("../Cargo.toml").status(), StatusCode::NOT_FOUND);
        assert_eq!(serve("mod.rs").status(), StatusCode::NOT_FOUND);
    }

    /// The page runs under its own policy: no inline script or style, no
    /// `innerHTML` (node names are the operator's text, shown as text).
    #[test]
    fn the_page_needs_no_inline_code_and_writes_no_html() {
        let page = asset("index.html").body;
        assert!(!page.contains("<script>") && !page.contains("style=\""));
        for script in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            assert!(!script.body.contains("innerHTML"), "{}", script.name);
            assert!(!script.body.contains("eval("), "{}", script.name);
        }
    }
}
