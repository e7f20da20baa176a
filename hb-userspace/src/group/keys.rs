//! Where a group keeps what it shares in etcd, every key under
//! `hb/<group>/`:
//!
//! | key | value | lease |
//! |---|---|---|
//! | `members/<monitor>` | `{"voting": bool}` | the monitor's |
//! | `opinions/<node id>/<monitor>` | `down` or `left` (no key: up) | the monitor's |
//! | `incidents/<node id>` | [`Incident`]: the group's recorded verdict | none: it outlives leaders |
//! | `election/<lease id, hex>` | the candidate monitor's name | the monitor's (etcd's election API) |
//!
//! Node ids are written in decimal; the watch reads every key back through
//! [`Layout::parse`].

use serde::{Deserialize, Serialize};

use super::Opinion;

/// The keys of one group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    prefix: String,
}

/// A key of the group, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Key<'a> {
    Member(&'a str),
    Opinion {
        node: u32,
        monitor: &'a str,
    },
    Incident(u32),
    /// A candidate's key in the election (etcd names it).
    Candidate,
}

/// A group verdict the leader recorded (and acted on).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    /// The verdict: down, left, or up again.
    pub state: Opinion,
    /// Counts the node's incidents: the first recorded is 1.
    pub generation: u64,
    /// The monitor that recorded it (the leader then).
    pub leader: String,
    /// When, Unix milliseconds.
    pub unix_ms: u64,
}

impl Layout {
    pub fn new(group: &str) -> Self {
        Layout {
            prefix: format!("hb/{group}/"),
        }
    }

    /// Every key of the group starts with this.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn member(&self, monitor: &str) -> String {
        format!("{}members/{monitor}", self.prefix)
    }

    pub fn opinion(&self, node: u32, monitor: &str) -> String {
        format!("{}opinions/{node}/{monitor}", self.prefix)
    }

    pub fn incident(&self, node: u32) -> String {
        format!("{}incidents/{node}", self.prefix)
    }

    /// The election's name (etcd puts the candidates' keys under it).
    pub fn election(&self) -> String {
        format!("{}election", self.prefix)
    }

    /// What `key` is, if it is one of the group's.
    pub fn parse<'a>(&self, key: &'a str) -> Option<Key<'a>> {
        let rest = key.strip_prefix(&self.prefix)?;
        let (kind, rest) = rest.split_once('/')?;
        match kind {
            "members" if !rest.is_empty() && !rest.contains('/') => Some(Key::Member(rest)),
            "opinions" => {
                let (node, monitor) = rest.split_once('/')?;
                (!monitor.is_empty() && !monitor.contains('/')).then_some(())?;
                Some(Key::Opinion {
                    node: node.parse().ok()?,
                    monitor,
                })
            }
            "incidents" => Some(Key::Incident(rest.parse().ok()?)),
            "election" => Some(Key::Candidate),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_back() {
        let layout = Layout::new("prod-a");
        assert_eq!(layout.parse(&layout.member("m1")), Some(Key::Member("m1")));
        assert_eq!(
            layout.parse(&layout.opinion(42, "m-2")),
            Some(Key::Opinion {
                node: 42,
                monitor: "m-2"
            })
        );
        assert_eq!(layout.parse(&layout.incident(7)), Some(Key::Incident(7)));
        assert_eq!(
            layout.parse(&format!("{}/694d7a1b", layout.election())),
            Some(Key::Candidate)
        );
        // Another group sharing the etcd, and junk.
        assert_eq!(layout.parse(&Layout::new("prod-b").member("m1")), None);
        assert_eq!(layout.parse("hb/prod-a/opinions/x/m1"), None);
        assert_eq!(layout.parse("hb/prod-a/opinions/1/"), None);
        assert_eq!(layout.parse("hb/prod-a/members/a/b"), None);
        assert_eq!(layout.parse("hb/prod-a/other/1"), None);
    }
}
