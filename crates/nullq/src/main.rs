//! `nullq`: one multi-call binary for the whole suite.
//!
//! Called as `sendmail`, `qmail-inject`, `qmail-qmqpc`, ... (through symlinks), or as
//! `nullq sendmail ...`, it runs that client program from `nullq-client` without starting any
//! runtime; otherwise it hands the command line to the server's CLI (`serve`, `qmqpd`, `deliver`,
//! `queue`, `health`). This file only picks; the programs live in the crates.

use std::ffi::OsString;
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
    exit(nullq_server::cli::main(&args))
}

fn exit(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(111))
}
