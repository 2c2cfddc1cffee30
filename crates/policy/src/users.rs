//! User names -> uids (for `user:` conditions and `keystrokes.users`) and group names -> gids (for
//! `keystrokes.groups`). Names are resolved once, when the policy is loaded, so matching compares integers; an
//! unknown name is a load error rather than a rule that silently never matches.

use std::collections::HashMap;

use ringwatch_core::proc_table::passwd_entries;

/// The user database a policy's `user:` names are resolved against (normally /etc/passwd), with the groups of
/// /etc/group.
#[derive(Debug, Clone, Default)]
pub struct UserDb {
    by_name: HashMap<String, u32>,
    source: String,
    groups: HashMap<String, u32>,
    group_source: String,
}

impl UserDb {
    /// Reads /etc/passwd. An unreadable file gives an empty database, so every `user:` name is then reported as
    /// unknown (with the reason) instead of failing the whole load.
    pub fn system() -> Self {
        let mut db = std::fs::read_to_string("/etc/passwd").map(|t| UserDb::from_passwd(&t)).unwrap_or_default();
        db.source = "/etc/passwd".to_owned();
        db = db.with_groups(&std::fs::read_to_string("/etc/group").unwrap_or_default());
        db.group_source = "/etc/group".to_owned();
        db
    }

    /// Adds groups from text in group(5) format (`name:x:gid:members`). The first entry of a name wins.
    pub fn with_groups(mut self, text: &str) -> Self {
        for line in text.lines() {
            let mut fields = line.split(':');
            let (Some(name), Some(gid)) = (fields.next(), fields.nth(1)) else { continue };
            if name.is_empty() || name.starts_with('#') {
                continue;
            }
            if let Ok(gid) = gid.parse() {
                self.groups.entry(name.to_owned()).or_insert(gid);
            }
        }
        self.group_source = "the group database".to_owned();
        self
    }

    /// Where the group names came from, for "unknown group" messages.
    pub fn group_source(&self) -> &str {
        &self.group_source
    }

    /// The gid of group `name`.
    pub fn gid(&self, name: &str) -> Option<u32> {
        self.groups.get(name).copied()
    }

    /// Parses text in passwd(5) format (`name:x:uid:gid:...`). The first entry of a name wins, as with getpwnam.
    pub fn from_passwd(text: &str) -> Self {
        let mut by_name = HashMap::new();
        for (name, uid) in passwd_entries(text) {
            by_name.entry(name.to_owned()).or_insert(uid);
        }
        UserDb {
            by_name,
            source: "the user database".to_owned(),
            groups: HashMap::new(),
            group_source: "the group database".to_owned(),
        }
    }

    /// Where the names came from, for "unknown user" messages.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The uid of `name`.
    pub fn uid(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_lines_resolve_and_junk_is_skipped() {
        let db = UserDb::from_passwd("root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/sh\nbad\n");
        assert_eq!(db.uid("root"), Some(0));
        assert_eq!(db.uid("alice"), Some(1000));
        assert_eq!(db.uid("bad"), None);
        assert_eq!(db.uid("bob"), None);
    }

    #[test]
    fn group_lines_resolve_and_junk_is_skipped() {
        let db = UserDb::from_passwd("").with_groups("root:x:0:\ndev:x:1500:alice,bob\nbad\nnum:x:nope:\n");
        assert_eq!(db.gid("root"), Some(0));
        assert_eq!(db.gid("dev"), Some(1500));
        assert_eq!(db.gid("bad"), None);
        assert_eq!(db.gid("num"), None);
    }

    #[test]
    fn this_machine_has_root() {
        assert_eq!(UserDb::system().uid("root"), Some(0));
        assert_eq!(UserDb::system().gid("root"), Some(0));
    }
}
