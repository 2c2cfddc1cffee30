//! [`Policy`]: the loaded rules, the [`Decider`] that evaluates them (first match in file order wins), and the
//! compiled per-backend forms (the kernel's [`ExecKillList`]).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use ringwatch_core::compiled::ExecKillList;
use ringwatch_core::{Decider, Decision, Event};

use crate::compile;
use crate::error::PolicyError;
use crate::pattern::PathPattern;
use crate::rule::{Enforcement, MatchContext, Rule};
use crate::users::UserDb;

/// A loaded, validated policy.
///
/// Rules are evaluated in file order and the first match decides, so an `observe` rule placed before a `kill`
/// rule is an exception to it. Hit counters live here (atomics, so every caller of [`Decider::decide`] counts:
/// the pipeline stage and synchronous hook verdicts alike) and are read with [`Policy::hits`].
#[derive(Debug)]
pub struct Policy {
    origin: String,
    rules: Vec<Rule>,
    hits: Vec<AtomicU64>,
    kill_list: ExecKillList,
}

impl Default for Policy {
    fn default() -> Self {
        Policy::observe_only()
    }
}

impl Policy {
    /// Reads and compiles a policy file; user names are resolved against /etc/passwd.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| PolicyError::Io { path: path.to_path_buf(), source })?;
        Policy::from_str(&text, &path.display().to_string())
    }

    /// Compiles policy text; `origin` names it in error messages (normally the file path). User names are resolved
    /// against /etc/passwd.
    pub fn from_str(text: &str, origin: &str) -> Result<Policy, PolicyError> {
        Policy::from_str_with_users(text, origin, &UserDb::system())
    }

    /// Like [`Policy::from_str`], resolving user names against `users`.
    pub fn from_str_with_users(text: &str, origin: &str, users: &UserDb) -> Result<Policy, PolicyError> {
        let rules = compile::compile(text, origin, users).map_err(PolicyError::Invalid)?;
        Ok(Policy::from_rules(origin, rules))
    }

    /// The default policy: no rules, every event observed.
    pub fn observe_only() -> Policy {
        Policy::from_rules("<observe-only>", Vec::new())
    }

    fn from_rules(origin: &str, mut rules: Vec<Rule>) -> Policy {
        for i in 0..rules.len() {
            rules[i].enforcement = enforcement_of(&rules[..i], &rules[i]);
        }
        let kill_list = build_kill_list(&rules);
        let hits = rules.iter().map(|_| AtomicU64::new(0)).collect();
        Policy { origin: origin.to_owned(), rules, hits, kill_list }
    }

    /// Where the policy came from (the path given to [`Policy::load`], or the `origin` given to
    /// [`Policy::from_str`]).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The rules, in file order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// True when the policy has no rules.
    pub fn is_observe_only(&self) -> bool {
        self.rules.is_empty()
    }

    /// The first rule that matches `ev`, counting the hit. `parent_exe` is the parent's executable, when known.
    pub fn evaluate(&self, ev: &Event, parent_exe: Option<&str>) -> Option<&Rule> {
        let mut cx = MatchContext::new(ev, parent_exe);
        let (i, rule) = self.rules.iter().enumerate().find(|(_, r)| r.matches_in(&mut cx))?;
        if let Some(h) = self.hits.get(i) {
            h.fetch_add(1, Ordering::Relaxed);
        }
        Some(rule)
    }

    /// The kill rules the kernel process backend enforces by itself at exec: rules whose only condition is `exe`
    /// with exact paths and directory prefixes, that apply to exec only, and that no earlier non-kill rule can
    /// shadow (see [`Enforcement`]).
    pub fn exec_kill_list(&self) -> ExecKillList {
        self.kill_list.clone()
    }

    /// True when some kill/deny rule can only be enforced from user space, after the process started.
    pub fn needs_user_space_enforcement(&self) -> bool {
        self.rules.iter().any(|r| matches!(r.enforcement, Enforcement::UserSpace { .. }))
    }

    /// How often each rule matched since load, in rule order.
    pub fn hits(&self) -> Vec<(String, u64)> {
        self.rules.iter().zip(&self.hits).map(|(r, h)| (r.id.clone(), h.load(Ordering::Relaxed))).collect()
    }
}

impl Decider for Policy {
    fn decide(&self, ev: &Event, parent_exe: Option<&str>) -> Decision {
        match self.evaluate(ev, parent_exe) {
            Some(rule) => Decision { action: rule.action.event_action(rule.domain), rule: Some(rule.id.clone()) },
            None => Decision::default(),
        }
    }
}

/// Where `rule` is enforced, given the rules before it.
///
/// A kill rule goes to the kernel only if the kernel's answer is the policy's answer for every exec it matches:
/// its whole condition is exact paths / directory prefixes of `exe`, and no earlier rule with another action (an
/// `observe` exception, an `alert`) can match one of those executables first. Earlier rules are judged only by
/// their `exe` patterns (their other conditions could hold), so an earlier rule without `exe` shadows everything.
fn enforcement_of(earlier: &[Rule], rule: &Rule) -> Enforcement {
    if !rule.action.is_enforcing() {
        return Enforcement::NotEnforcing;
    }
    let user = |reason: String| Enforcement::UserSpace { reason };
    if rule.activities.iter().any(|a| *a != ringwatch_core::Activity::Exec) {
        return user("it applies to fork/exit events; the kernel list acts at exec only".to_owned());
    }
    let others = rule.when.non_exe_conditions();
    if !others.is_empty() {
        return user(format!("it has a `{}` condition; the kernel matches `exe` only", others.join("`, `")));
    }
    if rule.unless.is_some() {
        return user("it has a `not` block; the kernel matches `exe` only".to_owned());
    }
    let Some(exe) = &rule.when.exe else {
        return user("it has no `exe` condition".to_owned());
    };
    if let Some(glob) = exe.patterns().iter().find(|p| !p.is_kernel_enforceable()) {
        return user(format!("`exe` has the glob `{glob}`; the kernel matches exact paths and directory prefixes"));
    }
    for e in earlier.iter().filter(|e| !e.action.is_enforcing() && e.applies_to_exec()) {
        let overlaps = match &e.when.exe {
            None => true,
            Some(set) => exe.patterns().iter().any(|p| match p {
                PathPattern::Exact(path) => set.is_match(path),
                PathPattern::DirPrefix(dir) => set.may_match_under(dir),
                PathPattern::Glob(_) => true,
            }),
        };
        if overlaps {
            return user(format!(
                "the earlier `{}` rule `{}` (line {}) may match the same executables first",
                e.action, e.id, e.line
            ));
        }
    }
    Enforcement::KernelAtExec
}

fn build_kill_list(rules: &[Rule]) -> ExecKillList {
    let mut list = ExecKillList::default();
    for rule in rules.iter().filter(|r| r.enforcement == Enforcement::KernelAtExec) {
        let Some(exe) = &rule.when.exe else { continue };
        let Ok(index) = u32::try_from(list.rule_ids.len()) else { break };
        list.rule_ids.push(rule.id.clone());
        for p in exe.patterns() {
            match p {
                PathPattern::Exact(path) => list.exact.push((path.clone(), index)),
                PathPattern::DirPrefix(dir) => list.dir_prefixes.push((dir.clone(), index)),
                PathPattern::Glob(_) => {}
            }
        }
    }
    list
}

#[cfg(test)]
mod tests {
    use ringwatch_core::{Action, Activity, Backend, Domain, Mode, SourceKind};

    use super::*;

    fn users() -> UserDb {
        UserDb::from_passwd("root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/sh\n")
    }

    /// A policy from rules written as `(id, match, action)`.
    fn policy(rules: &[(&str, &str, &str)]) -> Policy {
        let mut text = String::from("rules:\n");
        for (id, m, action) in rules {
            text.push_str(&format!("  - id: {id}\n    domain: process\n    match: {m}\n    action: {action}\n"));
        }
        Policy::from_str_with_users(&text, "t.yaml", &users()).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    fn exec(exe: &str, argv: &[&str], uid: u32) -> Event {
        let mut ev =
            Event::new(Domain::Process, Activity::Exec, Backend { mode: Mode::Kernel, source: SourceKind::Ebpf });
        ev.process.pid = 4242;
        ev.process.exe = exe.to_owned();
        ev.process.cmdline = argv.iter().map(|s| (*s).to_owned()).collect();
        ev.process.uid = uid;
        ev
    }

    fn decided(p: &Policy, ev: &Event, parent: Option<&str>) -> (Action, Option<String>) {
        let d = p.decide(ev, parent);
        (d.action, d.rule)
    }

    fn killed(id: &str) -> (Action, Option<String>) {
        (Action::Killed, Some(id.to_owned()))
    }

    const OBSERVED: (Action, Option<String>) = (Action::Observed, None);

    #[test]
    fn exact_paths_match_only_themselves() {
        let p = policy(&[("nc", "{ exe: /usr/bin/nc }", "kill")]);
        assert_eq!(decided(&p, &exec("/usr/bin/nc", &[], 0), None), killed("nc"));
        assert_eq!(decided(&p, &exec("/usr/bin/ncat", &[], 0), None), OBSERVED);
    }

    #[test]
    fn both_prefix_spellings_match_everything_below() {
        for m in ["{ exe: /tmp/ }", "{ exe: \"/tmp/**\" }"] {
            let p = policy(&[("tmp", m, "kill")]);
            assert_eq!(decided(&p, &exec("/tmp/x", &[], 0), None), killed("tmp"), "{m}");
            assert_eq!(decided(&p, &exec("/tmp/a/b/c", &[], 0), None), killed("tmp"), "{m}");
            assert_eq!(decided(&p, &exec("/tmpx/y", &[], 0), None), OBSERVED, "{m}");
        }
    }

    #[test]
    fn globs_match() {
        let p = policy(&[("home-bin", "{ exe: [\"/home/*/bin/*\", \"**/nc*\"] }", "alert")]);
        let alerted = (Action::Alerted, Some("home-bin".to_owned()));
        assert_eq!(decided(&p, &exec("/home/alice/bin/tool", &[], 0), None), alerted);
        assert_eq!(decided(&p, &exec("/opt/x/ncat", &[], 0), None), alerted);
        assert_eq!(decided(&p, &exec("/home/alice/bin/sub/tool", &[], 0), None), OBSERVED);
    }

    #[test]
    fn cmdline_regex_searches_argv_joined_with_spaces() {
        let p = policy(&[("pipe", r"{ cmdline: 'curl .*\| *sh' }", "alert")]);
        let hit = exec("/bin/sh", &["sh", "-c", "curl -s http://x | sh"], 0);
        assert_eq!(decided(&p, &hit, None).0, Action::Alerted);
        assert_eq!(decided(&p, &exec("/bin/sh", &["sh", "-c", "curl -s http://x"], 0), None), OBSERVED);
        assert_eq!(decided(&p, &exec("/bin/sh", &[], 0), None), OBSERVED);
    }

    #[test]
    fn parent_exe_needs_a_known_parent() {
        let p = policy(&[("ssh-shell", "{ exe: /bin/bash, parent_exe: /usr/sbin/sshd }", "alert")]);
        let ev = exec("/bin/bash", &[], 0);
        assert_eq!(decided(&p, &ev, Some("/usr/sbin/sshd")).0, Action::Alerted);
        assert_eq!(decided(&p, &ev, Some("/usr/bin/tmux")), OBSERVED);
        assert_eq!(decided(&p, &ev, None), OBSERVED);
        assert_eq!(decided(&p, &ev, Some("")), OBSERVED);
    }

    #[test]
    fn user_names_and_uids_match_the_real_uid() {
        let p = policy(&[("alice", "{ user: alice }", "alert"), ("uids", "{ uid: [0, 7] }", "kill")]);
        assert_eq!(decided(&p, &exec("/bin/ls", &[], 1000), None).1.as_deref(), Some("alice"));
        assert_eq!(decided(&p, &exec("/bin/ls", &[], 7), None), killed("uids"));
        assert_eq!(decided(&p, &exec("/bin/ls", &[], 0), None), killed("uids"));
        assert_eq!(decided(&p, &exec("/bin/ls", &[], 1001), None), OBSERVED);
    }

    #[test]
    fn all_conditions_must_hold() {
        let p = policy(&[("both", "{ exe: /bin/ls, uid: 1000 }", "kill")]);
        assert_eq!(decided(&p, &exec("/bin/ls", &[], 1000), None), killed("both"));
        assert_eq!(decided(&p, &exec("/bin/ls", &[], 0), None), OBSERVED);
        assert_eq!(decided(&p, &exec("/bin/cat", &[], 1000), None), OBSERVED);
    }

    #[test]
    fn not_excludes_what_it_matches() {
        let p =
            policy(&[("no-setuid-tools", "{ exe: /usr/bin/, not: { exe: [/usr/bin/passwd, /usr/bin/su] } }", "kill")]);
        assert_eq!(decided(&p, &exec("/usr/bin/passwd", &[], 0), None), OBSERVED);
        assert_eq!(decided(&p, &exec("/usr/bin/su", &[], 0), None), OBSERVED);
        assert_eq!(decided(&p, &exec("/usr/bin/chsh", &[], 0), None), killed("no-setuid-tools"));
        // A `not` block holds only when all of its conditions do.
        let p = policy(&[("r", "{ exe: /usr/bin/, not: { exe: /usr/bin/passwd, uid: 0 } }", "alert")]);
        assert_eq!(decided(&p, &exec("/usr/bin/passwd", &[], 0), None), OBSERVED);
        assert_eq!(decided(&p, &exec("/usr/bin/passwd", &[], 1000), None).0, Action::Alerted);
    }

    #[test]
    fn the_first_matching_rule_wins() {
        let p = policy(&[
            ("build-ok", "{ exe: /tmp/build/ }", "observe"),
            ("tmp-alert", "{ exe: /tmp/x }", "alert"),
            ("no-tmp", "{ exe: /tmp/ }", "kill"),
            ("late", "{ exe: /tmp/y }", "alert"),
        ]);
        assert_eq!(decided(&p, &exec("/tmp/build/cc", &[], 0), None), (Action::Observed, Some("build-ok".to_owned())));
        assert_eq!(decided(&p, &exec("/tmp/x", &[], 0), None), (Action::Alerted, Some("tmp-alert".to_owned())));
        assert_eq!(decided(&p, &exec("/tmp/y", &[], 0), None), killed("no-tmp"));
        assert_eq!(
            p.hits(),
            vec![("build-ok".into(), 1), ("tmp-alert".into(), 1), ("no-tmp".into(), 1), ("late".into(), 0)]
        );
    }

    #[test]
    fn deny_is_kill_for_processes() {
        let p = policy(&[("d", "{ exe: /bin/x }", "deny")]);
        assert_eq!(decided(&p, &exec("/bin/x", &[], 0), None), killed("d"));
    }

    #[test]
    fn rules_apply_to_exec_unless_told_otherwise() {
        let p = policy(&[("e", "{ exe: /bin/x }", "alert"), ("f", "{ exe: /bin/y, activity: [fork, exit] }", "alert")]);
        let mut fork = exec("/bin/x", &[], 0);
        fork.activity = Activity::Fork;
        assert_eq!(decided(&p, &fork, None), OBSERVED);
        fork.process.exe = "/bin/y".into();
        assert_eq!(decided(&p, &fork, None).1.as_deref(), Some("f"));
        assert_eq!(decided(&p, &exec("/bin/y", &[], 0), None), OBSERVED);
        let mut file = exec("/bin/x", &[], 0);
        file.domain = Domain::File;
        assert_eq!(decided(&p, &file, None), OBSERVED);
    }

    #[test]
    fn observe_only_decides_nothing() {
        let p = Policy::observe_only();
        assert!(p.is_observe_only());
        assert_eq!(decided(&p, &exec("/tmp/x", &[], 0), None), OBSERVED);
        assert!(p.exec_kill_list().is_empty());
        assert!(!p.needs_user_space_enforcement());
    }

    fn enforcement(p: &Policy) -> Vec<(&str, bool)> {
        p.rules().iter().map(|r| (r.id(), r.enforcement() == &Enforcement::KernelAtExec)).collect()
    }

    #[test]
    fn only_pure_exact_and_prefix_kill_rules_reach_the_kernel() {
        let p = policy(&[
            ("exact", "{ exe: /usr/bin/nc }", "kill"),
            ("prefix", "{ exe: [/tmp/, \"/dev/shm/**\"] }", "deny"),
            ("glob", "{ exe: \"**/xmrig*\" }", "kill"),
            ("with-uid", "{ exe: /usr/bin/socat, uid: 1000 }", "kill"),
            ("with-not", "{ exe: /var/tmp/, not: { uid: 0 } }", "kill"),
            ("fork", "{ exe: /usr/bin/yes, activity: fork }", "kill"),
            ("cmdline", "{ cmdline: miner }", "kill"),
            ("alert", "{ exe: /usr/bin/wget }", "alert"),
        ]);
        assert_eq!(
            enforcement(&p),
            vec![
                ("exact", true),
                ("prefix", true),
                ("glob", false),
                ("with-uid", false),
                ("with-not", false),
                ("fork", false),
                ("cmdline", false),
                ("alert", false),
            ]
        );
        assert_eq!(p.rules()[7].enforcement(), &Enforcement::NotEnforcing);
        let list = p.exec_kill_list();
        assert_eq!(list.rule_ids, vec!["exact".to_owned(), "prefix".to_owned()]);
        assert_eq!(list.exact, vec![("/usr/bin/nc".to_owned(), 0)]);
        assert_eq!(list.dir_prefixes, vec![("/tmp/".to_owned(), 1), ("/dev/shm/".to_owned(), 1)]);
        assert!(p.needs_user_space_enforcement());
        let Enforcement::UserSpace { reason } = p.rules()[3].enforcement() else { panic!("user space") };
        assert!(reason.contains("`uid`"), "{reason}");
    }

    #[test]
    fn an_earlier_exception_keeps_an_overlapping_kill_rule_out_of_the_kernel() {
        let p = policy(&[
            ("build-ok", "{ exe: /tmp/build/ }", "observe"),
            ("root-ok", "{ uid: 0 }", "observe"),
            ("fork-only", "{ exe: /usr/bin/, activity: fork }", "observe"),
            ("no-tmp", "{ exe: /tmp/ }", "kill"),
        ]);
        let Enforcement::UserSpace { reason } = p.rules()[3].enforcement() else { panic!("shadowed") };
        assert!(reason.contains("`build-ok` (line 2)"), "{reason}");
        assert!(p.exec_kill_list().is_empty());

        let p = policy(&[
            ("home-ok", "{ exe: \"/home/*/bin/*\" }", "observe"),
            ("fork-only", "{ activity: fork, uid: 0 }", "observe"),
            ("nc-alert", "{ exe: /usr/bin/nc }", "alert"),
            ("no-tmp", "{ exe: /tmp/ }", "kill"),
            ("nc", "{ exe: /usr/bin/nc }", "kill"),
        ]);
        assert_eq!(enforcement(&p)[3..], [("no-tmp", true), ("nc", false)]);
        assert_eq!(p.exec_kill_list().rule_ids, vec!["no-tmp".to_owned()]);
    }
}
