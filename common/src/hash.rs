//! Deterministic hashes shared by every gateway.
//!
//! Maglev's promise is that every gateway that computes the same table picks the
//! same backend for a flow, so ECMP can spread one client's packets over several
//! gateways without shared state. That only holds if the flow hash is the same
//! function with the same seed on every machine: these functions therefore use
//! fixed constants and never a per-process random key (unlike `ahash`, which the
//! control plane uses for its own maps).

/// Fixed seed of the flow hash. Changing it re-shuffles every flow on upgrade.
const FLOW_SEED: u64 = 0x5356_4347_4154_4531; // "SVCGATE1"

/// murmur3's 64-bit finaliser: a cheap, well-tested avalanche step.
#[inline(always)]
pub const fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// Hash of a 5-tuple, used to pick a Maglev slot for a new flow.
///
/// Addresses are the raw big-endian `u32` values as read from the wire; the
/// result depends only on the tuple and the fixed seed.
#[inline(always)]
pub const fn flow_hash(src: u32, dst: u32, sport: u16, dport: u16, proto: u8) -> u32 {
    let a = ((src as u64) << 32) | dst as u64;
    let b = ((sport as u64) << 32) | ((dport as u64) << 16) | proto as u64;
    let h = fmix64(a ^ FLOW_SEED) ^ fmix64(b.wrapping_add(FLOW_SEED.rotate_left(17)));
    (h ^ (h >> 32)) as u32
}

/// Hash of the client address alone, for `sessionAffinity: ClientIP`.
#[inline(always)]
pub const fn client_hash(src: u32) -> u32 {
    let h = fmix64(src as u64 ^ FLOW_SEED);
    (h ^ (h >> 32)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOLDEN_FLOW: u32 = 0x9a50b0ae;
    const GOLDEN_CLIENT: u32 = 0xda6c3626;

    #[test]
    fn flow_hash_is_stable_across_builds() {
        // Golden values, computed independently (Python) from the definition:
        // if these change, gateways of different versions
        // would disagree on backends for the same flow.
        assert_eq!(flow_hash(0xc612_0102, 0xc612_6401, 40000, 80, 6), GOLDEN_FLOW);
        assert_eq!(client_hash(0xc612_0102), GOLDEN_CLIENT);
    }

    #[test]
    fn flow_hash_separates_fields() {
        let base = flow_hash(1, 2, 3, 4, 6);
        assert_ne!(base, flow_hash(2, 1, 3, 4, 6));
        assert_ne!(base, flow_hash(1, 2, 4, 3, 6));
        assert_ne!(base, flow_hash(1, 2, 3, 4, 17));
        assert_ne!(client_hash(1), client_hash(2));
    }
}
