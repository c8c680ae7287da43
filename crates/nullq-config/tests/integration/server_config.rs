//! The server's TOML configuration as files on disk: the shipped example
//! (`docs/nullq.toml.example`) loads and means what its comments say, and errors name the file
//! with the line and column.

use std::path::{Path, PathBuf};

use nullq_config::server::{ConfigError, LogFormat, ServerConfig};

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/nullq.toml.example")
}

#[test]
fn shipped_example_loads() {
    let c = ServerConfig::load(&example_path()).expect("the example is valid");
    assert_eq!(c.listen, ["0.0.0.0:628".parse().unwrap()]);
    assert_eq!(c.data_dir, PathBuf::from("/var/spool/nullq"));
    assert_eq!(c.hostname.as_deref(), Some("mail.ncac.gwu.edu"));
    assert_eq!(c.local_name(), "mail.ncac.gwu.edu");
    assert_eq!(c.user.as_deref(), Some("qmaild"));
    assert_eq!(c.group.as_deref(), Some("nofiles"));
    assert_eq!(c.shutdown_timeout_secs, 30);
    assert_eq!(c.access.rules, Some(PathBuf::from("/etc/qmqp.cdb")));
    assert_eq!(c.log.format, LogFormat::Syslog);
    assert_eq!(c.log.level, "info");
    assert_eq!(c.delivery, nullq_config::server::DeliveryConfig::default());
    assert_eq!(
        c.metrics.listen, None,
        "no metrics endpoint unless asked for"
    );
    // The example's limits are the defaults, as its comments say.
    assert_eq!(c.limits, ServerConfig::default().limits);
}

#[test]
fn example_round_trips_through_print_config() {
    let c = ServerConfig::load(&example_path()).expect("the example is valid");
    let printed = c.to_toml_string();
    assert_eq!(
        ServerConfig::from_toml_str(&printed).expect("printed config parses"),
        c
    );
}

#[test]
fn errors_name_file_line_and_column() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("nullq.toml");

    std::fs::write(
        &path,
        "listen = [\"0.0.0.0:628\"]\n[access]\nrule = \"/etc/qmqp.cdb\"\n",
    )
    .expect("write");
    let e = ServerConfig::load(&path).unwrap_err();
    assert!(
        matches!(
            e,
            ConfigError::Parse {
                line: Some(3),
                column: Some(1),
                ..
            }
        ),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!("{}:3:1: unknown field `rule`", path.display())),
        "{msg}"
    );
    assert!(msg.contains("`rules`"), "lists the allowed keys: {msg}");

    std::fs::write(&path, "[limits]\ndatabytes = -1\n").expect("write");
    let msg = ServerConfig::load(&path).unwrap_err().to_string();
    assert!(msg.starts_with(&format!("{}:2:", path.display())), "{msg}");

    std::fs::write(&path, "listen = [\"0.0.0.0:628\"\n").expect("write");
    let msg = ServerConfig::load(&path).unwrap_err().to_string();
    assert!(msg.starts_with(&format!("{}:", path.display())), "{msg}");

    std::fs::write(&path, "[limits]\ndatabytes = 0\n").expect("write");
    let msg = ServerConfig::load(&path).unwrap_err().to_string();
    assert_eq!(
        msg,
        format!("{}: limits.databytes: must be more than 0", path.display())
    );

    let missing = dir.path().join("missing.toml");
    let msg = ServerConfig::load(&missing).unwrap_err().to_string();
    assert!(
        msg.starts_with(&format!("{}: cannot read", missing.display())),
        "{msg}"
    );
}
