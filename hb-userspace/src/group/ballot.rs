//! The group as etcd holds it, mirrored by every monitor ([`Ballot`]): who
//! is a member (holds a lease) and votes, who holds which node down or
//! left, what the leader recorded, and who leads. The verdict rule lives
//! here and nothing here does I/O, so it is tested with plain values.
//!
//! **The rule.** A node is `down` (or `left`) for the group when more than
//! half of the voting members hold it so, and `up` again when more than half
//! hold it up (no key: up). When neither has a majority the group's verdict
//! stays what the leader last recorded. With n voters, a majority is
//! `n / 2 + 1`: 1 of 1, 2 of 2, 2 of 3, 3 of 4, 3 of 5.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::{
    Opinion,
    keys::{Incident, Key, Layout},
};

/// A member as its key says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberValue {
    /// Whether it votes yet (a monitor that just started listens first).
    pub voting: bool,
}

/// A monitor holding a lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub lease: i64,
    pub voting: bool,
}

/// A recorded incident and the revision it was written at (what the next
/// record of the node must compare against).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub incident: Incident,
    pub mod_revision: i64,
}

/// A node whose group verdict differs from what is recorded: the leader
/// records it, then runs its actions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Due {
    pub node: u32,
    pub verdict: Opinion,
    /// What was recorded before (up if nothing was).
    pub previous: Opinion,
    /// The generation the new record gets.
    pub generation: u64,
    /// The incident key's revision the record must still have (0: none).
    pub mod_revision: i64,
}

/// The group's keys, as last read and watched.
#[derive(Clone, Debug, Default)]
pub struct Ballot {
    /// The etcd revision this mirror is at.
    pub revision: i64,
    members: BTreeMap<String, Member>,
    /// Only opinions other than up, by node then monitor.
    opinions: BTreeMap<u32, BTreeMap<String, Opinion>>,
    incidents: HashMap<u32, Recorded>,
    /// Candidates in the election: create revision → monitor.
    candidates: BTreeMap<i64, (String, String)>,
}

/// One key-value as etcd returned it.
pub struct Entry<'a> {
    pub key: &'a str,
    pub value: &'a [u8],
    pub lease: i64,
    pub create_revision: i64,
    pub mod_revision: i64,
}

impl Ballot {
    /// Forgets everything (a new read of the whole prefix follows).
    pub fn reset(&mut self, revision: i64) {
        *self = Ballot {
            revision,
            ..Ballot::default()
        };
    }

    /// A key was put; keys that are not the group's, or whose value does not
    /// parse, are ignored (and said once in the log by the caller).
    pub fn put(&mut self, layout: &Layout, entry: &Entry<'_>) -> bool {
        match layout.parse(entry.key) {
            Some(Key::Member(monitor)) => {
                let Ok(value) = serde_json::from_slice::<MemberValue>(entry.value) else {
                    return false;
                };
                self.members.insert(
                    monitor.to_owned(),
                    Member {
                        lease: entry.lease,
                        voting: value.voting,
                    },
                );
            }
            Some(Key::Opinion { node, monitor }) => {
                let Some(opinion) = Opinion::parse(entry.value) else {
                    return false;
                };
                let of_node = self.opinions.entry(node).or_default();
                if opinion == Opinion::Up {
                    of_node.remove(monitor);
                    if of_node.is_empty() {
                        self.opinions.remove(&node);
                    }
                } else {
                    of_node.insert(monitor.to_owned(), opinion);
                }
            }
            Some(Key::Incident(node)) => {
                let Ok(incident) = serde_json::from_slice::<Incident>(entry.value) else {
                    return false;
                };
                self.incidents.insert(
                    node,
                    Recorded {
                        incident,
                        mod_revision: entry.mod_revision,
                    },
                );
            }
            Some(Key::Candidate) => {
                let monitor = String::from_utf8_lossy(entry.value).into_owned();
                self.candidates
                    .retain(|_, (key, _)| key.as_str() != entry.key);
                self.candidates
                    .insert(entry.create_revision, (entry.key.to_owned(), monitor));
            }
            None => return false,
        }
        true
    }

    /// A key was deleted (or its lease expired).
    pub fn delete(&mut self, layout: &Layout, key: &str) {
        match layout.parse(key) {
            Some(Key::Member(monitor)) => {
                self.members.remove(monitor);
            }
            Some(Key::Opinion { node, monitor }) => {
                if let Some(of_node) = self.opinions.get_mut(&node) {
                    of_node.remove(monitor);
                    if of_node.is_empty() {
                        self.opinions.remove(&node);
                    }
                }
            }
            Some(Key::Incident(node)) => {
                self.incidents.remove(&node);
            }
            Some(Key::Candidate) => self.candidates.retain(|_, (k, _)| k.as_str() != key),
            None => {}
        }
    }

    /// Members holding a lease, by name.
    pub fn members(&self) -> &BTreeMap<String, Member> {
        &self.members
    }

    /// The members that vote.
    pub fn voters(&self) -> impl Iterator<Item = &str> {
        self.members
            .iter()
            .filter(|(_, m)| m.voting)
            .map(|(name, _)| name.as_str())
    }

    /// The leader: the candidate that campaigned first (etcd's election
    /// elects the lowest create revision).
    pub fn leader(&self) -> Option<&str> {
        self.candidates
            .first_key_value()
            .map(|(_, (_, monitor))| monitor.as_str())
    }

    /// Whether the election still has the candidate key `key`.
    pub fn has_candidate(&self, key: &str) -> bool {
        self.candidates.values().any(|(k, _)| k == key)
    }

    /// What `monitor` holds about `node` (up unless it holds otherwise).
    pub fn opinion(&self, node: u32, monitor: &str) -> Opinion {
        self.opinions
            .get(&node)
            .and_then(|of_node| of_node.get(monitor))
            .copied()
            .unwrap_or(Opinion::Up)
    }

    /// The group's verdict on `node`, if a majority of the voters agree on
    /// one (see the module doc).
    pub fn verdict(&self, node: u32) -> Option<Opinion> {
        let (mut voters, mut down, mut left) = (0usize, 0usize, 0usize);
        for voter in self.voters() {
            voters += 1;
            match self.opinion(node, voter) {
                Opinion::Down => down += 1,
                Opinion::Left => left += 1,
                Opinion::Up => {}
            }
        }
        if voters == 0 {
            return None;
        }
        let majority = voters / 2 + 1;
        let up = voters - down - left;
        if down >= majority {
            Some(Opinion::Down)
        } else if left >= majority {
            Some(Opinion::Left)
        } else if up >= majority {
            Some(Opinion::Up)
        } else {
            None
        }
    }

    /// What the leader recorded about `node`, if anything.
    pub fn recorded(&self, node: u32) -> Option<&Recorded> {
        self.incidents.get(&node)
    }

    /// Incidents recorded in all (every node that was ever not up).
    pub fn incidents(&self) -> usize {
        self.incidents.len()
    }

    /// Every node whose verdict differs from its record, ascending. Looks
    /// only at nodes some monitor holds not up or that are recorded not up:
    /// a quiet fleet costs nothing.
    pub fn due(&self) -> Vec<Due> {
        let mut nodes: Vec<u32> = self.opinions.keys().copied().collect();
        nodes.extend(
            self.incidents
                .iter()
                .filter(|(_, r)| r.incident.state != Opinion::Up)
                .map(|(&node, _)| node),
        );
        nodes.sort_unstable();
        nodes.dedup();
        nodes
            .into_iter()
            .filter_map(|node| {
                let verdict = self.verdict(node)?;
                let recorded = self.incidents.get(&node);
                let previous = recorded.map_or(Opinion::Up, |r| r.incident.state);
                (verdict != previous).then(|| Due {
                    node,
                    verdict,
                    previous,
                    generation: recorded.map_or(0, |r| r.incident.generation) + 1,
                    mod_revision: recorded.map_or(0, |r| r.mod_revision),
                })
            })
            .collect()
    }

    /// Nodes the voters do not all agree on, with each voter's opinion and
    /// the recorded verdict; at most `limit`, ascending.
    pub fn disputed(&self, limit: usize) -> Vec<Disputed> {
        let voters: Vec<&str> = self.voters().collect();
        self.opinions
            .keys()
            .filter_map(|&node| {
                let opinions: BTreeMap<String, Opinion> = voters
                    .iter()
                    .map(|&v| (v.to_owned(), self.opinion(node, v)))
                    .collect();
                let mut values = opinions.values();
                let first = values.next()?;
                if values.all(|o| o == first) {
                    return None;
                }
                Some(Disputed {
                    id: node,
                    verdict: self
                        .incidents
                        .get(&node)
                        .map_or(Opinion::Up, |r| r.incident.state),
                    opinions,
                })
            })
            .take(limit)
            .collect()
    }
}

/// A node the voters disagree on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disputed {
    pub id: u32,
    /// The group's recorded verdict.
    pub verdict: Opinion,
    /// Each voter's opinion.
    pub opinions: BTreeMap<String, Opinion>,
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixture {
        layout: Layout,
        ballot: Ballot,
        revision: i64,
    }

    impl Fixture {
        fn new() -> Self {
            Fixture {
                layout: Layout::new("g"),
                ballot: Ballot::default(),
                revision: 0,
            }
        }

        fn put(&mut self, key: String, value: &[u8]) {
            self.revision += 1;
            let entry = Entry {
                key: &key,
                value,
                lease: 7,
                create_revision: self.revision,
                mod_revision: self.revision,
            };
            assert!(self.ballot.put(&self.layout, &entry), "{key}");
        }

        fn member(&mut self, name: &str, voting: bool) {
            let key = self.layout.member(name);
            let value = serde_json::to_vec(&MemberValue { voting }).unwrap();
            self.put(key, &value);
        }

        fn opine(&mut self, node: u32, monitor: &str, opinion: Opinion) {
            let key = self.layout.opinion(node, monitor);
            match opinion {
                Opinion::Up => self.ballot.delete(&self.layout, &key),
                other => self.put(key, other.as_str().as_bytes()),
            }
        }

        fn record(&mut self, due: Due) {
            let key = self.layout.incident(due.node);
            let incident = Incident {
                state: due.verdict,
                generation: due.generation,
                leader: "m1".to_owned(),
                unix_ms: 0,
            };
            self.put(key, &serde_json::to_vec(&incident).unwrap());
        }
    }

    #[test]
    fn majorities_of_one_to_five_voters() {
        // (voters, holding down) -> verdict.
        let cases = [
            (1, 0, Some(Opinion::Up)),
            (1, 1, Some(Opinion::Down)),
            (2, 1, None),
            (2, 2, Some(Opinion::Down)),
            (3, 1, Some(Opinion::Up)),
            (3, 2, Some(Opinion::Down)),
            (4, 2, None),
            (4, 3, Some(Opinion::Down)),
            (5, 2, Some(Opinion::Up)),
            (5, 3, Some(Opinion::Down)),
        ];
        for (voters, down, expected) in cases {
            let mut f = Fixture::new();
            for m in 0..voters {
                f.member(&format!("m{m}"), true);
            }
            for m in 0..down {
                f.opine(1, &format!("m{m}"), Opinion::Down);
            }
            assert_eq!(f.ballot.verdict(1), expected, "{down} of {voters} down");
        }
    }

    #[test]
    fn joining_monitors_and_strangers_do_not_vote() {
        let mut f = Fixture::new();
        f.member("m1", true);
        f.member("m2", true);
        f.member("m3", false);
        f.opine(1, "m1", Opinion::Down);
        // Two voters, one holds down: no majority either way.
        assert_eq!(f.ballot.verdict(1), None);
        // An opinion from a monitor without a member key (its lease is
        // expiring) does not count.
        f.opine(1, "gone", Opinion::Down);
        assert_eq!(f.ballot.verdict(1), None);
        f.opine(1, "m3", Opinion::Down);
        assert_eq!(f.ballot.verdict(1), None, "m3 does not vote yet");
        f.member("m3", true);
        assert_eq!(f.ballot.verdict(1), Some(Opinion::Down));
        assert_eq!(f.ballot.voters().count(), 3);
    }

    #[test]
    fn an_incident_is_due_once_until_the_verdict_changes() {
        let mut f = Fixture::new();
        for m in ["m1", "m2", "m3"] {
            f.member(m, true);
        }
        assert!(f.ballot.due().is_empty(), "a quiet fleet has nothing due");
        f.opine(4, "m1", Opinion::Down);
        assert!(f.ballot.due().is_empty(), "one of three is outvoted");
        f.opine(4, "m2", Opinion::Down);
        let due = f.ballot.due();
        assert_eq!(
            due,
            vec![Due {
                node: 4,
                verdict: Opinion::Down,
                previous: Opinion::Up,
                generation: 1,
                mod_revision: 0
            }]
        );
        f.record(due[0]);
        assert!(f.ballot.due().is_empty(), "recorded: nothing more to do");
        // A dead monitor's opinions vanish with its lease: 1 of 2 down is
        // no majority, so the recorded verdict stands.
        f.ballot.delete(&f.layout, &f.layout.member("m2"));
        f.ballot.delete(&f.layout, &f.layout.opinion(4, "m2"));
        assert!(f.ballot.due().is_empty());
        // Back: both voters hold it up.
        f.opine(4, "m1", Opinion::Up);
        let due = f.ballot.due();
        assert_eq!(due.len(), 1);
        assert_eq!(
            (due[0].verdict, due[0].previous, due[0].generation),
            (Opinion::Up, Opinion::Down, 2)
        );
        assert!(due[0].mod_revision > 0);
        f.record(due[0]);
        assert!(f.ballot.due().is_empty());
    }

    #[test]
    fn disputes_and_the_leader() {
        let mut f = Fixture::new();
        for m in ["m1", "m2", "m3"] {
            f.member(m, true);
        }
        let election = f.layout.election();
        f.put(format!("{election}/2"), b"m2");
        f.put(format!("{election}/1"), b"m1");
        assert_eq!(f.ballot.leader(), Some("m2"), "the first candidate leads");
        f.ballot.delete(&f.layout, &format!("{election}/2"));
        assert_eq!(f.ballot.leader(), Some("m1"));
        f.opine(9, "m3", Opinion::Down);
        f.opine(10, "m1", Opinion::Left);
        f.opine(10, "m2", Opinion::Left);
        f.opine(10, "m3", Opinion::Left);
        let disputed = f.ballot.disputed(10);
        assert_eq!(disputed.len(), 1, "{disputed:?}");
        assert_eq!(disputed[0].id, 9);
        assert_eq!(disputed[0].opinions["m3"], Opinion::Down);
        assert_eq!(disputed[0].opinions["m1"], Opinion::Up);
        assert_eq!(f.ballot.verdict(10), Some(Opinion::Left));
    }
}
