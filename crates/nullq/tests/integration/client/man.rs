//! Every man page of the sources renders with `man -l` without a warning, none is a `.so`
//! link (it would dangle when read from the sources), and `nullq install` installs each one.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::support::run_bounded;

fn pages() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../man");
    let mut pages: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("man/")
        .map(|e| e.expect("entry").path())
        .collect();
    pages.sort();
    assert!(pages.len() >= 25, "{pages:?}");
    pages
}

#[test]
fn every_page_renders_with_man_l() {
    for page in pages() {
        let (code, out, err) = run_bounded(
            Command::new("man")
                .arg("-l")
                .arg(&page)
                .env("MANWIDTH", "80")
                .env("MAN_KEEP_FORMATTING", "")
                .env("LC_ALL", "C.UTF-8"),
            Duration::from_secs(60),
        );
        assert_eq!(code, Some(0), "{}: {err}", page.display());
        assert_eq!(err, "", "{}", page.display());
        assert!(out.contains("NAME"), "{}: {out}", page.display());
        let text = std::fs::read_to_string(&page).expect("page");
        assert!(
            !text.lines().any(|l| l.starts_with(".so")),
            "{}: a .so link",
            page.display()
        );
    }
}

#[test]
fn install_installs_every_page() {
    for page in pages() {
        let name = page.file_name().and_then(|n| n.to_str()).expect("name");
        assert!(
            nullq_client::install::MAN_PAGES
                .iter()
                .any(|p| p.name == name),
            "{name} is not in install's MAN_PAGES"
        );
    }
}
