//! The floor under `hb_xdp`'s cost, for `hb-tools bench xdp-cost`: three
//! XDP programs that do only what every accepted heartbeat must do at least,
//! timed the same way as `hb_xdp` so the bench can say what limits it. An
//! object of its own (`hb-floor`): the agent never loads it.
//!
//! - `hb_floor_empty`: nothing (BPF_PROG_TEST_RUN's own cost per run);
//! - `hb_floor_clock`: one `bpf_ktime_get_ns`, the arrival time every
//!   accepted heartbeat reads;
//! - `hb_floor_lookup`: one array lookup and an increment of the value, as
//!   `hb_xdp` does for its counters (it makes three such lookups per
//!   accepted heartbeat, four when authenticated).
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    helpers::bpf_ktime_get_ns,
    macros::{map, xdp},
    maps::Array,
    programs::XdpContext,
};

/// The value `hb_floor_lookup` increments.
#[map]
static HB_FLOOR_VALUE: Array<u64> = Array::with_max_entries(1, 0);

#[xdp]
pub fn hb_floor_empty(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[xdp]
pub fn hb_floor_clock(_ctx: XdpContext) -> u32 {
    // SAFETY: a BPF helper with no arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    // The time is used, so the call stays; it is never 0.
    if now == 0 {
        xdp_action::XDP_ABORTED
    } else {
        xdp_action::XDP_PASS
    }
}

#[xdp]
pub fn hb_floor_lookup(_ctx: XdpContext) -> u32 {
    if let Some(value) = HB_FLOOR_VALUE.get_ptr_mut(0) {
        // SAFETY: the pointer came from a successful lookup; only this
        // program writes the value, and a lost increment does not matter.
        unsafe { *value += 1 };
    }
    xdp_action::XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
