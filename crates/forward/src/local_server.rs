//! A local `nats-server` with JetStream, run as a child process on a free loopback port: what the tests and
//! `ringwatch bench forward` forward to. Not for production (a fleet runs a real cluster, see docs/fleet.md).

use std::io;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian (and most distributions) install nats-server.
const NATS_SERVER_PATHS: [&str; 2] = ["/usr/sbin/nats-server", "/usr/bin/nats-server"];

/// How long a started server has to accept connections.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(15);

/// The installed nats-server, if any.
pub fn find_nats_server() -> Option<PathBuf> {
    NATS_SERVER_PATHS.iter().map(PathBuf::from).find(|p| p.exists())
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A nats-server child with JetStream; killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct LocalNatsServer {
    bin: PathBuf,
    child: Option<Child>,
    port: u16,
    store_dir: PathBuf,
    extra: Vec<String>,
}

impl LocalNatsServer {
    /// Starts a server on a free port with its JetStream store under `dir`.
    pub fn start(dir: &Path) -> io::Result<LocalNatsServer> {
        Self::start_with(dir, free_port()?, &[])
    }

    /// Starts a server on `port` with extra command-line arguments (TLS settings, ...).
    pub fn start_with(dir: &Path, port: u16, extra: &[&str]) -> io::Result<LocalNatsServer> {
        let bin = find_nats_server().ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "nats-server is not installed (apt-get install nats-server)")
        })?;
        let extra = extra.iter().map(|s| (*s).to_owned()).collect();
        let mut server = LocalNatsServer { bin, child: None, port, store_dir: dir.join("jetstream"), extra };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> io::Result<()> {
        let child = Command::new(&self.bin)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(&self.store_dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + LISTEN_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > deadline {
                self.kill();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("nats-server did not listen on 127.0.0.1:{} within {LISTEN_TIMEOUT:?}", self.port),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// The port it listens on (kept across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and store directory.
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill();
        self.spawn()
    }
}

impl Drop for LocalNatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
