//! TLS and mutual TLS options reach the client: with the CA, a client certificate and key, events are delivered
//! to a server that requires client certificates; without the client certificate nothing is, and the failures are
//! counted while events stay spooled.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{events, wait_until};
use ringwatch_core::pipeline::LossCounters;
use ringwatch_core::sink::Sink;
use ringwatch_forward::{ForwardOptions, ForwardSink, NatsOptions};

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl runs");
    assert!(status.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&status.stderr));
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA.
fn make_pki(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=ringwatch test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    for (name, usage) in [("server", "serverAuth"), ("client", "clientAuth")] {
        std::fs::write(
            dir.join(format!("{name}.ext")),
            format!("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage={usage}\n"),
        )
        .expect("ext file");
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={name}"),
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{name}.pem"),
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
            ],
        );
    }
}

#[test]
fn mutual_tls_options_are_passed_to_the_client() {
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("SKIP: openssl is not installed; it makes the test certificates");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dir.path();
    make_pki(pki);
    let p = |f: &str| -> PathBuf { pki.join(f) };
    let port = common::free_port().expect("port");
    let (cert, key, ca) = (p("server.pem"), p("server.key"), p("ca.pem"));
    let path = |p: &Path| p.to_str().expect("utf-8 path").to_owned();
    let (cert, key, ca) = (path(&cert), path(&key), path(&ca));
    let tls_args = ["--tls", "--tlscert", &cert, "--tlskey", &key, "--tlsverify", "--tlscacert", &ca];
    let Some(_server) = common::start_server(dir.path(), Some(port), &tls_args) else { return };
    let url = format!("nats://127.0.0.1:{port}");
    let start = |name: &str, cert: bool| {
        let opts = ForwardOptions {
            nats: NatsOptions {
                url: url.clone(),
                tls_ca: Some(p("ca.pem")),
                tls_cert: cert.then(|| p("client.pem")),
                tls_key: cert.then(|| p("client.key")),
                ..Default::default()
            },
            spool_dir: dir.path().join(name),
            spool_max_bytes: 1 << 30,
        };
        ForwardSink::start(opts, Arc::new(LossCounters::default())).expect("forwarder starts")
    };

    let mut with_cert = start("spool-mtls", true);
    with_cert.write_batch(&events("h", "tls", 0..500)).expect("spooled");
    let stats = with_cert.stats();
    assert!(
        wait_until(Duration::from_secs(20), || stats.published.load(Ordering::Relaxed) == 500),
        "published {} of 500 over mutual TLS (errors {})",
        stats.published.load(Ordering::Relaxed),
        stats.errors.load(Ordering::Relaxed)
    );
    assert!(stats.connected.load(Ordering::Relaxed));

    let mut without_cert = start("spool-no-cert", false);
    without_cert.write_batch(&events("h", "refused", 0..10)).expect("spooled");
    let stats = without_cert.stats();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(stats.published.load(Ordering::Relaxed), 0, "a server requiring client certificates refuses");
    assert!(stats.errors.load(Ordering::Relaxed) > 0);
    assert!(stats.spool_bytes.load(Ordering::Relaxed) > 0, "the events wait in the spool");
}
