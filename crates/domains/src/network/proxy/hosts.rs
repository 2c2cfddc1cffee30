//! Host-name rules ([`HostRule`]) compiled for the proxy: the first rule (policy order) with a glob matching the
//! HTTP Host / TLS SNI of a connection decides. Globs are case-insensitive and `*` crosses dots
//! (`*.example.com` matches `a.b.example.com`, not `example.com`).

use globset::{GlobBuilder, GlobMatcher};
use ringwatch_core::compiled::{HostRule, NetAction};

/// Host rules ready to match.
#[derive(Debug, Default)]
pub struct HostRules {
    rules: Vec<(String, NetAction, Vec<GlobMatcher>)>,
}

impl HostRules {
    /// Compiles `rules`; an invalid glob is an error naming the rule.
    pub fn compile(rules: &[HostRule]) -> Result<HostRules, String> {
        let mut out = Vec::with_capacity(rules.len());
        for rule in rules {
            let mut globs = Vec::with_capacity(rule.hosts.len());
            for host in &rule.hosts {
                let pattern = host.trim_end_matches('.').to_ascii_lowercase();
                let glob = GlobBuilder::new(&pattern)
                    .case_insensitive(true)
                    .literal_separator(false)
                    .build()
                    .map_err(|e| format!("host rule {}: bad host glob {host:?}: {e}", rule.id))?;
                globs.push(glob.compile_matcher());
            }
            out.push((rule.id.clone(), rule.action, globs));
        }
        Ok(HostRules { rules: out })
    }

    /// The first rule matching `host` (already lowercased, no trailing dot): its id and action.
    pub fn decide(&self, host: &str) -> Option<(&str, NetAction)> {
        self.rules
            .iter()
            .find(|(_, _, globs)| globs.iter().any(|g| g.is_match(host)))
            .map(|(id, a, _)| (id.as_str(), *a))
    }

    /// True when there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(id: &str, hosts: &[&str], action: NetAction) -> HostRule {
        HostRule { id: id.into(), hosts: hosts.iter().map(|h| (*h).to_owned()).collect(), action }
    }

    #[test]
    fn first_matching_rule_wins_case_insensitively() {
        let rules = HostRules::compile(&[
            rule("allow-docs", &["docs.example.com"], NetAction::Observe),
            rule("no-example", &["*.example.com", "Example.COM."], NetAction::Block),
        ])
        .expect("valid globs");
        assert_eq!(rules.decide("docs.example.com"), Some(("allow-docs", NetAction::Observe)));
        assert_eq!(rules.decide("a.b.example.com"), Some(("no-example", NetAction::Block)));
        assert_eq!(rules.decide("example.com"), Some(("no-example", NetAction::Block)));
        assert_eq!(rules.decide("example.org"), None);
        assert_eq!(rules.decide("notexample.com"), None);
    }

    #[test]
    fn bad_glob_names_the_rule() {
        let err = HostRules::compile(&[rule("broken", &["a[b"], NetAction::Block)]).expect_err("bad glob");
        assert!(err.contains("broken"), "{err}");
    }
}
