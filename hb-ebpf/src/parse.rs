//! Bounds-checked packet parsing: Ethernet (with up to [`VLAN_MAX_DEPTH`]
//! VLAN tags), IPv4 or IPv6, then UDP; or, for probe replies, an ICMP /
//! ICMPv6 echo header ([`parse_icmp`], from where [`parse_udp`] found
//! ICMP). Each step checks
//! `offset + size_of::<T>() <= data_end` before it reads, so the verifier can
//! prove every access safe and a short packet is an `Err`, never a fault.

use core::mem::size_of;

use aya_ebpf::programs::XdpContext;

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;
const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;
const IPV4_MIN_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
pub const UDP_HLEN: usize = 8;
/// An ICMP / ICMPv6 echo header: type, code, checksum, identifier, sequence.
pub const ICMP_ECHO_HLEN: usize = 8;
/// ICMPv6's echo reply (129) is ICMP's (0) plus this: [`IcmpPacket::icmp_type`]
/// subtracts it for ICMPv6 (wrapping), so one comparison recognises both.
pub const ICMPV6_TYPE_SHIFT: u8 = 129;
/// At most this many stacked VLAN tags (802.1Q, 802.1ad/QinQ) are skipped.
pub const VLAN_MAX_DEPTH: usize = 2;
/// Bytes 8..12 of an IPv4-mapped IPv6 address (`0 0 ff ff`), as the low
/// half of the little-endian word of bytes 8..16.
const V4_MAPPED_HIGH: u64 = 0xffff_0000;
/// IPv4 "more fragments" flag and fragment offset bits.
const IPV4_FRAGMENT_MASK: u16 = 0x3FFF;

/// Why a packet could not be parsed as UDP.
pub enum ParseError {
    /// The packet ends before the header being read.
    Truncated,
    /// Not IPv4/IPv6 over Ethernet, neither UDP nor ICMP, an IPv4 fragment,
    /// a bad IHL, too many VLAN tags or an IPv6 packet from an IPv4-mapped
    /// address: not something hb looks at.
    NotUdp,
    /// ICMP over IPv4 (not a fragment) or ICMPv6 as IPv6's first next
    /// header: [`parse_icmp`] reads it. Kept out of the UDP result so that
    /// the heartbeat path is the same as without probes.
    Icmp(IcmpAt),
}

/// Where [`parse_udp`] found an ICMP or ICMPv6 header.
pub struct IcmpAt {
    /// Offset of the IP header.
    pub ip_offset: usize,
    /// Offset of the ICMP header.
    pub offset: usize,
    /// The IP payload length (ICMP header and data) by the IP header.
    pub ip_payload_len: usize,
    pub ipv6: bool,
}

/// The parts of an ICMP (IPv4) or ICMPv6 message hb needs: enough to
/// recognise an echo reply.
pub struct IcmpPacket {
    /// Offset of the echo data (after the 8-byte echo header).
    pub payload_offset: usize,
    /// Bytes after the 8-byte header by the IP length field (0 if shorter);
    /// the packet itself may be shorter (`ptr_at` checks).
    pub payload_len: usize,
    /// ICMP type; for ICMPv6 its type minus [`ICMPV6_TYPE_SHIFT`], so that an
    /// echo reply is type 0 for both families.
    pub icmp_type: u8,
    pub code: u8,
    /// The echo identifier, host byte order.
    pub identifier: u16,
    /// Source address: IPv6, or IPv4 mapped into IPv6 (`::ffff:a.b.c.d`).
    pub src_addr: [u8; 16],
}

/// The parts of a UDP packet hb needs.
pub struct UdpPacket {
    /// Offset of the UDP payload from the start of the packet.
    pub payload_offset: usize,
    /// The UDP length field (header + payload), host byte order.
    pub udp_len: u16,
    pub dst_port: u16,
    pub src_port: u16,
    /// Source address: IPv6, or IPv4 mapped into IPv6 (`::ffff:a.b.c.d`).
    pub src_addr: [u8; 16],
}

/// Pointer to a `T` at `offset` from the start of the packet, or
/// `Truncated` if the packet is shorter than `offset + size_of::<T>()`.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Result<*const T, ParseError> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return Err(ParseError::Truncated);
    }
    Ok((start + offset) as *const T)
}

#[inline(always)]
fn read_be16(ctx: &XdpContext, offset: usize) -> Result<u16, ParseError> {
    let bytes: *const [u8; 2] = ptr_at(ctx, offset)?;
    // SAFETY: ptr_at checked that the two bytes lie inside the packet.
    Ok(u16::from_be_bytes(unsafe { *bytes }))
}

#[inline(always)]
fn read_u8(ctx: &XdpContext, offset: usize) -> Result<u8, ParseError> {
    let byte: *const u8 = ptr_at(ctx, offset)?;
    // SAFETY: ptr_at checked that the byte lies inside the packet.
    Ok(unsafe { *byte })
}

/// Parses Ethernet / VLAN / IP / UDP headers.
#[inline(always)]
pub fn parse_udp(ctx: &XdpContext) -> Result<UdpPacket, ParseError> {
    let mut offset = ETH_HLEN;
    let mut ether_type = read_be16(ctx, ETH_HLEN - 2)?;
    for _ in 0..VLAN_MAX_DEPTH {
        if ether_type != ETH_P_8021Q && ether_type != ETH_P_8021AD {
            break;
        }
        // The tag is TCI (2 bytes) then the encapsulated EtherType.
        ether_type = read_be16(ctx, offset + 2)?;
        offset += VLAN_HLEN;
    }

    // The source address as the two little-endian words of its 16 bytes:
    // built and compared whole, not byte by byte.
    let (src_low, src_high): (u64, u64);
    match ether_type {
        ETH_P_IPV4 => {
            let version_ihl = read_u8(ctx, offset)?;
            let ihl = ((version_ihl & 0x0F) as usize) * 4;
            if version_ihl >> 4 != 4 || ihl < IPV4_MIN_HLEN {
                return Err(ParseError::NotUdp);
            }
            // Bound the fixed header; options are skipped by `ihl`, and the
            // UDP header read below is bounds-checked at the offset it gives.
            ptr_at::<[u8; IPV4_MIN_HLEN]>(ctx, offset)?;
            let protocol = read_u8(ctx, offset + 9)?;
            if protocol != IPPROTO_UDP {
                return Err(icmp_at(ctx, offset, ihl, protocol == IPPROTO_ICMP, false));
            }
            if read_be16(ctx, offset + 6)? & IPV4_FRAGMENT_MASK != 0 {
                return Err(ParseError::NotUdp);
            }
            let saddr: *const [u8; 4] = ptr_at(ctx, offset + 12)?;
            // SAFETY: ptr_at checked the bounds.
            let saddr = unsafe { *saddr };
            // `::ffff:a.b.c.d`: bytes 8..16 are 0 0 ff ff a b c d.
            src_low = 0;
            src_high = V4_MAPPED_HIGH | u64::from(u32::from_le_bytes(saddr)) << 32;
            offset += ihl;
        }
        ETH_P_IPV6 => {
            ptr_at::<[u8; IPV6_HLEN]>(ctx, offset)?;
            if read_u8(ctx, offset)? >> 4 != 6 {
                return Err(ParseError::NotUdp);
            }
            // Extension headers are not walked: a heartbeat's next header is
            // UDP (a probe reply's ICMPv6).
            let next_header = read_u8(ctx, offset + 6)?;
            if next_header != IPPROTO_UDP {
                return Err(icmp_at(
                    ctx,
                    offset,
                    IPV6_HLEN,
                    next_header == IPPROTO_ICMPV6,
                    true,
                ));
            }
            let saddr: *const [[u8; 8]; 2] = ptr_at(ctx, offset + 8)?;
            // SAFETY: ptr_at checked the bounds.
            let [low, high] = unsafe { *saddr };
            (src_low, src_high) = (u64::from_le_bytes(low), u64::from_le_bytes(high));
            // An IPv4-mapped source is how IPv4 senders are recorded: an
            // IPv6 packet claiming one would pass a pinned IPv4 source. The
            // kernel's IPv6 stack drops such packets too.
            if src_low == 0 && src_high as u32 == V4_MAPPED_HIGH as u32 {
                return Err(ParseError::NotUdp);
            }
            offset += IPV6_HLEN;
        }
        _ => return Err(ParseError::NotUdp),
    }
    let src_addr = (u128::from(src_high) << 64 | u128::from(src_low)).to_le_bytes();

    // The whole 8-byte UDP header must be there: a packet cut inside it is
    // not a heartbeat, whatever its ports say.
    let udp: *const [u8; UDP_HLEN] = ptr_at(ctx, offset)?;
    // SAFETY: ptr_at checked the bounds.
    let udp = unsafe { *udp };
    Ok(UdpPacket {
        payload_offset: offset + UDP_HLEN,
        src_port: u16::from_be_bytes([udp[0], udp[1]]),
        dst_port: u16::from_be_bytes([udp[2], udp[3]]),
        udp_len: u16::from_be_bytes([udp[4], udp[5]]),
        src_addr,
    })
}

/// The error [`parse_udp`] returns for a non-UDP packet whose IP header at
/// `ip_offset` (`ip_hlen` bytes) is bounds-checked: [`ParseError::Icmp`] if
/// `icmp` (the protocol is ICMP for the family) and, for IPv4, it is not a
/// fragment; else `NotUdp`.
#[inline(always)]
fn icmp_at(
    ctx: &XdpContext,
    ip_offset: usize,
    ip_hlen: usize,
    icmp: bool,
    ipv6: bool,
) -> ParseError {
    if !icmp {
        return ParseError::NotUdp;
    }
    let ip_payload_len = if ipv6 {
        match read_be16(ctx, ip_offset + 4) {
            Ok(len) => usize::from(len),
            Err(e) => return e,
        }
    } else {
        match read_be16(ctx, ip_offset + 6) {
            Ok(fragment) if fragment & IPV4_FRAGMENT_MASK == 0 => {}
            Ok(_) => return ParseError::NotUdp,
            Err(e) => return e,
        }
        match read_be16(ctx, ip_offset + 2) {
            Ok(total) => usize::from(total).saturating_sub(ip_hlen),
            Err(e) => return e,
        }
    };
    ParseError::Icmp(IcmpAt {
        ip_offset,
        offset: ip_offset + ip_hlen,
        ip_payload_len,
        ipv6,
    })
}

/// Reads the ICMP / ICMPv6 echo header [`parse_udp`] found, and the source
/// address. An IPv6 packet from an IPv4-mapped address is `NotUdp`, as for
/// UDP.
#[inline(always)]
pub fn parse_icmp(ctx: &XdpContext, at: &IcmpAt) -> Result<IcmpPacket, ParseError> {
    let (src_low, src_high, type_shift) = if at.ipv6 {
        let saddr: *const [[u8; 8]; 2] = ptr_at(ctx, at.ip_offset + 8)?;
        // SAFETY: ptr_at checked the bounds.
        let [low, high] = unsafe { *saddr };
        let (low, high) = (u64::from_le_bytes(low), u64::from_le_bytes(high));
        if low == 0 && high as u32 == V4_MAPPED_HIGH as u32 {
            return Err(ParseError::NotUdp);
        }
        (low, high, ICMPV6_TYPE_SHIFT)
    } else {
        let saddr: *const [u8; 4] = ptr_at(ctx, at.ip_offset + 12)?;
        // SAFETY: ptr_at checked the bounds.
        let saddr = unsafe { *saddr };
        (
            0,
            V4_MAPPED_HIGH | u64::from(u32::from_le_bytes(saddr)) << 32,
            0,
        )
    };
    // The whole echo header must be there.
    let header: *const [u8; ICMP_ECHO_HLEN] = ptr_at(ctx, at.offset)?;
    // SAFETY: ptr_at checked the bounds.
    let header = unsafe { *header };
    Ok(IcmpPacket {
        payload_offset: at.offset + ICMP_ECHO_HLEN,
        payload_len: at.ip_payload_len.saturating_sub(ICMP_ECHO_HLEN),
        icmp_type: header[0].wrapping_sub(type_shift),
        code: header[1],
        identifier: u16::from_be_bytes([header[4], header[5]]),
        src_addr: (u128::from(src_high) << 64 | u128::from(src_low)).to_le_bytes(),
    })
}
