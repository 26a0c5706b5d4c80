//! Why an entry is listed: a classifier rule id (`bogus_helo`, …), a reason the code gives itself,
//! or any text an operator wrote. Kept as text, since an operator's is free; the kernel stores a
//! code for it ([`kernel_code`]), which is what its drop events and counters carry.

use helo_common::maps::reason;

/// The reason of an operator's listing that gave none.
pub const OPERATOR: &str = "operator";
/// The reason of an offender-ladder listing.
pub const LADDER: &str = "offender_ladder";

/// The kernel's reason code for a reason: a rule id has its own, anything else is an operator's.
pub fn kernel_code(reason: &str) -> u32 {
    match reason {
        "bogus_helo" => reason::BOGUS_HELO,
        "helo_is_my_ip" => reason::HELO_IS_MY_IP,
        "helo_matches_rcpt" => reason::HELO_MATCHES_RCPT,
        "operator_deny" => reason::OPERATOR_DENY,
        "literal_mismatch" => reason::LITERAL_MISMATCH,
        LADDER => reason::LADDER,
        _ => reason::OPERATOR,
    }
}
