//! Who this node is: its Raft node id, bound to the URL it advertises.
//!
//! Files in `<data dir>/raft/` (`Durable` documents): `node-id` (a `u64`)
//! and `node-url` (the advertise URL the id was taken under, a JSON
//! string).
//!
//! A node id must never run in two processes at once: Raft counts each id
//! once, and two processes answering as one voter break the intersection of
//! quorums (acknowledged records lost, two records at one committed
//! offset). A data directory copied to seed another node (`cp -a`, a VM
//! clone, a volume snapshot restored into a new claim) starts at another
//! URL, so the id is kept only where it was taken: elsewhere the copy
//! takes a new id and joins as a new node, its copied log a head start that
//! the leader truncates where it disagrees. A node whose URL really changed
//! is a new node the same way: its old id stays a member, unreachable, until
//! removed (`distlog cluster remove`).
//! A directory without `node-url` (written by an earlier version) is bound
//! to the URL it starts at.
//!
//! A new id goes to disk before its URL: a crash in between leaves a new
//! id with the old (or no) URL, and the next start either keeps it or takes
//! yet another new id, never the old one at a new URL.

use super::durable::Durable;
use super::types::NodeId;

const NODE_ID: &str = "node-id";
const NODE_URL: &str = "node-url";

/// Why this start takes a new node id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewId {
    /// An empty data directory (or one wiped of its `raft/` files).
    Fresh,
    /// The directory's id was taken at another URL: a copy, or a moved node.
    Moved { old_id: NodeId, old_url: String },
}

/// The id on disk, if it was taken at `url` (binding a directory from
/// before `node-url` existed to `url`); otherwise why a new one is needed.
pub fn recorded_id(durable: &Durable, url: &str) -> std::io::Result<Result<NodeId, NewId>> {
    let Some(id) = durable.read::<NodeId>(NODE_ID)? else {
        return Ok(Err(NewId::Fresh));
    };
    match durable.read::<String>(NODE_URL)? {
        Some(old_url) if same_url(&old_url, url) => Ok(Ok(id)),
        Some(old_url) => Ok(Err(NewId::Moved { old_id: id, old_url })),
        None => {
            durable.write(NODE_URL, &normalized(url), true)?;
            Ok(Ok(id))
        }
    }
}

/// The id on disk, wherever it was taken (before the log opens).
pub fn stored_id(durable: &Durable) -> std::io::Result<Option<NodeId>> {
    durable.read::<NodeId>(NODE_ID)
}

/// Takes `id` as this node's id at `url`, durably, the id first.
pub fn record_id(durable: &Durable, id: NodeId, url: &str) -> std::io::Result<()> {
    durable.write(NODE_ID, &id, true)?;
    durable.write(NODE_URL, &normalized(url), true)
}

/// A random node id that is not 0, from the system's generator.
pub fn new_node_id() -> std::io::Result<NodeId> {
    use ring::rand::SecureRandom;
    let rng = ring::rand::SystemRandom::new();
    loop {
        let mut bytes = [0u8; 8];
        rng.fill(&mut bytes)
            .map_err(|_| std::io::Error::other("no random numbers for a node id"))?;
        // Ids stay below 2^53 so that JSON clients read them exactly.
        let id = u64::from_le_bytes(bytes) >> 11;
        if id != 0 {
            return Ok(id);
        }
    }
}

fn normalized(url: &str) -> String {
    url.trim_end_matches('/').to_ascii_lowercase()
}

/// Two URLs name the same place when host, port and path agree, as parsed
/// (`http://h` is `http://h:80`; host names are not case-sensitive): the
/// scheme may change, so turning TLS on is not a move. A host name and an
/// address it resolves to are different places.
pub(super) fn same_url(a: &str, b: &str) -> bool {
    /// Host, port (None: the scheme's default) and path.
    fn place(url: &str) -> Option<(String, Option<u16>, String)> {
        let url = reqwest::Url::parse(url).ok()?;
        let path = url.path().trim_end_matches('/').to_string();
        // `Url` drops a port that is its scheme's default: `http://h:80`
        // parses as `http://h`, so default ports compare as None, and
        // `http://h` to `https://h` (80 to 443) is turning TLS on.
        Some((url.host_str()?.to_string(), url.port(), path))
    }
    match (place(a), place(b)) {
        (Some(a), Some(b)) => a == b,
        _ => normalized(a) == normalized(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn durable() -> (tempfile::TempDir, Durable) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let durable = Durable::open(dir.path().join("raft")).expect("raft/ opens");
        (dir, durable)
    }

    #[test]
    fn an_id_is_kept_only_at_the_url_it_was_taken_at() {
        let (_dir, durable) = durable();
        assert_eq!(recorded_id(&durable, "http://a:1").unwrap(), Err(NewId::Fresh));
        record_id(&durable, 7, "http://a:1/").unwrap();
        assert_eq!(recorded_id(&durable, "http://A:1").unwrap(), Ok(7));
        assert_eq!(
            recorded_id(&durable, "https://a:1").unwrap(),
            Ok(7),
            "turning TLS on is not a move"
        );
        record_id(&durable, 8, "http://b").unwrap();
        assert_eq!(
            recorded_id(&durable, "http://B:80/").unwrap(),
            Ok(8),
            "the default port"
        );
        assert_eq!(
            recorded_id(&durable, "https://b").unwrap(),
            Ok(8),
            "turning TLS on with the default ports"
        );
        record_id(&durable, 7, "http://a:1").unwrap();
        assert_eq!(
            recorded_id(&durable, "http://b:1").unwrap(),
            Err(NewId::Moved {
                old_id: 7,
                old_url: "http://a:1".to_string()
            })
        );
    }

    #[test]
    fn a_directory_from_before_urls_were_recorded_is_bound_where_it_starts() {
        let (_dir, durable) = durable();
        durable.write(NODE_ID, &9u64, true).unwrap();
        assert_eq!(recorded_id(&durable, "http://a:1").unwrap(), Ok(9));
        assert!(matches!(
            recorded_id(&durable, "http://b:1").unwrap(),
            Err(NewId::Moved { old_id: 9, .. })
        ));
    }

    #[test]
    fn a_crash_between_the_id_and_its_url_never_brings_the_old_id_back_elsewhere() {
        let (_dir, durable) = durable();
        record_id(&durable, 7, "http://a:1").unwrap();
        // The copy at b took id 8; the crash came before its URL was written.
        durable.write(NODE_ID, &8u64, true).unwrap();
        assert!(matches!(
            recorded_id(&durable, "http://b:1").unwrap(),
            Err(NewId::Moved { old_id: 8, .. })
        ));
    }
}
