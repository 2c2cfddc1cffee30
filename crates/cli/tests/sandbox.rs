//! `ringwatch sandbox` end to end, as root. Kernel mode: a command's writes under `--dir` land in the sandbox's
//! overlay upper layer, the real directory stays byte-for-byte the same, `sandbox diff` lists every change, the
//! sandbox persists until `--fresh`/`discard`, CMD's exit status is passed on, and no mount leaks to the host.
//! User mode: the same scenario with the LD_PRELOAD hook writing the same layer format, and its leaks asserted.
//!
//! Kernel mode has no bypass: a static binary writing with raw syscalls is contained too. User mode is cooperative:
//! the tests assert that a static binary and a raw `syscall(SYS_openat)` write straight into the real directory.
//! Every test uses its own `--state-dir`, so nothing is left in /var/lib/ringwatch. Without root or overlayfs the
//! tests print why and return.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{ringwatch, temp_dir};

/// True (after printing why) when these tests cannot run here.
fn skip() -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP: the sandbox tests need root (mount namespaces, overlayfs)");
        return true;
    }
    let listed = fs::read_to_string("/proc/filesystems")
        .map(|t| t.lines().any(|l| l.split_whitespace().last() == Some("overlay")))
        .unwrap_or(false);
    if !listed {
        eprintln!("SKIP: overlayfs is not in /proc/filesystems (CONFIG_OVERLAY_FS, or modprobe overlay)");
        return true;
    }
    false
}

/// A test's real directory and its private sandbox state dir.
struct Fixture {
    _dir: tempfile::TempDir,
    _state: tempfile::TempDir,
    /// The directory that gets sandboxed (canonical).
    d: PathBuf,
    /// The `--state-dir`.
    state: PathBuf,
}

impl Fixture {
    /// `D` with the files a, b and sub/c.
    fn new(tag: &str) -> Fixture {
        let dir = temp_dir(tag);
        let state = tempfile::Builder::new().prefix(&format!("rw-{tag}-state-")).tempdir().expect("state dir");
        let d = dir.path().join("D");
        fs::create_dir_all(d.join("sub")).expect("mkdir D/sub");
        fs::write(d.join("a"), "alpha\n").expect("write a");
        fs::write(d.join("b"), "bravo\n").expect("write b");
        fs::write(d.join("sub/c"), "charlie\n").expect("write sub/c");
        let d = d.canonicalize().expect("canonical D");
        let state_path = state.path().to_owned();
        Fixture { _dir: dir, _state: state, d, state: state_path }
    }

    /// `ringwatch sandbox --state-dir STATE ARGS...` (subcommand first when `args[0]` is one).
    fn sandbox(&self, args: &[&str]) -> Output {
        let mut cmd = ringwatch();
        cmd.arg("sandbox");
        let (sub, rest) = match args.first() {
            Some(&s) if ["diff", "list", "discard"].contains(&s) => (Some(s), &args[1..]),
            _ => (None, args),
        };
        cmd.args(sub);
        cmd.arg("--state-dir").arg(&self.state);
        cmd.args(rest);
        cmd.output().expect("ringwatch runs")
    }

    /// D as a string.
    fn ds(&self) -> String {
        self.d.display().to_string()
    }

    /// A path under D as a string for shell commands.
    fn p(&self, rel: &str) -> String {
        self.d.join(rel).display().to_string()
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What [`snapshot`] keeps per path: mode (with type), uid, gid, size, mtime s and ns, bytes or link target.
type Entry = (u32, u32, u32, u64, i64, i64, Vec<u8>);

/// Everything observable about a tree, per path.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path).expect("lstat");
        let content = if meta.is_file() {
            fs::read(&path).expect("read")
        } else if meta.file_type().is_symlink() {
            fs::read_link(&path).expect("readlink").into_os_string().into_encoded_bytes()
        } else {
            Vec::new()
        };
        if meta.is_dir() {
            for entry in fs::read_dir(&path).expect("readdir") {
                stack.push(entry.expect("entry").path());
            }
        }
        let size = if meta.is_dir() { 0 } else { meta.len() };
        out.insert(
            path.strip_prefix(root).expect("under root").to_owned(),
            (meta.mode(), meta.uid(), meta.gid(), size, meta.mtime(), meta.mtime_nsec(), content),
        );
    }
    out
}

fn mount_table() -> BTreeSet<String> {
    fs::read_to_string("/proc/self/mountinfo").expect("mountinfo").lines().map(str::to_owned).collect()
}

/// `sandbox diff --json` as (change, rel) pairs plus the raw objects.
fn diff_json(fx: &Fixture, name: &str) -> (Vec<(String, String)>, Vec<Value>) {
    let out = fx.sandbox(&["diff", "--name", name, "--json"]);
    assert_eq!(out.status.code(), Some(0), "diff: {}", stderr(&out));
    let values: Vec<Value> =
        stdout(&out).lines().map(|l| serde_json::from_str(l).expect("diff prints JSON lines")).collect();
    let pairs = values
        .iter()
        .map(|v| (v["change"].as_str().unwrap_or("?").to_owned(), v["rel"].as_str().unwrap_or("?").to_owned()))
        .collect();
    (pairs, values)
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect()
}

#[test]
fn kernel_sandbox_keeps_the_real_dir_untouched_and_diff_lists_every_change() {
    if skip() {
        return;
    }
    let fx = Fixture::new("sbx-main");
    let before = snapshot(&fx.d);
    let mounts_before = mount_table();

    let script = format!(
        "echo new > {n}; echo changed >> {a}; rm {b}; rm -r {sub}; mkdir {sub}; echo x > {y}; \
         test \"$RINGWATCH_SANDBOX\" = T",
        n = fx.p("n"),
        a = fx.p("a"),
        b = fx.p("b"),
        sub = fx.p("sub"),
        y = fx.p("sub/y"),
    );
    let out = fx.sandbox(&["--name", "T", "--mode", "kernel", "--dir", &fx.ds(), "--", "sh", "-c", &script]);
    assert_eq!(out.status.code(), Some(0), "sandboxed script failed: {}", stderr(&out));

    assert_eq!(snapshot(&fx.d), before, "the real directory changed");
    let leaked: Vec<_> = mount_table().difference(&mounts_before).cloned().collect();
    assert!(leaked.is_empty(), "mounts leaked to the host: {leaked:#?}");

    let (changes, values) = diff_json(&fx, "T");
    assert_eq!(
        changes,
        pairs(&[("modified", "a"), ("deleted", "b"), ("created", "n"), ("replaced", "sub"), ("created", "sub/y")])
    );
    let by_rel = |rel: &str| values.iter().find(|v| v["rel"] == rel).expect("listed");
    assert_eq!(by_rel("n")["size"], 4);
    assert_eq!(by_rel("a")["size"], "alpha\nchanged\n".len());
    assert_eq!(by_rel("b")["type"], "file");
    assert_eq!(by_rel("sub")["type"], "dir");
    assert_eq!(by_rel("sub")["path"], fx.p("sub"));
    assert_eq!(by_rel("sub/y")["sandbox"], "T");

    let text = fx.sandbox(&["diff", "--name", "T"]);
    let text = stdout(&text);
    assert!(text.starts_with(&format!("{}: 5 changes\n", fx.d.display())), "{text}");
    for line in ["modified  a", "deleted   b", "created   n", "replaced  sub/", "created   sub/y"] {
        assert!(text.contains(line), "{line:?} not in:\n{text}");
    }

    // Persistence: re-entering by name (recorded --dir and mode) sees the earlier writes, the host still does not.
    let out = fx.sandbox(&["--name", "T", "--", "cat", &fx.p("n"), &fx.p("sub/y")]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "new\nx\n");
    let out = fx.sandbox(&["--name", "T", "--", "sh", "-c", &format!("test ! -e {}", fx.p("b"))]);
    assert_eq!(out.status.code(), Some(0), "b is deleted inside the sandbox");
    assert!(!fx.d.join("n").exists());

    // --fresh drops every change.
    let out = fx.sandbox(&["--name", "T", "--fresh", "--", "cat", &fx.p("n")]);
    assert_ne!(out.status.code(), Some(0), "n survived --fresh");
    let out = fx.sandbox(&["--name", "T", "--", "cat", &fx.p("b"), &fx.p("sub/c")]);
    assert_eq!(stdout(&out), "bravo\ncharlie\n", "{}", stderr(&out));
    assert_eq!(diff_json(&fx, "T").0, Vec::<(String, String)>::new());
    assert!(stdout(&fx.sandbox(&["diff", "--name", "T"])).contains(": no changes"));

    assert_eq!(snapshot(&fx.d), before, "the real directory changed");
    let leaked: Vec<_> = mount_table().difference(&mounts_before).cloned().collect();
    assert!(leaked.is_empty(), "mounts leaked to the host: {leaked:#?}");
}

#[test]
fn state_layout_is_root_only_and_upper_mirrors_the_real_dir() {
    if skip() {
        return;
    }
    let fx = Fixture::new("sbx-layout");
    fs::set_permissions(&fx.d, fs::Permissions::from_mode(0o751)).expect("chmod D");
    let out = fx.sandbox(&["--name", "L", "--dir", &fx.ds(), "--", "sh", "-c", &format!("echo 1 > {}", fx.p("f"))]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let base = fx.state.join("L").join(fx.d.display().to_string().replace('-', "%2D").replace('/', "-"));
    assert_eq!(fs::metadata(fx.state.join("L")).expect("NAME").mode() & 0o777, 0o700);
    assert_eq!(fs::metadata(&base).expect("escaped dir").mode() & 0o777, 0o700);
    assert_eq!(fs::read(base.join("upper/f")).expect("upper/f"), b"1\n");
    // The overlay's root shows upper's attributes, so upper took D's mode: CMD sees D as it is.
    assert_eq!(fs::metadata(base.join("upper")).expect("upper").mode() & 0o7777, 0o751);
    let out = fx.sandbox(&["--name", "L", "--", "stat", "-c", "%a", &fx.ds()]);
    assert_eq!(stdout(&out).trim(), "751");
    let manifest: Value =
        serde_json::from_str(&fs::read_to_string(fx.state.join("L/sandbox.json")).expect("manifest")).expect("json");
    assert_eq!(manifest["mode"], "kernel");
    assert_eq!(manifest["dirs"][0], fx.ds());
}

#[test]
fn relative_writes_from_a_working_directory_inside_the_dir_are_contained() {
    if skip() {
        return;
    }
    let fx = Fixture::new("sbx-cwd");
    let before = snapshot(&fx.d);
    let out = ringwatch()
        .current_dir(fx.d.join("sub"))
        .args(["sandbox", "--state-dir"])
        .arg(&fx.state)
        .args(["--name", "C", "--dir", &fx.ds(), "--", "sh", "-c", "echo rel > rel; echo more >> c"])
        .output()
        .expect("ringwatch runs");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(snapshot(&fx.d), before, "a relative write reached the real directory");
    assert_eq!(diff_json(&fx, "C").0, pairs(&[("modified", "sub/c"), ("created", "sub/rel")]));
}

#[test]
fn exit_status_of_the_command_is_passed_through() {
    if skip() {
        return;
    }
    let fx = Fixture::new("sbx-exit");
    let d = fx.ds();
    assert_eq!(fx.sandbox(&["--name", "E", "--dir", &d, "--", "sh", "-c", "exit 7"]).status.code(), Some(7));
    assert_eq!(fx.sandbox(&["--name", "E", "--", "sh", "-c", "kill -KILL $$"]).status.code(), Some(128 + 9));
    let out = fx.sandbox(&["--name", "E", "--", "/nonexistent/cmd"]);
    assert_eq!(out.status.code(), Some(127), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot run /nonexistent/cmd"), "{}", stderr(&out));
}

#[test]
fn sigterm_to_ringwatch_reaches_the_command() {
    if skip() {
        return;
    }
    let fx = Fixture::new("sbx-term");
    // The ready file is outside D, so it is real: it shows that CMD runs (the signal must reach it).
    let ready = fx.state.with_extension("ready");
    let script = format!("echo > {}; exec sleep 60", ready.display());
    let mut child = ringwatch()
        .args(["sandbox", "--state-dir"])
        .arg(&fx.state)
        .args(["--name", "S", "--dir", &fx.ds(), "--", "sh", "-c", &script])
        .spawn()
        .expect("ringwatch runs");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready.exists() {
        assert!(Instant::now() < deadline, "the sandboxed command never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(stdout(&fx.sandbox(&["list"])).contains("running"), "list shows the sandbox as running");
    let started = Instant::now();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("kill");
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(128 + 15), "sleep was not terminated by the forwarded SIGTERM");
    assert!(started.elapsed() < Duration::from_secs(10));
    let _ = fs::remove_file(&ready);
}

/// The static test helper, compiled once (None after printing why when gcc -static fails).
fn static_writer() -> Option<&'static Path> {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    BIN.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sandbox_static_write.c");
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sandbox_static_write");
        let ok = Command::new("gcc")
            .args(["-static", "-O2", "-Wall", "-o"])
            .arg(&out)
            .arg(&src)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("SKIP: gcc -static failed (install gcc and libc6-dev)");
        }
        ok.then_some(out)
    })
    .as_deref()
}

#[test]
fn static_binary_writes_are_contained_in_kernel_mode() {
    if skip() {
        return;
    }
    let Some(writer) = static_writer() else { return };
    let fx = Fixture::new("sbx-static");
    let before = snapshot(&fx.d);
    let target = fx.p("static");
    let out = fx.sandbox(&[
        "--name",
        "S",
        "--mode",
        "kernel",
        "--dir",
        &fx.ds(),
        "--",
        &writer.display().to_string(),
        &target,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!fx.d.join("static").exists(), "the static binary wrote through to the real directory");
    assert_eq!(snapshot(&fx.d), before);
    let (changes, values) = diff_json(&fx, "S");
    assert_eq!(changes, pairs(&[("created", "static")]));
    assert_eq!(values[0]["size"], "written by a static binary\n".len());
}

#[test]
fn list_shows_sandboxes_and_discard_removes_one() {
    if skip() {
        return;
    }
    let fx = Fixture::new("sbx-list");
    let d = fx.ds();
    for name in ["one", "two"] {
        let out = fx.sandbox(&["--name", name, "--dir", &d, "--", "sh", "-c", &format!("echo > {}", fx.p(name))]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    let out = fx.sandbox(&["list", "--json"]);
    let rows: Vec<Value> = stdout(&out).lines().map(|l| serde_json::from_str(l).expect("json")).collect();
    assert_eq!(rows.iter().map(|r| r["name"].as_str().unwrap_or("?")).collect::<Vec<_>>(), ["one", "two"]);
    assert!(rows.iter().all(|r| r["changes"] == 1 && r["running"] == false && r["dirs"][0] == d.as_str()));
    let table = stdout(&fx.sandbox(&["list"]));
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains("one ") && table.contains("idle"), "{table}");

    let out = fx.sandbox(&["discard", "--name", "one"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!fx.state.join("one").exists());
    let out = fx.sandbox(&["diff", "--name", "one"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no sandbox named one"), "{}", stderr(&out));
    assert_eq!(fx.sandbox(&["discard", "--name", "one"]).status.code(), Some(2));
}

#[test]
fn bad_input_exits_2_with_a_message() {
    if skip() {
        return;
    }
    let fx = Fixture::new("sbx-bad");
    let d = fx.ds();
    let cases: &[(&[&str], &str)] = &[
        (&["--dir", &d], "needs a command after `--`"),
        (&["--dir", "/nonexistent/rw-dir", "--", "true"], "--dir /nonexistent/rw-dir: no such directory"),
        (&["--dir", &fx.p("a"), "--", "true"], "not a directory"),
        (&["--dir", &d, "--dir", &format!("{d}/."), "--", "true"], "given twice"),
        (&["--dir", &d, "--dir", &fx.p("sub"), "--", "true"], "is inside --dir"),
        (&["--dir", "/proc/sys", "--", "true"], "on procfs, which overlayfs cannot use as a lower layer"),
        (&["--dir", "/", "--", "true"], "the whole file system cannot be sandboxed"),
        (&["--name", "../x", "--dir", &d, "--", "true"], "bad sandbox name"),
        (&["--name", "never-made", "--", "true"], "does not exist yet: give the directories"),
    ];
    for (args, message) in cases {
        let out = fx.sandbox(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(message), "{args:?}: {message:?} not in {}", stderr(&out));
    }
    // A --dir overlapping the state dir would put the layers inside their own lower layer.
    let out = fx.sandbox(&["--dir", &fx.state.display().to_string(), "--", "true"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("overlaps the sandbox state dir"), "{}", stderr(&out));
}

#[test]
fn sandbox_three_deep_is_refused_with_the_kernels_reason() {
    if skip() {
        return;
    }
    // overlayfs stacks at most two levels: a sandbox in a sandbox works, the third level cannot mount.
    let fx = Fixture::new("sbx-nest");
    let bin = env!("CARGO_BIN_EXE_ringwatch");
    let state = fx.state.display().to_string();
    let d = fx.ds();
    let level = |name: &str| -> Vec<String> {
        ["sandbox", "--state-dir", &state, "--name", name, "--dir", &d, "--"].map(str::to_owned).into()
    };
    let mut args = level("outer");
    args.push(bin.into());
    args.extend(level("inner"));
    args.extend(["sh".into(), "-c".into(), format!("echo 2 > {}", fx.p("two"))]);
    let out = ringwatch().args(&args).output().expect("runs");
    assert_eq!(out.status.code(), Some(0), "two levels must work: {}", stderr(&out));

    let mut args = level("outer");
    args.push(bin.into());
    args.extend(level("inner"));
    args.push(bin.into());
    args.extend(level("third"));
    args.push("true".into());
    let out = ringwatch().args(&args).output().expect("runs");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("refused it as an overlay lower layer"), "{}", stderr(&out));
    // The sandbox that could not start is not left behind; the two that ran are.
    let names: Vec<_> = fs::read_dir(&fx.state).expect("state").map(|e| e.expect("entry").file_name()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(!fx.d.join("two").exists());
}

/// True (after printing why) when the user-mode tests cannot run: not root, or no hook library next to the binary.
fn skip_user() -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP: the sandbox tests need root (the state dir is root's)");
        return true;
    }
    if common::hook_library().is_none() {
        eprintln!("SKIP: libringwatch_hook.so not built next to the binary (cargo build -p ringwatch-hook)");
        return true;
    }
    false
}

/// The kernel test's script: create n, append to a, rm b, replace sub (rm -r, mkdir), write sub/y.
fn scenario(fx: &Fixture) -> String {
    format!(
        "echo new > {n}; echo changed >> {a}; rm {b}; rm -r {sub}; mkdir {sub}; echo x > {y}; \
         test \"$RINGWATCH_SANDBOX\" = U",
        n = fx.p("n"),
        a = fx.p("a"),
        b = fx.p("b"),
        sub = fx.p("sub"),
        y = fx.p("sub/y"),
    )
}

#[test]
fn user_sandbox_keeps_the_real_dir_untouched_and_diff_lists_every_change() {
    if skip_user() {
        return;
    }
    let fx = Fixture::new("sbx-user");
    let before = snapshot(&fx.d);
    let mounts_before = mount_table();
    let out = fx.sandbox(&["--name", "U", "--mode", "user", "--dir", &fx.ds(), "--", "sh", "-c", &scenario(&fx)]);
    assert_eq!(out.status.code(), Some(0), "sandboxed script failed: {}", stderr(&out));
    assert_eq!(snapshot(&fx.d), before, "the real directory changed");
    assert_eq!(mount_table(), mounts_before, "user mode mounts nothing");

    // The same diff as the kernel-mode test: the shadow tree is in the overlay upper-layer format.
    let (changes, values) = diff_json(&fx, "U");
    assert_eq!(
        changes,
        pairs(&[("modified", "a"), ("deleted", "b"), ("created", "n"), ("replaced", "sub"), ("created", "sub/y")])
    );
    let by_rel = |rel: &str| values.iter().find(|v| v["rel"] == rel).expect("listed");
    assert_eq!(by_rel("n")["size"], 4);
    assert_eq!(by_rel("a")["size"], "alpha\nchanged\n".len());
    let manifest: Value =
        serde_json::from_str(&fs::read_to_string(fx.state.join("U/sandbox.json")).expect("manifest")).expect("json");
    assert_eq!(manifest["mode"], "user");
    let list = stdout(&fx.sandbox(&["list"]));
    assert!(list.contains("U     user"), "{list}");

    // Re-entry (recorded mode and --dir) sees its own writes and deletes; the host still does not.
    let out = fx.sandbox(&["--name", "U", "--", "cat", &fx.p("n"), &fx.p("a"), &fx.p("sub/y")]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "new\nalpha\nchanged\nx\n");
    let out = fx.sandbox(&["--name", "U", "--", "cat", &fx.p("b")]);
    assert_ne!(out.status.code(), Some(0), "b is deleted inside the sandbox");
    assert!(stderr(&out).contains("No such file"), "{}", stderr(&out));
    let out = fx.sandbox(&["--name", "U", "--", "cat", &fx.p("sub/c")]);
    assert_ne!(out.status.code(), Some(0), "sub/c is hidden by the replaced sub");
    assert_eq!(snapshot(&fx.d), before, "the real directory changed");

    // Mode mismatch on re-entry is refused, both ways.
    let out = fx.sandbox(&["--name", "U", "--mode", "kernel", "--", "true"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("was made in user mode and cannot be entered in kernel mode"), "{}", stderr(&out));
    if !skip() {
        let out = fx.sandbox(&["--name", "K", "--mode", "kernel", "--dir", &fx.ds(), "--", "true"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let out = fx.sandbox(&["--name", "K", "--mode", "user", "--", "true"]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains("was made in kernel mode"), "{}", stderr(&out));
    }

    // --fresh drops the shadow.
    let out = fx.sandbox(&["--name", "U", "--fresh", "--", "cat", &fx.p("b")]);
    assert_eq!(stdout(&out), "bravo\n", "{}", stderr(&out));
    assert_eq!(diff_json(&fx, "U").0, Vec::<(String, String)>::new());
}

#[test]
fn user_sandbox_renames_copies_up_and_keeps_modes() {
    if skip_user() {
        return;
    }
    let fx = Fixture::new("sbx-user-mv");
    fs::set_permissions(fx.d.join("a"), fs::Permissions::from_mode(0o640)).expect("chmod a");
    let before = snapshot(&fx.d);
    // mv of a real file (copy-up + rename + whiteout), of a new file, into a new directory; chmod and truncate
    // copy up. A real directory cannot be renamed in place (EXDEV, as overlayfs without redirect_dir): mv falls
    // back to copy-and-delete, which works because its stats see the sandbox's view.
    let script = format!(
        "set -e; echo m > {m}; mv {m} {m2}; mv {a} {a3}; mkdir {nd}; mv {m2} {nd}/m; \
         chmod 600 {b}; truncate -s 2 {c}; mv {sub} {sub2}; cat {sub2}/c; test ! -e {sub}",
        m = fx.p("m"),
        m2 = fx.p("m2"),
        a = fx.p("a"),
        a3 = fx.p("a3"),
        b = fx.p("b"),
        nd = fx.p("nd"),
        sub = fx.p("sub"),
        sub2 = fx.p("sub2"),
        c = fx.p("sub/c"),
    );
    let out = fx.sandbox(&["--name", "R", "--mode", "user", "--dir", &fx.ds(), "--", "sh", "-c", &script]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(snapshot(&fx.d), before, "the real directory changed");
    let (changes, values) = diff_json(&fx, "R");
    assert_eq!(
        changes,
        pairs(&[
            ("deleted", "a"),
            ("created", "a3"),
            ("metadata", "b"),
            ("created", "nd"),
            ("created", "nd/m"),
            // The directory mv: copied (with the truncated c) and the source deleted.
            ("deleted", "sub"),
            ("created", "sub2"),
            ("created", "sub2/c"),
        ])
    );
    assert_eq!(values[2]["fields"][0], "mode");
    assert_eq!(values.iter().find(|v| v["rel"] == "sub2/c").expect("sub2/c")["size"], 2);
    assert_eq!(stdout(&out), "ch", "mv copied the truncated file: {}", stderr(&out));
    let out = fx.sandbox(&["--name", "R", "--", "sh", "-c", &format!("cat {} {}", fx.p("a3"), fx.p("nd/m"))]);
    assert_eq!(stdout(&out), "alpha\nm\n", "{}", stderr(&out));
    let upper = fx.state.join("R").join(fx.d.display().to_string().replace('-', "%2D").replace('/', "-"));
    assert_eq!(fs::metadata(upper.join("upper/a3")).expect("a3").mode() & 0o777, 0o640, "copy-up keeps the mode");
    assert_eq!(fs::metadata(upper.join("upper/b")).expect("b").mode() & 0o777, 0o600);
}

#[test]
fn user_sandbox_links_symlinks_and_chown_stay_in_the_shadow() {
    if skip_user() {
        return;
    }
    let fx = Fixture::new("sbx-user-ln");
    let outside = temp_dir("sbx-user-ln-out");
    let out_file = outside.path().join("o");
    fs::write(&out_file, "out\n").expect("write o");
    let before = snapshot(&fx.d);
    let outside_before = snapshot(outside.path());
    // A symlink, a hard link (the source is copied up first), an owner change (copy-up, then chown of the copy),
    // a relative symlink in a subdirectory, lchown of the new symlink (perl's POSIX::lchown, which calls lchown
    // directly), an absolute symlink to a directory written through; a link with one
    // side outside the sandboxed directory is EXDEV. Reading through the new links
    // resolves them in the sandbox's view: s -> b (copied up by the chown), sub/rel -> ../a (copied up by the
    // link), sd/c -> the real sub/c (never copied up).
    let script = format!(
        "set -e; ln -s b {s}; ln {a} {h}; chown 4242:4243 {b}; ln -s ../a {rel}; \
         perl -MPOSIX -e 'POSIX::lchown(4244, -1, q({s})) or die $!'; \
         ln -s {sub} {sd}; echo via-link > {sd}/v; \
         ! ln {o} {x} 2>/dev/null; ! ln {a} {ox} 2>/dev/null; \
         cat {s} {h} {rel} {sd}/c",
        s = fx.p("s"),
        a = fx.p("a"),
        h = fx.p("h"),
        b = fx.p("b"),
        rel = fx.p("sub/rel"),
        sub = fx.p("sub"),
        sd = fx.p("sd"),
        o = out_file.display(),
        x = fx.p("x"),
        ox = outside.path().join("ox").display(),
    );
    let out = fx.sandbox(&["--name", "N", "--mode", "user", "--dir", &fx.ds(), "--", "sh", "-c", &script]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "bravo\nalpha\nalpha\ncharlie\n", "reads through the new links: {}", stderr(&out));
    assert_eq!(snapshot(&fx.d), before, "the real directory changed");
    assert_eq!(snapshot(outside.path()), outside_before, "the EXDEV link left the outside directory alone");
    let (changes, values) = diff_json(&fx, "N");
    assert_eq!(
        changes,
        pairs(&[
            // `a` was copied up for the hard link, unchanged: not a change.
            ("metadata", "b"),
            ("created", "h"),
            ("created", "s"),
            ("created", "sd"),
            ("created", "sub/rel"),
            ("created", "sub/v"),
        ])
    );
    let by_rel = |rel: &str| values.iter().find(|v| v["rel"] == rel).expect("listed");
    assert_eq!(by_rel("b")["fields"], serde_json::json!(["owner"]));
    assert_eq!((by_rel("h")["type"].as_str(), by_rel("h")["size"].as_u64()), (Some("file"), Some(6)));
    for link in ["s", "sd", "sub/rel"] {
        assert_eq!(by_rel(link)["type"], "symlink", "{link}");
    }
    let upper = fx.state.join("N").join(fx.d.display().to_string().replace('-', "%2D").replace('/', "-")).join("upper");
    let meta = |rel: &str| fs::symlink_metadata(upper.join(rel)).expect(rel);
    assert_eq!((meta("b").uid(), meta("b").gid()), (4242, 4243), "the shadow copy got the owner");
    assert_eq!(meta("s").uid(), 4244, "lchown changed the shadow symlink itself");
    assert_eq!(meta("h").ino(), meta("a").ino(), "h is a hard link of the copied-up a");
    assert_eq!(fs::read_link(upper.join("s")).expect("s"), Path::new("b"), "the text as given");

    // Re-entry still reads through them; the host does not see them.
    let out = fx.sandbox(&["--name", "N", "--", "cat", &fx.p("s"), &fx.p("sd/v")]);
    assert_eq!(stdout(&out), "bravo\nvia-link\n", "{}", stderr(&out));
    assert!(!fx.d.join("s").exists() && !fx.d.join("h").exists() && !fx.d.join("sub/v").exists());

    // An O_TMPFILE file gets its name with linkat(/proc/self/fd/N, AT_SYMLINK_FOLLOW): the file is in the
    // shadow already, so the name is made there.
    let python = Command::new("python3").args(["-c", "pass"]).status().is_ok_and(|s| s.success());
    if !python {
        eprintln!("python3 missing: the O_TMPFILE + linkat case is not checked");
        return;
    }
    let py = format!(
        "import os\nfd = os.open({d:?}, os.O_TMPFILE | os.O_WRONLY, 0o644)\nos.write(fd, b'tmp\\n')\n\
         root = os.open('/', os.O_RDONLY)\n\
         os.link(f'/proc/self/fd/{{fd}}', {t:?}, src_dir_fd=root, follow_symlinks=True)",
        d = fx.ds(),
        t = fx.p("t"),
    );
    let out = fx.sandbox(&["--name", "N", "--", "python3", "-c", &py]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!fx.d.join("t").exists(), "the tmpfile's name reached the real directory");
    assert_eq!(fs::read_to_string(upper.join("t")).expect("t in the shadow"), "tmp\n");
    assert!(diff_json(&fx, "N").0.contains(&("created".to_owned(), "t".to_owned())));
}

/// A dynamically linked build of the static test helper: it also writes with raw `syscall(SYS_openat)`.
#[test]
fn user_sandbox_commands_see_their_own_work_through_stat_access_readlink_and_opendir() {
    if skip_user() {
        return;
    }
    let fx = Fixture::new("sbx-user-look");
    let before = snapshot(&fx.d);
    // Everything here looks at what the command itself did, which exists only in the sandbox: `ls -l` (statx),
    // `test -e`/`-f`/`-d` (stat), `test -w` (access/faccessat), `readlink`, `ls DIR` (opendir), `stat -c`, and a
    // deleted real file and directory that must look gone; then a time change of a real file (utimensat: copied up,
    // the real one keeps its time) and a fifo (mknod: made in the shadow). Each line prints a marker.
    let script = format!(
        "set -e; echo new > {n}; mkdir {nd}; echo in > {nd}/f; ln -s n {l}; rm {b}; rm -r {sub}; \
         ls -l {n} >/dev/null && echo ls-ok; \
         test -f {n} && echo stat-ok; test -d {nd} && echo dir-ok; test -w {n} && echo access-ok; \
         readlink {l}; ls {nd}; stat -c %s {n}; \
         test ! -e {b} && echo b-gone; test ! -e {sub} && echo sub-gone; \
         chmod 600 {n} && stat -c %a {n}; \
         python3 -c 'import os, stat, sys; os.utime(sys.argv[1], (1, 1)); os.mknod(sys.argv[2], stat.S_IFIFO | 0o600)' \
             {a} {fifo}; \
         stat -c %Y {a}; test -p {fifo} && echo fifo-ok",
        a = fx.p("a"),
        fifo = fx.p("fifo"),
        n = fx.p("n"),
        nd = fx.p("nd"),
        l = fx.p("l"),
        b = fx.p("b"),
        sub = fx.p("sub"),
    );
    let out = fx.sandbox(&["--name", "L", "--mode", "user", "--dir", &fx.ds(), "--", "sh", "-c", &script]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "ls-ok\nstat-ok\ndir-ok\naccess-ok\nn\nf\n4\nb-gone\nsub-gone\n600\n1\nfifo-ok\n",
        "the command saw its own changes: {}",
        stderr(&out)
    );
    assert_eq!(snapshot(&fx.d), before, "the real directory changed");
    // Outside the sandbox nothing of it shows.
    assert!(!fx.d.join("n").exists() && fx.d.join("b").exists() && fx.d.join("sub/c").exists());
}

fn raw_syscall_writer() -> Option<&'static Path> {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    BIN.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sandbox_static_write.c");
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sandbox_raw_syscall_write");
        let ok =
            Command::new("gcc").args(["-O2", "-Wall", "-o"]).arg(&out).arg(&src).status().is_ok_and(|s| s.success());
        if !ok {
            eprintln!("SKIP: gcc failed");
        }
        ok.then_some(out)
    })
    .as_deref()
}

#[test]
fn user_mode_leaks_static_binaries_and_raw_syscalls() {
    if skip_user() {
        return;
    }
    let (Some(static_bin), Some(raw_bin)) = (static_writer(), raw_syscall_writer()) else { return };
    let fx = Fixture::new("sbx-user-leak");
    let script = format!(
        "{st} {p1} && {raw} {p2} && echo hooked > {p3}",
        st = static_bin.display(),
        raw = raw_bin.display(),
        p1 = fx.p("static"),
        p2 = fx.p("raw"),
        p3 = fx.p("hooked"),
    );
    let out = fx.sandbox(&["--name", "L", "--mode", "user", "--dir", &fx.ds(), "--", "sh", "-c", &script]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Known, asserted leaks: no dynamic loader (static) or no libc call (raw syscall) means no hook.
    for leaked in ["static", "raw"] {
        let path = fx.d.join(leaked);
        assert_eq!(
            fs::read_to_string(&path).unwrap_or_default(),
            "written by a static binary\n",
            "{leaked}: user mode is expected to leak this write into the real directory"
        );
        fs::remove_file(&path).expect("clean up the leaked file");
    }
    // The shell's own write (open through libc) is contained, and the sandbox never saw the leaked files.
    assert!(!fx.d.join("hooked").exists(), "the hooked write reached the real directory");
    assert_eq!(diff_json(&fx, "L").0, pairs(&[("created", "hooked")]));
}

#[test]
fn user_mode_without_the_hook_library_exits_3() {
    let fx = Fixture::new("sbx-user-nolib");
    let out = ringwatch()
        .env("RINGWATCH_HOOK_LIB", "/nonexistent/libringwatch_hook.so")
        .args(["sandbox", "--state-dir"])
        .arg(&fx.state)
        .args(["--mode", "user", "--dir", &fx.ds(), "--", "true"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("RINGWATCH_HOOK_LIB=/nonexistent/libringwatch_hook.so is not a file"),
        "{}",
        stderr(&out)
    );
    // A copy of the binary with no library next to it.
    let bin_dir = tempfile::tempdir().expect("tmp");
    let bin = bin_dir.path().join("ringwatch");
    // A hard link where possible (a fresh copy can be ETXTBSY while other tests fork: the writer's descriptor
    // leaks into their children until exec), else a copy and a few retries.
    if fs::hard_link(env!("CARGO_BIN_EXE_ringwatch"), &bin).is_err() {
        fs::copy(env!("CARGO_BIN_EXE_ringwatch"), &bin).expect("copy the binary");
    }
    let mut tries = 0;
    let out = loop {
        let run = Command::new(&bin)
            .env_remove("RINGWATCH_HOOK_LIB")
            .args(["sandbox", "--state-dir"])
            .arg(&fx.state)
            .args(["--mode", "user", "--dir", &fx.ds(), "--", "true"])
            .output();
        match run {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 50 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            other => break other.expect("runs"),
        }
    };
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("libringwatch_hook.so was not found"), "{}", stderr(&out));
    assert!(!fx.state.join("default").exists(), "nothing was created");
}

/// The hook's sandbox path never allocates: file_ops (crates/domains/tests/data) runs every hooked file call in
/// a sandboxed directory with malloc_trap.so armed around each call (copy-ups, whiteouts, renames, mkdir included).
#[test]
fn user_mode_hook_path_never_allocates() {
    if skip_user() {
        return;
    }
    let lib = common::hook_library().expect("checked");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../domains/tests/data");
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sandbox-trap");
    fs::create_dir_all(&out_dir).expect("mkdir");
    let (ops, trap) = (out_dir.join("file_ops"), out_dir.join("malloc_trap.so"));
    let gcc = |flags: &[&str], out: &Path, src: &str| {
        Command::new("gcc").args(flags).arg("-o").arg(out).arg(data.join(src)).status().is_ok_and(|s| s.success())
    };
    if !(gcc(&["-O1"], &ops, "file_ops.c") && gcc(&["-shared", "-fPIC"], &trap, "malloc_trap.c")) {
        eprintln!("SKIP: gcc failed");
        return;
    }
    let run = |mode: &str, dir: &Path, shadow: Option<&Path>| {
        let mut cmd = Command::new(&ops);
        cmd.arg(mode).arg(dir).env("LD_PRELOAD", format!("{}:{}", trap.display(), lib.display())).env("RW_TRAP", "1");
        cmd.env("RINGWATCH_HOOK_SOCKET", dir.join("absent.sock"));
        if let Some(upper) = shadow {
            cmd.env("RINGWATCH_SANDBOX_SHADOW", format!("{}\t{}", dir.display(), upper.display()));
        }
        let out = cmd.output().expect("file_ops runs");
        assert!(out.status.success(), "{out:?}");
        assert!(!stderr(&out).contains("malloc_trap"), "allocation on the hook path: {}", stderr(&out));
        stdout(&out)
    };
    let plain = temp_dir("sbx-trap-plain");
    let boxed = temp_dir("sbx-trap-box");
    let d = boxed.path().join("D");
    let upper = boxed.path().join("upper");
    fs::create_dir_all(&d).expect("mkdir");
    fs::create_dir_all(&upper).expect("mkdir");
    let d = d.canonicalize().expect("canonical");
    let expected = run("all", &plain.path().canonicalize().expect("canonical"), None);
    let got = run("all", &d, Some(&upper));
    assert_eq!(got, expected, "the sandbox changed a call's outcome");
    // The read-side calls on what the process made (only in the shadow when sandboxed): same outcomes, no allocation.
    let looked = run("looks", &d, Some(&upper));
    assert_eq!(looked, run("looks", &plain.path().canonicalize().expect("canonical"), None));
    assert!(looked.contains("statx ok\nsize 4\n") && looked.contains("stat-missing fail 2\n"), "{looked}");
    assert!(upper.join("l-file").exists() && !d.join("l-file").exists(), "l-file went to the shadow");
    // The calls' effects are in the shadow tree: created files there, deletes as whiteouts, nothing new for real.
    for created in ["o-open", "o-openat", "o-creat", "o-fopen", "o-rename.new", "o-mkdir", "o-dots", "o-abs"] {
        assert!(upper.join(created).exists(), "{created} not in the shadow");
        assert!(!d.join(created).exists(), "{created} reached the real directory");
    }
    let whiteout = fs::symlink_metadata(upper.join("o-unlink")).expect("whiteout");
    assert!(whiteout.file_type().is_char_device() && whiteout.rdev() == 0);
    assert!(d.join("o-unlink").exists(), "the real file was deleted");
}

#[test]
fn not_root_exits_3() {
    if skip() {
        return;
    }
    let fx = Fixture::new("sbx-nonroot");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", env!("CARGO_BIN_EXE_ringwatch")])
        .args(["sandbox", "--dir", &fx.ds(), "--", "true"])
        .output()
        .expect("setpriv runs");
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("sandbox needs root"), "{}", stderr(&out));
    // Input errors are still reported as such (exit 2) before privileges are checked.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", env!("CARGO_BIN_EXE_ringwatch")])
        .args(["sandbox", "--dir", "/nonexistent/rw-dir", "--", "true"])
        .output()
        .expect("setpriv runs");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}
