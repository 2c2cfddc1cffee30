//! `--metrics ADDR`: the agent's counters in the Prometheus text format (0.0.4) at `http://ADDR/metrics`.
//!
//! Nothing is counted twice. Every value except the event counts is read at scrape time from the atomics that the
//! pipeline, the policy, the store and the forwarder already keep ([`collect`]). The event counts come from
//! [`MetricsSink`], which the pipeline writes like any other sink; it keeps one small map keyed by the event's enum
//! tuple, so counting costs no string per event ([`events`]). The HTTP side ([`http`]) is a `TcpListener` on one
//! thread: an endpoint scraped every few seconds needs no async runtime.
//!
//! # Metrics
//!
//! All names start with `ringwatch_`.
//!
//! | name | type | labels |
//! | --- | --- | --- |
//! | `events_total` | counter | `domain`, `mode`, `source`, `activity`, `action` |
//! | `pipeline_accepted_total`, `pipeline_written_total` | counter | |
//! | `pipeline_queue_depth` | gauge | |
//! | `drops_total` | counter | `component`, `reason` (`queue_full`, `lost_upstream`, `malformed`) |
//! | `sink_errors_total` | counter | `sink` |
//! | `policy_rule_hits_total` | counter | `rule` |
//! | `store_size_bytes` | gauge | (with a store) |
//! | `store_inserted_total`, `store_duplicates_total` | counter | |
//! | `store_retention_deleted_total`, `store_errors_total` | counter | |
//! | `forward_spool_bytes`, `forward_connected` (0/1) | gauge | (with `--nats`) |
//! | `forward_published_total`, `forward_spool_dropped_total`, `forward_errors_total` | counter | |
//! | `build_info` | gauge, always 1 | `version` |

mod collect;
mod events;
mod http;

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::Arc;

use anyhow::{Context, Result};
use ringwatch_core::Shutdown;
use ringwatch_core::pipeline::PipelineStats;
use ringwatch_forward::ForwardStats;
use ringwatch_policy::Policy;
use ringwatch_store::StoreStats;

pub use events::MetricsSink;

use crate::UsageError;

/// What the metrics endpoint reads.
pub struct MetricsInputs {
    /// Queue, accepted/written and loss counters.
    pub pipeline: Arc<PipelineStats>,
    /// Rule hit counters.
    pub policy: Arc<Policy>,
    /// The store's counters, when a store is configured.
    pub store: Option<Arc<StoreStats>>,
    /// The forwarder's counters, when forwarding is configured.
    pub forward: Option<Arc<ForwardStats>>,
}

/// Binds `addr` and serves `GET /metrics` on a thread until `shutdown`; returns the sink that counts events.
///
/// An `addr` that is not `HOST:PORT` is a [`UsageError`] (exit 2); an address that cannot be bound (in use, not
/// local) is a runtime error naming it.
pub fn start(addr: &str, inputs: MetricsInputs, shutdown: Shutdown) -> Result<MetricsSink> {
    let addrs = parse_addr(addr)?;
    let listener = TcpListener::bind(&addrs[..]).with_context(|| format!("cannot listen on {}", list(&addrs)))?;
    let local = listener.local_addr().context("reading the metrics listener's address")?;
    let sink = MetricsSink::default();
    let registry = collect::registry(inputs, sink.counts());
    http::spawn(listener, registry, shutdown).context("starting the metrics thread")?;
    tracing::info!("serving metrics at http://{local}/metrics");
    Ok(sink)
}

/// Resolves `HOST:PORT` (`127.0.0.1:9464`, `[::1]:9464`, `localhost:9464`); anything else is a usage error.
pub fn parse_addr(addr: &str) -> Result<Vec<SocketAddr>, UsageError> {
    let usage = |why: &str| UsageError(format!("`{addr}` is not HOST:PORT (e.g. 127.0.0.1:9464): {why}"));
    if let Ok(a) = addr.parse::<SocketAddr>() {
        return Ok(vec![a]);
    }
    let (host, port) = addr.rsplit_once(':').ok_or_else(|| usage("no port"))?;
    if host.is_empty() {
        return Err(usage("no host"));
    }
    port.parse::<u16>().map_err(|_| usage("the port is not a number from 0 to 65535"))?;
    let addrs: Vec<SocketAddr> = addr.to_socket_addrs().map_err(|e| usage(&e.to_string()))?.collect();
    if addrs.is_empty() {
        return Err(usage("the host resolves to no address"));
    }
    Ok(addrs)
}

/// `a, b, c` for error messages.
fn list(addrs: &[SocketAddr]) -> String {
    addrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_must_be_host_and_port() {
        assert_eq!(parse_addr("127.0.0.1:9464").expect("ip:port"), vec!["127.0.0.1:9464".parse().expect("addr")]);
        assert_eq!(parse_addr("[::1]:80").expect("[v6]:port")[0].port(), 80);
        assert!(parse_addr("localhost:9464").expect("name:port").iter().all(|a| a.port() == 9464));
        for bad in ["nonsense", "127.0.0.1", ":9464", "127.0.0.1:http", "127.0.0.1:70000"] {
            let err = parse_addr(bad).expect_err(bad);
            assert!(err.0.contains(bad) && err.0.contains("HOST:PORT"), "{err}");
        }
    }

    #[test]
    fn an_address_in_use_is_a_runtime_error_naming_it() {
        let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = taken.local_addr().expect("addr").to_string();
        let inputs = MetricsInputs {
            pipeline: Arc::default(),
            policy: Arc::new(Policy::observe_only()),
            store: None,
            forward: None,
        };
        let err = start(&addr, inputs, Shutdown::new()).expect_err("address in use");
        assert!(!err.chain().any(|c| c.is::<UsageError>()), "not a usage error: {err:#}");
        assert!(format!("{err:#}").contains(&addr), "{err:#}");
    }
}
