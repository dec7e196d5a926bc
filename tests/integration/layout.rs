//! The source tree follows the data flow (README "Architecture"): every
//! file of a folder imports only what its folder may, so that nothing
//! reaches back up the flow. Reads `src/`; starts no process.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Each folder of `src/` and the top-level modules it may import
/// (`crate::<module>`): the flow is source → zone → serve; config and ops
/// sit beside it and import no stage but the zone.
const ALLOWED: &[(&str, &[&str])] = &[
    ("zone", &["zone"]),
    ("source", &["source", "zone", "ops", "config"]),
    ("serve", &["serve", "zone", "ops", "config"]),
    ("ops", &["ops", "zone", "config"]),
    ("config", &["config", "zone"]),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("a readable directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules a file names as `crate::<module>`, outside
/// comments.
fn imports(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or_default();
        for (at, _) in code.match_indices("crate::") {
            let module: String = code[at + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !module.is_empty() {
                found.insert(module);
            }
        }
    }
    found
}

#[test]
fn imports_never_reach_back_up_the_flow() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut wrong = Vec::new();
    let mut checked = 0;
    for (folder, allowed) in ALLOWED {
        let mut files = Vec::new();
        rust_files(&src.join(folder), &mut files);
        assert!(!files.is_empty(), "src/{folder} has no files");
        for file in files {
            let text = std::fs::read_to_string(&file).expect("a readable source file");
            for module in imports(&text) {
                if !allowed.contains(&module.as_str()) {
                    wrong.push(format!("{}: crate::{module}", file.display()));
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} files checked");
    assert!(
        wrong.is_empty(),
        "imports against the flow:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_import_scan_sees_imports_and_skips_comments() {
    let text = "use crate::zone::{A, B};\n// crate::serve is mentioned here\nlet x = crate::ops::metrics::X; // crate::source";
    let got: Vec<String> = imports(text).into_iter().collect();
    assert_eq!(got, ["ops", "zone"]);
}
