//! `ringwatch tree`: a process's family from the local store, and what each member did.
//!
//! The requested process (a pid means its most recent process in the store; a guid is exact) is shown under its
//! ancestors, with all its descendants below it. Under each process: its file, network and keystroke events and
//! every event the policy acted on. Alerts are red on a terminal and marked `!` otherwise, so they survive a pipe
//! into a ticket. `--json` prints the same tree as one JSON document.

use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use ringwatch_store::{ProcessInfo, ProcessRef, Store, TreeEvent, TreeNode, TreeOptions};

const AFTER_HELP: &str = "\
Examples:
  ringwatch tree 4242                          the latest process with pid 4242, its ancestors and descendants
  ringwatch tree 8c1f2a3b-1a2b3c-4242          exactly this process (guid from `ringwatch query`)
  ringwatch tree --events 100 4242             more events per process
  ringwatch tree --json 4242 | jq '.root.children[].process.cmdline'
Find a pid or guid to start from:
  ringwatch query \"SELECT time, pid, guid, cmdline FROM processes WHERE activity = 'exec' AND exe LIKE '%curl%'\"
  ringwatch query \"SELECT time, pid, guid, rule, action FROM alerts ORDER BY time_ns DESC LIMIT 20\"";

/// Options of `ringwatch tree`.
#[derive(Args, Debug)]
#[command(after_help = AFTER_HELP)]
pub struct TreeArgs {
    /// The store to read.
    #[arg(long, default_value = ringwatch_store::DEFAULT_STORE_PATH)]
    pub store: PathBuf,
    /// Print the tree as JSON.
    #[arg(long)]
    pub json: bool,
    /// Events shown under each process (the rest are counted).
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub events: usize,
    /// A pid (its most recent process) or a process guid.
    #[arg(value_name = "PID|GUID")]
    pub process: String,
}

/// Prints a tree.
pub fn run(args: TreeArgs) -> Result<()> {
    let store = Store::open_read_only(&args.store)?;
    let target: ProcessRef = args.process.parse()?;
    let opts = TreeOptions { events_per_process: args.events, ..TreeOptions::default() };
    let tree = store.process_tree(&target, opts)?;
    let stdout = io::stdout();
    let style = Style { color: stdout.is_terminal() };
    let mut out = BufWriter::new(stdout.lock());
    if args.json {
        serde_json::to_writer_pretty(&mut out, &tree)?;
        writeln!(out)?;
    } else {
        let mut prefix = String::new();
        for (depth, ancestor) in tree.ancestors.iter().enumerate() {
            let connector = if depth == 0 { "" } else { "└─ " };
            writeln!(out, "{prefix}{connector}{}", style.dim(&process_line(ancestor)))?;
            if depth > 0 {
                prefix.push_str("   ");
            }
        }
        let connector = if tree.ancestors.is_empty() { "" } else { "└─ " };
        render(&mut out, &tree.root, &prefix, connector, "   ", &style)?;
        if tree.truncated {
            writeln!(out, "(tree cut at {} processes)", opts.max_processes)?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Writes `node` and its subtree; `prefix` + `connector` start the process line, `prefix` + `below` its events
/// and children.
fn render(
    out: &mut impl Write,
    node: &TreeNode,
    prefix: &str,
    connector: &str,
    below: &str,
    style: &Style,
) -> io::Result<()> {
    writeln!(out, "{prefix}{connector}{}", process_line(&node.process))?;
    let inner = if connector.is_empty() { prefix.to_owned() } else { format!("{prefix}{below}") };
    let bar = if node.children.is_empty() { "   " } else { "│  " };
    for ev in &node.events {
        writeln!(out, "{inner}{bar}  {}", style.event(ev))?;
    }
    if node.more_events > 0 {
        writeln!(
            out,
            "{inner}{bar}  … {} more (ringwatch query \"SELECT * FROM events WHERE guid = '{}'\")",
            node.more_events, node.process.guid
        )?;
    }
    for (i, child) in node.children.iter().enumerate() {
        let last = i + 1 == node.children.len();
        let (connector, below) = if last { ("└─ ", "   ") } else { ("├─ ", "│  ") };
        render(out, child, &inner, connector, below, style)?;
    }
    Ok(())
}

/// `pid command line  [user]  exited 0`, or what is known of it.
fn process_line(p: &ProcessInfo) -> String {
    let pid = p.pid.map_or_else(|| "?".to_owned(), |pid| pid.to_string());
    let what = p.cmdline.as_deref().or(p.exe.as_deref()).unwrap_or("(not in store)");
    let mut line = format!("{pid} {}", printable(what));
    if let Some(user) = &p.user {
        line.push_str(&format!("  [{user}]"));
    }
    match (p.exit_code, p.exit_signal) {
        (Some(code), _) => line.push_str(&format!("  exit {code}")),
        (None, Some(sig)) => line.push_str(&format!("  killed by signal {sig}")),
        (None, None) => {}
    }
    line
}

/// Control characters (typed keys, odd file names) shown escaped so they cannot garble the terminal.
fn printable(text: &str) -> String {
    text.chars().flat_map(|c| if c.is_control() { c.escape_default().collect::<Vec<_>>() } else { vec![c] }).collect()
}

/// `HH:MM:SS.mmm` of an RFC 3339 time.
fn clock(time: &str) -> &str {
    time.get(11..23).unwrap_or(time)
}

/// Terminal styling, or plain text with markers when piped.
struct Style {
    color: bool,
}

impl Style {
    fn dim(&self, text: &str) -> String {
        if self.color { format!("\x1b[2m{text}\x1b[0m") } else { text.to_owned() }
    }

    fn event(&self, ev: &TreeEvent) -> String {
        let rule = ev.rule.as_ref().map_or_else(String::new, |r| format!(" rule={r}"));
        let action = if ev.action == "observed" { String::new() } else { format!(" {}", ev.action.to_uppercase()) };
        let text = format!("{} {} {} {}{action}{rule}", clock(&ev.time), ev.domain, ev.activity, printable(&ev.detail));
        match (ev.alert, self.color) {
            (true, true) => format!("\x1b[1;31m! {text}\x1b[0m"),
            (true, false) => format!("! {text}"),
            (false, _) => format!("· {text}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(pid: u32, cmd: &str, events: Vec<TreeEvent>, children: Vec<TreeNode>) -> TreeNode {
        TreeNode {
            process: ProcessInfo {
                guid: format!("g{pid}"),
                pid: Some(pid),
                cmdline: Some(cmd.into()),
                user: Some("root".into()),
                in_store: true,
                ..ProcessInfo::default()
            },
            events,
            more_events: 0,
            children,
        }
    }

    fn event(detail: &str, alert: bool) -> TreeEvent {
        TreeEvent {
            id: "x".into(),
            time: "2026-11-26T07:23:32.123456789Z".into(),
            domain: "file".into(),
            activity: "create".into(),
            action: if alert { "denied".into() } else { "observed".into() },
            rule: alert.then(|| "r1".into()),
            alert,
            detail: detail.into(),
        }
    }

    #[test]
    fn plain_rendering_draws_the_tree_and_marks_alerts() {
        let tree = node(
            10,
            "sh -c x",
            vec![event("/tmp/f", false)],
            vec![node(11, "true", vec![], vec![]), node(12, "echo hi", vec![event("/etc/shadow", true)], vec![])],
        );
        let mut out = Vec::new();
        render(&mut out, &tree, "", "", "   ", &Style { color: false }).expect("render");
        let text = String::from_utf8(out).expect("utf8");
        assert_eq!(
            text,
            "10 sh -c x  [root]\n\
             │    · 07:23:32.123 file create /tmp/f\n\
             ├─ 11 true  [root]\n\
             └─ 12 echo hi  [root]\n\
             \x20       ! 07:23:32.123 file create /etc/shadow DENIED rule=r1\n"
        );
    }
}
