//! Reaching NATS: client options from [`NatsOptions`] (credentials, TLS), connecting with backoff, and making sure
//! the `RINGWATCH` stream exists.
//!
//! Files named in the options are read and checked once, when the forwarder or collector starts, so a wrong path
//! or a file of the wrong kind is a clear error at start instead of a retry loop that never connects. Connecting
//! itself is retried forever with exponential backoff: a server that is down when the agent starts is normal (the
//! agent spools meanwhile). Once connected, the client reconnects by itself after a disconnect.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use async_nats::{Client, ConnectOptions, Event};

use crate::subject::{STREAM_NAME, STREAM_SUBJECTS};
use crate::{ForwardError, NatsOptions};

/// How long a JetStream request or publish acknowledgement may take before it counts as failed (and is retried).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the stream remembers message ids to drop resent copies. Longer windows catch resends after longer
/// outages but cost server memory per id; the collector's store drops any copy that gets past it.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// How long the stream keeps events when the stream is created by ringwatch (an existing stream keeps its own
/// settings): a week, so a collector can be down for days without losing anything.
pub const STREAM_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Validated client settings; cheap to clone into each connection attempt.
#[derive(Clone)]
pub struct Connector {
    servers: Vec<String>,
    options: ConnectOptions,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector").field("servers", &self.servers).finish_non_exhaustive()
    }
}

impl Connector {
    /// Checks `opts` (URL present; credentials, CA, certificate and key readable and of the right kind) and builds
    /// the client options. `name` is the connection name the server shows (`ringwatch-agent`, ...).
    pub fn new(opts: &NatsOptions, name: &str) -> Result<Connector, ForwardError> {
        let servers: Vec<String> =
            opts.url.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect();
        if servers.is_empty() {
            return Err(ForwardError::Config("--nats: no server URL given".into()));
        }
        let mut options = ConnectOptions::new()
            .name(name)
            .connection_timeout(REQUEST_TIMEOUT)
            .request_timeout(Some(REQUEST_TIMEOUT))
            .max_reconnects(None)
            .reconnect_delay_callback(reconnect_delay);
        if let Some(path) = &opts.creds {
            let text = read_file("--nats-creds", path)?;
            options = options.credentials(&text).map_err(|e| {
                ForwardError::Config(format!("--nats-creds {}: not a NATS credentials file: {e}", path.display()))
            })?;
        }
        if let Some(path) = &opts.tls_ca {
            check_pem("--nats-tls-ca", path, "CERTIFICATE")?;
            options = options.add_root_certificates(path.clone()).require_tls(true);
        }
        match (&opts.tls_cert, &opts.tls_key) {
            (Some(cert), Some(key)) => {
                check_pem("--nats-tls-cert", cert, "CERTIFICATE")?;
                check_pem("--nats-tls-key", key, "PRIVATE KEY")?;
                options = options.add_client_certificate(cert.clone(), key.clone()).require_tls(true);
            }
            (None, None) => {}
            _ => return Err(ForwardError::Config("--nats-tls-cert and --nats-tls-key go together".into())),
        }
        Ok(Connector { servers, options })
    }

    /// The server URLs, for messages.
    pub fn servers(&self) -> String {
        self.servers.join(",")
    }

    /// One connection attempt. `on_state(true/false)` is called as the connection comes and goes.
    pub async fn connect(&self, on_state: Arc<dyn Fn(bool) + Send + Sync>) -> Result<Client, async_nats::ConnectError> {
        let cb_state = on_state.clone();
        let servers = self.servers();
        let client = self
            .options
            .clone()
            .event_callback(move |event| {
                let on_state = cb_state.clone();
                let servers = servers.clone();
                async move {
                    match event {
                        Event::Connected => {
                            tracing::info!(nats = %servers, "connected to NATS");
                            on_state(true);
                        }
                        Event::Disconnected => {
                            tracing::warn!(nats = %servers, "disconnected from NATS; reconnecting");
                            on_state(false);
                        }
                        Event::Closed => on_state(false),
                        other => tracing::debug!(nats = %servers, "NATS: {other}"),
                    }
                }
            })
            .connect(self.servers.as_slice())
            .await?;
        on_state(true);
        Ok(client)
    }
}

/// Client reconnect delay: 100 ms doubling to 2 s, so a restarted server is found again within about 2 s.
fn reconnect_delay(attempts: usize) -> Duration {
    Backoff::delay_for(attempts.saturating_sub(1))
}

fn read_file(flag: &str, path: &Path) -> Result<String, ForwardError> {
    fs::read_to_string(path).map_err(|e| ForwardError::Config(format!("{flag} {}: {e}", path.display())))
}

/// Checks that `path` is readable PEM holding a block whose label ends in `label` (`CERTIFICATE`, `PRIVATE KEY`).
fn check_pem(flag: &str, path: &Path, label: &str) -> Result<(), ForwardError> {
    let text = read_file(flag, path)?;
    let found = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("-----BEGIN ")?.strip_suffix("-----"))
        .any(|l| l.ends_with(label));
    if found {
        Ok(())
    } else {
        Err(ForwardError::Config(format!("{flag} {}: no PEM \"{label}\" block in the file", path.display())))
    }
}

/// A JetStream context whose requests and publish acknowledgements time out after [`REQUEST_TIMEOUT`], allowing
/// `inflight` unacknowledged publishes.
pub fn jetstream(client: Client, inflight: usize) -> jetstream::Context {
    jetstream::ContextBuilder::new()
        .timeout(REQUEST_TIMEOUT)
        .ack_timeout(REQUEST_TIMEOUT)
        .max_ack_inflight(inflight)
        .build(client)
}

/// The stream ringwatch creates when there is none: every `ringwatch.>` subject, on disk, with a duplicate window.
/// One replica here; a cluster's operator creates the stream with `--replicas 3` first (docs/fleet.md) and
/// ringwatch uses it as it is.
pub fn stream_config() -> stream::Config {
    stream::Config {
        name: STREAM_NAME.to_owned(),
        subjects: vec![STREAM_SUBJECTS.to_owned()],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::Old,
        duplicate_window: DUPLICATE_WINDOW,
        max_age: STREAM_MAX_AGE,
        num_replicas: 1,
        ..Default::default()
    }
}

/// The `RINGWATCH` stream, created with [`stream_config`] when missing (an existing one is used unchanged).
pub async fn ensure_stream(js: &jetstream::Context) -> Result<stream::Stream, async_nats::Error> {
    Ok(js.get_or_create_stream(stream_config()).await?)
}

/// Exponential backoff between failed attempts: 100 ms doubling up to 2 s.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: usize,
}

impl Backoff {
    const BASE: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(2);

    /// The delay before the next attempt; each call doubles it up to the maximum.
    pub fn next_delay(&mut self) -> Duration {
        let d = Self::delay_for(self.failures);
        self.failures += 1;
        d
    }

    /// Back to the shortest delay (after a success).
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    fn delay_for(failures: usize) -> Duration {
        Self::BASE.saturating_mul(1 << failures.min(8)).min(Self::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut b = Backoff::default();
        let delays: Vec<u128> = (0..8).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 2000, 2000, 2000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn bad_option_files_are_clear_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let junk = dir.path().join("junk.pem");
        fs::write(&junk, "hello").expect("write");
        let base = NatsOptions { url: "nats://127.0.0.1:4222".into(), ..Default::default() };
        let err = |o: NatsOptions| Connector::new(&o, "t").expect_err("rejected").to_string();

        let e = err(NatsOptions { tls_ca: Some(dir.path().join("missing.pem")), ..base.clone() });
        assert!(e.contains("--nats-tls-ca") && e.contains("missing.pem"), "{e}");
        let e = err(NatsOptions { tls_ca: Some(junk.clone()), ..base.clone() });
        assert!(e.contains("no PEM \"CERTIFICATE\""), "{e}");
        let e = err(NatsOptions { creds: Some(junk.clone()), ..base.clone() });
        assert!(e.contains("--nats-creds") && e.contains("junk.pem"), "{e}");
        let e = err(NatsOptions { tls_cert: Some(junk), ..base.clone() });
        assert!(e.contains("go together"), "{e}");
        let e = err(NatsOptions { url: " , ".into(), ..base.clone() });
        assert!(e.contains("no server URL"), "{e}");
        assert!(Connector::new(&base, "t").is_ok());
    }
}
