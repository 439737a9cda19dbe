//! The web console: `GET /ui` (and `/ui/`) is its page, `GET /ui/{asset}`
//! its styles, scripts and icon. The files live in `ui/` at the top of the
//! repository and are embedded in the binary when it is built, so a node
//! serves its console with no internet and no build step (plain HTML, CSS
//! and JavaScript modules). With `--no-ui` these paths answer 404.
//!
//! The console reads and writes through the public API only, with the
//! caller's token (`Authorization: Bearer`), so these files themselves are
//! served without credentials: they hold nothing but code.
//!
//! Every answer carries a strict `Content-Security-Policy` (scripts, styles
//! and connections from this origin only; no inline script or style, no
//! framing), `X-Content-Type-Options: nosniff`, `Cross-Origin-Resource-Policy:
//! same-origin` (other sites cannot load the files), and `Cache-Control:
//! no-cache` with an `ETag` of the file's bytes: browsers revalidate and
//! get 304 until a new binary serves different files.

use std::sync::OnceLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::error::{ApiError, Echo};
use super::routes;

/// One embedded file: its name under `/ui/`, its content type and bytes.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const SVG: &str = "image/svg+xml";

macro_rules! asset {
    ($name:literal, $type:expr) => {
        Asset {
            name: $name,
            content_type: $type,
            bytes: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/", $name)),
        }
    };
}

/// The page first: `/ui` and `/ui/` serve it.
const ASSETS: &[Asset] = &[
    asset!("index.html", HTML),
    asset!("console.css", CSS),
    asset!("icon.svg", SVG),
    asset!("main.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("cluster.js", JS),
    asset!("logview.js", JS),
    asset!("records.js", JS),
    asset!("render.js", JS),
    asset!("tail.js", JS),
    asset!("append.js", JS),
    asset!("consumers.js", JS),
    asset!("logs.js", JS),
];

/// Nothing but this origin's own files and API; no inline code (record
/// text is only ever set as text), no framing, no plugins, no forms posted
/// anywhere (the console's forms are handled by its scripts).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The console's routes, to be merged outside the auth guard. Turned off,
/// its paths are still routes, answering 404 (`/ui` would otherwise be
/// taken for a bad offset).
pub fn routes<S: Clone + Send + Sync + 'static>(on: bool) -> Router<S> {
    if !on {
        return Router::new()
            .route(routes::UI, get(off))
            .route(routes::UI_SLASH, get(off))
            .route(routes::UI_ASSET, get(off));
    }
    Router::new()
        .route(routes::UI, get(page))
        .route(routes::UI_SLASH, get(page))
        .route(routes::UI_ASSET, get(asset))
}

async fn off(method: Method, uri: Uri) -> ApiError {
    not_found(&method, &uri)
}

fn not_found(method: &Method, uri: &Uri) -> ApiError {
    ApiError::RouteNotFound {
        method: Echo::of(method.as_str()),
        path: Echo::of(uri.path()),
    }
}

/// The total size of the embedded files, in bytes.
pub fn embedded_bytes() -> usize {
    ASSETS.iter().map(|a| a.bytes.len()).sum()
}

async fn page(headers: HeaderMap) -> Response {
    serve(0, &headers)
}

async fn asset(Path(name): Path<String>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    match ASSETS.iter().position(|a| a.name == name) {
        Some(index) => serve(index, &headers),
        None => not_found(&method, &uri).into_response(),
    }
}

fn serve(index: usize, request_headers: &HeaderMap) -> Response {
    let asset = &ASSETS[index];
    let etag = &etags()[index];
    let unchanged = request_headers.get(header::IF_NONE_MATCH).is_some_and(|tags| {
        tags.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii() == etag.as_bytes())
    });
    let mut response = if unchanged {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, asset.content_type)], asset.bytes).into_response()
    };
    let headers = response.headers_mut();
    headers.insert(header::ETAG, etag.clone());
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(
        HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// One strong `ETag` per asset: an FNV-1a hash of its bytes, computed once.
fn etags() -> &'static [HeaderValue] {
    static ETAGS: OnceLock<Vec<HeaderValue>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let hash = a.bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
                    (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
                });
                HeaderValue::from_str(&format!("\"{hash:016x}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_console_stays_small_and_every_asset_has_a_distinct_tag() {
        assert!(embedded_bytes() < 150 * 1024, "{} bytes embedded", embedded_bytes());
        let tags = etags();
        for (i, tag) in tags.iter().enumerate() {
            assert!(!tags[i + 1..].contains(tag), "{} shares its ETag", ASSETS[i].name);
        }
    }

    #[test]
    fn the_page_loads_only_files_that_are_embedded() {
        let page = std::str::from_utf8(ASSETS[0].bytes).unwrap();
        for reference in page.split("\"/ui/").skip(1) {
            let name = reference.split('"').next().unwrap();
            assert!(ASSETS.iter().any(|a| a.name == name), "{name} is not embedded");
        }
        assert!(!page.contains("style=\"") && !page.contains("<script>"), "inline code");
    }

    #[test]
    fn every_module_imports_only_embedded_modules() {
        for script in ASSETS.iter().filter(|a| a.content_type == JS) {
            let text = std::str::from_utf8(script.bytes).unwrap();
            for import in text.split("from \"./").skip(1) {
                let name = import.split('"').next().unwrap();
                assert!(ASSETS.iter().any(|a| a.name == name), "{} imports {name}", script.name);
            }
        }
    }
}
