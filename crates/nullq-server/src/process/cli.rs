//! The server's command line: `nullq serve`, `nullq qmqpd`, `nullq deliver`, `nullq queue` and
//! `nullq health`.
//!
//! Settings come from the embedded defaults, then the TOML file (`--config`), then flags: the
//! flag wins. Every subcommand returns an exit code; errors are one line on stderr saying what
//! failed and why.

use std::ffi::OsString;
use std::fmt;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::admin::queue_tools::QueueToolError;
use crate::process::settings::CommonArgs;
use crate::process::{deliver, qmqpd, serve, StartError};

#[derive(Debug, Parser)]
#[command(
    name = "nullq",
    version,
    about = "nullq: a QMQP mail server and mini-qmail-compatible null client"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the QMQP server: listen, receive into the spool.
    Serve(serve::ServeArgs),
    /// Serve one QMQP session on stdin/stdout (under tcpserver or inetd), like qmail-qmqpd.
    Qmqpd(CommonArgs),
    /// Deliver the queue (for sites that receive with `nullq qmqpd`); `serve` delivers itself.
    Deliver(deliver::DeliverArgs),
    /// Look at or change the queue: list, show, retry, delete, stats.
    Queue(crate::admin::queue_tools::QueueArgs),
    /// Check the queue and the spool like a Nagios plugin: one line, exit 0 OK, 1 WARNING,
    /// 2 CRITICAL, 3 UNKNOWN.
    Health(crate::admin::health::HealthArgs),
}

/// Run the server CLI on `args` (argv\[0\] included); returns the exit code.
pub fn main(args: &[OsString]) -> i32 {
    main_with(args, &[], "")
}

/// [`main`], with `nullq --help` also listing `others`, the subcommands the caller runs itself
/// before this CLI sees them (the client's `install` and `flush`: name, one line), and ending
/// with `after_help`.
pub fn main_with(
    args: &[OsString],
    others: &[(&'static str, &'static str)],
    after_help: &str,
) -> i32 {
    let mut command = Cli::command();
    for (name, about) in others {
        command = command.subcommand(clap::Command::new(*name).about(*about));
    }
    if !after_help.is_empty() {
        command = command.after_help(after_help.to_owned());
    }
    let parsed = command
        .try_get_matches_from(args)
        .and_then(|matches| Cli::from_arg_matches(&matches));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // A monitoring system reads a plugin's bad flags as UNKNOWN (3), not as a state.
            let health = args.get(1).and_then(|a| a.to_str()) == Some("health");
            return match (e.use_stderr(), health) {
                (false, _) => 0,
                (true, true) => crate::admin::health::UNKNOWN,
                (true, false) => 100,
            };
        }
    };
    match cli.command {
        Command::Serve(args) => finish(serve::serve(args), StartError::exit_code),
        Command::Qmqpd(args) => finish(qmqpd::qmqpd(args), StartError::exit_code),
        Command::Deliver(args) => finish(deliver::deliver(args), StartError::exit_code),
        Command::Queue(args) => finish(
            crate::admin::queue_tools::run(args),
            QueueToolError::exit_code,
        ),
        // A plugin's answer is its exit code, trouble included (UNKNOWN).
        Command::Health(args) => crate::admin::health::run(&args),
    }
}

/// A program's exit code: its own when it ran, else the one `exit_code` gives for its error,
/// after one line on stderr, `nullq: fatal: ` and what failed.
fn finish<E: fmt::Display>(result: Result<i32, E>, exit_code: fn(&E) -> i32) -> i32 {
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("nullq: fatal: {e}");
            exit_code(&e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::logging::check_log_level;
    use crate::process::settings::{configure, ready};

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("nullq").chain(args.iter().copied()))
    }

    fn common(cli: Cli) -> CommonArgs {
        match cli.command {
            Command::Serve(a) => a.common,
            Command::Qmqpd(a) => a,
            Command::Deliver(a) => a.common,
            Command::Queue(_) | Command::Health(_) => panic!("no common options"),
        }
    }

    #[test]
    fn log_level_overrides_the_default_and_the_file() {
        let c = common(parse(&["serve", "--log-level", "info,nullq::session=debug"]).unwrap());
        let config = configure(&c).unwrap();
        assert_eq!(config.log.level, "info,nullq::session=debug");
        config.validate().unwrap();
        assert!(
            config
                .to_toml_string()
                .contains("level = \"info,nullq::session=debug\""),
            "{}",
            config.to_toml_string()
        );

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("nullq.toml");
        std::fs::write(&file, "[log]\nlevel = \"warn\"\n").unwrap();
        let file = file.to_str().unwrap();
        let c = common(parse(&["serve", "--config", file]).unwrap());
        assert_eq!(configure(&c).unwrap().log.level, "warn");
        for sub in ["serve", "qmqpd", "deliver"] {
            let c = common(parse(&[sub, "--config", file, "--log-level", "debug"]).unwrap());
            assert_eq!(configure(&c).unwrap().log.level, "debug", "{sub}");
        }
        let c = common(parse(&["serve"]).unwrap());
        assert_eq!(configure(&c).unwrap().log.level, "info");
    }

    #[test]
    fn a_bad_log_level_is_a_usage_error() {
        for bad in ["", " ", "nullq=loud", "info,nullq::session=verbose", "[{"] {
            let e = parse(&["serve", "--log-level", bad]).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{bad:?}");
            let text = e.to_string();
            assert!(text.contains("--log-level"), "{text}");
            assert!(
                text.contains("not a log filter") || text.contains("empty"),
                "{text}"
            );
        }
        let args: Vec<OsString> = ["nullq", "serve", "--log-level", "nullq=loud"]
            .iter()
            .map(OsString::from)
            .collect();
        assert_eq!(main(&args), 100);
    }

    #[test]
    fn a_bare_word_must_be_a_level() {
        for good in [
            "info",
            "WARN",
            "off",
            "trace",
            "nullq=debug",
            "info,nullq::session=debug",
            "warn,[admitted{client}]=debug",
            "[span{a}]=trace",
        ] {
            assert!(check_log_level(good).is_ok(), "{good:?}");
        }
        for bad in [
            "verbose",
            "info,verbose",
            "nullq",
            "nullq::session",
            " loud ",
        ] {
            let e = check_log_level(bad).unwrap_err().to_string();
            assert!(e.contains("is not a level"), "{bad:?}: {e}");
        }
        let e = parse(&["serve", "--log-level", "verbose"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation);
    }

    #[test]
    fn a_bad_log_level_in_the_file_is_refused_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("nullq.toml");
        std::fs::write(&file, "[log]\nlevel = \"verbose\"\n").unwrap();
        let file = file.to_str().unwrap();
        for sub in ["serve", "qmqpd", "deliver"] {
            let c = common(parse(&[sub, "--config", file]).unwrap());
            let e = ready(configure(&c).unwrap(), true).unwrap_err().to_string();
            assert!(
                e.starts_with("configuration: log.level: not a log filter (\"verbose\""),
                "{sub}: {e}"
            );
            // The flag replaces the file's value.
            let c = common(parse(&[sub, "--config", file, "--log-level", "info"]).unwrap());
            assert!(ready(configure(&c).unwrap(), true).is_ok(), "{sub}");
        }
    }

    #[test]
    fn log_level_is_in_the_help() {
        let e = parse(&["serve", "--help"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp);
        let help = e.to_string();
        assert!(help.contains("--log-level <LEVEL>"), "{help}");
        assert!(help.contains("log.level"), "{help}");
    }
}
