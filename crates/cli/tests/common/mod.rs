//! Shared helpers for the CLI integration tests: run the real `ringwatch` binary, start and stop the agent,
//! read its JSON lines.
#![allow(dead_code)] // each test binary uses a different subset

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The ringwatch binary under test.
pub fn ringwatch() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ringwatch"))
}

/// Runs ringwatch with `args` and returns its output.
pub fn run(args: &[&str]) -> Output {
    ringwatch().args(args).output().expect("ringwatch runs")
}

/// A unique temporary directory for one test (world-readable so unprivileged children can use it).
pub fn temp_dir(tag: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix(&format!("rw-{tag}-")).tempdir().expect("temp dir");
    std::os::unix::fs::PermissionsExt::set_mode(&mut fs::metadata(dir.path()).expect("meta").permissions(), 0o755);
    dir
}

/// True when `ringwatch probe --json` says `domain`/`source` can run here; prints why not otherwise.
pub fn backend_available(domain: &str, source: &str) -> bool {
    let out = run(&["probe", "--json"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).expect("probe prints JSON lines");
        if v["domain"] == domain && v["source"] == source {
            if v["available"] == true {
                return true;
            }
            eprintln!("SKIP: {domain}/{source} cannot run here: {}", v["detail"]);
            return false;
        }
    }
    panic!("probe did not list {domain}/{source}: {text}");
}

/// A running agent writing to a file.
pub struct Agent {
    child: Child,
    pub out: PathBuf,
    pub socket: PathBuf,
}

impl Agent {
    /// Starts `ringwatch run --out FILE --hook-socket SOCK [--store off] ARGS...` and waits for its `start` event.
    pub fn start(dir: &Path, args: &[&str]) -> Agent {
        Self::spawn(dir, args, None, |e| e["domain"] == "sensor" && e["activity"] == "start")
    }

    /// [`Agent::start`] with the agent's stderr in the file `stderr` (shown when the agent exits before starting),
    /// waiting for the start event of the agent itself (not only of a source).
    pub fn start_with_stderr(dir: &Path, args: &[&str], stderr: &Path) -> Agent {
        Self::spawn(dir, args, Some(stderr), |e| e["domain"] == "sensor" && e["sensor"]["component"] == "agent")
    }

    /// Spawns the agent and waits up to 30 s for an event that says it `started`.
    fn spawn(dir: &Path, args: &[&str], stderr: Option<&Path>, started: fn(&Value) -> bool) -> Agent {
        let out = dir.join("events.jsonl");
        let socket = dir.join("hook.sock");
        let child = ringwatch()
            .args(["run", "--out"])
            .arg(&out)
            .arg("--hook-socket")
            .arg(&socket)
            // Tests that do not test the store keep none (the default path is shared by every agent).
            .args(if args.contains(&"--store") { &[][..] } else { &["--store", "off"][..] })
            .args(args)
            .stdout(Stdio::null())
            .stderr(stderr.map_or_else(Stdio::inherit, |path| fs::File::create(path).expect("stderr file").into()))
            .spawn()
            .expect("agent starts");
        let mut agent = Agent { child, out, socket };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if agent.events().iter().any(started) {
                return agent;
            }
            if let Some(status) = agent.child.try_wait().expect("wait") {
                let stderr = stderr.map(|path| fs::read_to_string(path).unwrap_or_default()).unwrap_or_default();
                panic!("agent exited before start: {status}: {stderr}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("agent did not report start within 30 s");
    }

    /// Events written so far.
    pub fn events(&self) -> Vec<Value> {
        read_events(&self.out)
    }

    /// Waits until `pred` holds for some event (or the timeout), then returns all events.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let events = self.events();
            if events.iter().any(&pred) || Instant::now() >= deadline {
                return events;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, wait for exit; returns the exit status and every event.
    pub fn stop(mut self) -> (ExitStatus, Vec<Value>) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("signal agent");
        let status = self.child.wait().expect("agent exits");
        let events = read_events(&self.out);
        (status, events)
    }

    /// The agent's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Parses a JSON-lines file (a torn last line is ignored).
pub fn read_events(path: &Path) -> Vec<Value> {
    fs::read_to_string(path).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// Process events of `activity` whose argv contains `token`.
pub fn execs_with<'a>(events: &'a [Value], token: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| {
            e["domain"] == "process"
                && e["activity"] == "exec"
                && e["process"]["cmdline"].as_array().is_some_and(|a| a.iter().any(|s| s == token))
        })
        .collect()
}

/// A unique token for argv matching.
pub fn token(tag: &str) -> String {
    format!("rw-{tag}-{}-{}", std::process::id(), Instant::now().elapsed().as_nanos() ^ rand_ish())
}

fn rand_ish() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

/// Copies /bin/true to `dir/name` (executable).
pub fn copy_true(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    fs::create_dir_all(path.parent().expect("has parent")).expect("mkdir");
    fs::copy("/bin/true", &path).expect("copy /bin/true");
    path
}

/// Runs `program` through `sh -c` with optional extra environment; returns the shell's exit code (or 128+signal).
pub fn sh_status(cmd: &str, env: &[(&str, &str)]) -> i32 {
    let mut c = Command::new("/bin/sh");
    c.arg("-c").arg(cmd);
    for (k, v) in env {
        c.env(k, v);
    }
    let status = c.status().expect("sh runs");
    status.code().unwrap_or_else(|| 128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0))
}

/// Path of the hook library built next to the ringwatch binary.
pub fn hook_library() -> Option<PathBuf> {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_ringwatch"));
    let lib = bin.parent()?.join("libringwatch_hook.so");
    lib.exists().then_some(lib)
}

/// A `127.0.0.1:PORT` nothing listens on right now (bound to port 0, then released).
pub fn free_local_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").to_string()
}

/// One HTTP response, as read by [`http_get`].
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The status line and headers.
    pub head: String,
    /// Everything after the blank line.
    pub body: String,
}

/// `GET path` over HTTP/1.0 (the server closes the connection after the response).
pub fn http_get(addr: &str, path: &str) -> HttpResponse {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("read timeout");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("send request");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("read response");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no blank line in {text:?}"));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status code");
    HttpResponse { status, head: head.to_owned(), body: body.to_owned() }
}

#[allow(unused_imports)] // only the fleet tests start a server
pub use ringwatch_forward::local_server::LocalNatsServer as NatsServer;

/// True when nats-server is installed; prints a SKIP line otherwise.
pub fn nats_server_available() -> bool {
    let found = ringwatch_forward::local_server::find_nats_server().is_some();
    if !found {
        eprintln!("SKIP: nats-server is not installed (apt-get install nats-server)");
    }
    found
}

/// Writes `text` to `dir/<file>` and runs `ringwatch policy check` on it.
pub fn policy_check(dir: &Path, file: &str, text: &str) -> Output {
    let path = dir.join(file);
    fs::write(&path, text).expect("write policy");
    run(&["policy", "check", path.to_str().expect("utf8")])
}

/// [`policy_check`] that must succeed (exit 0); its summary (stdout).
pub fn policy_check_ok(dir: &Path, file: &str, text: &str) -> String {
    let out = policy_check(dir, file, text);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// For each `(name, policy text, expected)`: `ringwatch policy check` of `dir/<name>.yaml` exits 2 and its error
/// names the file followed by `expected` (`:LINE: field: message`).
pub fn assert_policy_check_errors<'a, S: AsRef<str>>(
    dir: &Path,
    cases: impl IntoIterator<Item = (&'a str, S, &'a str)>,
) {
    for (name, text, expected) in cases {
        let out = policy_check(dir, &format!("{name}.yaml"), text.as_ref());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains(&format!("{name}.yaml{expected}")), "{name}: expected `{expected}` in {err}");
    }
}
