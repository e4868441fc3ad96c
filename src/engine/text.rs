//! String equality for the engine's hot paths. An event that campaigns listen to compares
//! dozens of short strings (campaign ids, property and attribute keys, values): each
//! `==` on `str` is a call to `memcmp`, which costs more than the comparison itself for
//! strings this short. These compare up to 16 bytes with two loads each.

/// Whether `a` and `b` are equal; short strings without a call to `memcmp`.
#[inline]
pub fn eq_str(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let n = a.len();
    if n != b.len() {
        return false;
    }
    match n {
        0 => true,
        // Bytes 0, n/2 and n-1 cover every byte of a string this short.
        1..=3 => a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1],
        // Two overlapping loads cover the whole string.
        4..=7 => load4(a, 0) == load4(b, 0) && load4(a, n - 4) == load4(b, n - 4),
        8..=16 => load8(a, 0) == load8(b, 0) && load8(a, n - 8) == load8(b, n - 8),
        _ => a == b,
    }
}

/// [`eq_str`], comparing addresses first: a repeated decision's outcome or detail is the
/// same literal.
#[inline]
pub fn same_text(a: &str, b: &str) -> bool {
    (std::ptr::eq(a.as_ptr(), b.as_ptr()) && a.len() == b.len()) || eq_str(a, b)
}

#[inline]
fn load4(s: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(s[at..at + 4].try_into().expect("4 bytes"))
}

#[inline]
fn load8(s: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(s[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_exactly_when_the_bytes_are() {
        let words = [
            "",
            "a",
            "b",
            "ab",
            "ba",
            "abc",
            "abd",
            "xbc",
            "axc",
            "abcd",
            "abce",
            "xbcd",
            "abcde",
            "abxde",
            "abcdefg",
            "abcxefg",
            "abcdefgh",
            "abcdefgx",
            "xbcdefgh",
            "abcdefghi",
            "abcdefghij",
            "abcdxfghij",
            "abcdefghijklmnop",
            "abcdefghxjklmnop",
            "abcdefghijklmnopq",
            "abcdefghijklmnopx",
            "élan",
            "elan",
            "c100",
            "c900",
        ];
        for a in words {
            for b in words {
                assert_eq!(eq_str(a, b), a == b, "{a:?} vs {b:?}");
                assert_eq!(same_text(a, b), a == b, "{a:?} vs {b:?}");
            }
            // Equal content at another address.
            let copy = a.to_string();
            assert!(eq_str(a, &copy) && same_text(a, &copy));
        }
        // Every single-byte difference at every position and length up to 40.
        for n in 1..40 {
            let a: String = (0..n).map(|i| (b'a' + (i % 26) as u8) as char).collect();
            for i in 0..n {
                let mut b = a.clone().into_bytes();
                b[i] = b'Z';
                let b = String::from_utf8(b).unwrap();
                assert!(!eq_str(&a, &b), "{a:?} vs {b:?}");
            }
        }
    }
}
