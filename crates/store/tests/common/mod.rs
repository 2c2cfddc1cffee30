//! Synthetic events for the store tests.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::PathBuf;

use ringwatch_core::event::{DnsInfo, FileInfo, KeystrokeInfo, NetworkInfo};
use ringwatch_core::{Action, Activity, Backend, Domain, Event, Mode, SourceKind, Timestamp};

/// A fresh directory and a store path inside a not-yet-existing subdirectory.
pub fn store_path() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("state/events.db");
    (dir, path)
}

/// A process event of `guid` (child of `parent`), with a unique id.
pub fn process(id: &str, activity: Activity, pid: u32, guid: &str, parent: Option<&str>, exe: &str) -> Event {
    let mut ev = Event::new(Domain::Process, activity, Backend { mode: Mode::Kernel, source: SourceKind::Ebpf });
    ev.id = id.to_owned();
    ev.host = "h1".into();
    ev.process.pid = pid;
    ev.process.ppid = 1;
    ev.process.guid = guid.to_owned();
    ev.process.parent_guid = parent.map(str::to_owned);
    ev.process.exe = exe.to_owned();
    ev.process.cmdline = vec![exe.to_owned(), "--flag".into(), format!("arg-{id}")];
    ev.process.user = Some("root".into());
    ev.process.start_time = Timestamp(1_700_000_000_123_456_789);
    ev
}

/// A file event by the process `guid`.
pub fn file(id: &str, guid: &str, pid: u32, path: &str) -> Event {
    let mut ev = process(id, Activity::Create, pid, guid, None, "/usr/bin/touch");
    ev.domain = Domain::File;
    ev.class_uid = ringwatch_core::event::class_uid_of(Domain::File, Activity::Create);
    ev.backend = Backend { mode: Mode::Kernel, source: SourceKind::Fanotify };
    ev.file = Some(FileInfo { path: path.to_owned(), mode: Some(0o644), ..FileInfo::default() });
    ev
}

/// A network connect by the process `guid`.
pub fn connect(id: &str, guid: &str, pid: u32, dst: &str, port: u16) -> Event {
    let mut ev = process(id, Activity::Connect, pid, guid, None, "/usr/bin/curl");
    ev.domain = Domain::Network;
    ev.class_uid = ringwatch_core::event::class_uid_of(Domain::Network, Activity::Connect);
    ev.network = Some(NetworkInfo {
        protocol: "tcp".into(),
        dst_ip: Some(dst.to_owned()),
        dst_port: Some(port),
        dns: None,
        ..NetworkInfo::default()
    });
    ev
}

/// A DNS event.
pub fn dns(id: &str, guid: &str, query: &str) -> Event {
    let mut ev = connect(id, guid, 7, "127.0.0.53", 53);
    ev.activity = Activity::Dns;
    ev.class_uid = ringwatch_core::event::class_uid_of(Domain::Network, Activity::Dns);
    if let Some(n) = ev.network.as_mut() {
        n.dns = Some(DnsInfo { query: query.to_owned(), answers: vec!["10.0.0.1".into()] });
    }
    ev
}

/// Keystrokes typed in the process `guid`.
pub fn keys(id: &str, guid: &str, text: &str) -> Event {
    let mut ev = process(id, Activity::Input, 9, guid, None, "/bin/bash");
    ev.domain = Domain::Keystroke;
    ev.class_uid = ringwatch_core::event::class_uid_of(Domain::Keystroke, Activity::Input);
    ev.keystroke = Some(KeystrokeInfo { text: text.to_owned(), tty: Some("pts/1".into()), ..Default::default() });
    ev
}

/// `ev` as an alert of `rule`.
pub fn alerted(mut ev: Event, rule: &str, action: Action) -> Event {
    ev.rule = Some(rule.to_owned());
    ev.action = action;
    ev
}

/// `n` file events with ids `{prefix}-{i}`, stamped at `time` + i ns, each with a ~`payload`-byte path.
pub fn bulk(prefix: &str, n: usize, time: Timestamp, payload: usize) -> Vec<Event> {
    (0..n)
        .map(|i| {
            let mut ev = file(&format!("{prefix}-{i}"), &format!("g-{prefix}-{}", i % 50), 100, "");
            ev.time = Timestamp(time.0 + i as u64);
            if let Some(f) = ev.file.as_mut() {
                f.path = format!("/data/{prefix}/{i}/{}", "x".repeat(payload));
            }
            ev
        })
        .collect()
}
