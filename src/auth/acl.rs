//! The access policy from `--acl`: lines of `<principal> <action>`, where
//! `*` as principal means everyone authenticated and the actions are
//! `produce` (append), `consume` (read, tail, status, replicate, consumer
//! positions), `cluster`
//! (a cluster's peer RPCs under `/raft/` and membership changes under
//! `/cluster/`, and `consume`: what peers need) and `admin` (everything,
//! including protected metrics and health). Blank lines and `#`
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

    /// Whether a grant of `self` also grants `other`: `admin` grants
    /// everything, and `cluster` grants `consume` (a peer holds the whole
    /// log anyway, and forming a cluster reads `GET /cluster`).
    fn includes(self, other: Action) -> bool {
        matches!((self, other), (Action::Admin, _) | (Action::Cluster, Action::Consume))
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
                    format!("unknown action {action:?}: use produce, consume, cluster or admin"),
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
                .is_some_and(|actions| actions.contains(&action) || actions.iter().any(|a| a.includes(action)))
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
    fn cluster_is_what_peers_need_and_nothing_more() {
        let acl = Acl::parse("peer cluster\n").unwrap();
        assert!(acl.allows("peer", Action::Cluster));
        assert!(
            acl.allows("peer", Action::Consume),
            "peers read GET /cluster and replicate"
        );
        assert!(!acl.allows("peer", Action::Produce));
        assert!(!acl.allows("peer", Action::Admin));
    }

    #[test]
    fn bad_lines_are_named() {
        assert_eq!(Acl::parse("alice write").unwrap_err().0, 1);
        assert_eq!(Acl::parse("\n\nalice").unwrap_err().0, 3);
    }
}
