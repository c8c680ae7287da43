//! Test certificates for QMQP over TLS, made with `openssl` in a temporary directory: a CA,
//! a server certificate it signed for 127.0.0.1 and localhost, a client certificate it signed
//! (CN host1.example.net), and a second CA that signed neither. EC keys: fast to make.

use std::path::{Path, PathBuf};

use super::sh;

/// The files [`Certs::make`] wrote.
pub struct Certs {
    pub ca: PathBuf,
    pub other_ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// The client certificate's CN.
pub const CLIENT_NAME: &str = "host1.example.net";

impl Certs {
    pub fn make(dir: &Path) -> Certs {
        let d = dir.display();
        sh(&format!(
            "set -e; cd {d}; \
             for ca in ca other-ca; do \
               openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
                 -subj /CN=nullq-test-$ca -keyout $ca.key -out $ca.pem 2>/dev/null; \
             done; \
             printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\nbasicConstraints=CA:FALSE\\n' > server.cnf; \
             printf 'subjectAltName=DNS:{CLIENT_NAME}\\nbasicConstraints=CA:FALSE\\nextendedKeyUsage=clientAuth\\n' > client.cnf"
        ));
        Certs::sign(dir, "server", "localhost", "server.cnf");
        Certs::sign(dir, "client", CLIENT_NAME, "client.cnf");
        Certs {
            ca: dir.join("ca.pem"),
            other_ca: dir.join("other-ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
        }
    }

    /// `NAME.pem` and `NAME.key` (mode 600) for CN `cn`, signed by `ca`, extensions from `ext`.
    pub fn sign(dir: &Path, name: &str, cn: &str, ext: &str) {
        let d = dir.display();
        sh(&format!(
            "set -e; cd {d}; \
             openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN={cn} \
               -keyout {name}.key.new -out {name}.csr 2>/dev/null; \
             openssl x509 -req -in {name}.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
               -extfile {ext} -out {name}.pem.new 2>/dev/null; \
             chmod 600 {name}.key.new; mv {name}.key.new {name}.key; mv {name}.pem.new {name}.pem"
        ));
    }

    /// The subject of the certificate the TLS server at `addr` presents (`openssl s_client`).
    pub fn served_subject(addr: std::net::SocketAddr) -> String {
        sh(&format!(
            "openssl s_client -connect {addr} </dev/null 2>/dev/null | openssl x509 -noout -subject"
        ))
        .trim()
        .to_owned()
    }
}
