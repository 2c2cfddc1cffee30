//! Process trees from synthetic events with known parent/child links.

mod common;

use ringwatch_core::{Action, Activity, Event, Timestamp};
use ringwatch_store::{ProcessRef, Store, StoreError, StoreOptions, TreeNode, TreeOptions};

use common::{alerted, connect, file, keys, process, store_path};

/// init(g1) -> bash(g10) -> { curl(g20), sh(g21) -> evil(g30, killed) }; an older, exited process also had pid 20.
fn family() -> Vec<Event> {
    let mut events = vec![
        process("old20", Activity::Exec, 20, "g-old-20", Some("g1"), "/usr/bin/old"),
        process("i1", Activity::Exec, 1, "g1", None, "/sbin/init"),
        process("b1", Activity::Fork, 10, "g10", Some("g1"), "/sbin/init"),
        process("b2", Activity::Exec, 10, "g10", Some("g1"), "/usr/bin/bash"),
        keys("b3", "g10", "curl example.org\r"),
        process("c1", Activity::Fork, 20, "g20", Some("g10"), "/usr/bin/bash"),
        process("c2", Activity::Exec, 20, "g20", Some("g10"), "/usr/bin/curl"),
        connect("c3", "g20", 20, "93.184.216.34", 443),
        process("s1", Activity::Exec, 21, "g21", Some("g10"), "/bin/sh"),
        file("s2", "g21", 21, "/tmp/evil"),
        file("s3", "g21", 21, "/tmp/evil2"),
        file("s4", "g21", 21, "/tmp/evil3"),
        alerted(process("e1", Activity::Exec, 30, "g30", Some("g21"), "/tmp/evil"), "no-tmp-exec", Action::Killed),
        process("e2", Activity::Exit, 30, "g30", Some("g21"), "/tmp/evil"),
        process("c4", Activity::Exit, 20, "g20", Some("g10"), "/usr/bin/curl"),
    ];
    for (i, ev) in events.iter_mut().enumerate() {
        ev.time = Timestamp(1_000_000_000_000 + i as u64 * 1_000_000);
        ev.process.parent_guid = ev.process.parent_guid.clone().or_else(|| parent_of(&ev.process.guid));
    }
    events[13].process.exit_signal = Some(9);
    events[14].process.exit_code = Some(0);
    events
}

fn parent_of(guid: &str) -> Option<String> {
    match guid {
        "g10" => Some("g1".into()),
        "g20" | "g21" => Some("g10".into()),
        _ => None,
    }
}

fn store_with_family() -> (tempfile::TempDir, Store) {
    let (dir, path) = store_path();
    let mut store = Store::open(&path, &StoreOptions::default()).expect("open");
    store.insert(&family()).expect("insert");
    drop(store);
    (dir, Store::open_read_only(&path).expect("reader"))
}

fn guids(node: &TreeNode) -> Vec<&str> {
    node.children.iter().map(|c| c.process.guid.as_str()).collect()
}

#[test]
fn tree_of_a_pid_has_ancestors_descendants_and_their_events() {
    let (_dir, store) = store_with_family();
    let tree = store.process_tree(&ProcessRef::Pid(10), TreeOptions::default()).expect("tree");
    let ancestors: Vec<&str> = tree.ancestors.iter().map(|a| a.guid.as_str()).collect();
    assert_eq!(ancestors, ["g1"]);
    let bash = &tree.root;
    assert_eq!(bash.process.guid, "g10");
    assert_eq!(bash.process.exe.as_deref(), Some("/usr/bin/bash"), "the exec names the process, not the fork");
    assert_eq!(bash.events.len(), 1);
    assert_eq!(bash.events[0].domain, "keystroke");
    assert_eq!(guids(bash), ["g20", "g21"]);
    let curl = &bash.children[0];
    assert_eq!(curl.process.cmdline.as_deref(), Some("/usr/bin/curl --flag arg-c2"));
    assert_eq!(curl.process.exit_code, Some(0));
    assert!(curl.process.exit.is_some());
    assert_eq!(curl.events[0].detail, "tcp 93.184.216.34:443");
    let sh = &bash.children[1];
    assert_eq!(guids(sh), ["g30"]);
    let evil = &sh.children[0];
    assert_eq!(evil.process.exit_signal, Some(9));
    assert_eq!(evil.events.len(), 1, "the killed exec is shown as an alert");
    assert!(evil.events[0].alert);
    assert_eq!(evil.events[0].rule.as_deref(), Some("no-tmp-exec"));
    assert!(!tree.truncated);
}

#[test]
fn a_pid_means_its_most_recent_process_and_a_guid_is_exact() {
    let (_dir, store) = store_with_family();
    let by_pid = store.process_tree(&"20".parse().expect("ref"), TreeOptions::default()).expect("tree");
    assert_eq!(by_pid.root.process.guid, "g20");
    let by_guid = store.process_tree(&"g-old-20".parse().expect("ref"), TreeOptions::default()).expect("tree");
    assert_eq!(by_guid.root.process.exe.as_deref(), Some("/usr/bin/old"));
}

#[test]
fn events_per_process_are_capped_with_a_count_of_the_rest() {
    let (_dir, store) = store_with_family();
    let opts = TreeOptions { events_per_process: 2, ..TreeOptions::default() };
    let tree = store.process_tree(&ProcessRef::Guid("g21".into()), opts).expect("tree");
    assert_eq!(tree.root.events.len(), 2);
    assert_eq!(tree.root.more_events, 1);
    let ancestors: Vec<&str> = tree.ancestors.iter().map(|a| a.guid.as_str()).collect();
    assert_eq!(ancestors, ["g1", "g10"], "oldest first");
}

#[test]
fn an_unknown_process_is_a_clear_error() {
    let (_dir, store) = store_with_family();
    let err = store.process_tree(&ProcessRef::Pid(4242), TreeOptions::default()).expect_err("unknown");
    assert!(matches!(err, StoreError::UnknownProcess { .. }), "{err:?}");
    assert!(err.to_string().contains("pid 4242"), "{err}");
}

#[test]
fn the_process_cap_cuts_the_tree_and_says_so() {
    let (_dir, store) = store_with_family();
    let opts = TreeOptions { max_processes: 2, ..TreeOptions::default() };
    let tree = store.process_tree(&ProcessRef::Guid("g10".into()), opts).expect("tree");
    assert!(tree.truncated);
    assert_eq!(guids(&tree.root), ["g20"]);
}
