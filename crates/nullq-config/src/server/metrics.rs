//! `[metrics]`: where `nullq serve` answers `GET /metrics`. The address is parsed when the
//! file is read (or the `--metrics-listen` flag given).

use std::net::SocketAddr;

use serde::{Deserialize, Deserializer, Serialize};

use super::error::{invalid, keyed, ConfigError};

/// `[metrics]`: `nullq serve`'s Prometheus endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Where `nullq serve` answers `GET /metrics` in the Prometheus text format, `IP:PORT`
    /// (`--metrics-listen`). Default: unset, meaning no metrics endpoint. It has no access
    /// rules of its own: give a loopback or management address. Mirrors Postfix's (none) and
    /// the usual exporters' `--web.listen-address`.
    #[serde(deserialize_with = "listen")]
    pub listen: Option<SocketAddr>,
}

/// What `metrics.listen` (and `--metrics-listen`) must be.
fn listen_problem(text: &str) -> String {
    format!("{text:?} is not IP:PORT (write \"127.0.0.1:9628\" or \"[::1]:9628\")")
}

/// `--metrics-listen ADDR`: the address, or the error the same text in the file gives.
pub fn parse_metrics_listen(text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse()
        .map_err(|_| invalid("metrics.listen", listen_problem(text)))
}

fn listen<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    Option::<String>::deserialize(d)?
        .map(|text| {
            text.parse()
                .map_err(|_| keyed("metrics.listen", listen_problem(&text)))
        })
        .transpose()
}
