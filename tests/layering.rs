//! Keeps the dependency directions of the design honest: a module may only `use crate::` modules at
//! or below its layer, and only `api` and `app` see the generated proto types.

use std::{fs, path::Path};

/// Allowed `crate::` imports per top-level module.
const ALLOWED: &[(&str, &[&str])] = &[
    ("domain", &["domain"]),
    ("config", &["domain", "config"]),
    ("providers", &["domain", "config", "providers", "telemetry"]),
    ("cluster", &["domain", "config", "cluster"]),
    (
        "router",
        &["domain", "config", "providers", "router", "cluster", "telemetry"],
    ),
    ("auth", &["domain", "config", "cluster", "auth"]),
    ("limits", &["domain", "config", "cluster", "limits"]),
    ("cache", &["domain", "config", "cluster", "cache"]),
    ("control", &["domain", "config", "cluster", "limits", "control"]),
    ("telemetry", &["domain", "telemetry"]),
    (
        "api",
        &[
            "domain",
            "config",
            "providers",
            "router",
            "auth",
            "limits",
            "cache",
            "control",
            "telemetry",
            "api",
            "proto",
        ],
    ),
];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// Every `crate::x` mentioned in a file (imports and paths alike).
fn crate_refs(text: &str) -> Vec<String> {
    let mut refs = Vec::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            refs.push(name);
        }
    }
    // `use crate::{a, b::c}` groups
    for (i, _) in text.match_indices("crate::{") {
        let rest = &text[i + "crate::{".len()..];
        let mut depth = 1;
        let mut item = String::new();
        let mut at_start = true;
        for c in rest.chars() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                ',' if depth == 1 => at_start = true,
                c if at_start && (c.is_alphanumeric() || c == '_') => item.push(c),
                _ if at_start && !item.is_empty() => {
                    refs.push(std::mem::take(&mut item));
                    at_start = false;
                }
                _ => {}
            }
        }
        if !item.is_empty() {
            refs.push(item);
        }
    }
    refs
}

#[test]
fn modules_only_depend_downwards() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        let Some((_, allowed)) = ALLOWED.iter().find(|(m, _)| *m == top) else {
            continue; // app.rs, main.rs, lib.rs, proto.rs may see everything
        };
        let text = fs::read_to_string(&file).unwrap();
        for r in crate_refs(&text) {
            if !allowed.contains(&r.as_str()) {
                violations.push(format!("{} uses crate::{r}", rel.display()));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "layering violations:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_binary_leaves_proto_types_to_api() {
    let main = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/main.rs")).unwrap();
    assert!(
        !main.contains("proto::") && !main.contains("proto,"),
        "src/main.rs names generated proto types; put that code in api/"
    );
}

#[test]
fn the_scanner_sees_grouped_imports() {
    let refs = crate_refs("use crate::{\n    domain::{A, B},\n    router::X,\n};\nuse crate::api::y;");
    assert!(
        refs.contains(&"domain".to_string())
            && refs.contains(&"router".to_string())
            && refs.contains(&"api".to_string()),
        "{refs:?}"
    );
}
