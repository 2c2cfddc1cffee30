//! The value forms a condition accepts, compiled for cheap matching: executable paths ([`PathPattern`] inside a
//! [`PathSet`]) and command-line regexes ([`CmdlineSet`]).
//!
//! Paths come in three forms, chosen by how they are written:
//! - exact: `/usr/bin/nc` (no glob characters);
//! - directory prefix: `/tmp/` or `/tmp/**` (the same thing: everything under `/tmp`, at any depth);
//! - glob: anything else with `*`, `?`, `[`, `{` or `\`, e.g. `/home/*/bin/*` or `**/nc*`. A `*` stays within one
//!   path component; `**` crosses components.
//!
//! Exact paths and prefixes are kept apart from globs because the kernel backend can enforce them by itself (a
//! hash lookup and a prefix walk in BPF), while a glob needs user space.

use std::fmt;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use regex::RegexSet;

/// Characters that make a path a glob.
const GLOB_META: &[char] = &['*', '?', '[', ']', '{', '}', '\\'];

/// One path pattern of an `exe` or `parent_exe` condition.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathPattern {
    /// This absolute path and nothing else.
    Exact(String),
    /// Everything under this directory, at any depth. Always absolute and ending in `/` (`/` itself for `/**`).
    DirPrefix(String),
    /// A glob, as written.
    Glob(String),
}

impl PathPattern {
    /// Classifies and checks `text` (glob syntax is checked when the set is built).
    pub fn parse(text: &str) -> Result<PathPattern, String> {
        if text.is_empty() {
            return Err("empty path".to_owned());
        }
        if text.contains('\0') {
            return Err("a path cannot contain a NUL byte".to_owned());
        }
        if !text.starts_with('/') && !text.starts_with("**/") && text != "**" {
            return Err(format!(
                "relative path `{text}`: write an absolute path (`/usr/bin/{text}`), or a glob starting with \
                 `**/` to match in any directory"
            ));
        }
        let is_plain = |s: &str| !s.contains(GLOB_META);
        if is_plain(text) {
            check_normalized(text)?;
            return Ok(if text.ends_with('/') {
                PathPattern::DirPrefix(text.to_owned())
            } else {
                PathPattern::Exact(text.to_owned())
            });
        }
        if let Some(dir) = text.strip_suffix("/**")
            && is_plain(dir)
            && (dir.is_empty() || dir.starts_with('/'))
        {
            let dir = format!("{dir}/");
            check_normalized(&dir)?;
            return Ok(PathPattern::DirPrefix(dir));
        }
        Ok(PathPattern::Glob(text.to_owned()))
    }

    /// True for the forms the kernel backend can enforce (exact paths and directory prefixes).
    pub fn is_kernel_enforceable(&self) -> bool {
        !matches!(self, PathPattern::Glob(_))
    }

    /// The same set of paths as a glob (ringwatch syntax): exact paths as they are, `/d/` as `/d/**`.
    pub fn to_glob(&self) -> String {
        match self {
            PathPattern::Exact(p) | PathPattern::Glob(p) => p.clone(),
            PathPattern::DirPrefix(d) => format!("{d}**"),
        }
    }

    /// The literal text every matching path starts with: the path itself, the directory, or a glob's text up to
    /// its first glob character (empty for `**/...`).
    pub(crate) fn literal_prefix(&self) -> &str {
        match self {
            PathPattern::Exact(p) | PathPattern::DirPrefix(p) => p,
            PathPattern::Glob(g) => g.find(GLOB_META).map_or(g.as_str(), |i| &g[..i]),
        }
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathPattern::Exact(p) | PathPattern::DirPrefix(p) | PathPattern::Glob(p) => f.write_str(p),
        }
    }
}

/// Rejects `.`/`..` components and `//`: executable paths from the kernel are canonical, so such a path would
/// silently never match.
fn check_normalized(path: &str) -> Result<(), String> {
    let inner = path.strip_prefix('/').unwrap_or(path);
    let inner = inner.strip_suffix('/').unwrap_or(inner);
    if inner.is_empty() {
        return Ok(());
    }
    if inner.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Err(format!(
            "`{path}` is not a normalized path (no `.`, `..` or `//`); executable paths are reported canonical, so \
             it would never match"
        ));
    }
    Ok(())
}

/// Builds the matcher of one glob, with ringwatch's semantics (`*` within a component, `\` escapes).
pub(crate) fn build_glob(text: &str) -> Result<globset::Glob, String> {
    GlobBuilder::new(text)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map_err(|e| format!("invalid glob `{text}`: {}", e.kind()))
}

/// The compiled patterns of one `exe`/`parent_exe` condition; a path matches when any pattern matches.
#[derive(Debug, Clone)]
pub struct PathSet {
    patterns: Vec<PathPattern>,
    exact: Vec<String>,
    prefixes: Vec<String>,
    globs: Option<GlobSet>,
}

impl PathSet {
    /// Compiles already-parsed patterns. Fails only when a glob is invalid.
    pub(crate) fn new(patterns: Vec<PathPattern>) -> Result<PathSet, String> {
        let mut exact = Vec::new();
        let mut prefixes = Vec::new();
        let mut builder = GlobSetBuilder::new();
        let mut any_glob = false;
        for p in &patterns {
            match p {
                PathPattern::Exact(s) => exact.push(s.clone()),
                PathPattern::DirPrefix(s) => prefixes.push(s.clone()),
                PathPattern::Glob(g) => {
                    builder.add(build_glob(g)?);
                    any_glob = true;
                }
            }
        }
        let globs = if any_glob { Some(builder.build().map_err(|e| format!("invalid glob set: {e}"))?) } else { None };
        Ok(PathSet { patterns, exact, prefixes, globs })
    }

    /// The patterns as written (after classification).
    pub fn patterns(&self) -> &[PathPattern] {
        &self.patterns
    }

    /// True when `path` matches any pattern. An empty path (unknown executable) matches nothing.
    pub fn is_match(&self, path: &str) -> bool {
        if path.is_empty() {
            return false;
        }
        self.exact.iter().any(|e| e == path)
            || self.prefixes.iter().any(|d| path.starts_with(d.as_str()))
            || self.globs.as_ref().is_some_and(|g| g.is_match(path))
    }

    /// This set plus the canonical form (symlinks resolved, on this machine) of each exact path and directory
    /// prefix whose canonical form differs: `/bin/true` also matches `/usr/bin/true` on a merged-/usr system, the
    /// way the kernel reports it. Paths that do not exist (yet) and globs are kept as written.
    pub(crate) fn with_canonical_forms(&self) -> PathSet {
        let mut patterns = self.patterns.clone();
        for p in &self.patterns {
            let extra = match p {
                PathPattern::Exact(e) => std::fs::canonicalize(e)
                    .ok()
                    .and_then(|c| c.to_str().map(str::to_owned))
                    .filter(|c| c != e)
                    .map(PathPattern::Exact),
                PathPattern::DirPrefix(d) => std::fs::canonicalize(d)
                    .ok()
                    .and_then(|c| c.to_str().map(|c| format!("{}/", c.trim_end_matches('/'))))
                    .filter(|c| c != d)
                    .map(PathPattern::DirPrefix),
                PathPattern::Glob(_) => None,
            };
            if let Some(x) = extra
                && !patterns.contains(&x)
            {
                patterns.push(x);
            }
        }
        if patterns.len() == self.patterns.len() {
            return self.clone();
        }
        PathSet::new(patterns).unwrap_or_else(|_| self.clone())
    }

    /// False only when no path under `dir` (which ends in `/`) can match; used to prove that an earlier rule
    /// cannot shadow a later kernel-enforced prefix rule. Globs are judged by their literal prefix, so the answer
    /// errs towards "may match".
    pub(crate) fn may_match_under(&self, dir: &str) -> bool {
        self.patterns.iter().any(|p| {
            let lit = p.literal_prefix();
            match p {
                PathPattern::Exact(e) => e.starts_with(dir),
                PathPattern::DirPrefix(_) | PathPattern::Glob(_) => lit.starts_with(dir) || dir.starts_with(lit),
            }
        })
    }
}

/// The compiled regexes of one `cmdline` condition, matched (unanchored) against argv joined with spaces.
#[derive(Debug, Clone)]
pub struct CmdlineSet {
    set: RegexSet,
}

impl CmdlineSet {
    /// Checks one regex, giving a one-line reason on error.
    pub(crate) fn check(pattern: &str) -> Result<(), String> {
        if let Err(e) = regex_syntax::Parser::new().parse(pattern) {
            let (kind, offset) = match &e {
                regex_syntax::Error::Parse(e) => (e.kind().to_string(), e.span().start.offset),
                regex_syntax::Error::Translate(e) => (e.kind().to_string(), e.span().start.offset),
                other => (other.to_string(), 0),
            };
            return Err(format!("invalid regex `{pattern}`: {kind} (at character {})", offset + 1));
        }
        regex::Regex::new(pattern).map(drop).map_err(|e| format!("invalid regex `{pattern}`: {}", one_line(&e)))
    }

    /// Compiles checked regexes into one set.
    pub(crate) fn new(patterns: &[String]) -> Result<CmdlineSet, String> {
        RegexSet::new(patterns).map(|set| CmdlineSet { set }).map_err(|e| format!("invalid regex: {}", one_line(&e)))
    }

    /// The regexes as written.
    pub fn patterns(&self) -> &[String] {
        self.set.patterns()
    }

    /// True when any regex matches somewhere in `cmdline`.
    pub fn is_match(&self, cmdline: &str) -> bool {
        self.set.is_match(cmdline)
    }
}

fn one_line(e: &regex::Error) -> String {
    e.to_string().split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(patterns: &[&str]) -> PathSet {
        PathSet::new(patterns.iter().map(|p| PathPattern::parse(p).expect("valid")).collect()).expect("compiles")
    }

    #[test]
    fn forms_are_classified_by_how_they_are_written() {
        assert_eq!(PathPattern::parse("/usr/bin/nc"), Ok(PathPattern::Exact("/usr/bin/nc".into())));
        assert_eq!(PathPattern::parse("/tmp/"), Ok(PathPattern::DirPrefix("/tmp/".into())));
        assert_eq!(PathPattern::parse("/tmp/**"), Ok(PathPattern::DirPrefix("/tmp/".into())));
        assert_eq!(PathPattern::parse("/**"), Ok(PathPattern::DirPrefix("/".into())));
        assert_eq!(PathPattern::parse("/home/*/bin/*"), Ok(PathPattern::Glob("/home/*/bin/*".into())));
        assert_eq!(PathPattern::parse("**/nc*"), Ok(PathPattern::Glob("**/nc*".into())));
        assert_eq!(PathPattern::parse("/a/*/**"), Ok(PathPattern::Glob("/a/*/**".into())));
    }

    #[test]
    fn relative_and_unnormalized_paths_are_rejected() {
        for bad in ["nc", "bin/nc", "./nc", "*/nc", "~/bin/x", ""] {
            assert!(PathPattern::parse(bad).is_err(), "{bad}");
        }
        assert!(PathPattern::parse("nc").expect_err("relative").contains("relative path"));
        for bad in ["/usr//bin/nc", "/usr/bin/../bin/nc", "/tmp/./x", "/tmp/../**"] {
            assert!(PathPattern::parse(bad).expect_err("unnormalized").contains("normalized"), "{bad}");
        }
    }

    #[test]
    fn exact_matches_only_itself() {
        let s = set(&["/usr/bin/nc"]);
        assert!(s.is_match("/usr/bin/nc"));
        assert!(!s.is_match("/usr/bin/ncat"));
        assert!(!s.is_match("/usr/bin/nc/x"));
        assert!(!s.is_match(""));
    }

    #[test]
    fn both_prefix_spellings_match_at_any_depth() {
        for p in ["/tmp/", "/tmp/**"] {
            let s = set(&[p]);
            assert!(s.is_match("/tmp/x"), "{p}");
            assert!(s.is_match("/tmp/a/b/c"), "{p}");
            assert!(!s.is_match("/tmpfoo/x"), "{p}");
            assert!(!s.is_match("/var/tmp/x"), "{p}");
        }
        assert!(set(&["/**"]).is_match("/usr/bin/true"));
    }

    #[test]
    fn globs_keep_star_within_a_component() {
        let s = set(&["/home/*/bin/*"]);
        assert!(s.is_match("/home/alice/bin/x"));
        assert!(!s.is_match("/home/alice/bin/sub/x"));
        assert!(!s.is_match("/home/bin/x"));
        let any = set(&["**/nc*"]);
        assert!(any.is_match("/usr/bin/nc"));
        assert!(any.is_match("/usr/bin/ncat"));
        assert!(any.is_match("/nc"));
        assert!(!any.is_match("/usr/bin/bnc"));
        assert!(set(&["/usr/bin/python3.[0-9]*"]).is_match("/usr/bin/python3.11"));
    }

    #[test]
    fn bad_globs_are_reported() {
        let e = PathSet::new(vec![PathPattern::parse("/usr/{a,b").expect("classified")]).expect_err("bad glob");
        assert!(e.contains("invalid glob"), "{e}");
    }

    #[test]
    fn overlap_with_a_directory_is_judged_conservatively() {
        assert!(set(&["/tmp/build/"]).may_match_under("/tmp/"));
        assert!(set(&["/"]).may_match_under("/tmp/"));
        assert!(set(&["/tmp/x"]).may_match_under("/tmp/"));
        assert!(!set(&["/usr/bin/x"]).may_match_under("/tmp/"));
        assert!(!set(&["/home/*/bin/*"]).may_match_under("/tmp/"));
        assert!(set(&["/tmp/*.sh"]).may_match_under("/tmp/"));
        assert!(set(&["**/nc"]).may_match_under("/tmp/"));
    }

    #[test]
    fn regex_errors_are_one_line_with_a_position() {
        let e = CmdlineSet::check("curl (").expect_err("bad regex");
        assert!(e.contains("unclosed group") && !e.contains('\n'), "{e}");
        assert!(CmdlineSet::check(r"curl .*\| *sh").is_ok());
        let s = CmdlineSet::new(&[r"curl .*\| *sh".to_owned()]).expect("compiles");
        assert!(s.is_match("bash -c curl http://x | sh"));
        assert!(!s.is_match("curl http://x"));
    }
}
