//! `[output.elasticsearch]` -> [`ElasticsearchSettings`]: URLs, the index template, credentials,
//! TLS files, batching and retry limits, each checked and reported against its key. Pure, like
//! the rest of validation: credential and certificate files are only named here; the sink reads
//! them when it is built.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;

use super::error::ConfigError;
use super::raw::RawElasticsearch;
use super::units::{HumanDuration, Size};
use super::validate::{at_least, duration_in, refuse, size_in};
use crate::buffer::rate_limit::LimitSpec;
use crate::sink::elasticsearch::client::{Auth, ClientSettings, Secret, SecretSource, TlsSettings};
use crate::sink::elasticsearch::dead_letter::DeadLetterSettings;
use crate::sink::elasticsearch::index::IndexTemplate;
use crate::sink::elasticsearch::retry::{Backoff, OpType};
use crate::sink::elasticsearch::ElasticsearchSettings;

const KEY: &str = "output.elasticsearch";

fn key(name: &str) -> String {
    format!("{KEY}.{name}")
}

/// Checks the section; `None` if anything is wrong (the errors say what).
pub fn validate(
    errors: &mut Vec<ConfigError>,
    raw: &RawElasticsearch,
    data_dir: &Path,
) -> Option<ElasticsearchSettings> {
    let before = errors.len();
    let e = errors;

    if raw.hosts.is_empty() {
        e.push(ConfigError::invalid(
            key("hosts"),
            "must name at least one URL",
        ));
    }
    let hosts: Vec<Url> = raw.hosts.iter().filter_map(|h| host(e, h)).collect();

    let index = IndexTemplate::parse(&raw.index)
        .map_err(|err| e.push(ConfigError::invalid(key("index"), err.to_string())))
        .ok();
    match IndexTemplate::parse(&raw.index_fallback) {
        Ok(t) if t.pattern() == raw.index_fallback => {}
        Ok(_) => e.push(ConfigError::invalid(
            key("index_fallback"),
            "must be a plain index name, without % or {fields}",
        )),
        Err(err) => e.push(ConfigError::invalid(key("index_fallback"), err.to_string())),
    }
    let op_type = match raw.op_type.as_str() {
        "create" => Some(OpType::Create),
        "index" => Some(OpType::Index),
        other => refuse(
            e,
            key("op_type"),
            format!("must be \"create\" or \"index\", is {other:?}"),
        ),
    };
    let gzip = match raw.compression.as_str() {
        "gzip" => {
            if !(1..=9).contains(&raw.compression_level) {
                e.push(ConfigError::invalid(
                    key("compression_level"),
                    format!("must be between 1 and 9, is {}", raw.compression_level),
                ));
            }
            Some(raw.compression_level)
        }
        "none" => None,
        other => refuse(
            e,
            key("compression"),
            format!("must be \"gzip\" or \"none\", is {other:?}"),
        ),
    };
    let request_timeout = at_least(
        e,
        &key("request_timeout"),
        raw.request_timeout,
        Duration::from_millis(100),
    );
    if !(1..=64).contains(&raw.max_in_flight) {
        e.push(ConfigError::invalid(
            key("max_in_flight"),
            format!("must be between 1 and 64, is {}", raw.max_in_flight),
        ));
    }
    let rate_limit = match LimitSpec::parse(&raw.rate_limit) {
        Ok(spec) => Some(spec),
        Err(reason) => {
            e.push(ConfigError::invalid(key("rate_limit"), reason));
            None
        }
    };
    let batch_max_bytes = size_in(
        e,
        &key("batch.max_bytes"),
        raw.batch.max_bytes,
        (Size::kib(1), Size::mib(100)),
    );
    if raw.batch.max_events == 0 {
        e.push(ConfigError::invalid(
            key("batch.max_events"),
            "must be at least 1",
        ));
    }
    let batch_timeout = duration_in(
        e,
        &key("batch.timeout"),
        raw.batch.timeout,
        (HumanDuration::millis(1), HumanDuration::secs(60)),
    );
    let initial = at_least(
        e,
        &key("retry.initial_backoff"),
        raw.retry.initial_backoff,
        Duration::from_millis(1),
    );
    let max_backoff = at_least(
        e,
        &key("retry.max_backoff"),
        raw.retry.max_backoff,
        raw.retry.initial_backoff.0.max(Duration::from_millis(1)),
    );
    let max_duration = match raw.retry.max_duration.trim() {
        "" => Some(None),
        text => match humantime::parse_duration(text) {
            Ok(d) if d > Duration::ZERO => Some(Some(d)),
            Ok(_) => refuse(
                e,
                key("retry.max_duration"),
                "must be more than 0s, or empty to retry until delivered",
            ),
            Err(err) => refuse(
                e,
                key("retry.max_duration"),
                format!("{text:?} is not a duration: {err}"),
            ),
        },
    };
    let auth = auth(e, raw);
    let tls = tls(e, raw);
    if raw.dead_letter.max_file_bytes < Size::kib(1) {
        e.push(ConfigError::invalid(
            key("dead_letter.max_file_bytes"),
            format!(
                "must be at least 1KiB, is {}",
                raw.dead_letter.max_file_bytes
            ),
        ));
    }
    if raw.dead_letter.max_bytes < raw.dead_letter.max_file_bytes {
        e.push(ConfigError::invalid(
            key("dead_letter.max_bytes"),
            format!(
                "must be at least output.elasticsearch.dead_letter.max_file_bytes ({}), is {}",
                raw.dead_letter.max_file_bytes, raw.dead_letter.max_bytes
            ),
        ));
    }

    let dead_letter_index = match raw.dead_letter.index.trim() {
        "" => None,
        name => match IndexTemplate::parse(name) {
            Ok(t) if t.pattern() == name => Some(name.to_owned()),
            Ok(_) => refuse(
                e,
                key("dead_letter.index"),
                "must be a plain index name, without % or {fields}",
            ),
            Err(err) => refuse(e, key("dead_letter.index"), err.to_string()),
        },
    };

    if e.len() > before {
        return None;
    }
    let backoff = Backoff {
        base: initial?,
        max: max_backoff?,
    };
    Some(ElasticsearchSettings {
        client: ClientSettings {
            hosts,
            auth: auth?,
            tls: tls?,
            request_timeout: request_timeout?,
            host_backoff: backoff,
            pipeline: Some(raw.pipeline.trim().to_owned()).filter(|p| !p.is_empty()),
        },
        index: index?,
        index_fallback: raw.index_fallback.clone(),
        op_type: op_type?,
        gzip,
        batch_max_bytes: batch_max_bytes?,
        batch_max_events: raw.batch.max_events as usize,
        batch_timeout: batch_timeout?,
        max_in_flight: raw.max_in_flight as usize,
        adaptive_concurrency: raw.adaptive_concurrency,
        rate_limit: rate_limit?,
        retry: backoff,
        retry_max_duration: max_duration?,
        install_template: raw.install_template,
        dead_letter: DeadLetterSettings {
            dir: data_dir.join("dead-letter"),
            max_bytes: raw.dead_letter.max_bytes.0,
            max_file_bytes: raw.dead_letter.max_file_bytes.0,
        },
        dead_letter_index,
    })
}

fn host(e: &mut Vec<ConfigError>, text: &str) -> Option<Url> {
    let url = match Url::parse(text.trim()) {
        Ok(u) => u,
        Err(err) => {
            e.push(ConfigError::invalid(
                key("hosts"),
                format!("{text:?} is not a URL: {err} (write it as http://host:9200)"),
            ));
            return None;
        }
    };
    let problem = if !matches!(url.scheme(), "http" | "https") {
        Some("must be http or https")
    } else if !url.username().is_empty() || url.password().is_some() {
        Some("must not carry credentials: put them in output.elasticsearch.auth")
    } else if url.query().is_some() || url.fragment().is_some() {
        Some("must not have a query or fragment")
    } else if url.host_str().is_none_or(str::is_empty) {
        Some("has no host")
    } else {
        None
    };
    match problem {
        Some(p) => {
            // The text may hold credentials: name the host only.
            let shown = url.host_str().unwrap_or("?");
            e.push(ConfigError::invalid(
                key("hosts"),
                format!("the URL of {shown} {p}"),
            ));
            None
        }
        None => Some(url),
    }
}

fn secret(value: &str, file: &str) -> Option<SecretSource> {
    match (value.is_empty(), file.trim().is_empty()) {
        (false, _) => Some(SecretSource::Value(Secret::new(value.to_owned()))),
        (true, false) => Some(SecretSource::File(PathBuf::from(file.trim()))),
        (true, true) => None,
    }
}

fn auth(e: &mut Vec<ConfigError>, raw: &RawElasticsearch) -> Option<Auth> {
    let a = &raw.auth;
    let mut fail = |k: &str, why: &str| {
        e.push(ConfigError::invalid(key(k), why.to_owned()));
        None
    };
    if !a.password.is_empty() && !a.password_file.is_empty() {
        return fail(
            "auth.password_file",
            "set either auth.password or auth.password_file, not both",
        );
    }
    if !a.api_key.is_empty() && !a.api_key_file.is_empty() {
        return fail(
            "auth.api_key_file",
            "set either auth.api_key or auth.api_key_file, not both",
        );
    }
    let password = secret(&a.password, &a.password_file);
    let api_key = secret(&a.api_key, &a.api_key_file);
    let bearer = Some(a.bearer_token_file.trim()).filter(|f| !f.is_empty());
    let methods = [
        a.user.is_empty() && password.is_none(),
        api_key.is_none(),
        bearer.is_none(),
    ]
    .iter()
    .filter(|unset| !**unset)
    .count();
    if methods > 1 {
        return fail(
            "auth",
            "choose one method: user and password, api_key, or bearer_token_file",
        );
    }
    match (a.user.trim(), password, api_key, bearer) {
        ("", Some(_), _, _) => fail("auth.user", "is required with a password"),
        (user, None, _, _) if !user.is_empty() => fail(
            "auth.password",
            "is required with auth.user (or auth.password_file)",
        ),
        (user, Some(password), _, _) => Some(Auth::Basic {
            user: user.to_owned(),
            password,
        }),
        (_, None, Some(key), _) => Some(Auth::ApiKey(key)),
        (_, None, None, Some(file)) => Some(Auth::Bearer {
            token_file: PathBuf::from(file),
        }),
        (_, None, None, None) => Some(Auth::None),
    }
}

fn tls(e: &mut Vec<ConfigError>, raw: &RawElasticsearch) -> Option<TlsSettings> {
    let t = &raw.tls;
    let path = |s: &str| Some(s.trim()).filter(|s| !s.is_empty()).map(PathBuf::from);
    let (cert, key_file) = (path(&t.cert_file), path(&t.key_file));
    if cert.is_some() != key_file.is_some() {
        e.push(ConfigError::invalid(
            key("tls.key_file"),
            "tls.cert_file and tls.key_file go together",
        ));
        return None;
    }
    Some(TlsSettings {
        ca_file: path(&t.ca_file),
        cert_file: cert,
        key_file,
        insecure_skip_verify: t.insecure_skip_verify,
    })
}
