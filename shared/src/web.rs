//! What the index server's pages and the agent's web client share: one stylesheet and one
//! icon, embedded in both binaries (nothing is fetched from elsewhere), how a cookie is read,
//! and the one rule by which both decide that a form post came from their own pages (CSRF).

/// The stylesheet of every page (`/static/peerdex.css`).
pub const STYLESHEET: &str = include_str!("../static/peerdex.css");

/// The icon of every page (`/static/favicon.svg`).
pub const FAVICON: &str = include_str!("../static/favicon.svg");

/// The Content-Security-Policy of the API viewer (Swagger UI, on the server and the agent):
/// scripts only from the page's own origin, as everywhere; Swagger UI also sets inline styles
/// and draws its icons from `data:` URLs.
pub const API_VIEWER_CSP: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
     form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// The value of cookie `name` among the values of the `Cookie` headers of a request.
pub fn cookie<'a>(headers: impl IntoIterator<Item = &'a str>, name: &str) -> Option<&'a str> {
    headers
        .into_iter()
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// Whether a request that changes something comes from a page of the site it was sent to
/// (the CSRF rule of both sites): its `Origin` is `http://HOST` (or, with `https_too`,
/// `https://HOST`) for the `Host` it was sent to; or, when the browser sends no origin or the
/// opaque `null` (some do for a form under a strict referrer policy), `Sec-Fetch-Site` says
/// `same-origin` (no page's script can set that header).
pub fn same_origin(
    origin: Option<&str>,
    host: Option<&str>,
    fetch_site: Option<&str>,
    https_too: bool,
) -> bool {
    match (origin.filter(|o| *o != "null"), host) {
        (Some(origin), Some(host)) => {
            origin.strip_prefix("http://") == Some(host)
                || (https_too && origin.strip_prefix("https://") == Some(host))
        }
        (Some(_), None) => false,
        (None, _) => fetch_site == Some("same-origin"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_found_among_others_and_headers() {
        let headers = ["a=1; peerdex_ui_7702=tok", "b=2"];
        assert_eq!(cookie(headers, "peerdex_ui_7702"), Some("tok"));
        assert_eq!(cookie(headers, "b"), Some("2"));
        assert_eq!(cookie(headers, "peerdex_ui_7703"), None);
    }

    #[test]
    fn only_the_sites_own_origin_is_same_origin() {
        let host = Some("example.org:7700");
        assert!(same_origin(
            Some("http://example.org:7700"),
            host,
            None,
            false
        ));
        assert!(!same_origin(
            Some("https://example.org:7700"),
            host,
            None,
            false
        ));
        assert!(same_origin(
            Some("https://example.org:7700"),
            host,
            None,
            true
        ));
        assert!(!same_origin(Some("http://evil.example"), host, None, true));
        assert!(!same_origin(
            Some("http://example.org:7700"),
            None,
            None,
            true
        ));
        assert!(same_origin(Some("null"), host, Some("same-origin"), false));
        assert!(!same_origin(Some("null"), host, Some("cross-site"), false));
        assert!(!same_origin(None, host, None, false));
    }
}
