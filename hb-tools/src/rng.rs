//! The one seeded random number generator of the tools and the tests: the
//! same seed gives the same load, the same hostile packets, the same
//! fixtures. `rand`'s [`SmallRng`] (xoshiro256++, 32 bytes of state), seeded
//! through `seed_from_u64`, so every seed, 0 included, gives a good stream.

use rand::{Rng as _, SeedableRng, rngs::SmallRng};

/// The generator.
pub type Rng = SmallRng;

/// A generator seeded with `seed`.
pub fn seeded(seed: u64) -> Rng {
    SmallRng::seed_from_u64(seed)
}

/// The `index`th independent stream of `seed` (one per node, per category):
/// distinct indices give distinct streams.
pub fn stream(seed: u64, index: u64) -> Rng {
    let base: u64 = seeded(seed).random();
    SmallRng::seed_from_u64(base ^ index)
}

#[cfg(test)]
mod tests {
    use rand::Rng as _;

    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_numbers() {
        let a: Vec<u64> = (0..8)
            .map(|_| 0)
            .scan(seeded(7), |r, _: u64| Some(r.random()))
            .collect();
        let b: Vec<u64> = (0..8)
            .map(|_| 0)
            .scan(seeded(7), |r, _: u64| Some(r.random()))
            .collect();
        assert_eq!(a, b);
        assert_ne!(seeded(0).random::<u64>(), 0);
    }

    #[test]
    fn streams_differ() {
        let first: Vec<u64> = (0..4).map(|i| stream(1, i).random()).collect();
        for (i, a) in first.iter().enumerate() {
            for b in &first[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(stream(1, 2).random::<u64>(), stream(1, 2).random::<u64>());
    }
}
