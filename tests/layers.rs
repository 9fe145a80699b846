//! The layers of docs/ARCHITECTURE.md, held: a module uses only the layers below it (the
//! wiring modules at the top may also use each other). Every `crate::<module>` path in src/ (outside comments) is checked against the table.
//! An import from a layer above fails it; there are no exceptions.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module of src/ and its layer (docs/ARCHITECTURE.md, "The layers"). `None`: may
/// be used from anywhere and uses nothing above the data layer (telemetry, shutdown).
const LAYERS: &[(&str, Option<u8>)] = &[
    ("timestamp", Some(1)),
    ("source", Some(1)),
    ("ack", Some(1)),
    ("credentials", Some(1)),
    ("tls", Some(1)),
    ("buffer", Some(2)),
    ("record", Some(3)),
    ("enrich", Some(4)),
    ("parse", Some(4)),
    ("document", Some(5)),
    ("process", Some(6)),
    ("tail", Some(7)),
    ("sink", Some(7)),
    ("journald", Some(7)),
    ("config", Some(WIRING)),
    ("agent", Some(WIRING)),
    ("reload", Some(WIRING)),
    ("server", Some(WIRING)),
    ("status", Some(WIRING)),
    ("import", Some(WIRING)),
    ("main", Some(WIRING)),
    ("telemetry", None),
    ("shutdown", None),
];

/// The top layer: the modules that put the others together may use each other.
const WIRING: u8 = 8;

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

/// Every top-level module named by a `crate::` path in code (not in `//` comments), also inside
/// a group: `use crate::{a::X, b};` names `a` and `b`, over several lines too.
fn crate_paths(text: &str) -> BTreeSet<String> {
    let code: String = text
        .lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut found = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // The names at the group's top level: after `{` and after each `,` at depth 1.
            let mut depth = 1;
            let mut start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => start = true,
                    c if c.is_whitespace() => {}
                    _ if start && depth == 1 => {
                        let name = ident(&group[i..]);
                        if !name.is_empty() && name != "self" {
                            found.insert(name);
                        }
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident(rest);
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
    let upward: Vec<_> = upward.into_iter().collect();
    assert!(
        upward.is_empty(),
        "imports from a layer above (docs/ARCHITECTURE.md, \"The layers\"): {upward:?}"
    );
}

#[test]
fn crate_paths_are_found_in_code_not_in_comments() {
    let text = "use crate::record::Batch;\n// crate::server in a comment\n    let x = crate::tail::positions::x(crate::ack::A); // crate::agent\n";
    let found: Vec<String> = crate_paths(text).into_iter().collect();
    assert_eq!(found, ["ack", "record", "tail"]);
    let grouped = "use crate::{\n    buffer::{Budget, Permit},\n    sink,\n    self,\n};\nuse crate::{parse::X};\n";
    let found: Vec<String> = crate_paths(grouped).into_iter().collect();
    assert_eq!(found, ["buffer", "parse", "sink"]);
}

/// The doc's table of layers says what `LAYERS` says: every row `| N. name | `a`, `b` |` of
/// docs/ARCHITECTURE.md, "The layers", and the `everywhere` row.
#[test]
fn the_architecture_doc_shows_this_table() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/ARCHITECTURE.md"))
            .unwrap();
    let section = doc
        .split("## The layers")
        .nth(1)
        .expect("docs/ARCHITECTURE.md has a section \"The layers\"");
    let mut in_doc: BTreeMap<String, Option<u8>> = BTreeMap::new();
    for row in section.lines().take_while(|l| !l.starts_with("## ")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        if cells.len() < 3 || !cells[2].contains('`') {
            continue;
        }
        let layer = if cells[1] == "everywhere" {
            None
        } else {
            let number = cells[1].split('.').next().unwrap();
            Some(
                number
                    .parse::<u8>()
                    .expect("a layer row starts with its number"),
            )
        };
        // The names in backticks; what is between them is prose.
        for name in cells[2].split('`').skip(1).step_by(2) {
            in_doc.insert(name.to_string(), layer);
        }
    }
    let in_test: BTreeMap<String, Option<u8>> = LAYERS
        .iter()
        .map(|(name, layer)| (name.to_string(), *layer))
        .collect();
    assert_eq!(in_doc, in_test, "docs/ARCHITECTURE.md and LAYERS disagree");
}
