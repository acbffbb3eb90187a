//! The `Date` of the responses the proxy writes, and of those it forwards without one
//! (RFC 9110 §6.6.1: a recipient with a clock that forwards a response lacking `Date` adds
//! one). Formatted once per second per thread.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

/// An HTTP date is always this long: `Sun, 29 Nov 2026 21:25:05 GMT`.
const LEN: usize = 29;

thread_local! {
    static CACHED: Cell<(u64, [u8; LEN])> = const { Cell::new((u64::MAX, [0; LEN])) };
}

/// The current time as an HTTP date.
pub(crate) fn now() -> [u8; LEN] {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (cached_second, cached) = CACHED.get();
    if cached_second == second {
        return cached;
    }
    let mut date = [b' '; LEN];
    let formatted = httpdate::fmt_http_date(now);
    let n = formatted.len().min(LEN);
    date[..n].copy_from_slice(&formatted.as_bytes()[..n]);
    CACHED.set((second, date));
    date
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_date_is_now_to_the_second_and_reads_back() {
        let before = SystemTime::now();
        let date = now();
        let after = SystemTime::now();
        let read = httpdate::parse_http_date(std::str::from_utf8(&date).unwrap()).unwrap();
        assert!(read + std::time::Duration::from_secs(1) > before && read <= after);
    }
}
