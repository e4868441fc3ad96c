//! Random identifiers: session ids (`s_…`) and cluster-unique delivery ids (`d_…`).

use rand::distributions::Alphanumeric;
use rand::Rng;

fn random(prefix: &str, len: usize) -> String {
    let mut s = String::with_capacity(prefix.len() + len);
    s.push_str(prefix);
    s.extend(
        rand::thread_rng()
            .sample_iter(&Alphanumeric)
            .take(len)
            .map(char::from),
    );
    s
}

/// A new session id: 20 random alphanumerics (~119 bits).
pub fn session_id() -> String {
    random("s_", 20)
}

/// A new delivery id, unique across nodes by randomness (~119 bits).
pub fn delivery_id() -> String {
    random("d_", 20)
}
