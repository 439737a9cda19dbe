//! The access policy from `--acl`: lines of `<principal> <action>`, where
//! `*` as principal means everyone authenticated and the actions are
//! `produce` (append), `consume` (read, tail, status, replicate), `cluster`
//! (a cluster's peer RPCs under `/raft/` and membership changes under
//! `/cluster/`: what peers need) and `admin` (everything, including
//! protected metrics and health). Blank lines and `#`
//! comments are ignored. A plain table: the policy model is this small.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use super::{AuthConfigError, LineError, load_file, word_pairs};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Produce,
    Consume,
    Cluster,
    Admin,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Produce => "produce",
            Action::Consume => "consume",
            Action::Cluster => "cluster",
            Action::Admin => "admin",
        }
    }

    fn parse(word: &str) -> Option<Action> {
        match word {
            "produce" => Some(Action::Produce),
            "consume" => Some(Action::Consume),
            "cluster" => Some(Action::Cluster),
            "admin" => Some(Action::Admin),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Acl {
    grants: HashMap<String, HashSet<Action>>,
}

impl Acl {
    pub fn load(path: &Path) -> Result<Acl, AuthConfigError> {
        load_file(path, Acl::parse)
    }

    pub fn parse(text: &str) -> Result<Acl, LineError> {
        let mut acl = Acl::default();
        for (line, principal, action) in word_pairs(text, "<principal> <action>")? {
            let action = Action::parse(action).ok_or_else(|| {
                (
                    line,
                    format!("unknown action {action:?}: use produce, consume or admin"),
                )
            })?;
            acl.grants.entry(principal.to_string()).or_default().insert(action);
        }
        Ok(acl)
    }

    pub fn allows(&self, principal: &str, action: Action) -> bool {
        [principal, "*"].iter().any(|who| {
            self.grants
                .get(*who)
                .is_some_and(|actions| actions.contains(&action) || actions.contains(&Action::Admin))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_wildcards_and_admin() {
        let acl = Acl::parse("# policy\nalice produce\nbob consume\n* consume\nroot admin\n").unwrap();
        assert!(acl.allows("alice", Action::Produce));
        assert!(
            acl.allows("alice", Action::Consume),
            "the wildcard grants consume to everyone"
        );
        assert!(!acl.allows("alice", Action::Admin));
        assert!(!acl.allows("bob", Action::Produce));
        assert!(!acl.allows("carol", Action::Produce));
        assert!(acl.allows("carol", Action::Consume));
        assert!(acl.allows("root", Action::Produce) && acl.allows("root", Action::Admin));
        assert!(acl.allows("root", Action::Cluster), "admin grants cluster");
        assert!(!acl.allows("alice", Action::Cluster));
    }

    #[test]
    fn bad_lines_are_named() {
        assert_eq!(Acl::parse("alice write").unwrap_err().0, 1);
        assert_eq!(Acl::parse("\n\nalice").unwrap_err().0, 3);
    }
}
