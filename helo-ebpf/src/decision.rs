//! What the program decides for a frame, and why: every outcome is one of these, and each names
//! the counter that records it (the counters' indices and names live in `helo_common::maps::counter`).

use aya_ebpf::bindings::xdp_action::{XDP_DROP, XDP_PASS};
use helo_common::maps::counter;

/// Why a frame was passed. The discriminant is the counter's index.
#[repr(u32)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    NotIp = counter::PASS_NOT_IP,
    NotTcp = counter::PASS_NOT_TCP,
    OtherPort = counter::PASS_OTHER_PORT,
    /// An IP fragment: its TCP header may not be here (the agent judges what gets through).
    Fragment = counter::PASS_FRAGMENT,
    Malformed = counter::PASS_MALFORMED,
    /// A SYN, or a segment without payload.
    NoPayload = counter::PASS_NO_PAYLOAD,
    /// Payload of a flow whose first payload this is not (or whose SYN was never seen).
    NotFirstPayload = counter::PASS_NOT_FIRST_PAYLOAD,
    NotGreeting = counter::PASS_NOT_GREETING,
    ArgTooLong = counter::PASS_ARG_TOO_LONG,
    /// The frame ends before the bytes needed (a header, the greeting's end).
    Truncated = counter::PASS_TRUNCATED,
    NotListed = counter::PASS_NOT_LISTED,
    AllowListed = counter::PASS_ALLOW_LISTED,
    /// Observe mode: would have been dropped as a listed greeting.
    ObservedHelo = counter::OBSERVE_HELO,
    /// Observe mode: would have been dropped as a listed source.
    ObservedSource = counter::OBSERVE_SOURCE,
    /// The agent has not configured the program yet.
    Unconfigured = counter::PASS_UNCONFIGURED,
    /// A listed source's SYN, let through so that the agent can tell it why.
    SourceAnswered = counter::PASS_SOURCE_ANSWERED,
}

/// Why a frame was dropped.
#[repr(u32)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// The first payload of a flow greeting with a listed name.
    Helo = counter::DROP_HELO,
    /// A SYN from a listed source.
    Source = counter::DROP_SOURCE,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Pass(Pass),
    Drop(Dropped),
}

impl Decision {
    /// The XDP action.
    #[inline(always)]
    pub fn action(self) -> u32 {
        match self {
            Decision::Pass(_) => XDP_PASS,
            Decision::Drop(_) => XDP_DROP,
        }
    }

    /// The index of the counter that records this decision.
    #[inline(always)]
    pub fn counter(self) -> u32 {
        match self {
            Decision::Pass(why) => why as u32,
            Decision::Drop(why) => why as u32,
        }
    }
}

impl From<Pass> for Decision {
    #[inline(always)]
    fn from(why: Pass) -> Self {
        Decision::Pass(why)
    }
}
