//! NATS names: the stream, its subjects, and the subject of each event (`ringwatch.<host>.<domain>`).
//!
//! A subject is split into tokens at `.`, and `*` / `>` are wildcards, so a host name is folded into exactly one
//! literal token before it goes into a subject: a host called `web-1.prod` must not become two tokens (which would
//! dodge a `ringwatch.web-1.*` filter) and a host called `>` must not become a wildcard.

use ringwatch_core::Domain;

/// The JetStream stream every agent publishes into.
pub const STREAM_NAME: &str = "RINGWATCH";

/// Prefix of every event subject.
pub const SUBJECT_PREFIX: &str = "ringwatch";

/// The stream's subject filter: every host, every domain.
pub const STREAM_SUBJECTS: &str = "ringwatch.>";

/// Folds `host` into one subject token: `.`, `*`, `>`, whitespace and control characters become `_`; an empty
/// name becomes `_`.
pub fn host_token(host: &str) -> String {
    let token: String = host
        .chars()
        .map(|c| if matches!(c, '.' | '*' | '>') || c.is_whitespace() || c.is_control() { '_' } else { c })
        .collect();
    if token.is_empty() { "_".to_owned() } else { token }
}

/// The subject an event of `host`/`domain` is published to.
pub fn event_subject(host: &str, domain: Domain) -> String {
    format!("{SUBJECT_PREFIX}.{}.{}", host_token(host), domain.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_becomes_one_literal_token() {
        assert_eq!(host_token("web-1.prod.example"), "web-1_prod_example");
        assert_eq!(host_token("a b\tc"), "a_b_c");
        assert_eq!(host_token("*>"), "__");
        assert_eq!(host_token(""), "_");
        assert_eq!(host_token("ünï"), "ünï");
        assert_eq!(event_subject("alpha", Domain::Process), "ringwatch.alpha.process");
        assert_eq!(event_subject("x.y", Domain::Sensor), "ringwatch.x_y.sensor");
    }
}
