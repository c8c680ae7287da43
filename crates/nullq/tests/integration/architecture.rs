//! The tree keeps the shape `docs/architecture.md` describes, checked on the sources of every
//! crate of the workspace:
//! - no source file is longer than 700 lines, not counting a trailing `#[cfg(test)] mod tests`;
//! - no circle of module imports inside a crate: module A uses module B when A's code (comments,
//!   strings and the trailing test module left out) names a path into B (`crate::b::..`,
//!   `super::..`, `self::..`, or a child `b::..`); the `pub use` and `mod` lines of a facade
//!   (`lib.rs`, `mod.rs`) do not count, since they only re-export;
//! - in `nullq-server`, nothing under `delivery` uses `inbound` (a message reaches delivery only
//!   through the spool).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 700;

/// One source file as a module: its path in the crate, whether it is a facade, its code.
struct Module {
    path: Vec<String>,
    file: PathBuf,
    facade: bool,
    /// The file without its trailing test module.
    code: String,
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// Everything before a trailing `#[cfg(test)] mod tests` (the unit tests of the file).
fn without_tests(text: &str) -> &str {
    for marker in [
        "\n#[cfg(test)]\nmod tests",
        "\n#[cfg(test)]\npub(crate) mod tests",
    ] {
        if let Some(i) = text.find(marker) {
            return &text[..i + 1];
        }
    }
    text
}

fn modules(src: &Path) -> Vec<Module> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files
        .into_iter()
        .map(|file| {
            let rel = file.strip_prefix(src).expect("below src");
            let mut path: Vec<String> = rel
                .iter()
                .map(|c| c.to_string_lossy().into_owned())
                .collect();
            let name = path.pop().expect("a file name");
            let facade = matches!(name.as_str(), "lib.rs" | "main.rs" | "mod.rs");
            if !facade {
                path.push(name.trim_end_matches(".rs").to_owned());
            }
            let text = std::fs::read_to_string(&file).expect("a source file");
            Module {
                path,
                facade,
                code: without_tests(&text).to_owned(),
                file,
            }
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Path,
    Open,
    Close,
    Comma,
    Semi,
    Other,
}

/// Rust tokens, enough to find paths: comments and string and char literals are skipped.
fn tokens(code: &str) -> Vec<Token> {
    let b = code.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                i += 1;
            }
            i += 2;
        } else if c == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == b'r' && (b.get(i + 1) == Some(&b'"') || b.get(i + 1) == Some(&b'#')) {
            // A raw string r"..." or r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&b'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&b'"') {
                out.push(Token::Ident("r".into()));
                i += 1;
                continue;
            }
            let close: Vec<u8> = std::iter::once(b'"')
                .chain(std::iter::repeat_n(b'#', hashes))
                .collect();
            j += 1;
            while j < b.len() && !b[j..].starts_with(&close) {
                j += 1;
            }
            i = j + close.len();
        } else if c == b'\'' {
            // A char literal ('x', '\n', '\'') or a lifetime ('a).
            if b.get(i + 1) == Some(&b'\\') {
                i += 2;
                while i < b.len() && b[i] != b'\'' {
                    i += 1;
                }
                i += 1;
            } else if b.get(i + 2) == Some(&b'\'') {
                i += 3;
            } else {
                i += 1;
                out.push(Token::Other);
            }
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            out.push(Token::Ident(code[start..i].to_owned()));
        } else if c == b':' && b.get(i + 1) == Some(&b':') {
            out.push(Token::Path);
            i += 2;
        } else {
            out.push(match c {
                b'{' => Token::Open,
                b'}' => Token::Close,
                b',' => Token::Comma,
                b';' => Token::Semi,
                _ if c.is_ascii_whitespace() => {
                    i += 1;
                    continue;
                }
                _ => Token::Other,
            });
            i += 1;
        }
    }
    out
}

/// The paths of a use tree or an inline path starting at `t[i]`: `a::b::{c, d::e}` gives
/// `a::b::c` and `a::b::d::e`; `a::B as C` gives `a::C` (the name it is known by). Returns the
/// paths and the index after them.
fn path_tree(t: &[Token], mut i: usize, prefix: Vec<String>) -> (Vec<Vec<String>>, usize) {
    let mut path = prefix;
    loop {
        match t.get(i) {
            Some(Token::Ident(name)) => {
                path.push(name.clone());
                i += 1;
            }
            Some(Token::Open) => {
                let mut all = Vec::new();
                i += 1;
                loop {
                    match t.get(i) {
                        Some(Token::Close) => return (all, i + 1),
                        Some(Token::Comma) => i += 1,
                        None => return (all, i),
                        _ => {
                            let (paths, next) = path_tree(t, i, path.clone());
                            all.extend(paths);
                            i = if next == i { i + 1 } else { next };
                        }
                    }
                }
            }
            _ => return (vec![path], i),
        }
        if t.get(i) == Some(&Token::Path) {
            i += 1;
        } else {
            if let (Some(Token::Ident(word)), Some(Token::Ident(alias))) = (t.get(i), t.get(i + 1))
            {
                if word == "as" {
                    path.pop();
                    path.push(alias.clone());
                    i += 2;
                }
            }
            return (vec![path], i);
        }
    }
}

/// What a facade re-exports: (facade, name) → the module the name comes from.
type Reexports = BTreeMap<(Vec<String>, String), Vec<String>>;

/// The paths `m` names: every `pub use` of a facade when `reexports` is asked for, every other
/// path otherwise.
fn paths(m: &Module, known: &BTreeSet<Vec<String>>, reexports: bool) -> Vec<Vec<String>> {
    let t = tokens(&m.code);
    let children: BTreeSet<&str> = known
        .iter()
        .filter(|p| p.len() == m.path.len() + 1 && p.starts_with(&m.path))
        .map(|p| p[m.path.len()].as_str())
        .collect();
    let mut found = Vec::new();
    let mut i = 0;
    let mut statement_start = true;
    let mut skip_statement = false;
    while i < t.len() {
        if statement_start {
            // `pub use x::y;` (and `pub(crate) use`) in a facade only re-exports.
            let is_pub_use = matches!(&t[i], Token::Ident(p) if p == "pub")
                && t[i..]
                    .iter()
                    .take(6)
                    .any(|x| x == &Token::Ident("use".into()));
            skip_statement = m.facade && is_pub_use;
            statement_start = false;
        }
        match &t[i] {
            Token::Semi | Token::Open | Token::Close => {
                statement_start = true;
                i += 1;
                continue;
            }
            Token::Ident(first)
                if t.get(i + 1) == Some(&Token::Path)
                    && (i == 0 || t[i - 1] != Token::Path)
                    && (matches!(first.as_str(), "crate" | "super" | "self")
                        || children.contains(first.as_str())) =>
            {
                let (paths, next) = path_tree(&t, i, Vec::new());
                if skip_statement == reexports {
                    found.extend(paths);
                }
                i = next.max(i + 1);
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    found
}

/// The modules of the same crate that `m` uses; a name a facade re-exports counts as a use of
/// the module it comes from (so `crate::process::X` reaches where `X` is defined).
fn uses(m: &Module, known: &BTreeSet<Vec<String>>, reexports: &Reexports) -> BTreeSet<Vec<String>> {
    paths(m, known, false)
        .iter()
        .filter_map(|p| resolve(&m.path, p, known, reexports))
        .filter(|target| *target != m.path)
        .collect()
}

/// The module that `path`, written in module `at`, points into: the longest known prefix, or,
/// when that is a facade and the next name is one it re-exports, the module it re-exports.
fn resolve(
    at: &[String],
    path: &[String],
    known: &BTreeSet<Vec<String>>,
    reexports: &Reexports,
) -> Option<Vec<String>> {
    let mut abs: Vec<String> = at.to_vec();
    let mut rest = path;
    match path.first().map(String::as_str) {
        Some("crate") => {
            abs.clear();
            rest = &path[1..];
        }
        Some("self") => rest = &path[1..],
        Some("super") => {
            while rest.first().map(String::as_str) == Some("super") {
                abs.pop()?;
                rest = &rest[1..];
            }
        }
        _ => {}
    }
    abs.extend(rest.iter().filter(|s| *s != "self").cloned());
    let n = (0..=abs.len()).rev().find(|&n| known.contains(&abs[..n]))?;
    let module = abs[..n].to_vec();
    match abs.get(n) {
        Some(name) => Some(
            reexports
                .get(&(module.clone(), name.clone()))
                .cloned()
                .unwrap_or(module),
        ),
        None => Some(module),
    }
}

/// The circles (strongly connected components of more than one module) of `graph`.
fn circles(graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<Vec<Vec<String>>> {
    // Two modules are in one circle when each reaches the other.
    let reach = |from: &Vec<String>| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.clone()];
        while let Some(m) = todo.pop() {
            for n in graph.get(&m).into_iter().flatten() {
                if seen.insert(n.clone()) {
                    todo.push(n.clone());
                }
            }
        }
        seen
    };
    let reached: BTreeMap<_, _> = graph.keys().map(|m| (m.clone(), reach(m))).collect();
    let mut done = BTreeSet::new();
    let mut out = Vec::new();
    for m in graph.keys() {
        if done.contains(m) || !reached[m].contains(m) {
            continue;
        }
        let circle: Vec<Vec<String>> = reached[m]
            .iter()
            .filter(|n| reached.get(*n).is_some_and(|r| r.contains(m)))
            .cloned()
            .collect();
        done.extend(circle.iter().cloned());
        out.push(circle);
    }
    out
}

fn graph_of(modules: &[Module]) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let known: BTreeSet<Vec<String>> = modules.iter().map(|m| m.path.clone()).collect();
    let none = Reexports::new();
    let mut reexports = Reexports::new();
    for m in modules.iter().filter(|m| m.facade) {
        for p in paths(m, &known, true) {
            if let (Some(name), Some(target)) = (p.last(), resolve(&m.path, &p, &known, &none)) {
                reexports.insert((m.path.clone(), name.clone()), target);
            }
        }
    }
    modules
        .iter()
        .map(|m| (m.path.clone(), uses(m, &known, &reexports)))
        .collect()
}

fn name(path: &[String]) -> String {
    if path.is_empty() {
        "crate".into()
    } else {
        path.join("::")
    }
}

fn crates() -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = std::fs::read_dir(workspace().join("crates"))
        .expect("crates/")
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.join("src").is_dir())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                p.join("src"),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn no_source_file_is_over_700_lines_outside_its_tests() {
    let mut long = Vec::new();
    let mut files = 0;
    for (_, src) in crates() {
        for m in modules(&src) {
            files += 1;
            let lines = m.code.lines().count();
            if lines > MAX_LINES {
                long.push(format!("{} ({lines} lines)", m.file.display()));
            }
        }
    }
    assert!(files > 50, "found only {files} source files");
    assert!(long.is_empty(), "over {MAX_LINES} lines: {long:#?}");
}

#[test]
fn no_crate_has_a_circle_of_module_imports() {
    let mut found = Vec::new();
    for (krate, src) in crates() {
        let graph = graph_of(&modules(&src));
        for circle in circles(&graph) {
            let members: Vec<String> = circle.iter().map(|p| name(p)).collect();
            let edges: Vec<String> = circle
                .iter()
                .flat_map(|a| {
                    graph[a]
                        .iter()
                        .filter(|b| circle.contains(b))
                        .map(move |b| format!("{} -> {}", name(a), name(b)))
                })
                .collect();
            found.push(format!(
                "{krate}: {} ({})",
                members.join(", "),
                edges.join("; ")
            ));
        }
    }
    assert!(found.is_empty(), "circles of module imports: {found:#?}");
}

#[test]
fn delivery_does_not_use_inbound() {
    let src = workspace().join("crates/nullq-server/src");
    let graph = graph_of(&modules(&src));
    let delivery: Vec<_> = graph
        .keys()
        .filter(|p| p.first().map(String::as_str) == Some("delivery"))
        .collect();
    assert!(
        delivery.len() > 5,
        "no delivery modules found: {delivery:?}"
    );
    let wrong: Vec<String> = delivery
        .iter()
        .flat_map(|d| {
            graph[*d]
                .iter()
                .filter(|t| t.first().map(String::as_str) == Some("inbound"))
                .map(move |t| format!("{} -> {}", name(d), name(t)))
        })
        .collect();
    assert!(wrong.is_empty(), "delivery uses inbound: {wrong:?}");
}

/// The checker itself finds what it is meant to: a circle through `super::`, one through
/// `crate::` inside a use group, a child path from a parent, and ignores comments, strings and
/// a facade's re-exports.
#[test]
fn the_checker_finds_circles_and_ignores_comments_strings_and_facades() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let src = dir.path();
    let write = |rel: &str, text: &str| {
        let path = src.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write(
        "lib.rs",
        "pub mod a;\npub mod b;\npub mod c;\npub mod d;\npub use a::X;\n",
    );
    // a <-> b through a use group and super::.
    write("a.rs", "use crate::{c::Z, b::{self, Y}};\npub struct X;\n");
    write(
        "b.rs",
        "pub struct Y;\nfn f() -> super::a::X { super::a::X }\n",
    );
    // c: only a comment, a string and a test module name d.
    write(
        "c.rs",
        "// uses crate::d::W\npub struct Z;\nconst S: &str = \"crate::d::W\";\n\
         #[cfg(test)]\nmod tests {\n    use crate::d::W;\n}\n",
    );
    // d/mod.rs: a facade re-exporting its child, whose child path from the parent's code is
    // an edge; the child uses the parent: a circle.
    write("d/mod.rs", "pub mod e;\npub use e::W;\nfn g() { e::h() }\n");
    write(
        "d/e.rs",
        "pub struct W;\npub fn h() { let _ = super::g; }\n",
    );
    let graph = graph_of(&modules(src));
    let key = |s: &str| -> Vec<String> {
        s.split("::")
            .filter(|x| !x.is_empty())
            .map(String::from)
            .collect()
    };
    assert_eq!(graph[&key("a")], [key("b"), key("c")].into_iter().collect());
    assert_eq!(graph[&key("b")], [key("a")].into_iter().collect());
    assert!(graph[&key("c")].is_empty(), "{:?}", graph[&key("c")]);
    assert!(graph[&key("")].is_empty(), "a facade's pub use is no edge");
    let mut found = circles(&graph);
    found.sort();
    assert_eq!(
        found,
        vec![vec![key("a"), key("b")], vec![key("d"), key("d::e")]]
    );
}
