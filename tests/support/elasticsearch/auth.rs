//! Elasticsearch's security, as far as a client sees it: `Basic`, `ApiKey` and `Bearer`
//! credentials checked against the accepted set, and the 401 each distribution answers when they
//! are missing or wrong (Elasticsearch's `security_exception` with its `WWW-Authenticate`
//! challenges; the OpenSearch security plugin's plain-text `Unauthorized`).

use axum::body::Body;
use axum::http::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::response::Response;

use super::errors;
use super::{Credentials, Flavor};

pub fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n =
            chunk.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
        for _ in chunk.len()..3 {
            out.push('=');
        }
    }
    out
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

pub fn unauthorized(flavor: Flavor, reason: String) -> Response {
    let mut builder = Response::builder().status(401);
    for challenge in errors::challenges(flavor) {
        builder = builder.header(WWW_AUTHENTICATE, challenge);
    }
    match flavor {
        // The security plugin answers in plain text.
        Flavor::OpenSearch2 => builder
            .header(CONTENT_TYPE, "text/plain; charset=UTF-8")
            .body(Body::from("Unauthorized")),
        _ => builder
            .header(CONTENT_TYPE, "application/json")
            .body(Body::from(
                errors::security(flavor, reason).body().to_string(),
            )),
    }
    .expect("valid response")
}

/// Checks the `Authorization` header against the accepted credentials: the 401 when it fails.
pub fn authenticate(
    flavor: Flavor,
    accepted: &[Credentials],
    header: Option<&str>,
    uri: &str,
) -> Option<Response> {
    if accepted.is_empty() {
        return None;
    }
    let generic = "unable to authenticate with provided credentials and anonymous access is not allowed for this request";
    let Some(header) = header else {
        return Some(unauthorized(
            flavor,
            format!("missing authentication credentials for REST request [{uri}]"),
        ));
    };
    let (scheme, value) = header.split_once(' ').unwrap_or((header, ""));
    let value = value.trim();
    let decoded = || base64_decode(value).and_then(|b| String::from_utf8(b).ok());
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => {
            let Some((user, password)) = decoded().and_then(|s| {
                s.split_once(':')
                    .map(|(u, p)| (u.to_string(), p.to_string()))
            }) else {
                return Some(unauthorized(
                    flavor,
                    "invalid basic authentication header value".into(),
                ));
            };
            let ok = accepted.iter().any(|c| {
                matches!(c, Credentials::Basic { user: u, password: p } if *u == user && *p == password)
            });
            if ok {
                None
            } else {
                Some(unauthorized(
                    flavor,
                    format!("unable to authenticate user [{user}] for REST request [{uri}]"),
                ))
            }
        }
        "apikey" => {
            let ok = decoded().is_some_and(|s| {
                accepted.iter().any(
                    |c| matches!(c, Credentials::ApiKey { id, key } if s == format!("{id}:{key}")),
                )
            });
            if ok {
                None
            } else {
                Some(unauthorized(flavor, generic.into()))
            }
        }
        "bearer" => {
            let ok = accepted
                .iter()
                .any(|c| matches!(c, Credentials::Bearer(t) if t == value));
            if ok {
                None
            } else {
                Some(unauthorized(flavor, generic.into()))
            }
        }
        _ => Some(unauthorized(
            flavor,
            format!("missing authentication credentials for REST request [{uri}]"),
        )),
    }
}
