//! A strict reader of the Prometheus text exposition format (version 0.0.4), as Prometheus'
//! own parser and the format's specification define it, so that a test can say "/metrics parses"
//! and mean it: metric and label names by their grammar, escapes in label values and help
//! texts, values as Go's `ParseFloat` reads them (with `NaN`, `+Inf`, `-Inf`), an optional
//! timestamp, `TYPE` at most once per family and before its samples, each family's lines in
//! one group, no series twice, and histograms whole (`_bucket` with `le`, cumulative counts,
//! a `+Inf` bucket equal to `_count`, and `_sum`).

use std::collections::{BTreeMap, BTreeSet};

/// One sample line.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// One family: its TYPE (`untyped` if none was given), HELP and samples.
#[derive(Clone, Debug, Default)]
pub struct Family {
    pub kind: String,
    pub help: Option<String>,
    pub samples: Vec<Sample>,
}

/// A whole exposition.
#[derive(Clone, Debug, Default)]
pub struct Exposition {
    pub families: BTreeMap<String, Family>,
}

impl Exposition {
    /// The value of the series `name` with exactly `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.families
            .values()
            .flat_map(|f| &f.samples)
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }

    /// The family a sample name belongs to.
    pub fn family(&self, name: &str) -> Option<&Family> {
        self.families.get(name)
    }
}

/// Parses `text`, or says which line breaks the format and why.
pub fn parse(text: &str) -> Result<Exposition, String> {
    let mut exposition = Exposition::default();
    let mut closed: BTreeSet<String> = BTreeSet::new();
    let mut current: Option<String> = None;
    let mut series: BTreeSet<(String, Vec<(String, String)>)> = BTreeSet::new();
    for (n, line) in text.split('\n').enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, ' ');
            let keyword = words.next().unwrap_or_default();
            if keyword != "HELP" && keyword != "TYPE" {
                continue; // an ordinary comment
            }
            let name = words.next().ok_or_else(|| at("no metric name".into()))?;
            check_metric_name(name).map_err(at)?;
            let rest = words.next().unwrap_or_default();
            enter(&mut current, &mut closed, name).map_err(at)?;
            let family = exposition.families.entry(name.to_string()).or_default();
            if keyword == "HELP" {
                if family.help.is_some() {
                    return Err(at("a second HELP".into()));
                }
                family.help = Some(unescape(rest, false).map_err(at)?);
            } else {
                if !family.kind.is_empty() {
                    return Err(at("a second TYPE".into()));
                }
                if !family.samples.is_empty() {
                    return Err(at("TYPE after the family's samples".into()));
                }
                if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&rest) {
                    return Err(at(format!("unknown type {rest:?}")));
                }
                family.kind = rest.to_string();
            }
            continue;
        }
        let sample = parse_sample(line).map_err(at)?;
        let family_name = family_of(&exposition, &sample.name);
        enter(&mut current, &mut closed, &family_name).map_err(at)?;
        let key = (
            sample.name.clone(),
            sample.labels.clone().into_iter().collect(),
        );
        if !series.insert(key) {
            return Err(at("the same series twice".into()));
        }
        exposition
            .families
            .entry(family_name)
            .or_default()
            .samples
            .push(sample);
    }
    for (name, family) in &mut exposition.families {
        if family.kind.is_empty() {
            family.kind = "untyped".into();
        }
        check_family(name, family)?;
    }
    Ok(exposition)
}

/// The family `sample` belongs to: a histogram's or summary's suffixed samples belong to the
/// declared base name; everything else to its own name.
fn family_of(exposition: &Exposition, sample: &str) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = sample.strip_suffix(suffix) {
            if let Some(f) = exposition.families.get(base) {
                if f.kind == "histogram" || (f.kind == "summary" && suffix != "_bucket") {
                    return base.to_string();
                }
            }
        }
    }
    sample.to_string()
}

/// Moves to family `name`, refusing to come back to one already left.
fn enter(
    current: &mut Option<String>,
    closed: &mut BTreeSet<String>,
    name: &str,
) -> Result<(), String> {
    if current.as_deref() == Some(name) {
        return Ok(());
    }
    if closed.contains(name) {
        return Err(format!("the lines of {name} are not in one group"));
    }
    if let Some(previous) = current.replace(name.to_string()) {
        closed.insert(previous);
    }
    Ok(())
}

fn check_family(name: &str, family: &Family) -> Result<(), String> {
    match family.kind.as_str() {
        "counter" | "gauge" | "untyped" => {
            if let Some(s) = family.samples.iter().find(|s| s.name != name) {
                return Err(format!("{} in family {name}", s.name));
            }
            if family.kind == "counter" {
                if let Some(s) = family.samples.iter().find(|s| s.value < 0.0) {
                    return Err(format!("counter {name} is negative: {}", s.value));
                }
            }
        }
        "histogram" => check_histogram(name, family)?,
        _ => {}
    }
    Ok(())
}

fn check_histogram(name: &str, family: &Family) -> Result<(), String> {
    // Group by the labels other than `le`.
    /// Per label set: the buckets (bound, count), `_count`, whether `_sum` is there.
    type Group = (Vec<(f64, f64)>, Option<f64>, bool);
    let mut groups: BTreeMap<Vec<(String, String)>, Group> = BTreeMap::new();
    for s in &family.samples {
        let mut labels = s.labels.clone();
        let le = labels.remove("le");
        let key: Vec<(String, String)> = labels.into_iter().collect();
        let group = groups.entry(key).or_default();
        match s.name.strip_prefix(name) {
            Some("_bucket") => {
                let le = le.ok_or_else(|| format!("{name}_bucket without le"))?;
                let bound = parse_float(&le).map_err(|e| format!("{name}: le {e}"))?;
                group.0.push((bound, s.value));
            }
            Some("_count") => group.1 = Some(s.value),
            Some("_sum") => group.2 = true,
            _ => return Err(format!("{} in histogram {name}", s.name)),
        }
    }
    for (labels, (mut buckets, count, sum)) in groups {
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        if buckets.windows(2).any(|w| w[1].1 < w[0].1) {
            return Err(format!(
                "{name}{labels:?}: bucket counts are not cumulative"
            ));
        }
        let inf = buckets.last().filter(|b| b.0 == f64::INFINITY);
        let (Some(inf), Some(count)) = (inf, count) else {
            return Err(format!("{name}{labels:?}: needs a +Inf bucket and _count"));
        };
        if inf.1 != count || !sum {
            return Err(format!(
                "{name}{labels:?}: +Inf bucket {} vs _count {count}, _sum present {sum}",
                inf.1
            ));
        }
    }
    Ok(())
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ', '\t']).ok_or("no value")?;
    let name = &line[..name_end];
    check_metric_name(name)?;
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = after;
        loop {
            rest = rest.trim_start();
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = rest.find('=').ok_or("a label without =")?;
            let label = rest[..eq].trim();
            check_label_name(label)?;
            rest = rest[eq + 1..].trim_start();
            rest = rest
                .strip_prefix('"')
                .ok_or("a label value without quotes")?;
            let (value, after) = quoted(rest)?;
            if labels.insert(label.to_string(), value).is_some() {
                return Err(format!("label {label} twice"));
            }
            rest = after.trim_start();
            if let Some(after) = rest.strip_prefix(',') {
                rest = after;
            } else if !rest.starts_with('}') {
                return Err("labels not separated by commas".into());
            }
        }
    }
    let mut fields = rest.split_whitespace();
    let value = parse_float(fields.next().ok_or("no value")?)?;
    if let Some(ts) = fields.next() {
        ts.parse::<i64>().map_err(|_| format!("timestamp {ts:?}"))?;
    }
    if fields.next().is_some() {
        return Err("text after the timestamp".into());
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// A label value up to its closing quote, unescaped, and what follows it.
fn quoted(text: &str) -> Result<(String, &str), String> {
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Ok((unescape(&text[..i], true)?, &text[i + 1..])),
            '\n' => break,
            _ => {}
        }
    }
    Err("an unterminated label value".into())
}

/// `\\`, `\n` (and in label values `\"`) are the only escapes.
fn unescape(text: &str, label_value: bool) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('"') if label_value => out.push('"'),
            // Prometheus keeps any other backslash in a HELP text as it is.
            Some(other) if !label_value => {
                out.push('\\');
                out.push(other);
            }
            other => return Err(format!("bad escape \\{other:?}")),
        }
    }
    Ok(out)
}

fn parse_float(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => text
            .parse()
            .map_err(|_| format!("{text:?} is not a number")),
    }
}

fn check_metric_name(name: &str) -> Result<(), String> {
    let ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
    if ok {
        Ok(())
    } else {
        Err(format!("{name:?} is not a metric name"))
    }
}

fn check_label_name(name: &str) -> Result<(), String> {
    let ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__");
    if ok {
        Ok(())
    } else {
        Err(format!("{name:?} is not a label name"))
    }
}
