//! What the client knows of the servers: the members, the leader, and
//! which members to leave alone for a while after they failed.
//!
//! It is learnt from one server's answer: `GET /cluster` on a cluster
//! member (`{"leader_url", "members": [{"url", ...}]}`); on a node that is
//! not in a cluster (`404 not_a_cluster`), `GET /status`, whose `role` is
//! `leader` for a standalone node (it is the only member and takes the
//! writes) and `follower` for a `--follow` replica (`leader` is the URL it
//! copies from: writes go there, reads to both).

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::backoff::Backoff;

/// One server's account of the servers.
#[derive(Clone, Debug, PartialEq)]
pub struct View {
    pub members: Vec<String>,
    pub leader: Option<String>,
}

impl View {
    /// From a `GET /cluster` answer.
    pub fn from_cluster(body: &Value) -> Option<View> {
        let members: Vec<String> = body["members"]
            .as_array()?
            .iter()
            .filter_map(|member| member["url"].as_str())
            .map(base)
            .collect();
        let leader = body["leader_url"].as_str().map(base);
        Some(View { members, leader })
    }

    /// From `GET /status` of a node that is not a cluster member (`url`).
    pub fn from_status(url: &str, body: &Value) -> Option<View> {
        match (body["role"].as_str()?, body["leader"].as_str()) {
            ("follower", Some(leader)) => Some(View {
                members: vec![base(url), base(leader)],
                leader: Some(base(leader)),
            }),
            ("leader", _) => Some(View {
                members: vec![base(url)],
                leader: Some(base(url)),
            }),
            _ => None,
        }
    }
}

/// A URL without the trailing slash, so that paths append to it.
pub fn base(url: &str) -> String {
    url.trim_end_matches('/').to_string()
}

#[derive(Debug)]
struct Member {
    url: String,
    failures: u32,
    skip_until: Option<Instant>,
}

/// The members with their health, and the leader.
#[derive(Debug)]
pub struct Topology {
    members: Vec<Member>,
    leader: Option<String>,
    refreshed: Option<Instant>,
    backoff: Backoff,
}

impl Topology {
    pub fn new(backoff: Backoff) -> Topology {
        Topology {
            members: Vec::new(),
            leader: None,
            refreshed: None,
            backoff,
        }
    }

    /// Takes a new view, keeping the health of members it still names.
    pub fn apply(&mut self, view: View) {
        let mut old = std::mem::take(&mut self.members);
        self.members = view
            .members
            .into_iter()
            .map(|url| match old.iter().position(|m| m.url == url) {
                Some(i) => old.swap_remove(i),
                None => Member {
                    url,
                    failures: 0,
                    skip_until: None,
                },
            })
            .collect();
        if let Some(leader) = &view.leader
            && !self.members.iter().any(|m| &m.url == leader)
        {
            self.members.push(Member {
                url: leader.clone(),
                failures: 0,
                skip_until: None,
            });
        }
        self.leader = view.leader;
        self.refreshed = Some(Instant::now());
    }

    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }

    /// A `307` named the leader: take it if it is a known member (a URL
    /// no member has is not trusted; the next discovery decides).
    pub fn follow_redirect(&mut self, leader: &str) {
        if self.members.iter().any(|m| m.url == leader) {
            self.leader = Some(leader.to_string());
        } else {
            self.leader = None;
        }
    }

    pub fn forget_leader(&mut self) {
        self.leader = None;
    }

    pub fn is_known(&self) -> bool {
        self.refreshed.is_some()
    }

    pub fn age(&self) -> Option<Duration> {
        self.refreshed.map(|at| at.elapsed())
    }

    pub fn urls(&self) -> Vec<String> {
        self.members.iter().map(|m| m.url.clone()).collect()
    }

    /// The members to try for a read, starting at the `turn`-th: healthy
    /// ones first (round-robin), then those in back-off, soonest back first
    /// (a read tries everyone before it gives up).
    pub fn read_order(&self, turn: usize) -> Vec<String> {
        let now = Instant::now();
        let n = self.members.len();
        let mut healthy = Vec::with_capacity(n);
        let mut resting = Vec::new();
        for i in 0..n {
            let member = &self.members[(turn + i) % n];
            match member.skip_until {
                Some(until) if until > now => resting.push((until, member.url.clone())),
                _ => healthy.push(member.url.clone()),
            }
        }
        resting.sort();
        healthy.extend(resting.into_iter().map(|(_, url)| url));
        healthy
    }

    /// A member failed: skip it for a back-off that grows with each
    /// failure in a row.
    pub fn failed(&mut self, url: &str) {
        if let Some(member) = self.members.iter_mut().find(|m| m.url == url) {
            member.failures = member.failures.saturating_add(1);
            member.skip_until = Some(Instant::now() + self.backoff.delay(member.failures));
        }
        if self.leader.as_deref() == Some(url) {
            self.leader = None;
        }
    }

    /// A member answered: it is healthy again.
    pub fn succeeded(&mut self, url: &str) {
        if let Some(member) = self.members.iter_mut().find(|m| m.url == url)
            && member.failures > 0
        {
            member.failures = 0;
            member.skip_until = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn topology() -> Topology {
        Topology::new(Backoff {
            base: Duration::from_secs(10),
            cap: Duration::from_secs(60),
        })
    }

    #[test]
    fn a_cluster_answer_names_the_members_and_the_leader() {
        let body = json!({"leader_url": "http://b/", "members": [{"url": "http://a"}, {"url": "http://b"}]});
        let view = View::from_cluster(&body).unwrap();
        assert_eq!(view.members, ["http://a", "http://b"]);
        assert_eq!(view.leader.as_deref(), Some("http://b"));
    }

    #[test]
    fn a_replica_sends_writes_to_its_leader_and_a_standalone_node_takes_them() {
        let replica = View::from_status("http://r", &json!({"role": "follower", "leader": "http://l"})).unwrap();
        assert_eq!(replica.members, ["http://r", "http://l"]);
        assert_eq!(replica.leader.as_deref(), Some("http://l"));
        let alone = View::from_status("http://s", &json!({"role": "leader", "leader": null})).unwrap();
        assert_eq!(
            (alone.members, alone.leader),
            (vec!["http://s".to_string()], Some("http://s".into()))
        );
    }

    #[test]
    fn reads_rotate_and_a_failed_member_goes_last_until_it_answers() {
        let mut topology = topology();
        topology.apply(View {
            members: vec!["a".into(), "b".into(), "c".into()],
            leader: Some("a".into()),
        });
        assert_eq!(topology.read_order(1), ["b", "c", "a"]);
        topology.failed("b");
        assert_eq!(topology.read_order(1), ["c", "a", "b"]);
        assert_eq!(topology.leader(), Some("a"));
        topology.failed("a");
        assert_eq!(topology.leader(), None, "a failed leader is asked for again");
        topology.succeeded("b");
        assert_eq!(topology.read_order(1), ["b", "c", "a"]);
    }
}
