//! The two clocks a listing is read on. Entries are stored, shown and published with wall-clock
//! (Unix) seconds; the kernel keeps expiry and hit times on `CLOCK_MONOTONIC` (the XDP program
//! reads its coarse form, cheap enough for every listed packet), which never jumps when the wall
//! clock is set, so an entry's kernel expiry does not move when NTP steps the time.

use std::time::{SystemTime, UNIX_EPOCH};

const NS_PER_S: u64 = 1_000_000_000;

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// `CLOCK_MONOTONIC` in ns: the kernel's clock for entry expiry and hit times (the program's
/// coarse reading of it is at most a tick behind).
pub fn mono_now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * NS_PER_S + ts.tv_nsec as u64
}

/// The kernel's expiry (monotonic clock, ns) for a stored one (Unix seconds); 0, never, stays 0.
pub fn expiry_on_mono_clock(expires_unix_s: u64) -> u64 {
    if expires_unix_s == 0 {
        0
    } else {
        mono_now_ns() + expires_unix_s.saturating_sub(unix_now()) * NS_PER_S
    }
}

/// The Unix time of a kernel time stamp (monotonic clock, ns); 0, never, stays 0.
pub fn mono_ns_to_unix_s(mono_ns: u64) -> u64 {
    if mono_ns == 0 {
        return 0;
    }
    unix_now().saturating_sub(mono_now_ns().saturating_sub(mono_ns) / NS_PER_S)
}

/// When something lasting `ttl_s` from `now_unix_s` expires; a zero TTL never does (0).
pub fn expiry_after(now_unix_s: u64, ttl_s: u64) -> u64 {
    if ttl_s == 0 {
        0
    } else {
        now_unix_s + ttl_s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_stays_never_on_both_clocks() {
        assert_eq!(expiry_on_mono_clock(0), 0);
        assert_eq!(mono_ns_to_unix_s(0), 0);
        assert_eq!(expiry_after(100, 0), 0);
        assert_eq!(expiry_after(100, 5), 105);
    }

    #[test]
    fn a_time_moved_to_the_monotonic_clock_and_back_lands_where_it_was() {
        let in_an_hour = unix_now() + 3600;
        let mono = expiry_on_mono_clock(in_an_hour);
        assert!(mono > mono_now_ns());
        // A kernel hit a second ago reads as about a second ago.
        let hit = mono_now_ns() - NS_PER_S;
        assert!(unix_now() - mono_ns_to_unix_s(hit) <= 2);
        // An expiry already past is "now" on the monotonic clock, not an underflow.
        assert!(expiry_on_mono_clock(1) <= mono_now_ns());
    }
}
