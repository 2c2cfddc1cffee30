//! The `keystrokes` section: whether, whose and how keystrokes are captured ([`KeystrokePlan`], for the keystroke
//! backends), and the DLP patterns applied to captured input ([`Dlp`], applied by the pipeline's
//! [`PolicyStage`](crate::PolicyStage) before any sink sees the event).
//!
//! ```yaml
//! keystrokes:
//!   enabled: true              # off unless said; nothing is captured otherwise
//!   users: [alice]             # names, resolved to uids at load (unknown: error); absent = every user
//!   groups: [developers]       # names -> gids (the reading process's primary gid); absent = every group
//!   ttys: ["pts/*", tty1]      # terminal globs; absent = every terminal (X11 input has none)
//!   redact_echo_off: true      # default: input read with ECHO off never leaves the kernel
//!   idle_flush: 2s             # partial lines are flushed after this long without a key
//!   retention: 7d              # keystroke events are kept this long in the store
//!   alert_patterns:            # regexes; a match alerts and is masked
//!     - '\b4[0-9]{12}(?:[0-9]{3})?\b'       # id keystroke-dlp-1
//!     - { id: aws-key, pattern: 'AKIA[0-9A-Z]{16}' }
//! ```
//!
//! **DLP.** For a keystroke event whose text is not redacted, the first pattern (in file order) that matches
//! `keystroke.text` makes the event `alerted` with that pattern's id as `rule`, and every match of *every* pattern
//! in the text is replaced by `*` (one per character), so a secret caught by one pattern is not stored because an
//! earlier one matched first. Redacted events (echo-off input: no text) are never touched.

use regex::Regex;
use ringwatch_core::compiled::KeystrokePlan;
use ringwatch_core::{Action, Domain, Event};

/// The prefix of default DLP pattern ids: `keystroke-dlp-1`, `keystroke-dlp-2`, ... (1-based, by position).
pub const DEFAULT_DLP_ID_PREFIX: &str = "keystroke-dlp-";

/// The compiled `alert_patterns` of the `keystrokes` section.
#[derive(Debug, Clone, Default)]
pub struct Dlp {
    patterns: Vec<(String, Regex)>,
}

impl Dlp {
    /// Compiles `(id, regex)` pairs that the compiler has checked.
    pub(crate) fn new(patterns: &[(String, String)]) -> Result<Dlp, String> {
        let patterns = patterns
            .iter()
            .map(|(id, p)| Regex::new(p).map(|r| (id.clone(), r)).map_err(|e| format!("invalid regex `{p}`: {e}")))
            .collect::<Result<_, _>>()?;
        Ok(Dlp { patterns })
    }

    /// True when there are no patterns.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The id of the first pattern that matches `text`.
    pub fn first_match(&self, text: &str) -> Option<&str> {
        self.patterns.iter().find(|(_, r)| r.is_match(text)).map(|(id, _)| id.as_str())
    }

    /// `text` with every match of every pattern replaced by `*`, one per character; `None` when nothing matched.
    pub fn mask(&self, text: &str) -> Option<String> {
        let mut masked = vec![false; text.len()];
        let mut any = false;
        for (_, r) in &self.patterns {
            for m in r.find_iter(text) {
                masked[m.range()].iter_mut().for_each(|b| *b = true);
                any |= !m.is_empty();
            }
        }
        if !any {
            return None;
        }
        Some(text.char_indices().map(|(i, c)| if masked[i] { '*' } else { c }).collect())
    }

    /// Applies the patterns to a keystroke event: masks the matches in its text and, when the event is still
    /// `observed` without a rule, marks it `alerted` with the first matching pattern's id. Returns that id. Events of
    /// other domains, redacted events and events without text are left alone.
    pub fn apply(&self, ev: &mut Event) -> Option<String> {
        if ev.domain != Domain::Keystroke || self.patterns.is_empty() {
            return None;
        }
        let k = ev.keystroke.as_mut()?;
        if k.redacted || k.text.is_empty() {
            return None;
        }
        let id = self.first_match(&k.text)?.to_owned();
        if let Some(masked) = self.mask(&k.text) {
            k.text = masked;
        }
        if ev.action == Action::Observed && ev.rule.is_none() {
            ev.action = Action::Alerted;
            ev.rule = Some(id.clone());
        }
        Some(id)
    }
}

/// The compiled `keystrokes` section.
#[derive(Debug, Clone, Default)]
pub(crate) struct KeystrokeSettings {
    pub plan: KeystrokePlan,
    pub dlp: Dlp,
}

#[cfg(test)]
mod tests {
    use ringwatch_core::event::KeystrokeInfo;
    use ringwatch_core::{Activity, Backend, Mode, SourceKind};

    use super::*;

    fn dlp(patterns: &[(&str, &str)]) -> Dlp {
        let owned: Vec<(String, String)> = patterns.iter().map(|(i, p)| ((*i).to_owned(), (*p).to_owned())).collect();
        Dlp::new(&owned).expect("valid")
    }

    fn input(text: &str, redacted: bool) -> Event {
        let mut ev =
            Event::new(Domain::Keystroke, Activity::Input, Backend { mode: Mode::Kernel, source: SourceKind::Ebpf });
        ev.keystroke = Some(KeystrokeInfo { text: text.to_owned(), redacted, ..KeystrokeInfo::default() });
        ev
    }

    #[test]
    fn the_first_matching_pattern_alerts_and_every_match_is_masked() {
        let d = dlp(&[("card", r"\b4[0-9]{12}(?:[0-9]{3})?\b"), ("aws", "AKIA[0-9A-Z]{16}")]);
        let mut ev = input("pay 4111111111111111 and 4222222222222 key AKIAABCDEFGHIJKLMNOP", false);
        assert_eq!(d.apply(&mut ev).as_deref(), Some("card"));
        assert_eq!((ev.action, ev.rule.as_deref()), (Action::Alerted, Some("card")));
        let text = &ev.keystroke.as_ref().expect("keystroke").text;
        assert_eq!(text, &format!("pay {} and {} key {}", "*".repeat(16), "*".repeat(13), "*".repeat(20)));
    }

    #[test]
    fn masking_counts_characters_not_bytes() {
        let d = dlp(&[("x", "pässwört")]);
        assert_eq!(d.mask("say pässwört!").as_deref(), Some("say ********!"));
        assert_eq!(d.mask("nothing"), None);
    }

    #[test]
    fn redacted_and_unmatched_events_are_left_alone() {
        let d = dlp(&[("any", ".")]);
        let mut ev = input("", true);
        assert_eq!(d.apply(&mut ev), None);
        assert_eq!(ev.action, Action::Observed);
        let d = dlp(&[("digits", "[0-9]{4}")]);
        let mut ev = input("ls -la", false);
        assert_eq!(d.apply(&mut ev), None);
        assert_eq!((ev.action, ev.keystroke.as_ref().map(|k| k.text.as_str())), (Action::Observed, Some("ls -la")));
    }

    #[test]
    fn an_event_decided_elsewhere_keeps_its_action_but_is_still_masked() {
        let d = dlp(&[("digits", "[0-9]{4}")]);
        let mut ev = input("pin 1234", false);
        ev.rule = Some("other".into());
        assert_eq!(d.apply(&mut ev).as_deref(), Some("digits"));
        assert_eq!((ev.action, ev.rule.as_deref()), (Action::Observed, Some("other")));
        assert_eq!(ev.keystroke.as_ref().map(|k| k.text.as_str()), Some("pin ****"));
    }
}
