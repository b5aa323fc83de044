//! Order keys for cards in a column: base-16 fractions written as lowercase hex digits.
//!
//! A key `"8c"` stands for the fraction 0.8c (hex). Keys never end in `0`, so comparing the
//! strings compares the fractions, JS clients can sort with a plain string comparison, and
//! between any two distinct keys there is always another one. Two replicas that concurrently
//! place a card at the same spot may mint equal keys; readers then break the tie by task id, so
//! every replica shows the same order.
//!
//! Written here rather than taken from the `fractional_index` crate: its 2.0 release panics on
//! overflow (and computes wrong keys in release builds) for keys with low bytes, which any
//! client may write into a shared document.

use std::cmp::Ordering;

/// A position key, kept as its text (what the document stores).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OrderKey(String);

/// The text is not an order key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an order key (lowercase hex digits, not ending in 0)")]
pub struct InvalidOrderKey(pub String);

const RADIX: u8 = 16;
const DIGITS: &[u8; 16] = b"0123456789abcdef";

impl OrderKey {
    pub fn parse(s: &str) -> Result<Self, InvalidOrderKey> {
        let valid = !s.is_empty()
            && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            && !s.ends_with('0');
        if valid {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidOrderKey(s.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A key strictly between `before` and `after` (either may be open). `None` when the bounds
    /// are equal or out of order, which happens only with colliding concurrent keys.
    pub fn between(before: Option<&OrderKey>, after: Option<&OrderKey>) -> Option<OrderKey> {
        if let (Some(b), Some(a)) = (before, after)
            && b >= a
        {
            return None;
        }
        let mid = match (before, after) {
            (Some(b), None) => step_up(&digits(&b.0)),
            (None, Some(a)) => step_down(&digits(&a.0)),
            (b, a) => midpoint(
                &b.map(|k| digits(&k.0)).unwrap_or_default(),
                a.map(|k| digits(&k.0)).as_deref(),
            ),
        };
        Some(OrderKey(
            mid.iter()
                .map(|&d| DIGITS[usize::from(d)] as char)
                .collect(),
        ))
    }
}

fn digits(s: &str) -> Vec<u8> {
    s.bytes()
        .map(|b| match b {
            b'0'..=b'9' => b - b'0',
            _ => b - b'a' + 10,
        })
        .collect()
}

// Open-ended placement (a card to the bottom or top of a column, the common case) does not
// halve the gap to 1 (or 0): that adds a digit every four cards. It steps by one unit of the
// key's own length instead, and when that length is used up moves to twice the length, so N
// cards appended one after another need O(log N) digits (10,000 cards: 8).

/// A key just above `low`: `low` as an n-digit number plus one (plus two rather than end in 0);
/// when `low` is all `f`s, the smallest key of length 2n above it.
fn step_up(low: &[u8]) -> Vec<u8> {
    let mut next = low.to_vec();
    if add_one(&mut next) {
        if next.last() == Some(&0) {
            add_one(&mut next); // 0 -> 1: no carry
        }
        return next;
    }
    let mut longer = low.to_vec();
    longer.resize(2 * low.len() - 1, 0);
    longer.push(1);
    longer
}

/// A key just below `high` (which is above 0): `high` as an n-digit number minus one (minus two
/// rather than end in 0); when that reaches 0, the largest key of length 2n below it.
fn step_down(high: &[u8]) -> Vec<u8> {
    let mut next = high.to_vec();
    sub_one(&mut next);
    if next.iter().any(|&d| d != 0) {
        if next.last() == Some(&0) {
            sub_one(&mut next); // at least 0x10 units: stays above zero
        }
        return next;
    }
    let mut longer = high.to_vec();
    longer.resize(2 * high.len(), 0);
    sub_one(&mut longer);
    longer
}

/// Adds one unit in the last place; `false` on overflow (all digits were `f`).
fn add_one(digits: &mut [u8]) -> bool {
    for d in digits.iter_mut().rev() {
        if *d == RADIX - 1 {
            *d = 0;
        } else {
            *d += 1;
            return true;
        }
    }
    false
}

/// Subtracts one unit in the last place (the number must be above zero).
fn sub_one(digits: &mut [u8]) {
    for d in digits.iter_mut().rev() {
        if *d == 0 {
            *d = RADIX - 1;
        } else {
            *d -= 1;
            return;
        }
    }
}

/// Digits of a fraction strictly between `low` (0 when empty) and `high` (1 when `None`).
/// Requires `low < high` and that neither ends in a zero digit; the result does not either.
fn midpoint(low: &[u8], high: Option<&[u8]>) -> Vec<u8> {
    if let Some(high) = high {
        // Skip the common prefix, reading `low` as padded with zeros. It ends before `high`
        // does, because `high > low` and `high` does not end in zero.
        let prefix = (0..high.len())
            .take_while(|&i| low.get(i).copied().unwrap_or(0) == high[i])
            .count();
        if prefix > 0 {
            let rest_low = low.get(prefix..).unwrap_or_default();
            let mut out = high[..prefix].to_vec();
            out.extend(midpoint(rest_low, Some(&high[prefix..])));
            return out;
        }
    }
    let first_low = low.first().copied().unwrap_or(0);
    let first_high = high.map_or(RADIX, |h| h[0]);
    if first_high - first_low > 1 {
        return vec![(first_low + first_high) / 2];
    }
    match high {
        // `high` is longer than one digit: its first digit alone lies between.
        Some(h) if h.len() > 1 => vec![h[0]],
        // Consecutive first digits: keep low's and go deeper, unbounded above.
        _ => {
            let mut out = vec![first_low];
            out.extend(midpoint(low.get(1..).unwrap_or_default(), None));
            out
        }
    }
}

impl PartialOrd for OrderKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OrderKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.cmp(&other.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_between_sort_between() {
        let first = OrderKey::between(None, None).expect("open range");
        let last = OrderKey::between(Some(&first), None).expect("after");
        let head = OrderKey::between(None, Some(&first)).expect("before");
        let mid = OrderKey::between(Some(&first), Some(&last)).expect("between");
        assert!(head < first && first < mid && mid < last);
        assert_eq!(OrderKey::between(Some(&mid), Some(&mid)), None);
    }

    #[test]
    fn repeated_insertion_at_the_front_stays_ordered() {
        let mut keys = vec![OrderKey::between(None, None).expect("open range")];
        for _ in 0..200 {
            let k = OrderKey::between(None, Some(&keys[0])).expect("before");
            keys.insert(0, k);
        }
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        // Keys near the bottom of the byte range still split.
        for pair in keys.windows(2) {
            let mid = OrderKey::between(Some(&pair[0]), Some(&pair[1])).expect("distinct bounds");
            assert!(pair[0] < mid && mid < pair[1]);
        }
    }

    #[test]
    fn cards_appended_or_prepended_one_by_one_keep_short_keys() {
        let mut last = OrderKey::between(None, None).expect("open range");
        let mut first = last.clone();
        for _ in 0..10_000 {
            let next = OrderKey::between(Some(&last), None).expect("after");
            assert!(
                last < next && !next.as_str().ends_with('0'),
                "{last:?} {next:?}"
            );
            last = next;
            let prev = OrderKey::between(None, Some(&first)).expect("before");
            assert!(
                prev < first && !prev.as_str().ends_with('0'),
                "{prev:?} {first:?}"
            );
            first = prev;
        }
        assert!(last.as_str().len() <= 8, "{last:?}");
        assert!(first.as_str().len() <= 8, "{first:?}");
    }

    #[test]
    fn foreign_keys_with_low_bytes_never_panic() {
        let lo = OrderKey::parse("001").expect("valid");
        let hi = OrderKey::parse("0011").expect("valid");
        let mid = OrderKey::between(Some(&lo), Some(&hi)).expect("distinct bounds");
        assert!(lo < mid && mid < hi);
        assert_eq!(OrderKey::between(Some(&hi), Some(&lo)), None);
    }

    proptest::proptest! {
        #[test]
        fn between_lies_strictly_between(a in "[0-9a-f]{0,6}[1-9a-f]", b in "[0-9a-f]{0,6}[1-9a-f]") {
            let (a, b) = (OrderKey::parse(&a).expect("valid"), OrderKey::parse(&b).expect("valid"));
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            if lo == hi {
                proptest::prop_assert_eq!(OrderKey::between(Some(&lo), Some(&hi)), None);
            } else {
                let mid = OrderKey::between(Some(&lo), Some(&hi)).expect("distinct bounds");
                proptest::prop_assert!(lo < mid && mid < hi, "{lo:?} < {mid:?} < {hi:?}");
                proptest::prop_assert!(OrderKey::parse(mid.as_str()).is_ok());
            }
            let above = OrderKey::between(Some(&hi), None).expect("open above");
            let below = OrderKey::between(None, Some(&lo)).expect("open below");
            proptest::prop_assert!(below < lo && hi < above);
        }
    }

    #[test]
    fn parse_accepts_only_index_hex() {
        let k = OrderKey::between(None, None).expect("open range");
        assert_eq!(OrderKey::parse(k.as_str()), Ok(k));
        assert!(OrderKey::parse("").is_err());
        assert!(OrderKey::parse("zz").is_err());
        assert!(OrderKey::parse("8G").is_err());
        assert!(OrderKey::parse("80").is_err());
    }
}
