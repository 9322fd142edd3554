//! Seeds of the property tests (printed; `FLEETMIG_PROP_SEED` replays one),
//! a generator of its own for each use of a seed, any character, and the
//! hex and cut spellings of values in messages.

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{RngExt, SeedableRng};

/// The seed of a property test: `FLEETMIG_PROP_SEED` when set, to replay a
/// failure, else a fresh one. Printed either way.
pub fn seed(test: &str) -> u64 {
    let seed = match std::env::var("FLEETMIG_PROP_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("FLEETMIG_PROP_SEED={s} is not a u64")),
        Err(_) => rand::random(),
    };
    eprintln!("seed {seed}");
    eprintln!("({test}: replay with FLEETMIG_PROP_SEED={seed})");
    seed
}

/// A generator of its own for each use of a seed (a pair of systems, a
/// refused value), so that one does not shift the values of another.
pub fn rng_for(seed: u64, label: &str) -> StdRng {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in label.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    StdRng::seed_from_u64(h)
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `s` cut for a message.
pub fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!(
            "{}… ({} chars)",
            s.chars().take(n).collect::<String>(),
            s.chars().count()
        )
    }
}

pub fn any_char(rng: &mut StdRng) -> char {
    let pick = |rng: &mut StdRng, lo: u32, hi: u32| loop {
        if let Some(c) = char::from_u32(rng.random_range(lo..hi)) {
            return c;
        }
    };
    match rng.random_range(0..10) {
        0..=3 => pick(rng, 0x20, 0x7f),
        4 => *['\'', '"', '\\', '\t', '\n', '\r', '`', '%', '_']
            .choose(rng)
            .unwrap(),
        5 => {
            if rng.random_bool(0.2) {
                '\u{7f}'
            } else {
                pick(rng, 1, 0x20)
            }
        }
        6 => pick(rng, 0xa0, 0x800),
        7 => pick(rng, 0x4e00, 0xa000),
        8 => pick(rng, 0x1f300, 0x1fb00),
        _ => pick(rng, 1, 0x11_0000),
    }
}
