//! `nullq --help` lists every subcommand and every program name; the client's subcommands
//! answer `--help` and `nullq help NAME`.

use std::process::Command;
use std::time::Duration;

use crate::support::run_bounded;

const LIMIT: Duration = Duration::from_secs(60);

fn nullq(args: &[&str]) -> (Option<i32>, String, String) {
    run_bounded(Command::new(env!("CARGO_BIN_EXE_nullq")).args(args), LIMIT)
}

#[test]
fn help_lists_every_subcommand_and_program() {
    let (code, out, err) = nullq(&["--help"]);
    assert_eq!(code, Some(0), "{err}");
    for sub in ["serve", "qmqpd", "deliver", "queue", "install", "flush"] {
        assert!(
            out.lines()
                .any(|l| l.trim_start().starts_with(&format!("{sub} "))),
            "{sub} missing:\n{out}"
        );
    }
    let (_, programs) = out.split_once("Programs").expect("a Programs section");
    for name in nullq_client::install::PROGRAMS {
        assert!(
            programs.split([' ', ',', '\n']).any(|w| w == *name),
            "{name} missing:\n{out}"
        );
    }
}

#[test]
fn client_subcommands_have_help() {
    for sub in ["install", "flush"] {
        let (code, by_flag, err) = nullq(&[sub, "--help"]);
        assert_eq!(code, Some(0), "{sub}: {err}");
        assert!(
            by_flag.contains(&format!("Usage: nullq {sub}")),
            "{by_flag}"
        );
        let (code, by_help, err) = nullq(&["help", sub]);
        assert_eq!(code, Some(0), "{sub}: {err}");
        assert_eq!(by_help, by_flag);
    }
    let (code, out, _) = nullq(&["help", "newaliases"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("see newaliases(8)"), "{out}");
    let (code, out, _) = nullq(&["help", "serve"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("--listen"), "{out}");
}
