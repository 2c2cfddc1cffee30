//! Process trees: a process, its ancestors for context, and all its descendants, each with what it did.
//!
//! Processes are linked by guid, not pid: `parent_guid` on a child's events names its parent for the child's whole
//! life, and a guid is never reused, so a tree stays right across pid reuse and long retention windows. A pid is
//! resolved to the most recent process that had it. Each process carries its file, network and keystroke events and
//! any event the policy acted on (alerts), capped per process with a count of what was left out.

use std::collections::HashSet;
use std::str::FromStr;

use rusqlite::{OptionalExtension, Row, params};
use serde::Serialize;

use crate::error::StoreError;
use crate::store::Store;

/// Which process a tree is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessRef {
    /// The most recent process in the store with this pid.
    Pid(u32),
    /// Exactly this process.
    Guid(String),
}

impl FromStr for ProcessRef {
    type Err = std::convert::Infallible;

    /// All digits is a pid; anything else is a guid.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.parse::<u32>() {
            Ok(pid) => ProcessRef::Pid(pid),
            Err(_) => ProcessRef::Guid(s.to_owned()),
        })
    }
}

/// Limits that keep a tree readable (and bounded) for a busy process such as a shell or a build.
#[derive(Debug, Clone, Copy)]
pub struct TreeOptions {
    /// Events shown per process; the rest are counted in [`TreeNode::more_events`].
    pub events_per_process: usize,
    /// Processes in the whole tree; past it, [`ProcessTree::truncated`] is set.
    pub max_processes: usize,
}

impl Default for TreeOptions {
    fn default() -> Self {
        TreeOptions { events_per_process: 20, max_processes: 2000 }
    }
}

/// What the store knows about one process.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ProcessInfo {
    /// Stable process id.
    pub guid: String,
    /// Process id.
    pub pid: Option<u32>,
    /// Parent's pid.
    pub ppid: Option<u32>,
    /// Parent's guid.
    pub parent_guid: Option<String>,
    /// Executable of the latest exec (or of any event, when no exec was seen).
    pub exe: Option<String>,
    /// Arguments of the latest exec, joined by spaces.
    pub cmdline: Option<String>,
    /// User name.
    pub user: Option<String>,
    /// Real uid.
    pub uid: Option<u32>,
    /// Start time (RFC 3339): the process's start time when known, else its first event.
    pub start: Option<String>,
    /// Exit time (RFC 3339), when its exit was seen.
    pub exit: Option<String>,
    /// Exit status, for a normal exit.
    pub exit_code: Option<i32>,
    /// Terminating signal.
    pub exit_signal: Option<i32>,
    /// False for an ancestor known only from a child's `parent_guid`.
    pub in_store: bool,
}

/// One event shown under a process.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TreeEvent {
    /// Event id.
    pub id: String,
    /// RFC 3339 time.
    pub time: String,
    /// Domain.
    pub domain: String,
    /// Activity.
    pub activity: String,
    /// What the sensor did.
    pub action: String,
    /// Matching rule.
    pub rule: Option<String>,
    /// The policy acted on it or a rule matched.
    pub alert: bool,
    /// The gist: a path, a destination, a DNS name, typed text.
    pub detail: String,
}

/// A process with its events and children.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TreeNode {
    /// The process.
    pub process: ProcessInfo,
    /// Its file, network and keystroke events and alerts, oldest first, at most `events_per_process`.
    pub events: Vec<TreeEvent>,
    /// How many more such events the store has for it.
    pub more_events: u64,
    /// Its children, by first appearance.
    pub children: Vec<TreeNode>,
}

/// A process tree.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProcessTree {
    /// The requested process's ancestors, oldest first (context only: no events, no other children).
    pub ancestors: Vec<ProcessInfo>,
    /// The requested process and its descendants.
    pub root: TreeNode,
    /// True when `max_processes` cut the tree.
    pub truncated: bool,
}

/// Most ancestors walked (a cycle in bad data must not loop).
const MAX_ANCESTORS: usize = 64;

/// Which events a process shows: other domains' activity and every alert (including process alerts such as a
/// killed exec). The alert condition is the `events_alerts` index's.
const SHOWN_EVENTS: &str = "guid = ?1 AND (domain IN ('file', 'network', 'keystroke') \
                            OR action <> 'observed' OR rule IS NOT NULL)";

impl Store {
    /// The tree of `target`, or [`StoreError::UnknownProcess`] when the store has no such process.
    pub fn process_tree(&self, target: &ProcessRef, opts: TreeOptions) -> Result<ProcessTree, StoreError> {
        let sqlite = |e| StoreError::from_sqlite(&self.path, "building the process tree", e);
        let guid = self.resolve(target).map_err(sqlite)?.ok_or_else(|| StoreError::UnknownProcess {
            path: self.path.clone(),
            what: match target {
                ProcessRef::Pid(pid) => format!("pid {pid}"),
                ProcessRef::Guid(g) => format!("guid {g}"),
            },
        })?;
        let root_info = self.process_info(&guid).map_err(sqlite)?;
        let ancestors = self.ancestors(&root_info).map_err(sqlite)?;
        let mut seen = HashSet::from([guid]);
        let mut budget = opts.max_processes.saturating_sub(1);
        let mut truncated = false;
        let root = self.subtree(root_info, opts, &mut seen, &mut budget, &mut truncated).map_err(sqlite)?;
        Ok(ProcessTree { ancestors, root, truncated })
    }

    fn resolve(&self, target: &ProcessRef) -> rusqlite::Result<Option<String>> {
        match target {
            ProcessRef::Pid(pid) => self
                .conn
                .query_row(
                    "SELECT guid FROM events WHERE pid = ?1 AND guid IS NOT NULL AND domain <> 'sensor' \
                     ORDER BY time_ns DESC LIMIT 1",
                    [pid],
                    |r| r.get(0),
                )
                .optional(),
            ProcessRef::Guid(g) => {
                self.conn.query_row("SELECT guid FROM events WHERE guid = ?1 LIMIT 1", [g], |r| r.get(0)).optional()
            }
        }
    }

    /// Folds a process's own events (fork, exec, exit, or any event when those are missing) into one summary.
    fn process_info(&self, guid: &str) -> rusqlite::Result<ProcessInfo> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT activity, time, pid, ppid, parent_guid, exe, cmdline, user, uid, start_time, exit_code, \
             exit_signal FROM events WHERE guid = ?1 ORDER BY domain <> 'process', time_ns LIMIT 64",
        )?;
        let mut info = ProcessInfo { guid: guid.to_owned(), in_store: true, ..ProcessInfo::default() };
        let mut rows = stmt.query([guid])?;
        while let Some(row) = rows.next()? {
            fold_process_row(&mut info, row)?;
        }
        Ok(info)
    }

    fn ancestors(&self, of: &ProcessInfo) -> rusqlite::Result<Vec<ProcessInfo>> {
        let mut chain = Vec::new();
        let mut seen = HashSet::from([of.guid.clone()]);
        let (mut parent, mut ppid) = (of.parent_guid.clone(), of.ppid);
        while let Some(guid) = parent.take() {
            if chain.len() >= MAX_ANCESTORS || !seen.insert(guid.clone()) {
                break;
            }
            let known: Option<String> = self
                .conn
                .query_row("SELECT guid FROM events WHERE guid = ?1 LIMIT 1", [&guid], |r| r.get(0))
                .optional()?;
            let info = match known {
                Some(_) => self.process_info(&guid)?,
                None => ProcessInfo { guid, pid: ppid, ..ProcessInfo::default() },
            };
            (parent, ppid) = (info.parent_guid.clone(), info.ppid);
            chain.push(info);
        }
        chain.reverse();
        Ok(chain)
    }

    fn subtree(
        &self,
        info: ProcessInfo,
        opts: TreeOptions,
        seen: &mut HashSet<String>,
        budget: &mut usize,
        truncated: &mut bool,
    ) -> rusqlite::Result<TreeNode> {
        let (events, more_events) = self.shown_events(&info.guid, opts.events_per_process)?;
        let mut children = Vec::new();
        for child in self.children(&info.guid)? {
            if !seen.insert(child.clone()) {
                continue;
            }
            if *budget == 0 {
                *truncated = true;
                break;
            }
            *budget -= 1;
            let child_info = self.process_info(&child)?;
            children.push(self.subtree(child_info, opts, seen, budget, truncated)?);
        }
        Ok(TreeNode { process: info, events, more_events, children })
    }

    fn children(&self, guid: &str) -> rusqlite::Result<Vec<String>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT guid FROM events WHERE parent_guid = ?1 AND guid IS NOT NULL GROUP BY guid ORDER BY min(time_ns)",
        )?;
        stmt.query_map([guid], |r| r.get(0))?.collect()
    }

    fn shown_events(&self, guid: &str, cap: usize) -> rusqlite::Result<(Vec<TreeEvent>, u64)> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT id, time, domain, activity, action, rule, path, new_path, protocol, dst_ip, dst_port, dns_query, \
             text, redacted, exe, cmdline FROM events WHERE {SHOWN_EVENTS} ORDER BY time_ns LIMIT ?2"
        ))?;
        let limit = i64::try_from(cap).unwrap_or(i64::MAX);
        let events: Vec<TreeEvent> = stmt.query_map(params![guid, limit], tree_event)?.collect::<Result<_, _>>()?;
        let more = if events.len() < cap {
            0
        } else {
            let total: i64 = self.conn.query_row(
                &format!("SELECT count(*) FROM events WHERE {SHOWN_EVENTS}"),
                params![guid],
                |r| r.get(0),
            )?;
            (total as u64).saturating_sub(events.len() as u64)
        };
        Ok((events, more))
    }
}

/// Adds one of the process's events (process-domain rows first, oldest first) to its summary.
fn fold_process_row(info: &mut ProcessInfo, row: &Row<'_>) -> rusqlite::Result<()> {
    let activity: String = row.get("activity")?;
    let time: String = row.get("time")?;
    keep(&mut info.pid, row.get("pid")?);
    keep(&mut info.ppid, row.get("ppid")?);
    keep(&mut info.parent_guid, row.get("parent_guid")?);
    keep(&mut info.user, row.get("user")?);
    keep(&mut info.uid, row.get("uid")?);
    keep(&mut info.start, row.get("start_time")?);
    keep(&mut info.start, Some(time.clone()));
    match activity.as_str() {
        "exec" => {
            // The latest exec names what the process is now.
            info.exe = row.get("exe")?;
            info.cmdline = row.get("cmdline")?;
        }
        "exit" => {
            info.exit = Some(time);
            info.exit_code = row.get("exit_code")?;
            info.exit_signal = row.get("exit_signal")?;
        }
        _ => {
            keep(&mut info.exe, row.get("exe")?);
            keep(&mut info.cmdline, row.get("cmdline")?);
        }
    }
    Ok(())
}

/// Fills `slot` unless an earlier row did.
fn keep<T>(slot: &mut Option<T>, value: Option<T>) {
    if slot.is_none() {
        *slot = value;
    }
}

fn tree_event(row: &Row<'_>) -> rusqlite::Result<TreeEvent> {
    let domain: String = row.get("domain")?;
    let action: String = row.get("action")?;
    let rule: Option<String> = row.get("rule")?;
    let text = |name: &str| -> rusqlite::Result<String> { Ok(row.get::<_, Option<String>>(name)?.unwrap_or_default()) };
    let detail = match domain.as_str() {
        "file" => match row.get::<_, Option<String>>("new_path")? {
            Some(to) => format!("{} -> {to}", text("path")?),
            None => text("path")?,
        },
        "network" => match row.get::<_, Option<String>>("dns_query")? {
            Some(q) => q,
            None => {
                let port = row.get::<_, Option<i64>>("dst_port")?.map_or_else(String::new, |p| format!(":{p}"));
                format!("{} {}{port}", text("protocol")?, text("dst_ip")?)
            }
        },
        "keystroke" if row.get::<_, Option<bool>>("redacted")? == Some(true) => "(redacted)".to_owned(),
        "keystroke" => format!("{:?}", text("text")?),
        _ => {
            let cmdline = text("cmdline")?;
            if cmdline.is_empty() { text("exe")? } else { cmdline }
        }
    };
    Ok(TreeEvent {
        id: row.get("id")?,
        time: row.get("time")?,
        activity: row.get("activity")?,
        alert: action != "observed" || rule.is_some(),
        domain,
        action,
        rule,
        detail,
    })
}
