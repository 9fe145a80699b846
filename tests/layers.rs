//! The layers of docs/ARCHITECTURE.md, held: a module uses only the layers below it (the
//! wiring modules at the top may also use each other). Every `crate::<module>` path in src/ (outside comments) is checked against the table.
//! The upward imports that exist today are listed, each with why, in `EXCEPTIONS` (and in the
//! doc's "Known exceptions"); any other one fails this test, and an exception that is gone must
//! be taken off the list, so the list only shrinks.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module of src/ and its layer (docs/ARCHITECTURE.md, "The layers"). `None`: may
/// be used from anywhere and uses nothing above the data layer (telemetry, shutdown).
const LAYERS: &[(&str, Option<u8>)] = &[
    ("timestamp", Some(1)),
    ("source", Some(1)),
    ("ack", Some(1)),
    ("credentials", Some(1)),
    ("record", Some(2)),
    ("buffer", Some(3)),
    ("enrich", Some(3)),
    ("parse", Some(3)),
    ("document", Some(4)),
    ("process", Some(5)),
    ("tail", Some(6)),
    ("sink", Some(6)),
    ("config", Some(WIRING)),
    ("agent", Some(WIRING)),
    ("reload", Some(WIRING)),
    ("server", Some(WIRING)),
    ("status", Some(WIRING)),
    ("main", Some(WIRING)),
    ("telemetry", None),
    ("shutdown", None),
];

/// The top layer: the modules that put the others together may use each other.
const WIRING: u8 = 7;

/// The upward imports of today: (from, to, why). To be removed, not added to.
const EXCEPTIONS: &[(&str, &str, &str)] = &[
    (
        "record",
        "buffer",
        "a batch carries its budget permit (buffer::Permit)",
    ),
    (
        "enrich",
        "sink",
        "the Kubernetes client sets up TLS through the Elasticsearch client's crypto provider",
    ),
    (
        "tail",
        "config",
        "the tailer is built from config's settings types (TailSettings, ReadFrom)",
    ),
    (
        "sink",
        "config",
        "the sink is built from config's Elasticsearch settings",
    ),
    (
        "sink",
        "tail",
        "sinks acknowledge into tail::positions, not through ack",
    ),
    (
        "telemetry",
        "config",
        "logging is set up from config's log settings",
    ),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of src/ belongs to.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// Every `crate::<name>` on a line that is not a `//` comment.
fn crate_paths(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

#[test]
fn no_module_imports_from_a_layer_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let layer: BTreeMap<&str, Option<u8>> = LAYERS.iter().copied().collect();
    let mut upward: BTreeSet<(String, String)> = BTreeSet::new();
    let mut unknown = BTreeSet::new();
    for file in &files {
        let from = module_of(&src, file);
        if from == "lib" {
            continue;
        }
        let Some(&from_layer) = layer.get(from.as_str()) else {
            unknown.insert(from.clone());
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for to in crate_paths(&text) {
            if to == from {
                continue;
            }
            let Some(&to_layer) = layer.get(to.as_str()) else {
                unknown.insert(to);
                continue;
            };
            let allowed = match (from_layer, to_layer) {
                // Telemetry is used from everywhere; it may use only the data layer.
                (_, None) => true,
                (None, Some(to)) => to <= 1,
                (Some(from), Some(to)) => to < from || (from == WIRING && to == WIRING),
            };
            if !allowed {
                upward.insert((from.clone(), to));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "modules with no layer (add them to LAYERS and to docs/ARCHITECTURE.md): {unknown:?}"
    );
    let excepted: BTreeSet<(String, String)> = EXCEPTIONS
        .iter()
        .map(|(a, b, _)| (a.to_string(), b.to_string()))
        .collect();
    let new: Vec<_> = upward.difference(&excepted).collect();
    assert!(
        new.is_empty(),
        "imports from a layer above (docs/ARCHITECTURE.md, \"The layers\"): {new:?}"
    );
    let gone: Vec<_> = excepted.difference(&upward).collect();
    assert!(
        gone.is_empty(),
        "exceptions that no longer happen: take them off EXCEPTIONS and the doc: {gone:?}"
    );
}

#[test]
fn crate_paths_are_found_in_code_not_in_comments() {
    let text = "use crate::record::Batch;\n// crate::server in a comment\n    let x = crate::tail::positions::x(crate::ack::A);\n";
    let found: Vec<String> = crate_paths(text).into_iter().collect();
    assert_eq!(found, ["ack", "record", "tail"]);
}
