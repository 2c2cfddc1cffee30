//! The X11 keystroke backend against real X servers: each test starts its own `Xvfb` (on a display number the server
//! picks itself with `-displayfd`, so concurrent tests and other helpers never collide), real `xterm`s with titles,
//! and types into them with `xdotool` (XTEST input, the way a keyboard's keys reach the server). When Xvfb, xterm or
//! xdotool is missing, each test prints why and returns (`scripts/install-deps.sh` installs them).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use ringwatch_core::compiled::KeystrokePlan;
use ringwatch_core::{Domain, Event, Mode, Source, SourceError, SourceKind};
use ringwatch_domains::keystroke::x11::{KeystrokeX11, X11Config};

use common::{Running, Stopped};

const NAME: &str = "keystroke/x11";

/// Idle flush used by the tests: short, so partial input shows up quickly.
const IDLE: Duration = Duration::from_millis(400);

/// True when every program the tests drive is installed; prints what is missing otherwise.
fn tools_present() -> bool {
    let missing: Vec<&str> = ["Xvfb", "xterm", "xdotool"]
        .into_iter()
        .filter(|tool| {
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()
                .map(|s| !s.success())
                .unwrap_or(true)
        })
        .collect();
    if !missing.is_empty() {
        eprintln!("skipping: {} not installed (scripts/install-deps.sh installs them)", missing.join(", "));
    }
    missing.is_empty()
}

/// A private Xvfb; killed on drop.
struct Xvfb {
    child: Child,
    display: String,
}

impl Xvfb {
    /// A server on a free display number it picks itself.
    fn start() -> Xvfb {
        Self::spawn(None).expect("Xvfb starts on a free display")
    }

    /// A server on `display` (`:N`), or on a free one; `None` when it did not come up.
    fn spawn(display: Option<&str>) -> Option<Xvfb> {
        // -displayfd 1: the server writes its display number to stdout once it accepts clients (with no display
        // given, it picks a free one).
        let mut child = Command::new("Xvfb")
            .args(display)
            .args(["-displayfd", "1", "-nolisten", "tcp", "-screen", "0", "1024x768x24"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn Xvfb");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout")).read_line(&mut line).expect("read display number");
        let Ok(number) = line.trim().parse::<u32>() else {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        };
        Some(Xvfb { child, display: format!(":{number}") })
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("DISPLAY", &self.display).env_remove("XAUTHORITY");
        c
    }

    fn xdotool(&self, args: &[&str]) -> String {
        let out = self.command("xdotool").args(args).output().expect("run xdotool");
        assert!(out.status.success(), "xdotool {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Starts `xterm -T title -e program...` and waits for its window; returns (xterm, window id).
    fn xterm(&self, title: &str, program: &[&str]) -> (Terminal, String) {
        let child = self
            .command("xterm")
            .args(["-T", title, "-e"])
            .args(program)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn xterm");
        let term = Terminal(child);
        let window = self.xdotool(&["search", "--sync", "--onlyvisible", "--name", &format!("^{title}$")]);
        let window = window.lines().next().expect("xdotool found the window").to_owned();
        (term, window)
    }

    /// Gives `window` the keyboard focus and types `text` (`\n` is Return) at `delay_ms` per key.
    fn type_into(&self, window: &str, text: &str, delay_ms: u32) {
        self.xdotool(&["windowfocus", "--sync", window]);
        self.xdotool(&["type", "--delay", &delay_ms.to_string(), text]);
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        // SIGTERM, so the server removes its lock file and socket and the display number can be used again.
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

/// An xterm, killed on drop.
struct Terminal(Child);

impl Terminal {
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn enabled_plan() -> KeystrokePlan {
    KeystrokePlan { enabled: true, idle_flush: IDLE, ..KeystrokePlan::default() }
}

fn start(display: &Xvfb, plan: KeystrokePlan) -> Running {
    let cfg = X11Config { display: Some(display.display.clone()), plan };
    let source = KeystrokeX11::start(&cfg).expect("the backend starts on a fresh Xvfb");
    assert_eq!(source.name(), NAME);
    Running::start(source, 1 << 16)
}

fn keystrokes(events: &[Event]) -> Vec<&Event> {
    events.iter().filter(|e| e.domain == Domain::Keystroke).collect()
}

fn text(e: &Event) -> &str {
    e.keystroke.as_ref().map(|k| k.text.as_str()).unwrap_or_default()
}

fn has_text(want: &'static str) -> impl Fn(&Event) -> bool {
    move |e| e.domain == Domain::Keystroke && text(e) == want
}

#[test]
fn typing_into_a_titled_xterm_gives_the_line_with_window_title_class_and_pid() {
    if !tools_present() {
        return;
    }
    let x = Xvfb::start();
    let probe = KeystrokeX11::probe_display(Some(&x.display));
    assert!(probe.available, "a fresh Xvfb has XInput 2: {}", probe.detail);
    assert_eq!((probe.domain, probe.mode, probe.source), (Domain::Keystroke, Mode::User, SourceKind::X11));
    let (term, window) = x.xterm("rw-x11-typing", &["sh"]);
    let running = start(&x, enabled_plan());
    x.type_into(&window, "echo Hello-x11", 12);
    x.xdotool(&["key", "Return"]);
    let ev = running.wait_for(Duration::from_secs(10), has_text("echo Hello-x11"));
    let Stopped { events, source_stopped_in, .. } = running.stop();
    let ev = ev.unwrap_or_else(|| panic!("no `echo Hello-x11` line; got {:?}", keystrokes(&events)));
    let ks = ev.keystroke.as_ref().expect("keystroke facts");
    assert_eq!(ks.keys, Some(15), "14 characters and Return (Shift is a modifier, not a key of the line)");
    assert!(!ks.redacted);
    let w = ks.window.as_ref().expect("window facts");
    assert_eq!(w.title, "rw-x11-typing");
    assert_eq!(w.class.as_deref(), Some("XTerm"));
    assert_eq!(w.pid, Some(term.pid()), "xterm sets _NET_WM_PID to its own pid");
    assert_eq!(ev.process.pid, term.pid(), "process.pid is the window's pid");
    assert_eq!((ev.backend.mode, ev.backend.source), (Mode::User, SourceKind::X11));
    assert!(!ev.trusted, "X11 facts are the X server's and the client's word: not trusted");
    assert!(source_stopped_in < Duration::from_secs(1), "run returns soon after shutdown ({source_stopped_in:?})");
}

#[test]
fn typing_on_a_second_display_is_not_seen_by_a_backend_on_the_first() {
    if !tools_present() {
        return;
    }
    let first = Xvfb::start();
    let second = Xvfb::start();
    assert_ne!(first.display, second.display);
    let (_t1, w1) = first.xterm("rw-x11-first", &["cat"]);
    let (_t2, w2) = second.xterm("rw-x11-second", &["cat"]);
    let running = start(&first, enabled_plan());
    // The marker goes to the second display first, then a control line to the first: once the control line
    // arrives, the marker had every chance to arrive before it.
    second.type_into(&w2, "marker-on-second-display\n", 5);
    second.type_into(&w2, "partial-marker", 5);
    first.type_into(&w1, "control-on-first\n", 5);
    let control = running.wait_for(Duration::from_secs(10), has_text("control-on-first"));
    // Past the idle flush, so even the second display's partial input would have been flushed by now.
    std::thread::sleep(IDLE * 3);
    let Stopped { events, .. } = running.stop();
    assert!(control.is_some(), "the control line on the first display is seen: {:?}", keystrokes(&events));
    let leaked: Vec<_> = keystrokes(&events).into_iter().filter(|e| text(e).contains("marker")).collect();
    assert!(leaked.is_empty(), "input on {} leaked into a backend on {}: {leaked:?}", second.display, first.display);
}

#[test]
fn partial_input_is_flushed_when_idle_and_a_focus_change_ends_the_line() {
    if !tools_present() {
        return;
    }
    let x = Xvfb::start();
    let (one, w1) = x.xterm("rw-x11-one", &["cat"]);
    let (two, w2) = x.xterm("rw-x11-two", &["cat"]);
    let running = start(&x, enabled_plan());
    x.type_into(&w1, "first-window", 5);
    x.type_into(&w2, "second-windox", 5);
    x.xdotool(&["key", "BackSpace"]);
    x.type_into(&w2, "w\n", 5);
    x.type_into(&w1, "idle-partial", 5);
    let first = running.wait_for(Duration::from_secs(10), has_text("first-window"));
    let second = running.wait_for(Duration::from_secs(10), has_text("second-window"));
    let idle = running.wait_for(Duration::from_secs(10), has_text("idle-partial"));
    let Stopped { events, .. } = running.stop();
    let all = keystrokes(&events);
    let pid_of = |e: &Option<Event>| e.as_ref().map(|e| e.process.pid);
    assert_eq!(pid_of(&first), Some(one.pid()), "the focus change flushed `first-window` for window one: {all:?}");
    assert_eq!(pid_of(&second), Some(two.pid()), "BackSpace edited the line in window two: {all:?}");
    assert_eq!(pid_of(&idle), Some(one.pid()), "partial input is flushed after the idle time: {all:?}");
}

#[test]
fn a_restarted_display_is_reconnected_and_the_loss_reported() {
    if !tools_present() {
        return;
    }
    let x = Xvfb::start();
    let display = x.display.clone();
    let running = start(&x, enabled_plan());
    drop(x);
    let lost = running.wait_for(Duration::from_secs(5), |e| {
        e.domain == Domain::Sensor && e.sensor.as_ref().is_some_and(|s| s.message.contains("lost X display"))
    });
    assert!(lost.is_some(), "the backend reports the lost display");
    let Some(x) = Xvfb::spawn(Some(&display)) else {
        running.stop();
        eprintln!("skipping the reconnect half: {display} could not be started again");
        return;
    };
    let (_term, window) = x.xterm("rw-x11-again", &["cat"]);
    // The backend retries every 2 s; type until a line arrives.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = None;
    while seen.is_none() && Instant::now() < deadline {
        x.type_into(&window, "after-restart\n", 5);
        seen = running.wait_for(Duration::from_secs(1), has_text("after-restart"));
    }
    let Stopped { source_stopped_in, .. } = running.stop();
    assert!(seen.is_some(), "input on the restarted display is captured again");
    assert!(source_stopped_in < Duration::from_secs(1));
}

#[test]
fn a_keyboard_grab_by_another_client_does_not_hide_keys() {
    use x11rb::connection::Connection;
    use x11rb::protocol::xproto::{ConnectionExt, GrabMode, GrabStatus};
    if !tools_present() {
        return;
    }
    let x = Xvfb::start();
    let (_term, window) = x.xterm("rw-x11-grab", &["cat"]);
    let running = start(&x, enabled_plan());
    x.xdotool(&["windowfocus", "--sync", &window]);
    // What a password dialog or a screen locker does: take every key for itself.
    let (grabber, screen) = x11rb::connect(Some(&x.display)).expect("connect");
    let root = grabber.setup().roots[screen].root;
    let grab = grabber.grab_keyboard(false, root, x11rb::CURRENT_TIME, GrabMode::ASYNC, GrabMode::ASYNC);
    assert_eq!(grab.expect("send").reply().expect("reply").status, GrabStatus::SUCCESS);
    x.xdotool(&["type", "--delay", "5", "while-grabbed\n"]);
    let seen = running.wait_for(Duration::from_secs(10), has_text("while-grabbed"));
    drop(grabber);
    running.stop();
    assert!(seen.is_some(), "XInput 2.1+ raw events arrive even while another client grabs the keyboard");
}

#[test]
fn forged_window_properties_neither_blind_the_backend_nor_change_the_pid() {
    use x11rb::protocol::xproto::{AtomEnum, ConnectionExt, PropMode};
    use x11rb::wrapper::ConnectionExt as _;
    if !tools_present() {
        return;
    }
    let x = Xvfb::start();
    let (term, window) = x.xterm("rw-x11-forged", &["cat"]);
    let running = start(&x, enabled_plan());
    // Any client may rewrite any window's properties: claim pid 1 and store a WM_CLASS of the wrong type.
    let (other, _) = x11rb::connect(Some(&x.display)).expect("connect");
    let id: u32 = window.parse().expect("xdotool prints a decimal window id");
    let net_wm_pid = other.intern_atom(false, b"_NET_WM_PID").expect("send").reply().expect("atom").atom;
    other.change_property32(PropMode::REPLACE, id, net_wm_pid, AtomEnum::CARDINAL, &[1]).expect("send");
    other.change_property32(PropMode::REPLACE, id, AtomEnum::WM_CLASS, AtomEnum::CARDINAL, &[7, 7]).expect("send");
    other.sync().expect("properties set");
    x.type_into(&window, "forged-props\n", 5);
    let seen = running.wait_for(Duration::from_secs(10), has_text("forged-props"));
    let Stopped { events, .. } = running.stop();
    let ev = seen.unwrap_or_else(|| panic!("the line still arrives: {events:?}"));
    let w = ev.keystroke.as_ref().and_then(|k| k.window.as_ref()).expect("window facts");
    assert_eq!(w.pid, Some(1), "window.pid is what the client claims");
    assert_eq!(w.class, None, "a WM_CLASS of the wrong type is no class");
    assert_eq!(ev.process.pid, term.pid(), "process.pid comes from the X server (X-Resource), not the claim");
    let lost = events.iter().filter(|e| e.domain == Domain::Sensor).count();
    assert_eq!(lost, 0, "no connection loss: {events:?}");
}

#[test]
fn the_users_filter_compares_the_owner_of_the_window_process() {
    if !tools_present() {
        return;
    }
    let x = Xvfb::start();
    let (_term, window) = x.xterm("rw-x11-users", &["cat"]);
    let me = nix::unistd::getuid().as_raw();
    let other = if me == 65534 { 65533 } else { 65534 };
    let excluded = start(&x, KeystrokePlan { uids: vec![other], ..enabled_plan() });
    let included = start(&x, KeystrokePlan { uids: vec![me], ..enabled_plan() });
    x.type_into(&window, "owner-filter\n", 5);
    let seen = included.wait_for(Duration::from_secs(10), has_text("owner-filter"));
    let Stopped { events, .. } = excluded.stop();
    included.stop();
    assert!(seen.is_some(), "a backend whose users include the xterm's owner sees the line");
    assert!(keystrokes(&events).is_empty(), "a backend for another user sees nothing: {:?}", keystrokes(&events));
}

#[test]
fn a_bad_display_or_disabled_capture_is_a_clear_error() {
    // Needs no X server at all: these are the refusals.
    let probe = KeystrokeX11::probe_display(Some(":4242"));
    assert!(!probe.available);
    assert!(probe.detail.contains(":4242"), "the probe names the display: {}", probe.detail);
    let bad = X11Config { display: Some(":4242".into()), plan: enabled_plan() };
    match KeystrokeX11::start(&bad) {
        Err(SourceError::Unsupported { what, .. }) => assert!(what.contains("cannot connect"), "{what}"),
        Err(e) => panic!("expected Unsupported, got {e}"),
        Ok(_) => panic!("started on a display that does not exist"),
    }
    let off = X11Config { display: Some(":4242".into()), plan: KeystrokePlan::default() };
    match KeystrokeX11::start(&off) {
        Err(e) => assert!(e.to_string().contains("keystroke capture is off"), "{e}"),
        Ok(_) => panic!("started although the policy does not enable keystrokes"),
    }
}

/// Types `RINGWATCH_X11_TYPING_SECS` (default 5) seconds of lines at about 100 keys/s and compares what was typed
/// with what was captured: every key must arrive. Prints events, keys and the test process's CPU time per
/// second of typing (backend + pipeline + this test's waiting).
#[test]
fn typing_at_100_keys_per_second_loses_no_key() {
    if !tools_present() {
        return;
    }
    let secs: u64 = std::env::var("RINGWATCH_X11_TYPING_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let x = Xvfb::start();
    let (_term, window) = x.xterm("rw-x11-rate", &["cat"]);
    // 100 keys/s for `secs`: lines of 49 characters + Return.
    let lines: Vec<String> =
        (0..secs * 2).map(|i| format!("line-{i:05} the quick brown fox jumps over the dog")).collect();
    assert!(lines.iter().all(|l| l.len() == 49));
    let typed: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let running = start(&x, enabled_plan());
    let cpu_before = cpu_time();
    let t0 = Instant::now();
    x.type_into(&window, &typed, 18);
    let typing = t0.elapsed();
    let last = lines.last().expect("at least one line").clone();
    let done = running.wait_for(Duration::from_secs(10), move |e| e.domain == Domain::Keystroke && text(e) == last);
    let cpu = cpu_time() - cpu_before;
    let Stopped { events, losses, .. } = running.stop();
    assert!(done.is_some(), "the last line arrived");
    let got: Vec<&str> = keystrokes(&events).into_iter().map(text).collect();
    assert_eq!(got, lines.iter().map(String::as_str).collect::<Vec<_>>(), "every line, exactly as typed");
    let keys: u32 = keystrokes(&events).iter().filter_map(|e| e.keystroke.as_ref()?.keys).sum();
    assert_eq!(keys as usize, typed.len(), "every key press counted");
    let (queue_full, lost, malformed) = losses.get(NAME).copied().unwrap_or_default();
    assert_eq!((queue_full, lost, malformed), (0, 0, 0));
    eprintln!(
        "x11 typing: {} keys in {:.1} s ({:.0} keys/s), {} events, 0 lost; CPU {:.3} s = {:.2}% of one core",
        typed.len(),
        typing.as_secs_f64(),
        typed.len() as f64 / typing.as_secs_f64(),
        got.len(),
        cpu.as_secs_f64(),
        cpu.as_secs_f64() * 100.0 / typing.as_secs_f64()
    );
}

/// User + system CPU time of this process so far.
fn cpu_time() -> Duration {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).expect("getrusage");
    let tv = |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000);
    tv(usage.user_time()) + tv(usage.system_time())
}
