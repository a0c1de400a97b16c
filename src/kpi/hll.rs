//! HyperLogLog for the embedded store's unique-endpoint counts (Redis has PFADD/PFCOUNT):
//! 2^12 one-byte registers (4 KiB per day and scope), a standard error of about 1.6 %, exact
//! in practice for small counts (linear counting). Registers merge by maximum, so a range of
//! days is the union of its days.

pub const REGISTERS: usize = 1 << P;
const P: u32 = 12;

/// A 64-bit hash of an endpoint id (FNV-1a, then a murmur3 finalizer for its bits).
fn hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Adds `member` to `registers` (resized to [`REGISTERS`] if it is not).
pub fn add(registers: &mut Vec<u8>, member: &str) {
    registers.resize(REGISTERS, 0);
    let h = hash(member);
    let index = (h >> (64 - P)) as usize;
    let rest = (h << P) | (1 << (P - 1));
    let rank = rest.leading_zeros() as u8 + 1;
    if registers[index] < rank {
        registers[index] = rank;
    }
}

/// Merges `other` into `into` (register by register, the larger).
pub fn merge(into: &mut Vec<u8>, other: &[u8]) {
    into.resize(REGISTERS, 0);
    for (a, b) in into.iter_mut().zip(other) {
        *a = (*a).max(*b);
    }
}

/// The estimated number of distinct members.
pub fn count(registers: &[u8]) -> u64 {
    if registers.is_empty() {
        return 0;
    }
    let m = REGISTERS as f64;
    let (mut sum, mut zeros) = (0.0, 0usize);
    for &r in registers.iter().take(REGISTERS) {
        sum += 2f64.powi(-(r as i32));
        zeros += (r == 0) as usize;
    }
    sum += (REGISTERS - registers.len().min(REGISTERS)) as f64;
    zeros += REGISTERS - registers.len().min(REGISTERS);
    let alpha = 0.7213 / (1.0 + 1.079 / m);
    let raw = alpha * m * m / sum;
    let estimate = if raw <= 2.5 * m && zeros > 0 { m * (m / zeros as f64).ln() } else { raw };
    estimate.round() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_exact_when_small_and_close_when_large() {
        let mut r = Vec::new();
        assert_eq!(count(&r), 0);
        for i in 0..10 {
            add(&mut r, &format!("endpoint-{i}"));
            add(&mut r, &format!("endpoint-{i}"));
        }
        assert_eq!(count(&r), 10);
        let mut big = Vec::new();
        for i in 0..100_000 {
            add(&mut big, &format!("e{i}"));
        }
        let n = count(&big) as f64;
        assert!((n - 100_000.0).abs() / 100_000.0 < 0.05, "{n}");
        // A union: half of the members are shared.
        let mut other = Vec::new();
        for i in 50_000..150_000 {
            add(&mut other, &format!("e{i}"));
        }
        merge(&mut big, &other);
        let u = count(&big) as f64;
        assert!((u - 150_000.0).abs() / 150_000.0 < 0.05, "{u}");
    }
}
