//! The effective configuration as TOML, for `logship check` and for support tickets: the
//! merged, validated configuration in the shape of the file, every key present, sizes and
//! durations human-readable, so that it can be saved and loaded again to the same settings.
//!
//! Secrets must never reach a terminal or a ticket: every key whose name suggests one
//! (`password`, `api_key`, `token`, `secret`) is printed as `"***"`, decided by name, at any
//! depth, so a secret added with a new sink is masked without anyone remembering to.

use toml::{Table, Value};

use super::raw::RawConfig;

/// Substrings of a key name that mark its value as secret.
const SECRET_NAMES: [&str; 5] = ["password", "api_key", "apikey", "token", "secret"];

/// What a secret is printed as.
pub const MASK: &str = "***";

/// `raw` as TOML, secrets masked.
pub fn render(raw: &RawConfig) -> String {
    // Strings, numbers, booleans, lists and tables only: nothing TOML cannot hold.
    let mut table = Table::try_from(raw).expect("the configuration is representable in TOML");
    mask_secrets(&mut table);
    toml::to_string(&table).expect("a TOML table serializes")
}

/// Replaces the value of every secret-named key, at any depth, with [`MASK`]. An empty string
/// stays empty: that a secret is unset is worth seeing and reveals nothing.
pub fn mask_secrets(table: &mut Table) {
    for (key, value) in table.iter_mut() {
        if is_secret(key) {
            mask(value);
        } else {
            match value {
                Value::Table(inner) => mask_secrets(inner),
                Value::Array(items) => items.iter_mut().for_each(|item| {
                    if let Value::Table(inner) = item {
                        mask_secrets(inner);
                    }
                }),
                _ => {}
            }
        }
    }
}

fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    // `password_file`, `bearer_token_file`: where a secret is, not the secret.
    !key.ends_with("_file") && SECRET_NAMES.iter().any(|name| key.contains(name))
}

/// Masks every string under a secret key (a table of credentials is masked whole).
fn mask(value: &mut Value) {
    match value {
        Value::String(s) if !s.is_empty() => *s = MASK.to_string(),
        Value::Array(items) => items.iter_mut().for_each(mask),
        Value::Table(inner) => inner.iter_mut().for_each(|(_, v)| mask(v)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_at_any_depth() {
        const INPUT: &str = r#"
            token = "t0p"
            user = "elastic"
            [elasticsearch]
            hosts = ["https://es:9200"]
            password = "hunter2"
            API_KEY = "abc"
            empty_password = ""
            [elasticsearch.tls]
            client_secret_path = "/etc/secret"
            [[sinks]]
            bearer_token = "xyz"
            [credentials_secret]
            user = "u"
            pass = ["p1", "p2"]
            "#;
        let mut table: Table = toml::from_str(INPUT).unwrap();
        mask_secrets(&mut table);
        // Exactly these values are secrets; the rest (an empty password too) stays as written.
        let secrets = [
            "t0p",
            "hunter2",
            "abc",
            "/etc/secret",
            "xyz",
            "u",
            "p1",
            "p2",
        ];
        let masked = secrets.iter().fold(INPUT.to_string(), |text, secret| {
            text.replace(&format!("\"{secret}\""), "\"***\"")
        });
        assert_eq!(table, toml::from_str::<Table>(&masked).unwrap());
    }

    #[test]
    fn the_defaults_render_in_file_order_and_read_back() {
        let text = render(&RawConfig::default());
        let order: Vec<usize> = [
            "data_dir = ",
            "shutdown_timeout = \"25s\"",
            "[log]",
            "[tail]",
            "max_line_bytes = \"256KiB\"",
            "[positions]",
            "gc_after = \"24h\"",
            "[buffer]",
            "max_bytes = \"12MiB\"",
            "[output]",
            "type = \"elasticsearch\"",
            "[output.file]",
            "fsync = false",
            "[output.elasticsearch]",
            "[output.elasticsearch.dead_letter]",
        ]
        .iter()
        .map(|needle| {
            text.find(needle)
                .unwrap_or_else(|| panic!("{needle} in\n{text}"))
        })
        .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
        let back: RawConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, RawConfig::default());
    }
}
