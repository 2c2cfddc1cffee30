//! NATS connection flags shared by `run --nats` and `collect`, passed through to the client.

use std::path::PathBuf;

use clap::Args;
use ringwatch_forward::NatsOptions;

/// How to reach the NATS server.
#[derive(Args, Debug, Clone, Default)]
pub struct NatsArgs {
    /// NATS server URL(s), comma-separated, e.g. nats://10.0.0.5:4222 (nats://user:pass@host:4222 for
    /// user/password auth; tls:// to require TLS).
    #[arg(long, value_name = "URL")]
    pub nats: Option<String>,
    /// NATS credentials file (JWT + nkey seed, as `nsc` writes it).
    #[arg(long, value_name = "FILE", requires = "nats")]
    pub nats_creds: Option<PathBuf>,
    /// CA certificate (PEM) that signed the NATS server's certificate; enables TLS.
    #[arg(long, value_name = "FILE", requires = "nats")]
    pub nats_tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS; needs --nats-tls-key.
    #[arg(long, value_name = "FILE", requires_all = ["nats", "nats_tls_key"])]
    pub nats_tls_cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS; needs --nats-tls-cert.
    #[arg(long, value_name = "FILE", requires_all = ["nats", "nats_tls_cert"])]
    pub nats_tls_key: Option<PathBuf>,
}

impl NatsArgs {
    /// The client options, when `--nats` was given.
    pub fn options(&self) -> Option<NatsOptions> {
        let url = self.nats.clone()?;
        Some(NatsOptions {
            url,
            creds: self.nats_creds.clone(),
            tls_ca: self.nats_tls_ca.clone(),
            tls_cert: self.nats_tls_cert.clone(),
            tls_key: self.nats_tls_key.clone(),
        })
    }
}
