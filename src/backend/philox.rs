//! Philox-4x32-10, the counter-based generator behind dropout masks. Element i of a mask depends
//! only on (seed, i), so the CPU and CUDA backends draw the same mask and any chunk of it can be
//! generated independently in parallel.

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// Four 32-bit random words for `counter` under `key` (Salmon et al., SC'11).
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let (mut c, mut k) = (counter, key);
    for _ in 0..10 {
        let p0 = (M0 as u64) * (c[0] as u64);
        let p1 = (M1 as u64) * (c[2] as u64);
        c = [((p1 >> 32) as u32) ^ c[1] ^ k[0], p1 as u32, ((p0 >> 32) as u32) ^ c[3] ^ k[1], p0 as u32];
        k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
    }
    c
}

/// [`philox4x32_10`] of the `LANES` consecutive blocks `first_block..`, as four words of
/// `LANES` lanes each (`words[w][lane]` is word w of block `first_block + lane`). The same
/// arithmetic as the one-block form, written lane by lane in plain loops so that a caller
/// compiled for AVX-512 or AVX2 (see `cpu::simd::vectorised`) gets one vector multiply per
/// eight lanes instead of a scalar 64-bit multiply per word.
#[inline(always)]
pub fn philox4x32_10_lanes<const LANES: usize>(first_block: u64, key: [u32; 2]) -> [[u32; LANES]; 4] {
    let mut c = [[0u32; LANES]; 4];
    let [low, high, _, _] = &mut c;
    for (lane, (low, high)) in low.iter_mut().zip(high.iter_mut()).enumerate() {
        let block = first_block.wrapping_add(lane as u64);
        (*low, *high) = (block as u32, (block >> 32) as u32);
    }
    let mut k = key;
    for _ in 0..10 {
        let mut next = [[0u32; LANES]; 4];
        for lane in 0..LANES {
            let p0 = (M0 as u64) * (c[0][lane] as u64);
            let p1 = (M1 as u64) * (c[2][lane] as u64);
            next[0][lane] = ((p1 >> 32) as u32) ^ c[1][lane] ^ k[0];
            next[1][lane] = p1 as u32;
            next[2][lane] = ((p0 >> 32) as u32) ^ c[3][lane] ^ k[1];
            next[3][lane] = p0 as u32;
        }
        c = next;
        k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
    }
    c
}

/// The 24-bit uniform [0, 1) value of one random word (exact in f32).
#[inline(always)]
pub fn word_to_uniform(w: u32) -> f32 {
    (w >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// The seed as Philox's key.
pub fn key(seed: u64) -> [u32; 2] {
    [seed as u32, (seed >> 32) as u32]
}

/// Uniform [0, 1) value for element `index` of the stream `seed`, using 24 random bits so the
/// value is exact in f32.
pub fn uniform(seed: u64, index: u64) -> f32 {
    uniform_block(seed, index / 4)[(index % 4) as usize]
}

/// Elements `4 * block .. 4 * block + 4` of the stream `seed` ([`uniform`] of each): one
/// Philox call yields all four, so filling a mask block by block costs a quarter as much.
pub fn uniform_block(seed: u64, block: u64) -> [f32; 4] {
    let words = philox4x32_10([block as u32, (block >> 32) as u32, 0, 0], key(seed));
    words.map(word_to_uniform)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_random123_known_answer() {
        // Known-answer vectors from the Random123 distribution (kat_vectors, philox4x32 10 rounds).
        assert_eq!(philox4x32_10([0, 0, 0, 0], [0, 0]), [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]);
        assert_eq!(philox4x32_10([0xffffffff; 4], [0xffffffff; 2]), [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]);
    }

    #[test]
    fn blocks_hold_the_elements_in_order() {
        for block in [0u64, 1, 77, u32::MAX as u64 + 3] {
            let whole = uniform_block(9, block);
            for (i, v) in whole.iter().enumerate() {
                assert_eq!(*v, uniform(9, 4 * block + i as u64));
            }
        }
    }

    #[test]
    fn lanes_match_one_block_at_a_time() {
        // Across the 2^32 carry of the counter's low word, too.
        for first in [0u64, 5, u32::MAX as u64 - 7] {
            let words = philox4x32_10_lanes::<16>(first, key(0x1234_5678_9abc));
            for (lane, block) in (first..first + 16).enumerate() {
                let one = philox4x32_10([block as u32, (block >> 32) as u32, 0, 0], key(0x1234_5678_9abc));
                assert_eq!(words.map(|word| word[lane]), one, "block {block}");
            }
        }
    }

    #[test]
    fn uniform_is_in_unit_interval_and_roughly_flat() {
        let n = 100_000;
        let mean: f64 = (0..n).map(|i| uniform(42, i) as f64).sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.01, "mean {mean}");
        assert!((0..n).all(|i| (0.0..1.0).contains(&uniform(7, i))));
    }
}
