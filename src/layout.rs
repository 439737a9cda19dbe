//! The Layout's import rule (`lib.rs`), checked: every `crate::` path in a
//! top module's files names itself or a module that `LAYOUT` lets it
//! import, and `LAYOUT` lists every top module, each above what it imports.
//! Comments are left out; paths inside `crate::{...}` groups count.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use super::LAYOUT;

/// Every `.rs` file under `dir`, or `dir` itself if it is one.
fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        for entry in fs::read_dir(path).expect("read a source directory") {
            rust_files(&entry.expect("a directory entry").path(), out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_path_buf());
    }
}

fn ident(s: &str) -> String {
    s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect()
}

/// The first segment of each path of a group, `a::b, c, d::{e, f}}...`
/// (what follows its opening brace).
fn group_heads(group: &str) -> Vec<String> {
    let (mut heads, mut depth, mut at_head) = (Vec::new(), 0, true);
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => at_head = true,
            c if c.is_whitespace() => {}
            _ if at_head && depth == 0 => {
                heads.push(ident(&group[i..]));
                at_head = false;
            }
            _ => {}
        }
    }
    heads
}

/// The first segments of the `crate::` paths in `source`, comments aside.
fn crate_paths(source: &str) -> BTreeSet<String> {
    let code: Vec<&str> = source.lines().map(|l| l.split("//").next().unwrap_or("")).collect();
    let code = code.join("\n");
    let needle = concat!("crate", "::");
    let mut heads = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find(needle) {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + needle.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        match rest.strip_prefix('{') {
            Some(group) => heads.extend(group_heads(group)),
            None => {
                heads.insert(ident(rest));
            }
        }
    }
    heads
}

/// The top module a file under `src/` belongs to (`None`: the crate root
/// or the binary).
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let first = file.strip_prefix(src).ok()?.components().next()?;
    let name = first.as_os_str().to_str()?;
    let name = name.strip_suffix(".rs").unwrap_or(name);
    (!matches!(name, "lib" | "main" | "layout")).then(|| name.to_string())
}

#[test]
fn every_module_imports_only_what_the_layout_allows() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let tops: BTreeSet<&str> = LAYOUT.iter().map(|(m, _)| *m).collect();
    let mut broken = Vec::new();
    for file in &files {
        let Some(module) = top_module(&src, file) else { continue };
        let file = file.strip_prefix(&src).unwrap_or(file);
        let Some((_, allowed)) = LAYOUT.iter().find(|(m, _)| *m == module) else {
            broken.push(format!(
                "{}: module `{module}` is not in lib.rs's LAYOUT",
                file.display()
            ));
            continue;
        };
        let source = fs::read_to_string(src.join(file)).expect("read a source file");
        for head in crate_paths(&source) {
            if tops.contains(head.as_str()) && head != module && !allowed.contains(&head.as_str()) {
                broken.push(format!("{}: `{module}` imports `{head}`", file.display()));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "imports the Layout (lib.rs) does not allow:\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_layout_lists_each_module_above_what_it_imports() {
    for (i, (module, allowed)) in LAYOUT.iter().enumerate() {
        let below: Vec<&str> = LAYOUT[..i].iter().map(|(m, _)| *m).collect();
        for imported in *allowed {
            assert!(
                below.contains(imported),
                "`{module}` may import `{imported}`, which is not below it"
            );
        }
    }
}

#[test]
fn crate_paths_are_read_from_code_and_groups() {
    let source = format!(
        "use {c}{{log::{{Log, Record}}, wire}};\nlet x = {c}api::f(); // {c}server\nuse {c}cluster::X;\n$crate::telemetry",
        c = concat!("crate", "::")
    );
    let found: Vec<String> = crate_paths(&source).into_iter().collect();
    assert_eq!(found, ["api", "cluster", "log", "wire"]);
}
