//! Private network namespaces and cgroup v2 directories for tests that change global network state.
//!
//! Network tests attach cgroup programs, add qdiscs or start servers; doing that on the host would disturb other
//! tests running at the same time (and the host). These guards give each test its own:
//!
//! - [`NetNs`]: a named network namespace (`ip netns add`) with loopback up, optionally joined to a second one by a
//!   veth pair with addresses `10.77.<subnet>.1/24` and `10.77.<subnet>.2/24` ([`NetNs::veth_pair`]). Run programs
//!   inside with [`NetNs::command`] (a `std::process::Command` whose child calls `setns` before exec, so the pid
//!   and exe are the program's own, unlike `ip netns exec`), or run Rust code inside with [`NetNs::spawn`] (a new
//!   thread that joins the namespace; `setns(CLONE_NEWNET)` is per thread). Dropping deletes the namespace; the
//!   veth pair goes with it.
//! - [`TestCgroup`]: a child directory of the cgroup2 mount, to scope cgroup-attached programs to one test.
//!   [`TestCgroup::command_into`] makes a spawned child join it before exec; [`TestCgroup::add_pid`] moves a
//!   running process. Dropping moves any remaining processes back to the root and removes the directory.
//!
//! Both constructors return `Err(reason)` when the host cannot do it (not root, no `ip`, no cgroup2): the test
//! prints the reason and skips.

#![allow(dead_code)] // each test binary uses a different subset

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::{self, JoinHandle};

/// A per-process counter so names stay unique within one test binary (tests run in parallel).
fn next_id() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Runs `ip ARGS`, returning its stderr as the error.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `ip` (install iproute2): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("`ip {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// A named network namespace, deleted on drop.
#[derive(Debug)]
pub struct NetNs {
    name: String,
    /// `/run/netns/<name>`, opened once; children and threads `setns` to it.
    fd: OwnedFd,
    /// This side's veth address when made by [`NetNs::veth_pair`].
    addr: Option<Ipv4Addr>,
}

impl NetNs {
    /// Creates `rw<tag><pid>-<n>` (kept short: names appear in interface names too) with loopback up.
    pub fn new(tag: &str) -> Result<NetNs, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("network namespaces need root".into());
        }
        let name = format!("rw{tag}{}-{}", std::process::id(), next_id());
        ip(&["netns", "add", &name])?;
        let opened = File::open(Path::new("/run/netns").join(&name));
        let fd = match opened {
            Ok(f) => OwnedFd::from(f),
            Err(e) => {
                let _ = ip(&["netns", "del", &name]);
                return Err(format!("cannot open /run/netns/{name}: {e}"));
            }
        };
        let ns = NetNs { name, fd, addr: None };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Two namespaces joined by a veth pair: the first gets `10.77.<subnet>.1/24`, the second `10.77.<subnet>.2/24`.
    pub fn veth_pair(tag: &str, subnet: u8) -> Result<(NetNs, NetNs), String> {
        let mut a = NetNs::new(&format!("{tag}a"))?;
        let mut b = NetNs::new(&format!("{tag}b"))?;
        let n = next_id();
        let (va, vb) = (format!("rwv{}a{n}", std::process::id()), format!("rwv{}b{n}", std::process::id()));
        // Interface names are limited to 15 bytes.
        let (va, vb) = (va[..va.len().min(15)].to_owned(), vb[..vb.len().min(15)].to_owned());
        ip(&["link", "add", &va, "netns", &a.name, "type", "veth", "peer", "name", &vb, "netns", &b.name])?;
        for (ns, dev, host) in [(&mut a, &va, 1u8), (&mut b, &vb, 2u8)] {
            let addr = Ipv4Addr::new(10, 77, subnet, host);
            ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", dev])?;
            ns.ip(&["link", "set", dev, "up"])?;
            ns.addr = Some(addr);
        }
        Ok((a, b))
    }

    /// The namespace's name (for `ip netns exec NAME ...`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This side's veth address, when the namespace came from [`NetNs::veth_pair`].
    pub fn addr(&self) -> Option<Ipv4Addr> {
        self.addr
    }

    /// Runs `ip -n NAME ARGS` (an `ip` command inside the namespace).
    pub fn ip(&self, args: &[&str]) -> Result<(), String> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// A command whose child joins this namespace right before exec; everything else (pid, exe, cgroup) is the
    /// program's own.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        self.command_into(&mut cmd);
        cmd
    }

    /// Makes an existing command's child join this namespace before exec.
    pub fn command_into(&self, cmd: &mut Command) {
        let fd = self.fd.as_raw_fd();
        // SAFETY: between fork and exec only async-signal-safe calls are allowed; setns(2) is a plain syscall on a
        // descriptor that stays open (owned by `self`, which outlives `spawn`) and nothing is allocated.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
            });
        }
    }

    /// Starts `tests/data/net_client.c` (compiled at `bin`) in its `serve PORT MS` mode inside this namespace and
    /// returns once it says it listens (it serves `port` for `ms` milliseconds).
    pub fn net_client_server(&self, bin: &Path, port: u16, ms: u32) -> Child {
        let mut child = self
            .command(bin)
            .args(["serve", &port.to_string(), &ms.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn server");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().expect("piped")).read_line(&mut line).expect("server says listening");
        assert_eq!(line.trim(), "listening", "server failed: {line}");
        child
    }

    /// Runs `f` on a new thread that first joins this namespace (sockets it creates live there).
    pub fn spawn<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> JoinHandle<R> {
        let fd = self.fd.try_clone().expect("dup of the namespace descriptor");
        thread::spawn(move || {
            // SAFETY: setns(2) on a descriptor this closure owns; it only changes the calling thread's namespace.
            let joined = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(joined, 0, "setns into the test namespace: {}", std::io::Error::last_os_error());
            drop(fd);
            f()
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("warning: {e}");
        }
    }
}

/// A private cgroup v2 directory, removed on drop.
#[derive(Debug)]
pub struct TestCgroup {
    path: PathBuf,
    root: PathBuf,
    /// `cgroup.procs`, opened once so a forked child can join with one write(2) and no allocation.
    procs: File,
}

impl TestCgroup {
    /// Creates `<cgroup2 mount>/rw-test-<tag>-<pid>-<n>`.
    pub fn new(tag: &str) -> Result<TestCgroup, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("cgroup directories need root".into());
        }
        let root = ringwatch_domains::probe::cgroup2_mount().ok_or("no cgroup2 mount")?;
        let path = root.join(format!("rw-test-{tag}-{}-{}", std::process::id(), next_id()));
        fs::create_dir(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        let procs = match fs::OpenOptions::new().write(true).open(path.join("cgroup.procs")) {
            Ok(f) => f,
            Err(e) => {
                let _ = fs::remove_dir(&path);
                return Err(format!("cannot open {}/cgroup.procs: {e}", path.display()));
            }
        };
        Ok(TestCgroup { path, root, procs })
    }

    /// The directory (what a backend's `cgroup` attach point takes).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The cgroup id (the directory's inode number, what `bpf_get_current_cgroup_id` returns).
    pub fn id(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(&self.path).map(|m| m.ino()).unwrap_or(0)
    }

    /// Moves a running process (all its threads) into this cgroup.
    pub fn add_pid(&self, pid: u32) -> Result<(), String> {
        fs::write(self.path.join("cgroup.procs"), pid.to_string())
            .map_err(|e| format!("cannot move {pid} into {}: {e}", self.path.display()))
    }

    /// Makes a command's child join this cgroup before exec (so even its first instruction runs inside).
    pub fn command_into(&self, cmd: &mut Command) {
        let fd = self.procs.as_raw_fd();
        // SAFETY: write(2) of a static buffer to a descriptor owned by `self` (open until `spawn` returns) is
        // async-signal-safe; "0" means the writing process itself.
        unsafe {
            cmd.pre_exec(move || {
                if libc::write(fd, b"0".as_ptr().cast(), 1) == 1 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // A populated cgroup cannot be removed: move what is left (servers the test forgot) back to the root.
        for _ in 0..50 {
            let pids = fs::read_to_string(self.path.join("cgroup.procs")).unwrap_or_default();
            for pid in pids.split_whitespace() {
                if let Ok(mut f) = fs::OpenOptions::new().write(true).open(self.root.join("cgroup.procs")) {
                    let _ = f.write_all(pid.as_bytes());
                }
            }
            if fs::remove_dir(&self.path).is_ok() {
                return;
            }
            thread::sleep(std::time::Duration::from_millis(20));
        }
        eprintln!("warning: could not remove {}", self.path.display());
    }
}
