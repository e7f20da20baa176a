//! `hb_siphash` and `hb_siphash_prefix`, test-only XDP programs that expose
//! the kernel-side SipHash-2-4 to BPF_PROG_TEST_RUN, so the tests can check
//! it against the reference vectors: from the key, and from a precomputed
//! [`Prefix`] (the state after the first word, what `hb_xdp` verifies tags
//! from). An object of its own (`hb-siphash`): the agent never loads it.
#![no_std]
#![no_main]

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use hb_common::siphash::{Key, Prefix, siphash24};
use hb_ebpf::parse::ptr_at;

/// Layout of a `hb_siphash` packet: the key, the result slot, the message
/// length (one byte), then the message.
const SIPHASH_RESULT_AT: usize = 16;
const SIPHASH_LENGTH_AT: usize = 24;
const SIPHASH_MESSAGE_AT: usize = 25;
/// Layout of a `hb_siphash_prefix` packet: the prefix (40 bytes, its
/// fields little-endian), the result slot, the message length, the message.
const PREFIX_RESULT_AT: usize = 40;
const PREFIX_LENGTH_AT: usize = 48;
const PREFIX_MESSAGE_AT: usize = 49;

// Inlined into the entry point the macro generates: as a separate BPF
// function it would receive the packet bounds as 32-bit arguments, and
// widening them is pointer arithmetic the verifier refuses.
#[xdp]
#[inline(always)]
pub fn hb_siphash(ctx: XdpContext) -> u32 {
    match siphash_of_packet(&ctx) {
        Some(()) => xdp_action::XDP_PASS,
        None => xdp_action::XDP_ABORTED,
    }
}

/// SipHash-2-4 of the packet's message under the packet's key, written into
/// the packet's result slot. The length byte picks one of 64 instantiations,
/// each over a fixed-size array as in `hb_xdp`.
#[inline(always)]
fn siphash_of_packet(ctx: &XdpContext) -> Option<()> {
    let key = ptr_at::<Key>(ctx, 0).ok()?;
    let result = ptr_at::<[u8; 8]>(ctx, SIPHASH_RESULT_AT).ok()? as *mut [u8; 8];
    let length = ptr_at::<u8>(ctx, SIPHASH_LENGTH_AT).ok()?;
    // SAFETY: ptr_at checked that the key and the length lie inside the
    // packet.
    let (key, length) = unsafe { (&*key, *length) };
    macro_rules! by_length {
        ($($n:literal)*) => {
            match length {
                $($n => {
                    let message = ptr_at::<[u8; $n]>(ctx, SIPHASH_MESSAGE_AT).ok()?;
                    // SAFETY: ptr_at checked that the message lies inside the
                    // packet.
                    siphash24(key, unsafe { &*message })
                })*
                _ => return None,
            }
        };
    }
    let hash = by_length!(
        0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31
        32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60
        61 62 63
    );
    // SAFETY: ptr_at checked that the result slot lies inside the packet,
    // which test runs may write.
    unsafe { *result = hash.to_le_bytes() };
    Some(())
}

/// SipHash-2-4 of the packet's message from the packet's prefix, written
/// into the result slot (XDP_PASS); XDP_DROP if the prefix refuses the
/// message (shorter than 8 bytes, or another first word).
#[xdp]
#[inline(always)]
pub fn hb_siphash_prefix(ctx: XdpContext) -> u32 {
    match prefix_siphash_of_packet(&ctx) {
        Some(true) => xdp_action::XDP_PASS,
        Some(false) => xdp_action::XDP_DROP,
        None => xdp_action::XDP_ABORTED,
    }
}

#[inline(always)]
fn prefix_siphash_of_packet(ctx: &XdpContext) -> Option<bool> {
    let prefix = ptr_at::<Prefix>(ctx, 0).ok()?;
    let result = ptr_at::<[u8; 8]>(ctx, PREFIX_RESULT_AT).ok()? as *mut [u8; 8];
    let length = ptr_at::<u8>(ctx, PREFIX_LENGTH_AT).ok()?;
    // SAFETY: ptr_at checked that the prefix and the length lie inside the
    // packet; the prefix is copied out (the packet need not align it).
    let (prefix, length) = unsafe { (core::ptr::read_unaligned(prefix), *length) };
    macro_rules! by_length {
        ($($n:literal)*) => {
            match length {
                $($n => {
                    let message = ptr_at::<[u8; $n]>(ctx, PREFIX_MESSAGE_AT).ok()?;
                    // SAFETY: ptr_at checked that the message lies inside the
                    // packet.
                    prefix.siphash24(unsafe { &*message })
                })*
                _ => return None,
            }
        };
    }
    let hash = by_length!(
        0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31
        32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60
        61 62 63
    );
    let Some(hash) = hash else {
        return Some(false);
    };
    // SAFETY: ptr_at checked that the result slot lies inside the packet,
    // which test runs may write.
    unsafe { *result = hash.to_le_bytes() };
    Some(true)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
