//! Fuzzes the heartbeat decoder with arbitrary payloads.
//!
//! Property: `Heartbeat::decode` never panics; whatever it accepts encodes
//! back to exactly the input bytes and passes the XDP program's raw check
//! (`RawHeartbeat::is_well_formed`); and a 56-byte payload it rejects fails
//! that check too, so the decoder and the XDP program agree.

#![no_main]

use hb_common::wire::{HEARTBEAT_LEN, Heartbeat, RawHeartbeat};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let decoded = Heartbeat::decode(data);
    let raw = <&[u8; HEARTBEAT_LEN]>::try_from(data)
        .ok()
        .map(RawHeartbeat::from_bytes);
    match (decoded, raw) {
        (Ok(hb), Some(raw)) => {
            assert_eq!(
                hb.encode().as_slice(),
                data,
                "decode accepted a payload that does not encode back to itself: {hb:?}"
            );
            assert!(
                raw.is_well_formed(),
                "decode accepted a payload the XDP raw check rejects: {raw:?}"
            );
        }
        (Ok(hb), None) => panic!(
            "decode accepted a {}-byte payload (a heartbeat is {HEARTBEAT_LEN}): {hb:?}",
            data.len()
        ),
        (Err(err), Some(raw)) => assert!(
            !raw.is_well_formed(),
            "decode rejected a payload ({err}) the XDP raw check accepts: {raw:?}"
        ),
        (Err(_), None) => {}
    }
});
