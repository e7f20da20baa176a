//! The checks a heartbeat passes before it may touch the node table, in the
//! order they are made. One implementation for both datapaths: the XDP
//! program and the socket datapath call [`admit`] and only record what it
//! admits, so they refuse the same packets for the same reasons.
//!
//! 1. well-formed (magic, version, reserved byte, flags) else `malformed`;
//! 2. the tag ([`crate::auth::check`]): an unknown key id is `unknown_key`,
//!    a wrong tag `bad_tag`, an unauthenticated heartbeat where they are not
//!    accepted `unauthenticated`;
//! 3. a configured node, else `unknown_node`;
//! 4. no downgrade: a node that has sent authenticated heartbeats is not
//!    heard unauthenticated again (`unauthenticated`);
//! 5. a pinned node's source address, else `wrong_source`;
//! 6. (incarnation, sequence) moves forward, else `replay`.
//!
//! Nothing before the tag check looks at the node table, and nothing after
//! it trusts a field the tag does not cover (only the source address, which
//! step 5 compares and never trusts).

use crate::{
    auth::{self, TagCheck, TagKey},
    counters::Counter,
    table::NodeRecord,
    wire::RawHeartbeat,
};

/// Whether heartbeats with key id 0 are accepted at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unauthenticated {
    Accept,
    Refuse,
}

/// Decides whether `heartbeat`, from `src_addr` (IPv6 or v4-mapped, network
/// byte order), may be recorded in `record` (`None`: beyond the table);
/// `key_of` gives what a key id's tags are verified with (a key, or the
/// datapaths' [`auth::KeyState`]). `Ok(authenticated)` if so, else the
/// counter saying why not.
#[inline(always)]
pub fn admit<'k, K: TagKey + 'k>(
    heartbeat: &RawHeartbeat,
    src_addr: &[u8; 16],
    record: Option<&NodeRecord>,
    unauthenticated: Unauthenticated,
    key_of: impl FnOnce(u8) -> Option<&'k K>,
) -> Result<bool, Counter> {
    if !heartbeat.is_well_formed() {
        return Err(Counter::Malformed);
    }
    let authenticated = match auth::check_with(heartbeat.as_bytes(), key_of) {
        TagCheck::Authenticated => true,
        TagCheck::Unauthenticated if unauthenticated == Unauthenticated::Accept => false,
        TagCheck::Unauthenticated => return Err(Counter::Unauthenticated),
        TagCheck::UnknownKey => return Err(Counter::UnknownKey),
        TagCheck::BadTag => return Err(Counter::BadTag),
    };
    let Some(record) = record.filter(|r| r.is_configured()) else {
        return Err(Counter::UnknownNode);
    };
    if !authenticated && record.is_authenticated() {
        return Err(Counter::Unauthenticated);
    }
    if record.is_pinned() && *src_addr != record.src_addr {
        return Err(Counter::WrongSource);
    }
    if !record.accepts(heartbeat.incarnation(), heartbeat.sequence()) {
        return Err(Counter::Replay);
    }
    Ok(authenticated)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        auth,
        siphash::Key,
        table::{SLOT_CONFIGURED, SLOT_PINNED},
        wire::{HEARTBEAT_LEN, Heartbeat, flags},
    };

    const KEY: Key = [0x42; 16];
    const HOME: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 18, 0, 2];
    const ELSEWHERE: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 18, 0, 66];

    fn keys(id: u8) -> Option<&'static Key> {
        (id == 1).then_some(&KEY)
    }

    fn payload(sequence: u64, key_id: u8) -> [u8; HEARTBEAT_LEN] {
        let mut bytes = Heartbeat {
            flags: 0,
            key_id: 0,
            node_id: 4,
            interval_ms: 100,
            incarnation: 10,
            sequence,
            sent_unix_ns: 1,
            auth_tag: [0; 16],
        }
        .encode();
        auth::sign(&mut bytes, key_id, &KEY);
        bytes
    }

    fn configured() -> NodeRecord {
        NodeRecord {
            slot_flags: SLOT_CONFIGURED,
            ..NodeRecord::default()
        }
    }

    fn run(
        bytes: &[u8; HEARTBEAT_LEN],
        from: [u8; 16],
        record: &mut NodeRecord,
        policy: Unauthenticated,
    ) -> Result<bool, Counter> {
        let heartbeat = RawHeartbeat::view(bytes);
        let verdict = admit(heartbeat, &from, Some(record), policy, keys);
        if let Ok(authenticated) = verdict {
            record.record(heartbeat, &from, 7979, authenticated);
        }
        verdict
    }

    #[test]
    fn each_refusal_has_its_counter() {
        use Unauthenticated::*;
        let mut record = configured();
        assert_eq!(run(&payload(1, 1), HOME, &mut record, Refuse), Ok(true));
        assert_eq!(
            run(&payload(1, 1), HOME, &mut record, Refuse),
            Err(Counter::Replay)
        );
        assert_eq!(
            run(&payload(2, 0), HOME, &mut configured(), Refuse),
            Err(Counter::Unauthenticated)
        );
        assert_eq!(
            run(&payload(2, 0), HOME, &mut record, Accept),
            Err(Counter::Unauthenticated),
            "a node heard authenticated cannot be downgraded"
        );
        assert_eq!(
            run(&payload(2, 0), HOME, &mut configured(), Accept),
            Ok(false)
        );
        let mut other_key = payload(2, 1);
        other_key[6] = 2;
        assert_eq!(
            run(&other_key, HOME, &mut record, Refuse),
            Err(Counter::UnknownKey)
        );
        let mut forged = payload(2, 1);
        forged[5] = flags::LEAVE;
        assert_eq!(
            run(&forged, HOME, &mut record, Refuse),
            Err(Counter::BadTag),
            "a forged leave"
        );
        assert_eq!(
            run(&payload(2, 1), HOME, &mut NodeRecord::default(), Refuse),
            Err(Counter::UnknownNode)
        );
        let mut malformed = payload(2, 1);
        malformed[0] = 0;
        assert_eq!(
            run(&malformed, HOME, &mut record, Refuse),
            Err(Counter::Malformed)
        );
        assert_eq!(record.sequence, 1, "nothing refused was recorded");
        assert_eq!(run(&payload(2, 1), HOME, &mut record, Refuse), Ok(true));
    }

    #[test]
    fn key_states_admit_exactly_what_keys_admit() {
        use crate::auth::{KeySlot, KeyState};
        let states: [KeyState; 3] =
            core::array::from_fn(|id| KeyState::of(id as u8, &KeySlot::with_key(KEY)));
        let by_state = |id: u8| (id == 1).then_some(&states[1]);
        // A signed and an unsigned payload, then the signed one with each
        // bit flipped.
        let payload_n = |n: usize| match n {
            0 => payload(5, 1),
            1 => payload(5, 0),
            n => {
                let (bit, mut flipped) = (n - 2, payload(5, 1));
                flipped[bit / 8] ^= 1 << (bit % 8);
                flipped
            }
        };
        for policy in [Unauthenticated::Accept, Unauthenticated::Refuse] {
            for n in 0..2 + HEARTBEAT_LEN * 8 {
                let bytes = payload_n(n);
                let heartbeat = RawHeartbeat::view(&bytes);
                let record = configured();
                assert_eq!(
                    admit(heartbeat, &HOME, Some(&record), policy, by_state),
                    admit(heartbeat, &HOME, Some(&record), policy, keys),
                    "payload {n}, {policy:?}"
                );
            }
        }
    }

    #[test]
    fn a_pinned_node_is_heard_only_from_its_address() {
        let mut record = NodeRecord {
            slot_flags: SLOT_CONFIGURED | SLOT_PINNED,
            src_addr: HOME,
            ..NodeRecord::default()
        };
        assert_eq!(
            run(
                &payload(1, 1),
                ELSEWHERE,
                &mut record,
                Unauthenticated::Refuse
            ),
            Err(Counter::WrongSource)
        );
        assert_eq!(
            run(&payload(1, 1), HOME, &mut record, Unauthenticated::Refuse),
            Ok(true)
        );
        assert_eq!(record.src_addr, HOME);
        assert!(record.is_pinned());
    }

    #[test]
    fn a_new_incarnation_is_accepted_at_once_an_old_one_never() {
        let mut record = configured();
        assert_eq!(
            run(&payload(50, 1), HOME, &mut record, Unauthenticated::Refuse),
            Ok(true)
        );
        let mut restarted = Heartbeat::decode(&payload(1, 0)).unwrap();
        restarted.incarnation = 11;
        let mut bytes = restarted.encode();
        auth::sign(&mut bytes, 1, &KEY);
        assert_eq!(
            run(&bytes, HOME, &mut record, Unauthenticated::Refuse),
            Ok(true)
        );
        assert_eq!(
            run(&payload(51, 1), HOME, &mut record, Unauthenticated::Refuse),
            Err(Counter::Replay),
            "the old incarnation is over"
        );
    }
}
