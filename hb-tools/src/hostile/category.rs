//! What a generated packet is: the categories, their names in the report
//! and their share of the packets.

/// What a generated packet is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Category {
    /// A fresh, validly signed heartbeat of a configured node (current or
    /// previous key, sometimes a genuine leave or a new incarnation): must
    /// be accepted.
    Control,
    /// A fresh heartbeat behind one or two VLAN/QinQ tags (accepted), three
    /// tags or a non-IP inner EtherType (not a heartbeat).
    VlanQinq,
    /// A fresh heartbeat in IPv4 with 1-10 words of options: accepted.
    Ipv4Options,
    /// IPv4 with an IHL below 5, or one that disagrees with the header.
    Ipv4BadIhl,
    /// IPv6 with hop-by-hop, routing, fragment or destination-options
    /// headers before UDP: not walked, so not a heartbeat.
    Ipv6Extension,
    /// IPv4 fragments: MF set and/or a fragment offset.
    Ipv4Fragment,
    /// UDP length 8 (zero-length payload), shorter than 64, larger than the
    /// packet, a payload longer than 56; and trailing bytes beyond a correct
    /// UDP length (accepted).
    UdpLength,
    /// A fresh heartbeat cut at every length in turn, over five frame shapes.
    Truncated,
    /// Random bytes, half of them behind plausible headers to the port.
    RandomBytes,
    /// One bit flipped: anywhere in an accepted frame, or in the payload of
    /// an accepted or a fresh heartbeat.
    BitFlip,
    /// One byte changed, likewise.
    ByteMutation,
    /// An exact copy of a frame accepted earlier.
    Replay,
    /// The LEAVE flag set on a signed heartbeat without signing it again.
    ForgedLeave,
    /// Signed under a key id the monitor has no key for.
    UnknownKey,
    /// Signed under a known key id with another key.
    WrongKey,
    /// Key id 0: refused by the policy.
    Unauthenticated,
    /// The pinned node's heartbeat from another address.
    WrongSource,
    /// A signed heartbeat of an older incarnation, or an older sequence.
    OldIncarnation,
    /// A signed heartbeat of the unconfigured slot or beyond the table.
    UnknownNode,
}

impl Category {
    /// Every category, in report order.
    pub const ALL: [Category; 19] = [
        Category::Control,
        Category::VlanQinq,
        Category::Ipv4Options,
        Category::Ipv4BadIhl,
        Category::Ipv6Extension,
        Category::Ipv4Fragment,
        Category::UdpLength,
        Category::Truncated,
        Category::RandomBytes,
        Category::BitFlip,
        Category::ByteMutation,
        Category::Replay,
        Category::ForgedLeave,
        Category::UnknownKey,
        Category::WrongKey,
        Category::Unauthenticated,
        Category::WrongSource,
        Category::OldIncarnation,
        Category::UnknownNode,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Category::Control => "control",
            Category::VlanQinq => "vlan_qinq",
            Category::Ipv4Options => "ipv4_options",
            Category::Ipv4BadIhl => "ipv4_bad_ihl",
            Category::Ipv6Extension => "ipv6_extension",
            Category::Ipv4Fragment => "ipv4_fragment",
            Category::UdpLength => "udp_length",
            Category::Truncated => "truncated",
            Category::RandomBytes => "random_bytes",
            Category::BitFlip => "bit_flip",
            Category::ByteMutation => "byte_mutation",
            Category::Replay => "replay",
            Category::ForgedLeave => "forged_leave",
            Category::UnknownKey => "unknown_key",
            Category::WrongKey => "wrong_key",
            Category::Unauthenticated => "unauthenticated",
            Category::WrongSource => "wrong_source",
            Category::OldIncarnation => "old_incarnation",
            Category::UnknownNode => "unknown_node",
        }
    }

    /// Share of the generated packets, in percent (they add up to 100).
    pub(super) const fn weight(self) -> u64 {
        match self {
            Category::Control => 14,
            Category::VlanQinq => 5,
            Category::Ipv4Options => 4,
            Category::Ipv4BadIhl => 4,
            Category::Ipv6Extension => 4,
            Category::Ipv4Fragment => 4,
            Category::UdpLength => 5,
            Category::Truncated => 8,
            Category::RandomBytes => 10,
            Category::BitFlip => 10,
            Category::ByteMutation => 8,
            Category::Replay => 5,
            Category::ForgedLeave => 3,
            Category::UnknownKey => 3,
            Category::WrongKey => 2,
            Category::Unauthenticated => 3,
            Category::WrongSource => 3,
            Category::OldIncarnation => 3,
            Category::UnknownNode => 2,
        }
    }
}

const _: () = {
    let mut sum = 0;
    let mut i = 0;
    while i < Category::ALL.len() {
        sum += Category::ALL[i].weight();
        i += 1;
    }
    assert!(sum == 100);
};
