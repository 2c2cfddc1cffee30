//! The crate's error type. A policy file can be wrong in many places at once; [`PolicyError::Invalid`] carries
//! every [`Problem`] found, each naming its file, line and field path, so the author fixes them in one pass (the
//! shape of ripgrep's `ignore::Error::{WithLineNumber, Partial}`).

use std::fmt;
use std::path::PathBuf;

/// What kind of mistake a [`Problem`] is; lets callers and tests tell them apart without parsing messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProblemKind {
    /// The text is not valid YAML.
    Syntax,
    /// A field the format does not know (a typo, or a field of another domain).
    UnknownField,
    /// A required field is absent.
    MissingField,
    /// A field has the wrong type or an invalid value (bad regex, bad glob, relative path, unknown user, ...).
    InvalidValue,
    /// Two rules share an id.
    DuplicateId,
    /// Valid in the policy format, but not implemented yet (a domain, a top-level section).
    Unsupported,
}

/// One mistake in a policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file (or other origin) the policy came from.
    pub origin: String,
    /// 1-based line.
    pub line: u32,
    /// 1-based column, in characters.
    pub column: u32,
    /// Where in the document, e.g. `rules[2].match.exe` (rules are counted from 0); empty for syntax errors.
    pub field: String,
    /// What kind of mistake.
    pub kind: ProblemKind,
    /// What is wrong, for a person.
    pub message: String,
}

impl fmt::Display for Problem {
    /// `FILE:LINE: FIELD: MESSAGE` (or `FILE:LINE: MESSAGE` when no field applies).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.origin, self.line)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// Why a policy could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("{}: cannot read policy: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The policy has mistakes; every one found is listed, in file order. Never empty.
    #[error("{}", ProblemList(.0))]
    Invalid(Vec<Problem>),
}

impl PolicyError {
    /// The problems of an invalid policy (empty for I/O errors).
    pub fn problems(&self) -> &[Problem] {
        match self {
            PolicyError::Invalid(p) => p,
            PolicyError::Io { .. } => &[],
        }
    }
}

/// Displays problems one per line.
struct ProblemList<'a>(&'a [Problem]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(line: u32, field: &str, message: &str) -> Problem {
        Problem {
            origin: "p.yaml".into(),
            line,
            column: 3,
            field: field.into(),
            kind: ProblemKind::InvalidValue,
            message: message.into(),
        }
    }

    #[test]
    fn every_problem_is_displayed_on_its_own_line() {
        let e = PolicyError::Invalid(vec![
            problem(4, "rules[0].match.exe", "relative path"),
            problem(9, "", "unclosed bracket"),
        ]);
        assert_eq!(e.to_string(), "p.yaml:4: rules[0].match.exe: relative path\np.yaml:9: unclosed bracket");
        assert_eq!(e.problems().len(), 2);
    }

    #[test]
    fn io_errors_name_the_file() {
        let e = PolicyError::Io { path: "/nope.yaml".into(), source: std::io::ErrorKind::NotFound.into() };
        assert!(e.to_string().starts_with("/nope.yaml: cannot read policy"), "{e}");
    }
}
