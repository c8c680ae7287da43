//! `nullq`: one multi-call binary for the whole suite.
//!
//! Called as `sendmail`, `qmail-inject`, `qmail-qmqpc`, ... (through symlinks), or as
//! `nullq sendmail ...`, it runs that client program from `nullq-client` without starting any
//! runtime; otherwise it hands the command line to the server's CLI (`serve`, `qmqpd`, `deliver`,
//! `queue`, `health`), telling it the client's subcommands and program names for `nullq --help`.
//! This file only picks; the programs live in the crates.

use std::ffi::OsString;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    let name = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("nullq")
        .to_owned();
    if let Some(program) = nullq_client::program(&name) {
        return exit(program(&args));
    }
    if let Some(sub) = args.get(1).and_then(|s| s.to_str()) {
        if let Some(program) = nullq_client::program(sub) {
            return exit(program(&args[1..]));
        }
    }
    // `nullq help install` is `nullq install --help`: clap knows the client's subcommands by
    // name only (for the list), not their options.
    if args.get(1).is_some_and(|a| a == "help") {
        if let Some(sub) = args.get(2).and_then(|s| s.to_str()) {
            if let Some(program) = client_subcommand(sub) {
                return exit(program(&[sub.into(), "--help".into()]));
            }
            if nullq_client::program(sub).is_some() {
                // Its man page, named as `nullq install` installs it (mailq, newaliases: sendmail's).
                let page = nullq_client::install::MAN_PAGES
                    .iter()
                    .find(|p| p.name.rsplit_once('.').is_some_and(|(n, _)| n == sub))
                    .map(|p| p.name.replace('.', "(") + ")")
                    .unwrap_or_else(|| "sendmail(8)".to_owned());
                let _ = writeln!(
                    std::io::stdout(),
                    "{sub}: a client program of nullq, run through a link called {sub} or as `nullq {sub} ARGS`; see {page}"
                );
                return ExitCode::SUCCESS;
            }
        }
    }
    exit(nullq_server::process::cli::main_with(
        &args,
        nullq_client::SUBCOMMANDS,
        &programs_help(),
    ))
}

fn client_subcommand(name: &str) -> Option<nullq_client::Program> {
    nullq_client::SUBCOMMANDS
        .iter()
        .find(|(n, _)| *n == name)
        .and_then(|(n, _)| nullq_client::program(n))
}

/// The end of `nullq --help`: every program name the binary answers to, from the table
/// `nullq install` links (so the list cannot drift from what is installed).
fn programs_help() -> String {
    let mut text = String::from(
        "Programs (run through a link of that name, e.g. /var/qmail/bin/sendmail, or as `nullq NAME ARGS`):\n",
    );
    let mut line = String::from(" ");
    for name in nullq_client::install::PROGRAMS {
        if line.len() + name.len() + 2 > 78 {
            text.push_str(&line);
            text.push('\n');
            line = String::from(" ");
        }
        line.push(' ');
        line.push_str(name);
        line.push(',');
    }
    text.push_str(line.trim_end_matches(','));
    text.push_str("\n\nEach has a man page: nullq(8), sendmail(8), qmail-inject(8), ...");
    text
}

fn exit(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(111))
}

/// mimalloc in place of glibc's malloc: the server's sessions allocate and free a few buffers a
/// message on several threads, where glibc's arenas and fastbin consolidation cost about 8 % of
/// its CPU (BENCHMARKS.md, "Fewer copies, a faster allocator, and messages born in queue/").
/// Built without asking for transparent huge pages (`no_thp`): asking, a client program peaked
/// at 8-11 MB resident; without, 4.4-4.8 MB (glibc: 4.0-4.3 MB). A host whose
/// `transparent_hugepage` is `always` may still give the arena huge pages.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
