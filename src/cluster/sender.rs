//! Who sent a peer RPC. Every `/raft/*` request names its sender's node id
//! in `x-distlog-raft-sender` (beside its target in `x-distlog-raft-target`),
//! and the receiver holds that name to the message and to the connection
//! before openraft sees the message:
//!
//! - The name must be the node the message speaks for (append and
//!   snapshot: the leader of its vote; vote and pre-vote: the candidate;
//!   transfer-leader: the leader it comes from). A request without the
//!   header (a node from before it, during a rolling upgrade) is taken as
//!   naming that node: it is checked as below all the same.
//! - Under mutual TLS, a client certificate that names hosts (DNS or IP
//!   subject alternative names) must be valid for the host of the sender's
//!   URL or peer URL in this node's membership, checked as a client checks
//!   a server's name. The place a member is recorded at is what the cluster
//!   already trusts (Raft's messages to it go there, its id is bound to it:
//!   `identity`), so a certificate for that place is the one credential
//!   that proves a caller is that member; a certificate for another node's
//!   host cannot speak for it. Chosen over recording a principal at join:
//!   members formed from `--peers` never join, and a per-node certificate
//!   naming the node's host is what a CA (cert-manager, a StatefulSet's
//!   pod names) already issues.
//!
//! What is not bound: a certificate that names no host (one client
//! certificate shared by every peer, as in the shipped examples), a token,
//! or plain HTTP say who may speak Raft, not which member is speaking; any
//! holder may speak for any member. A sender this node's membership does
//! not know yet (a fresh learner's first append, or a new voter leading a
//! follower that has not applied its joining yet) cannot be checked and is
//! heard: a holder of a valid certificate may still speak as an id no
//! member has (what `validate` and the ACL allow). A refusal is 403
//! `peer_identity_mismatch`, which the sender takes as a failed RPC
//! (unreachable), never as a vote.

use super::error::ClusterError;
use super::types::{Member, NodeId};

/// Header naming the node a Raft request comes from.
pub const SENDER_HEADER: &str = "x-distlog-raft-sender";

/// What a verified client certificate proves about where its holder is.
pub trait HostProof: Sync {
    /// Whether it names any host: one that names none binds no place.
    fn names_hosts(&self) -> bool;
    /// Whether it is valid for `host` (a DNS name or an IP address), as a
    /// server's certificate would be.
    fn valid_for(&self, host: &str) -> bool;
}

/// What the request of a peer RPC shows of its caller.
#[derive(Clone, Copy, Default)]
pub struct Caller<'a> {
    /// The `x-distlog-raft-sender` header, as sent (None: not sent).
    pub named: Option<&'a str>,
    /// The caller's verified client certificate (mutual TLS).
    pub certificate: Option<&'a dyn HostProof>,
}

/// The host of `url` as a certificate names it (an IPv6 address without
/// its brackets).
fn host_of(url: &str) -> Option<String> {
    let url = reqwest::Url::parse(url).ok()?;
    let host = url.host_str()?;
    Some(host.trim_start_matches('[').trim_end_matches(']').to_string())
}

/// Holds `caller` to the node `inside` the message, recorded in this
/// node's membership as `member` (None: not known here yet).
pub(super) fn check(caller: &Caller, inside: NodeId, member: Option<&Member>) -> Result<(), ClusterError> {
    match caller.named {
        Some(named) if named.trim().parse::<NodeId>().ok() != Some(inside) => {
            return Err(ClusterError::PeerIdentityMismatch(format!(
                "the request names {named:?} as its sender but carries node {inside}'s message"
            )));
        }
        Some(_) => {}
        None => tracing::debug!(
            sender = inside,
            "a peer RPC names no sender (a node from before the header)"
        ),
    }
    let (Some(member), Some(certificate)) = (member, caller.certificate) else {
        return Ok(());
    };
    if !certificate.names_hosts() {
        return Ok(());
    }
    let hosts: Vec<String> = [Some(member.url.as_str()), member.peer_url.as_deref()]
        .into_iter()
        .flatten()
        .filter_map(host_of)
        .collect();
    match hosts.iter().any(|host| certificate.valid_for(host)) {
        true => Ok(()),
        false => Err(ClusterError::PeerIdentityMismatch(format!(
            "the client certificate is not valid for node {inside}'s host ({})",
            hosts.join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A certificate naming `hosts` (none: it names no host).
    struct Names(&'static [&'static str]);

    impl HostProof for Names {
        fn names_hosts(&self) -> bool {
            !self.0.is_empty()
        }
        fn valid_for(&self, host: &str) -> bool {
            self.0.contains(&host)
        }
    }

    fn member(url: &str, peer_url: Option<&str>) -> Member {
        Member {
            url: url.into(),
            max_record_bytes: None,
            peer_url: peer_url.map(str::to_string),
        }
    }

    fn named(name: &str) -> Caller<'_> {
        Caller {
            named: Some(name),
            certificate: None,
        }
    }

    #[test]
    fn the_named_sender_must_be_the_node_inside() {
        let at = member("http://a:1", None);
        assert!(check(&named("7"), 7, Some(&at)).is_ok());
        assert!(check(&named("7"), 7, None).is_ok(), "a sender not known here yet");
        for wrong in ["8", "", "seven", "-7"] {
            let refused = check(&named(wrong), 7, Some(&at));
            assert!(
                matches!(refused, Err(ClusterError::PeerIdentityMismatch(_))),
                "{wrong:?}: {refused:?}"
            );
        }
    }

    #[test]
    fn a_request_naming_no_sender_is_taken_as_from_the_node_inside() {
        assert!(check(&Caller::default(), 7, Some(&member("http://a:1", None))).is_ok());
        let elsewhere = Caller {
            named: None,
            certificate: Some(&Names(&["b"])),
        };
        assert!(
            check(&elsewhere, 7, Some(&member("https://a:1", None))).is_err(),
            "no header does not skip the certificate"
        );
    }

    #[test]
    fn a_certificate_must_be_valid_for_the_senders_url_or_peer_url() {
        let caller = |names: &'static Names| Caller {
            named: Some("7"),
            certificate: Some(names),
        };
        let at = member("https://a.example:8080", Some("https://a.example:9090"));
        assert!(check(&caller(&Names(&["a.example"])), 7, Some(&at)).is_ok());
        let refused = check(&caller(&Names(&["b.example"])), 7, Some(&at));
        assert!(
            matches!(&refused, Err(ClusterError::PeerIdentityMismatch(why)) if why.contains("a.example")),
            "{refused:?}"
        );
        let peer_only = member("https://public.example", Some("https://10.0.0.7:9090"));
        assert!(check(&caller(&Names(&["10.0.0.7"])), 7, Some(&peer_only)).is_ok());
        let v6 = member("https://[::1]:8080", None);
        assert!(check(&caller(&Names(&["::1"])), 7, Some(&v6)).is_ok());
        assert!(
            check(&caller(&Names(&["b.example"])), 7, None).is_ok(),
            "a sender not known here yet cannot be checked"
        );
    }

    #[test]
    fn a_certificate_that_names_no_host_binds_nothing() {
        let shared = Caller {
            named: Some("7"),
            certificate: Some(&Names(&[])),
        };
        assert!(check(&shared, 7, Some(&member("https://a:1", None))).is_ok());
    }
}
