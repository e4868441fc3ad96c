//! Identifiers: random session ids (`s_…`) and cluster-unique, time-ordered delivery ids
//! (`d_…`).

use rand::distributions::Alphanumeric;
use rand::Rng;

use crate::clock::Millis;

fn random_into(s: &mut String, len: usize) {
    s.extend(
        rand::thread_rng()
            .sample_iter(&Alphanumeric)
            .take(len)
            .map(char::from),
    );
}

/// A new session id: 20 random alphanumerics (~119 bits).
pub fn session_id() -> String {
    let mut s = String::with_capacity(22);
    s.push_str("s_");
    random_into(&mut s, 20);
    s
}

/// Digits in ASCII order, so that fixed-width numbers written with them sort as text.
const ORDERED: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A new delivery id: the creation time (ms, 8 base-62 digits, sortable as text until the
/// year 8900) then 14 random alphanumerics (~83 bits), so ids are unique across nodes by
/// randomness and successive ones sort after earlier ones. The store keys deliveries and
/// engagement by id: new rows land at the end of the index instead of on a random page.
pub fn delivery_id(now: Millis) -> String {
    let mut s = String::with_capacity(24);
    s.push_str("d_");
    let mut t = now.max(0) as u64;
    let mut digits = [b'0'; 8];
    for d in digits.iter_mut().rev() {
        *d = ORDERED[(t % 62) as usize];
        t /= 62;
    }
    s.extend(digits.iter().map(|&b| char::from(b)));
    random_into(&mut s, 14);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_ids_sort_by_creation_time_and_differ_within_a_millisecond() {
        let times = [
            0,
            1,
            61,
            62,
            1_764_000_000_000,
            1_764_000_000_001,
            4_000_000_000_000,
        ];
        let ids: Vec<String> = times.iter().map(|&t| delivery_id(t)).collect();
        for w in ids.windows(2) {
            assert!(w[0] < w[1], "{} !< {}", w[0], w[1]);
        }
        assert!(ids.iter().all(|i| i.len() == 24 && i.starts_with("d_")));
        assert_ne!(delivery_id(5), delivery_id(5));
        assert!(session_id().starts_with("s_") && session_id().len() == 22);
    }
}
