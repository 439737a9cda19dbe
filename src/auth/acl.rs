//! The access policy from `--acl`: lines of `<principal> <action>[:<scope>]`,
//! where `*` as principal means everyone authenticated and the actions are
//! `produce` (append), `consume` (read, tail, status, replicate, consumer
//! positions), `manage` (create, change and delete named logs), `cluster`
//! (a cluster's peer RPCs under `/raft/` and membership changes under
//! `/cluster/`, and `consume`: what peers need) and `admin` (everything,
//! including protected metrics and health). Blank lines and `#`
//! comments are ignored. A plain table: the policy model is this small.
//!
//! A scope limits a grant to some logs: `produce:orders` (the log named
//! `orders`), `consume:audit-*` (every log whose name starts with
//! `audit-`), `consume:default` (the default log). An unscoped grant covers
//! every log. `cluster` and `admin` are node-wide and take no scope.

use std::collections::HashMap;
use std::path::Path;

use super::{AuthConfigError, LineError, load_file, word_pairs};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Produce,
    Consume,
    Manage,
    Cluster,
    Admin,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Produce => "produce",
            Action::Consume => "consume",
            Action::Manage => "manage",
            Action::Cluster => "cluster",
            Action::Admin => "admin",
        }
    }

    /// Whether a grant of `self` also grants `other`: `admin` grants
    /// everything, and `cluster` grants `consume` (a peer holds the whole
    /// log anyway, and forming a cluster reads `GET /cluster`).
    fn includes(self, other: Action) -> bool {
        self == other || matches!((self, other), (Action::Admin, _) | (Action::Cluster, Action::Consume))
    }

    fn parse(word: &str) -> Option<Action> {
        match word {
            "produce" => Some(Action::Produce),
            "consume" => Some(Action::Consume),
            "manage" => Some(Action::Manage),
            "cluster" => Some(Action::Cluster),
            "admin" => Some(Action::Admin),
            _ => None,
        }
    }

    fn takes_scope(self) -> bool {
        matches!(self, Action::Produce | Action::Consume | Action::Manage)
    }
}

/// Which logs a grant covers.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Scope {
    Every,
    Named(String),
    Prefix(String),
}

impl Scope {
    fn parse(text: &str) -> Option<Scope> {
        let (name, prefix) = match text.strip_suffix('*') {
            Some(prefix) => (prefix, true),
            None => (text, false),
        };
        // What a log name may hold (see `logs::LogName`); a bare `*` is
        // every log, which leaving the scope out already says.
        let fits = name.len() <= 100
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
        match (fits, prefix) {
            (false, _) => None,
            (true, true) if name.is_empty() => Some(Scope::Every),
            (true, true) => Some(Scope::Prefix(name.to_string())),
            (true, false) if name.is_empty() => None,
            (true, false) => Some(Scope::Named(name.to_string())),
        }
    }

    /// Whether the grant covers `log` (`None`: a request that names no log,
    /// which only an unscoped grant covers).
    fn covers(&self, log: Option<&str>) -> bool {
        match (self, log) {
            (Scope::Every, _) => true,
            (_, None) => false,
            (Scope::Named(name), Some(log)) => name == log,
            (Scope::Prefix(prefix), Some(log)) => log.starts_with(prefix.as_str()),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Acl {
    grants: HashMap<String, Vec<(Action, Scope)>>,
}

impl Acl {
    pub fn load(path: &Path) -> Result<Acl, AuthConfigError> {
        load_file(path, Acl::parse)
    }

    pub fn parse(text: &str) -> Result<Acl, LineError> {
        let mut acl = Acl::default();
        for (line, principal, grant) in word_pairs(text, "<principal> <action>[:<scope>]")? {
            let (word, scope) = match grant.split_once(':') {
                Some((word, scope)) => (word, Some(scope)),
                None => (grant, None),
            };
            let action = Action::parse(word).ok_or_else(|| {
                (
                    line,
                    format!("unknown action {word:?}: use produce, consume, manage, cluster or admin"),
                )
            })?;
            let scope = match scope {
                None => Scope::Every,
                Some(_) if !action.takes_scope() => {
                    return Err((line, format!("{word} is node-wide and takes no scope")));
                }
                Some(text) => Scope::parse(text).ok_or_else(|| {
                    (
                        line,
                        format!("bad scope {text:?}: a log name, or a prefix of one followed by *"),
                    )
                })?,
            };
            acl.grants
                .entry(principal.to_string())
                .or_default()
                .push((action, scope));
        }
        Ok(acl)
    }

    /// Whether `principal` may do `action` on `log` (`None`: the request
    /// names no log, or all of them).
    pub fn allows(&self, principal: &str, action: Action, log: Option<&str>) -> bool {
        [principal, "*"].iter().any(|who| {
            self.grants.get(*who).is_some_and(|grants| {
                grants
                    .iter()
                    .any(|(granted, scope)| granted.includes(action) && scope.covers(log))
            })
        })
    }

    /// Whether a line of `principal`'s own grants `action` itself, unscoped:
    /// not `admin`, which includes it, nor a grant to `*`.
    pub fn grants_by_name(&self, principal: &str, action: Action) -> bool {
        self.grants.get(principal).is_some_and(|grants| {
            grants
                .iter()
                .any(|(granted, scope)| *granted == action && *scope == Scope::Every)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_wildcards_and_admin() {
        let acl = Acl::parse("# policy\nalice produce\nbob consume\n* consume\nroot admin\n").unwrap();
        assert!(acl.allows("alice", Action::Produce, None));
        assert!(
            acl.allows("alice", Action::Consume, None),
            "the wildcard grants consume to everyone"
        );
        assert!(!acl.allows("alice", Action::Admin, None));
        assert!(!acl.allows("bob", Action::Produce, None));
        assert!(!acl.allows("carol", Action::Produce, None));
        assert!(acl.allows("carol", Action::Consume, None));
        assert!(acl.allows("root", Action::Produce, None) && acl.allows("root", Action::Admin, None));
        assert!(acl.allows("root", Action::Cluster, None), "admin grants cluster");
        assert!(
            acl.allows("root", Action::Manage, Some("orders")),
            "admin grants manage"
        );
        assert!(!acl.allows("alice", Action::Cluster, None));
        assert!(!acl.allows("alice", Action::Manage, Some("orders")));
    }

    #[test]
    fn cluster_is_what_peers_need_and_nothing_more() {
        let acl = Acl::parse("peer cluster\n").unwrap();
        assert!(acl.allows("peer", Action::Cluster, None));
        assert!(
            acl.allows("peer", Action::Consume, Some("orders")),
            "peers read GET /cluster and replicate"
        );
        assert!(!acl.allows("peer", Action::Produce, None));
        assert!(!acl.allows("peer", Action::Manage, None));
        assert!(!acl.allows("peer", Action::Admin, None));
    }

    #[test]
    fn a_grant_by_name_is_the_principals_own_line() {
        let acl = Acl::parse("peer cluster\nroot admin\n* cluster\nalice produce:orders\n").unwrap();
        assert!(acl.grants_by_name("peer", Action::Cluster));
        assert!(
            !acl.grants_by_name("root", Action::Cluster),
            "admin includes it, not by name"
        );
        assert!(acl.allows("carol", Action::Cluster, None));
        assert!(
            !acl.grants_by_name("carol", Action::Cluster),
            "the wildcard is not by name"
        );
        assert!(
            !acl.grants_by_name("alice", Action::Produce),
            "a scoped grant is not the action"
        );
    }

    #[test]
    fn scopes_limit_a_grant_to_some_logs() {
        let acl =
            Acl::parse("alice produce:orders\nbob consume:audit-*\ncarol manage:team-a.*\neve produce\n").unwrap();
        assert!(acl.allows("alice", Action::Produce, Some("orders")));
        assert!(
            !acl.allows("alice", Action::Produce, Some("orders2")),
            "a name is whole"
        );
        assert!(!acl.allows("alice", Action::Produce, Some("default")));
        assert!(
            !acl.allows("alice", Action::Produce, None),
            "no log named: only unscoped grants"
        );
        assert!(!acl.allows("alice", Action::Consume, Some("orders")));
        assert!(acl.allows("bob", Action::Consume, Some("audit-2026")));
        assert!(acl.allows("bob", Action::Consume, Some("audit-")));
        assert!(!acl.allows("bob", Action::Consume, Some("audit")));
        assert!(acl.allows("carol", Action::Manage, Some("team-a.billing")));
        assert!(!acl.allows("carol", Action::Manage, Some("team-b.billing")));
        assert!(acl.allows("eve", Action::Produce, Some("anything")) && acl.allows("eve", Action::Produce, None));
        let star = Acl::parse("dan consume:*\n").unwrap();
        assert!(star.allows("dan", Action::Consume, None), "consume:* is every log");
    }

    #[test]
    fn bad_lines_are_named() {
        assert_eq!(Acl::parse("alice write").unwrap_err().0, 1);
        assert_eq!(Acl::parse("\n\nalice").unwrap_err().0, 3);
        assert_eq!(Acl::parse("alice admin:orders").unwrap_err().0, 1, "admin is node-wide");
        assert_eq!(Acl::parse("alice produce:Orders").unwrap_err().0, 1, "not a log name");
        assert_eq!(Acl::parse("alice produce:").unwrap_err().0, 1);
        assert_eq!(Acl::parse("alice produce:a*b").unwrap_err().0, 1);
    }
}
