//! The pipeline stage: decisions land on events, and kill rules kill real processes from user space.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringwatch_core::pipeline::Stage;
use ringwatch_core::proc_table::{ProcessTable, read_proc_process};
use ringwatch_core::{Action, Activity, Backend, Domain, Event, Mode, SourceKind};
use ringwatch_policy::{Policy, PolicyStage};

const POLICY: &str = r#"
rules:
  - id: sleep-ok-from-make
    domain: process
    match: { exe: /usr/bin/sleep, parent_exe: /usr/bin/make }
    action: observe
  - id: no-sleep
    domain: process
    match: { exe: [/usr/bin/sleep, /bin/sleep] }
    action: kill
  - id: watch-tmp
    domain: process
    match: { exe: /tmp/ }
    action: alert
  - id: seen-ls
    domain: process
    match: { exe: /usr/bin/ls }
    action: observe
"#;

fn stage() -> PolicyStage {
    PolicyStage::new(Arc::new(Policy::from_str(POLICY, "stage.yaml").expect("valid policy")))
}

fn exec_event(pid: u32, ppid: u32, exe: &str) -> Event {
    let mut ev =
        Event::new(Domain::Process, Activity::Exec, Backend { mode: Mode::User, source: SourceKind::ProcConnector });
    ev.process.pid = pid;
    ev.process.ppid = ppid;
    ev.process.exe = exe.to_owned();
    ev
}

/// A `sleep 30` child that is killed and reaped if the test fails before it does.
struct Sleeper(Child);

impl Sleeper {
    fn spawn() -> Sleeper {
        Sleeper(Command::new("sleep").arg("30").spawn().expect("spawn sleep"))
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// An exec event for this child as a backend would report it (start time included).
    fn exec_event(&self) -> Event {
        let proc = read_proc_process(self.pid()).expect("child is in /proc");
        let mut ev = exec_event(self.pid(), proc.ppid, &proc.exe);
        ev.process.start_ticks = proc.start_ticks;
        ev
    }

    /// The signal that ended the child, waiting up to 5 s; `None` if it is still running.
    fn wait_signal(&mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                return status.signal();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// The signal that ended the child within 200 ms, or `None` if it is still running (as expected).
    fn wait_signal_briefly(&mut self) -> Option<i32> {
        std::thread::sleep(Duration::from_millis(200));
        self.0.try_wait().expect("try_wait").and_then(|s| s.signal())
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_kill_rule_sigkills_the_process_and_reports_the_delay() {
    let mut child = Sleeper::spawn();
    let mut ev = child.exec_event();
    assert!(ev.process.exe.ends_with("/sleep"), "{}", ev.process.exe);
    let mut stage = stage();
    stage.apply(&mut ev, &ProcessTable::empty());
    assert_eq!(ev.action, Action::Killed);
    assert_eq!(ev.rule.as_deref(), Some("no-sleep"));
    let delay = ev.enforcement_delay_us.expect("delay recorded");
    assert!(delay < 5_000_000, "delay {delay} us");
    assert_eq!(child.wait_signal(), Some(nix::sys::signal::Signal::SIGKILL as i32), "child must die by SIGKILL");
    assert!(stage.hits().contains(&("no-sleep".to_owned(), 1)), "{:?}", stage.hits());
}

#[test]
fn an_exception_rule_uses_the_parent_from_the_process_table() {
    let mut child = Sleeper::spawn();
    let mut ev = child.exec_event();
    let mut table = ProcessTable::empty();
    let mut parent = Event::new(Domain::Process, Activity::Fork, ev.backend);
    parent.process.pid = ev.process.ppid;
    parent.process.exe = "/usr/bin/make".to_owned();
    table.observe(&parent);
    stage().apply(&mut ev, &table);
    assert_eq!((ev.action, ev.rule.as_deref()), (Action::Observed, Some("sleep-ok-from-make")));
    assert_eq!(child.wait_signal_briefly(), None, "the exception must not kill");
}

#[test]
fn a_reused_pid_is_not_killed() {
    let mut child = Sleeper::spawn();
    let mut ev = child.exec_event();
    ev.process.start_ticks += 1; // the event is about an older process that had the same pid
    stage().apply(&mut ev, &ProcessTable::empty());
    assert_eq!((ev.action, ev.rule.as_deref()), (Action::Alerted, Some("no-sleep")));
    assert_eq!(ev.enforcement_delay_us, None);
    assert_eq!(child.wait_signal_briefly(), None, "another process with the pid must survive");
}

#[test]
fn a_process_already_gone_is_reported_as_alerted() {
    let mut gone = Command::new("sleep").arg("0").spawn().expect("spawn");
    let pid = gone.id();
    gone.wait().expect("reaped");
    let mut ev = exec_event(pid, 1, "/usr/bin/sleep");
    ev.process.start_ticks = 1;
    stage().apply(&mut ev, &ProcessTable::empty());
    assert_eq!((ev.action, ev.rule.as_deref(), ev.enforcement_delay_us), (Action::Alerted, Some("no-sleep"), None));
}

#[test]
fn the_agent_never_kills_itself() {
    let mut ev = exec_event(std::process::id(), 1, "/usr/bin/sleep");
    stage().apply(&mut ev, &ProcessTable::empty());
    assert_eq!(ev.action, Action::Alerted);
}

#[test]
fn alert_and_observe_rules_tag_the_event() {
    let mut stage = stage();
    let mut ev = exec_event(999_999, 1, "/tmp/payload");
    stage.apply(&mut ev, &ProcessTable::empty());
    assert_eq!((ev.action, ev.rule.as_deref()), (Action::Alerted, Some("watch-tmp")));

    let mut ev = exec_event(999_999, 1, "/usr/bin/ls");
    stage.apply(&mut ev, &ProcessTable::empty());
    assert_eq!((ev.action, ev.rule.as_deref()), (Action::Observed, Some("seen-ls")));

    let mut ev = exec_event(999_999, 1, "/usr/bin/true");
    stage.apply(&mut ev, &ProcessTable::empty());
    assert_eq!((ev.action, ev.rule), (Action::Observed, None));
}

#[test]
fn events_a_backend_already_enforced_are_left_alone() {
    let mut ev = exec_event(999_999, 1, "/tmp/payload");
    ev.action = Action::Killed;
    ev.rule = Some("kernel-rule".to_owned());
    stage().apply(&mut ev, &ProcessTable::empty());
    assert_eq!((ev.action, ev.rule.as_deref()), (Action::Killed, Some("kernel-rule")));
}

#[test]
fn file_deny_rules_never_kill_and_decided_file_events_are_left_alone() {
    let policy = r#"
rules:
  - id: shadow
    domain: file
    match: { path: /etc/shadow, activity: [open, write] }
    action: deny
"#;
    let mut stage = PolicyStage::new(Arc::new(Policy::from_str(policy, "f.yaml").expect("valid policy")));
    let table = ProcessTable::empty();
    let sleeper = Sleeper::spawn();
    let file_event = |activity: Activity| {
        let mut ev = Event::new(Domain::File, activity, Backend { mode: Mode::Kernel, source: SourceKind::Fanotify });
        ev.process.pid = sleeper.pid();
        ev.file = Some(ringwatch_core::event::FileInfo { path: "/etc/shadow".into(), ..Default::default() });
        ev
    };
    // A monitor event the deny rule matches: the act was not refused, so it is reported, not killed.
    for activity in [Activity::Open, Activity::Write] {
        let mut ev = file_event(activity);
        stage.apply(&mut ev, &table);
        assert_eq!((ev.action, ev.rule.as_deref()), (Action::Alerted, Some("shadow")), "{activity}");
        assert_eq!(ev.enforcement_delay_us, None);
    }
    // An event the permission backend already decided keeps its decision.
    let mut ev = file_event(Activity::Open);
    ev.action = Action::Denied;
    ev.rule = Some("shadow".into());
    stage.apply(&mut ev, &table);
    assert_eq!(ev.action, Action::Denied);
    assert!(Path::new(&format!("/proc/{}", sleeper.pid())).exists(), "the process lives on");
}
