//! [`Policy`]: the loaded rules, the [`Decider`] that evaluates them (first match in file order wins), and the
//! compiled per-backend forms (the kernel's [`ExecKillList`], the fanotify [`FilePermissionPlan`], the network
//! [`NetworkPlan`], the [`KeystrokePlan`]).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use ringwatch_core::compiled::{ExecKillList, FilePermissionPlan, KeystrokePlan, NetworkPlan};
use ringwatch_core::{Activity, ContentCheck, Decider, Decision, Domain, Event};

use crate::compile::{self, Compiled};
use crate::error::PolicyError;
use crate::file::{self, EXEC_TRUST_ID, ExecTrust, FileSettings, Trust};
use crate::keystroke::{Dlp, KeystrokeSettings};
use crate::network::NetworkSettings;
use crate::network_plan;
use crate::pattern::PathPattern;
use crate::rule::{Enforcement, MatchContext, Rule, RuleAction};
use crate::users::UserDb;

/// A loaded, validated policy.
///
/// Rules are evaluated in file order and the first match decides, so an `observe` rule placed before a `kill`
/// rule is an exception to it. For file `exec` events the `exec_trust` gate (when configured) comes first: an
/// untrusted binary is denied whatever the rules say. Hit counters live here (atomics, so every caller of
/// [`Decider::decide`] counts: the pipeline stage and synchronous verdicts alike) and are read with
/// [`Policy::hits`].
#[derive(Debug)]
pub struct Policy {
    origin: String,
    rules: Vec<Rule>,
    hits: Vec<AtomicU64>,
    kill_list: ExecKillList,
    files: FileSettings,
    exec_trust: Option<ExecTrust>,
    trust_hits: AtomicU64,
    file_plan: FilePermissionPlan,
    network_plan: NetworkPlan,
    keystrokes: KeystrokeSettings,
    network: NetworkSettings,
}

/// What decided an event: a rule, or the `exec_trust` gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict<'a> {
    /// The rule id (or `exec_trust`).
    pub id: &'a str,
    /// What to do.
    pub action: RuleAction,
    /// The domain of the rule.
    pub domain: Domain,
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
        let compiled = compile::compile(text, origin, users).map_err(PolicyError::Invalid)?;
        Ok(Policy::from_compiled(origin, compiled))
    }

    /// The default policy: no rules, every event observed.
    pub fn observe_only() -> Policy {
        Policy::from_compiled("<observe-only>", Compiled::default())
    }

    fn from_compiled(origin: &str, compiled: Compiled) -> Policy {
        let Compiled { mut rules, files, mut exec_trust, keystrokes, network } = compiled;
        for i in 0..rules.len() {
            if rules[i].domain != Domain::Network {
                rules[i].enforcement = enforcement_of(&rules[..i], &rules[i]);
            }
        }
        let network_plan = network_plan::assign(&mut rules);
        // File paths are reported canonical (symlinks resolved): `/bin/x` on a merged-/usr system is opened as
        // `/usr/bin/x`. Exact paths and prefixes of file rules also match their canonical form.
        for rule in rules.iter_mut().filter(|r| r.domain == Domain::File) {
            for c in std::iter::once(&mut rule.when).chain(rule.unless.as_mut()) {
                for set in [&mut c.path, &mut c.exe].into_iter().flatten() {
                    *set = set.with_canonical_forms();
                }
            }
        }
        if let Some(t) = &mut exec_trust {
            t.allow_paths = t.allow_paths.with_canonical_forms();
        }
        let kill_list = build_kill_list(&rules);
        let file_plan = file::plan(&rules, exec_trust.as_ref(), &files);
        let hits = rules.iter().map(|_| AtomicU64::new(0)).collect();
        Policy {
            origin: origin.to_owned(),
            rules,
            hits,
            kill_list,
            files,
            exec_trust,
            trust_hits: AtomicU64::new(0),
            file_plan,
            network_plan,
            keystrokes,
            network,
        }
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

    /// True when the policy has no rules and no `exec_trust` gate.
    pub fn is_observe_only(&self) -> bool {
        self.rules.is_empty() && self.exec_trust.is_none()
    }

    /// The first rule that matches `ev`, counting the hit. `parent_exe` is the parent's executable, when known.
    /// The `exec_trust` gate is not consulted (see [`Policy::judge`]).
    pub fn evaluate(&self, ev: &Event, parent_exe: Option<&str>) -> Option<&Rule> {
        let mut cx = MatchContext::new(ev, parent_exe);
        let (i, rule) = self.rules.iter().enumerate().find(|(_, r)| r.matches_in(&mut cx))?;
        if let Some(h) = self.hits.get(i) {
            h.fetch_add(1, Ordering::Relaxed);
        }
        Some(rule)
    }

    /// What decides `ev`: the `exec_trust` gate for an untrusted file exec, else the first matching rule (counting
    /// the hit). An exec whose trust depends on a hash the event does not carry passes the gate here.
    pub fn judge(&self, ev: &Event, parent_exe: Option<&str>) -> Option<Verdict<'_>> {
        if let Some(t) = &self.exec_trust
            && ev.domain == Domain::File
            && ev.activity == Activity::Exec
            && let Some(f) = &ev.file
            && t.judge(&f.path, f.sha256.as_deref()) == Trust::Untrusted
        {
            self.trust_hits.fetch_add(1, Ordering::Relaxed);
            return Some(Verdict { id: EXEC_TRUST_ID, action: RuleAction::Deny, domain: Domain::File });
        }
        self.evaluate(ev, parent_exe).map(|r| Verdict { id: &r.id, action: r.action, domain: r.domain })
    }

    /// The kill rules the kernel process backend enforces by itself at exec: rules whose only condition is `exe`
    /// with exact paths and directory prefixes, that apply to exec only, and that no earlier non-kill rule can
    /// shadow (see [`Enforcement`]).
    pub fn exec_kill_list(&self) -> ExecKillList {
        self.kill_list.clone()
    }

    /// The opens and execs the fanotify permission group must hold for a verdict (empty: no group needed).
    pub fn file_permission_plan(&self) -> FilePermissionPlan {
        self.file_plan.clone()
    }

    /// Network rules the kernel evaluates at connect/send (in policy order, observe/alert exceptions included),
    /// and the host rules for the proxy. Rules the kernel cannot evaluate are not in it; [`Rule::enforcement`] says
    /// where each rule is enforced instead (see [`crate::network_plan`]).
    pub fn network_plan(&self) -> NetworkPlan {
        self.network_plan.clone()
    }

    /// The `network` section (monitor settings; DNS capture is on unless it says `dns: false`).
    pub fn network_settings(&self) -> NetworkSettings {
        self.network
    }

    /// The `keystrokes` section: capture is off unless it says `enabled: true`.
    pub fn keystroke_plan(&self) -> KeystrokePlan {
        self.keystrokes.plan.clone()
    }

    /// The compiled DLP patterns of the `keystrokes` section (applied by [`PolicyStage`](crate::PolicyStage)).
    pub fn dlp(&self) -> &Dlp {
        &self.keystrokes.dlp
    }

    /// The `files` section (monitor exclusions, rate limit, verdict deadline).
    pub fn file_settings(&self) -> &FileSettings {
        &self.files
    }

    /// The `exec_trust` gate, when `mode: trusted_only`.
    pub fn exec_trust(&self) -> Option<&ExecTrust> {
        self.exec_trust.as_ref()
    }

    /// True when some kill/deny rule can only be enforced from user space, after the process started.
    pub fn needs_user_space_enforcement(&self) -> bool {
        self.rules.iter().any(|r| matches!(r.enforcement, Enforcement::UserSpace { .. }))
    }

    /// How often each rule matched since load, in rule order; `exec_trust` last when configured.
    pub fn hits(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> =
            self.rules.iter().zip(&self.hits).map(|(r, h)| (r.id.clone(), h.load(Ordering::Relaxed))).collect();
        if self.exec_trust.is_some() {
            v.push((EXEC_TRUST_ID.to_owned(), self.trust_hits.load(Ordering::Relaxed)));
        }
        v
    }
}

impl Decider for Policy {
    fn decide(&self, ev: &Event, parent_exe: Option<&str>) -> Decision {
        match self.judge(ev, parent_exe) {
            Some(v) => Decision { action: v.action.event_action(v.domain), rule: Some(v.id.to_owned()) },
            None => Decision::default(),
        }
    }

    /// The gate first (an exec outside `allow_paths` with `allow_sha256` set needs the hash), then the rules in
    /// order: the first rule that certainly matches without the hash ends the search (no hash needed); the first
    /// rule with a `sha256` condition that could match once the hash is known needs it.
    fn content_check(&self, ev: &Event) -> Option<ContentCheck> {
        if ev.domain != Domain::File || !matches!(ev.activity, Activity::Open | Activity::Exec) {
            return None;
        }
        let f = ev.file.as_ref()?;
        if f.sha256.is_some() {
            return None;
        }
        if ev.activity == Activity::Exec
            && let Some(t) = &self.exec_trust
        {
            match t.judge(&f.path, None) {
                Trust::NeedsHash => {
                    return Some(ContentCheck {
                        rule: EXEC_TRUST_ID.to_owned(),
                        timeout: t.timeout().unwrap_or(self.files.verdict_timeout),
                        on_timeout: t.on_timeout,
                    });
                }
                Trust::Untrusted => return None,
                Trust::Trusted => {}
            }
        }
        let mut cx = MatchContext::new(ev, None);
        for rule in &self.rules {
            if !rule.uses_hash() {
                if rule.matches_in(&mut cx) {
                    return None;
                }
            } else if rule.may_match_with_hash(&mut cx) {
                return Some(ContentCheck {
                    rule: rule.id.clone(),
                    timeout: rule.timeout.unwrap_or(self.files.verdict_timeout),
                    on_timeout: rule.on_timeout,
                });
            }
        }
        None
    }

    /// True when some `domain` rule denies or kills; for files also when the `exec_trust` gate is on (it refuses
    /// execs, which the file hooks see as opens of the binary); for the network only when some rule blocks or
    /// redirects (a throttle never holds a connect).
    fn may_deny(&self, domain: Domain) -> bool {
        match domain {
            Domain::Network => self
                .rules
                .iter()
                .any(|r| r.domain == domain && matches!(r.action, RuleAction::Block | RuleAction::Redirect)),
            _ => {
                (domain == Domain::File && self.exec_trust.is_some())
                    || self.rules.iter().any(|r| r.domain == domain && r.action.is_enforcing())
            }
        }
    }
}

/// Where `rule` is enforced, given the rules before it.
///
/// A kill rule goes to the kernel only if the kernel's answer is the policy's answer for every exec it matches:
/// its whole condition is exact paths / directory prefixes of `exe`, and no earlier rule with another action (an
/// `observe` exception, an `alert`) can match one of those executables first. Earlier rules are judged only by
/// their `exe` patterns (their other conditions could hold), so an earlier rule without `exe` shadows everything.
///
/// A file deny rule is refused by the permission group when it covers `open` or `exec` (the group evaluates the
/// whole policy in order, so earlier exceptions keep working); otherwise it can only alert.
fn enforcement_of(earlier: &[Rule], rule: &Rule) -> Enforcement {
    if !rule.action.is_enforcing() {
        return Enforcement::NotEnforcing;
    }
    if rule.domain == Domain::File {
        if rule.activities.iter().any(|a| matches!(a, Activity::Open | Activity::Exec)) {
            return Enforcement::FilePermission;
        }
        return Enforcement::AlertOnly {
            reason: "fanotify permission events cover open and exec only; create, write, delete, rename and chmod \
                     are reported as alerted"
                .to_owned(),
        };
    }
    let user = |reason: String| Enforcement::UserSpace { reason };
    if rule.activities.iter().any(|a| *a != Activity::Exec) {
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
    use std::time::Duration;

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

    #[test]
    fn may_deny_only_where_a_rule_enforces() {
        assert!(!Policy::observe_only().may_deny(Domain::File));
        let p = policy(&[("a", "{ exe: /bin/x }", "alert"), ("k", "{ exe: /bin/y }", "kill")]);
        assert!(p.may_deny(Domain::Process));
        assert!(!p.may_deny(Domain::File), "process rules do not make file hooks wait for verdicts");
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

    fn file_policy(text: &str) -> Policy {
        Policy::from_str_with_users(text, "f.yaml", &users()).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    fn file_ev(activity: Activity, path: &str, exe: &str, sha256: Option<&str>) -> Event {
        let mut ev = Event::new(Domain::File, activity, Backend { mode: Mode::Kernel, source: SourceKind::Fanotify });
        ev.process.pid = 4242;
        ev.process.exe = exe.to_owned();
        ev.file = Some(ringwatch_core::event::FileInfo {
            path: path.to_owned(),
            sha256: sha256.map(str::to_owned),
            ..Default::default()
        });
        ev
    }

    const H1: &str = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";
    const H2: &str = "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2";

    #[test]
    fn file_deny_rules_decide_denied_with_exceptions_first() {
        let p = file_policy(
            "rules:
  - id: shadow
    domain: file
    match: { path: /etc/shadow, activity: open, not: { exe: [/usr/bin/passwd] } }
    action: deny
  - id: secrets
    domain: file
    match: { path: \"/srv/secret/**\", activity: [open, write] }
    action: deny
",
        );
        let d = |ev: &Event| decided(&p, ev, None);
        let denied = |id: &str| (Action::Denied, Some(id.to_owned()));
        assert_eq!(d(&file_ev(Activity::Open, "/etc/shadow", "/usr/bin/cat", None)), denied("shadow"));
        assert_eq!(d(&file_ev(Activity::Open, "/etc/shadow", "/usr/bin/passwd", None)), OBSERVED);
        assert_eq!(d(&file_ev(Activity::Open, "/etc/passwd", "/usr/bin/cat", None)), OBSERVED);
        assert_eq!(d(&file_ev(Activity::Open, "/srv/secret/a/b", "/usr/bin/cat", None)), denied("secrets"));
        assert_eq!(d(&file_ev(Activity::Exec, "/srv/secret/a/b", "/usr/bin/cat", None)), OBSERVED);
        let mut rename = file_ev(Activity::Rename, "/tmp/x", "/usr/bin/mv", None);
        rename.file.as_mut().expect("file").new_path = Some("/etc/shadow".into());
        assert_eq!(d(&rename), OBSERVED, "rename is not an activity of `shadow`");
        assert_eq!(p.rules()[0].enforcement(), &Enforcement::FilePermission);
        let plan = p.file_permission_plan();
        assert_eq!(plan.open.exact_paths, vec!["/etc/shadow".to_owned()]);
        assert_eq!(plan.open.dir_prefixes, vec!["/srv/secret/".to_owned()]);
        assert!(!plan.needs_every_open() && !plan.exec_checks() && !plan.needs_hash && plan.needs_exe);
    }

    #[test]
    fn plans_mark_as_narrowly_as_the_rules_allow() {
        let rule = |m: &str, action: &str| {
            file_policy(&format!("rules:\n  - id: r\n    domain: file\n    match: {m}\n    action: {action}\n"))
                .file_permission_plan()
        };
        let exact = rule("{ path: [/etc/shadow, /etc/gshadow], activity: open }", "deny");
        assert_eq!(exact.open.exact_paths.len(), 2);
        assert!(exact.exec.is_empty() && !exact.needs_every_open());
        let glob = rule("{ path: \"/home/*/.ssh/id_*\", activity: open }", "deny");
        assert!(glob.needs_every_open() && glob.open.exact_paths.is_empty());
        let exe_only = rule("{ exe: /usr/bin/python3, activity: [open, exec] }", "deny");
        assert!(exe_only.needs_every_open() && exe_only.exec.everywhere);
        let hash = rule(&format!("{{ sha256: [{H1}] }}"), "deny");
        assert!(hash.exec.everywhere && hash.open.is_empty() && hash.needs_hash);
        let exec_exact = rule("{ path: /usr/bin/nc, activity: exec }", "deny");
        assert_eq!(exec_exact.exec.exact_paths, vec!["/usr/bin/nc".to_owned()]);
        // Alert rules without a hash stay with the monitor: nothing to hold.
        assert!(rule("{ path: \"/**\", activity: open }", "alert").is_empty());
        let hash_alert = rule(&format!("{{ sha256: [{H1}], activity: [open, exec] }}"), "alert");
        assert!(hash_alert.open.everywhere && hash_alert.exec.everywhere);
        // Deny rules on acts fanotify cannot hold are alert-only.
        let p = file_policy(
            "rules:\n  - id: w\n    domain: file\n    match: { path: /etc/, activity: [write, delete] }\n    action: deny\n",
        );
        assert!(p.file_permission_plan().is_empty());
        assert!(matches!(p.rules()[0].enforcement(), Enforcement::AlertOnly { .. }));
    }

    #[test]
    fn hash_rules_match_only_known_hashes_and_ask_for_them_first() {
        let p = file_policy(&format!(
            "files: {{ verdict_timeout_ms: 300 }}
rules:
  - id: build-ok
    domain: file
    match: {{ path: /opt/build/, activity: exec }}
    action: observe
  - id: bad-hash
    domain: file
    match: {{ sha256: [{H1}] }}
    action: deny
    on_timeout: deny
    timeout_ms: 20
"
        ));
        let known = file_ev(Activity::Exec, "/tmp/x", "/bin/sh", Some(H1));
        assert_eq!(decided(&p, &known, None), (Action::Denied, Some("bad-hash".into())));
        assert_eq!(decided(&p, &file_ev(Activity::Exec, "/tmp/x", "/bin/sh", Some(H2)), None), OBSERVED);
        // Unknown hash: the rule does not match (the monitor's exec events carry none).
        let unknown = file_ev(Activity::Exec, "/tmp/x", "/bin/sh", None);
        assert_eq!(decided(&p, &unknown, None), OBSERVED);
        let check = p.content_check(&unknown).expect("hash needed");
        assert_eq!(check.rule, "bad-hash");
        assert_eq!(
            (check.timeout, check.on_timeout),
            (Duration::from_millis(20), ringwatch_core::TimeoutVerdict::Deny)
        );
        // An earlier exception decides without the hash; a known hash needs no check; opens are not hashed.
        assert_eq!(p.content_check(&file_ev(Activity::Exec, "/opt/build/cc", "/bin/sh", None)), None);
        assert_eq!(p.content_check(&known), None);
        assert_eq!(p.content_check(&file_ev(Activity::Open, "/tmp/x", "/bin/sh", None)), None);
    }

    #[test]
    fn exec_trust_denies_untrusted_execs_before_the_rules() {
        let p = file_policy(&format!(
            "exec_trust:
  mode: trusted_only
  allow_paths: [\"/usr/**\"]
  allow_sha256: [{H1}]
rules:
  - id: tmp-ok
    domain: file
    match: {{ path: /tmp/, activity: exec }}
    action: observe
"
        ));
        let gate = (Action::Denied, Some(EXEC_TRUST_ID.to_owned()));
        assert_eq!(decided(&p, &file_ev(Activity::Exec, "/usr/bin/true", "/bin/sh", None), None), OBSERVED);
        assert_eq!(decided(&p, &file_ev(Activity::Exec, "/tmp/true", "/bin/sh", Some(H2)), None), gate);
        assert_eq!(
            decided(&p, &file_ev(Activity::Exec, "/tmp/true", "/bin/sh", Some(H1)), None),
            (Action::Observed, Some("tmp-ok".into()))
        );
        let check = p.content_check(&file_ev(Activity::Exec, "/tmp/true", "/bin/sh", None)).expect("hash");
        assert_eq!(check.rule, EXEC_TRUST_ID);
        assert_eq!(p.content_check(&file_ev(Activity::Exec, "/usr/bin/true", "/bin/sh", None)), None);
        assert_eq!(decided(&p, &file_ev(Activity::Open, "/tmp/true", "/bin/sh", Some(H2)), None), OBSERVED);
        let plan = p.file_permission_plan();
        assert!(plan.exec.everywhere && plan.needs_hash && plan.open.is_empty());
        assert_eq!(p.hits().last(), Some(&(EXEC_TRUST_ID.to_owned(), 1)));
        // Without allowed hashes the path alone decides, so no hash is ever needed.
        let p = file_policy("exec_trust: { mode: trusted_only, allow_paths: [\"/usr/**\"] }\n");
        assert_eq!(p.content_check(&file_ev(Activity::Exec, "/tmp/true", "/bin/sh", None)), None);
        assert_eq!(decided(&p, &file_ev(Activity::Exec, "/tmp/true", "/bin/sh", None), None), gate);
        assert!(!p.file_permission_plan().needs_hash);
    }

    #[test]
    fn file_paths_also_match_their_canonical_form() {
        let dir = std::env::temp_dir().join(format!("rw-policy-canon-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("real")).expect("mkdir");
        let link = dir.join("link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(dir.join("real"), &link).expect("symlink");
        let canon = std::fs::canonicalize(dir.join("real")).expect("canonical");
        let p = file_policy(&format!(
            "rules:\n  - id: r\n    domain: file\n    match: {{ path: \"{}/**\", activity: open }}\n    action: deny\n",
            link.display()
        ));
        let inside = format!("{}/f", canon.display());
        assert_eq!(decided(&p, &file_ev(Activity::Open, &inside, "/bin/cat", None), None).0, Action::Denied);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
