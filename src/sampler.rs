//! Choosing the next token from logits: repetition penalty, temperature, top-k, top-p, then a
//! draw from a seeded generator owned by the sampler, so the same seed and the same logits
//! give the same ids (llama2.c's `sample`, with the stages of Hugging Face `generate`).
//!
//! Order of the stages (as HF `generate` and chatglm.cpp apply them):
//! 1. repetition penalty over the previous tokens (each distinct id once): a positive logit
//!    is divided by the penalty, a negative one multiplied
//!    (HF `RepetitionPenaltyLogitsProcessor`, llama.cpp `llama_sample_repetition_penalties`);
//! 2. greedy (`temperature == 0`): the first id of the largest logit;
//! 3. otherwise logits / temperature, keep the `top_k` largest, softmax, keep the smallest
//!    prefix (by decreasing probability) whose probability reaches `top_p`, renormalize and
//!    draw;
//! 4. min-p (`min_p > 0`): of those, keep the tokens at least `min_p` times as likely as the
//!    most likely one (HF `MinPLogitsWarper`, applied after temperature, top-k and top-p as
//!    there; llama.cpp `--min-p`), then draw.
//!
//! The penalty sees the last `repeat_last_n` of the previous tokens (llama.cpp's
//! `--repeat-last-n`; all of them by default, as HF and chatglm.cpp).

use std::cmp::Ordering;

/// Sampling settings, with the llama.cpp command-line meanings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplerConfig {
    /// Softmax temperature; `0` means greedy (argmax).
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens; `0` disables.
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p`; `1`
    /// disables. In `(0, 1]`.
    pub top_p: f32,
    /// Repetition penalty; `1` disables. Positive.
    pub repeat_penalty: f32,
    /// How many of the most recent previous tokens the penalty sees; `usize::MAX` (the
    /// default): all, `0`: none.
    pub repeat_last_n: usize,
    /// Keep only the tokens at least `min_p` times as likely as the most likely one (after
    /// temperature, top-k and top-p); `0` disables. In `[0, 1]`.
    pub min_p: f32,
    /// Seed of the random generator.
    pub seed: u64,
}

impl Default for SamplerConfig {
    /// chatglm.cpp's defaults: temperature 0.95, top-k 0, top-p 0.7, no penalty (over all
    /// previous tokens when set), no min-p, seed 0.
    fn default() -> Self {
        Self {
            temperature: 0.95,
            top_k: 0,
            top_p: 0.7,
            repeat_penalty: 1.0,
            repeat_last_n: usize::MAX,
            min_p: 0.0,
            seed: 0,
        }
    }
}

/// Why sampling failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SamplerError {
    /// A setting is out of range.
    #[error("sampler setting `{what}` = {value} is out of range ({allowed})")]
    Config {
        /// Which setting.
        what: &'static str,
        /// Its value.
        value: f32,
        /// What is allowed.
        allowed: &'static str,
    },
    /// The logits are empty.
    #[error("no logits to sample from")]
    Empty,
    /// A logit is NaN or infinite (a broken model or kernel, never sampled around).
    #[error("logit {index} is not finite ({value})")]
    NonFinite {
        /// Token id of the logit.
        index: usize,
        /// Its value.
        value: f32,
    },
    /// A previous token is not an index into the logits.
    #[error("previous token {token} is outside the vocabulary of {vocab}")]
    TokenOutOfRange {
        /// The id.
        token: u32,
        /// Number of logits.
        vocab: usize,
    },
}

/// SplitMix64 (Steele, Lea, Flood 2014; constants from Vigna's public-domain `splitmix64.c`):
/// small, fast and good enough to draw tokens; written here to avoid a dependency.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform `f64` in `[0, 1)` (the top 53 bits).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// A token sampler with its own seeded generator and scratch space (reused across calls).
#[derive(Debug, Clone)]
pub struct Sampler {
    config: SamplerConfig,
    rng: Rng,
    /// Candidates `(id, logit, then probability)`. (vocab)
    candidates: Vec<(u32, f32)>,
    /// Which ids the penalty hits in this call. (vocab, or empty without a penalty)
    penalized: Vec<bool>,
    /// Space for the radix sort of the candidates. (vocab)
    scratch: Vec<(u32, f32)>,
}

impl Sampler {
    /// A sampler for `config`, checking its ranges.
    pub fn new(config: SamplerConfig) -> Result<Self, SamplerError> {
        check_config(&config)?;
        Ok(Self {
            config,
            rng: Rng::new(config.seed),
            candidates: Vec::new(),
            penalized: Vec::new(),
            scratch: Vec::new(),
        })
    }

    /// Takes new settings (checked) and reseeds the generator with their seed, keeping the
    /// scratch space: the sampler then draws as a new one would.
    pub fn reset(&mut self, config: SamplerConfig) -> Result<(), SamplerError> {
        check_config(&config)?;
        self.config = config;
        self.rng = Rng::new(config.seed);
        Ok(())
    }

    /// The settings.
    pub fn config(&self) -> &SamplerConfig {
        &self.config
    }

    /// Picks the next token from `logits` (one row, `[vocab]`), penalizing the ids in the
    /// last [`SamplerConfig::repeat_last_n`] of `previous` (all the tokens so far, or a
    /// window of them). The logits are read where they are; the penalty is applied as they
    /// are read.
    pub fn sample(&mut self, logits: &[f32], previous: &[u32]) -> Result<u32, SamplerError> {
        let previous = &previous[previous.len().saturating_sub(self.config.repeat_last_n)..];
        if logits.is_empty() {
            return Err(SamplerError::Empty);
        }
        if let Some((index, &value)) = logits.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(SamplerError::NonFinite { index, value });
        }
        if let Some(&token) = previous.iter().find(|&&t| t as usize >= logits.len()) {
            return Err(SamplerError::TokenOutOfRange {
                token,
                vocab: logits.len(),
            });
        }
        let penalty = self.config.repeat_penalty;
        self.penalized.clear();
        if penalty != 1.0 {
            self.penalized.resize(logits.len(), false);
            for &t in previous {
                self.penalized[t as usize] = true;
            }
        }
        let penalized = &self.penalized;
        // The logit of id `i` after the penalty (the same arithmetic as
        // `apply_repeat_penalty`, each distinct id once).
        let value = |i: usize, l: f32| match penalized.get(i) {
            Some(true) if l > 0.0 => l / penalty,
            Some(true) => l * penalty,
            _ => l,
        };

        if self.config.temperature == 0.0 {
            // `argmax` of the penalized logits: the first of the largest.
            let mut best = (0, value(0, logits[0]));
            for (i, &l) in logits.iter().enumerate().skip(1) {
                let v = value(i, l);
                if v > best.1 {
                    best = (i, v);
                }
            }
            return Ok(best.0 as u32);
        }

        let temperature = self.config.temperature;
        self.candidates.clear();
        self.candidates.extend(
            logits
                .iter()
                .enumerate()
                .map(|(i, &l)| (i as u32, value(i, l) / temperature)),
        );
        if self.config.top_k > 0 && self.config.top_k < self.candidates.len() {
            // Select the k largest, then sort only them: sorting also makes the draw
            // independent of how the selection left the candidates.
            top_k(&mut self.candidates, self.config.top_k);
            self.candidates.sort_unstable_by(by_value_desc);
        } else if self.config.top_k > 0 || self.config.top_p < 1.0 {
            // Nucleus sampling needs the whole vocabulary in decreasing order (the softmax
            // sums in that order): a radix sort, the same order as `by_value_desc`. Without
            // either, the candidates stay in id order (no sort).
            radix_sort_desc(&mut self.candidates, &mut self.scratch);
        }
        softmax(&mut self.candidates);
        top_p(&mut self.candidates, self.config.top_p);
        min_p(&mut self.candidates, self.config.min_p);
        Ok(draw(&self.candidates, self.rng.next_f64()))
    }
}

/// Checks the ranges of `config`'s settings.
fn check_config(config: &SamplerConfig) -> Result<(), SamplerError> {
    let checks = [
        (
            "temperature",
            config.temperature,
            config.temperature.is_finite() && config.temperature >= 0.0,
            "finite, >= 0",
        ),
        (
            "top_p",
            config.top_p,
            config.top_p > 0.0 && config.top_p <= 1.0,
            "(0, 1]",
        ),
        (
            "repeat_penalty",
            config.repeat_penalty,
            config.repeat_penalty.is_finite() && config.repeat_penalty > 0.0,
            "finite, > 0",
        ),
        (
            "min_p",
            config.min_p,
            (0.0..=1.0).contains(&config.min_p),
            "[0, 1]",
        ),
    ];
    for (what, value, ok, allowed) in checks {
        if !ok {
            return Err(SamplerError::Config {
                what,
                value,
                allowed,
            });
        }
    }
    Ok(())
}

/// The key of a candidate whose increasing order is [`by_value_desc`]'s order of values:
/// the bits of `f32::total_cmp`'s order, reversed.
fn desc_key(x: &(u32, f32)) -> u32 {
    let bits = x.1.to_bits();
    let ascending = if bits & 0x8000_0000 != 0 {
        !bits
    } else {
        bits | 0x8000_0000
    };
    !ascending
}

/// Sorts candidates given in increasing id order by [`by_value_desc`]: a stable
/// least-significant-digit radix sort on [`desc_key`] (four passes of 8 bits), so equal values
/// keep increasing ids. `scratch` is reused space.
fn radix_sort_desc(c: &mut Vec<(u32, f32)>, scratch: &mut Vec<(u32, f32)>) {
    scratch.clear();
    scratch.resize(c.len(), (0, 0.0));
    for shift in [0, 8, 16, 24] {
        let digit = |x: &(u32, f32)| ((desc_key(x) >> shift) & 0xff) as usize;
        let mut start = [0usize; 257];
        for x in c.iter() {
            start[digit(x) + 1] += 1;
        }
        if start.contains(&c.len()) {
            // Every candidate has the same digit: the pass would change nothing.
            continue;
        }
        for d in 0..256 {
            start[d + 1] += start[d];
        }
        for x in c.iter() {
            let d = digit(x);
            scratch[start[d]] = *x;
            start[d] += 1;
        }
        std::mem::swap(c, scratch);
    }
}

/// Divides positive logits by `penalty` and multiplies negative ones, once per distinct id in
/// `previous`. `seen` is scratch space (resized to the vocabulary, left all false).
pub fn apply_repeat_penalty(
    logits: &mut [f32],
    previous: &[u32],
    penalty: f32,
    seen: &mut Vec<bool>,
) -> Result<(), SamplerError> {
    if let Some(&token) = previous.iter().find(|&&t| t as usize >= logits.len()) {
        return Err(SamplerError::TokenOutOfRange {
            token,
            vocab: logits.len(),
        });
    }
    if penalty == 1.0 {
        return Ok(());
    }
    seen.clear();
    seen.resize(logits.len(), false);
    for &t in previous {
        let t = t as usize;
        if !seen[t] {
            seen[t] = true;
            let l = &mut logits[t];
            *l = if *l > 0.0 { *l / penalty } else { *l * penalty };
        }
    }
    seen.clear();
    Ok(())
}

/// Index of the largest value; the first one on ties (as `torch.argmax`).
pub fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best as u32
}

/// Descending by value, ascending id on ties: a total order, so results never depend on the
/// sort algorithm.
fn by_value_desc(a: &(u32, f32), b: &(u32, f32)) -> Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// Keeps the `k` largest candidates (all if `k == 0` or `k >= len`), in no particular order.
fn top_k(c: &mut Vec<(u32, f32)>, k: usize) {
    if k > 0 && k < c.len() {
        c.select_nth_unstable_by(k - 1, by_value_desc);
        c.truncate(k);
    }
}

/// Replaces the logits by their softmax (shifted by the maximum; sums in f64).
fn softmax(c: &mut [(u32, f32)]) {
    let max = c.iter().map(|x| x.1).fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f64;
    for x in c.iter_mut() {
        x.1 = (x.1 - max).exp();
        sum += f64::from(x.1);
    }
    for x in c.iter_mut() {
        x.1 = (f64::from(x.1) / sum) as f32;
    }
}

/// Keeps the smallest prefix of the (descending) probabilities whose sum reaches `p` (at
/// least one candidate).
fn top_p(c: &mut Vec<(u32, f32)>, p: f32) {
    if p >= 1.0 {
        return;
    }
    let mut cum = 0.0f64;
    let mut keep = c.len();
    for (i, x) in c.iter().enumerate() {
        cum += f64::from(x.1);
        if cum >= f64::from(p) {
            keep = i + 1;
            break;
        }
    }
    c.truncate(keep.max(1));
}

/// Keeps the candidates (probabilities, in any order) whose probability is at least `p` times
/// the largest: HF transformers `MinPLogitsWarper` (`generation/logits_process.py`), which
/// compares `softmax(scores)` with `min_p * max`; the order of the kept ones is unchanged, and
/// the most likely always stays. `p == 0` keeps all.
fn min_p(c: &mut Vec<(u32, f32)>, p: f32) {
    if p <= 0.0 {
        return;
    }
    let max = c.iter().map(|x| x.1).fold(0.0f32, f32::max);
    let threshold = p * max;
    c.retain(|x| x.1 >= threshold);
}

/// Draws from the (not necessarily normalized) probabilities with uniform `r` in `[0, 1)`.
fn draw(c: &[(u32, f32)], r: f64) -> u32 {
    let total: f64 = c.iter().map(|x| f64::from(x.1)).sum();
    let target = r * total;
    let mut cum = 0.0f64;
    for x in c {
        cum += f64::from(x.1);
        if target < cum {
            return x.0;
        }
    }
    // Rounding left `target` at the very end: the last candidate.
    c.last().map_or(0, |x| x.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn radix_sort_orders_as_by_value_desc() {
        let mut rng = Rng::new(7);
        for len in [0, 1, 2, 5, 300, 5000] {
            let special = [
                0.0,
                -0.0,
                1.0,
                -1.0,
                f32::INFINITY,
                f32::NEG_INFINITY,
                1e-40,
            ];
            let mut c: Vec<(u32, f32)> = (0..len as u32)
                .map(|i| {
                    let r = rng.next_u64();
                    let v = match r % 4 {
                        0 => special[(r >> 8) as usize % special.len()],
                        1 => ((r >> 8) % 5) as f32 - 2.0,
                        _ => (rng.next_f64() as f32 - 0.5) * 40.0,
                    };
                    (i, v)
                })
                .collect();
            let mut want = c.clone();
            want.sort_unstable_by(by_value_desc);
            radix_sort_desc(&mut c, &mut Vec::new());
            let bits =
                |v: &[(u32, f32)]| v.iter().map(|x| (x.0, x.1.to_bits())).collect::<Vec<_>>();
            assert_eq!(bits(&c), bits(&want), "len {len}");
        }
    }

    fn cfg(temperature: f32, top_k: usize, top_p: f32, repeat_penalty: f32) -> SamplerConfig {
        SamplerConfig {
            temperature,
            top_k,
            top_p,
            repeat_penalty,
            seed: 42,
            ..SamplerConfig::default()
        }
    }

    #[test]
    fn repeat_penalty_divides_positive_multiplies_negative_once() {
        // The same case as chatglm.cpp's Sampling.RepetitionPenalty test.
        let mut logits = vec![0.96, 1.2, -2.0, -0.8, 0.0, 2.4, -1.0];
        let mut seen = Vec::new();
        apply_repeat_penalty(&mut logits, &[0, 2, 5, 2], 1.2, &mut seen).unwrap();
        let expect = [0.8, 1.2, -2.4, -0.8, 0.0, 2.0, -1.0];
        for (a, b) in logits.iter().zip(expect) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
        assert_eq!(
            apply_repeat_penalty(&mut logits, &[7], 1.2, &mut seen),
            Err(SamplerError::TokenOutOfRange { token: 7, vocab: 7 })
        );
    }

    #[test]
    fn greedy_is_argmax_after_penalty_first_on_ties() {
        let mut s = Sampler::new(cfg(0.0, 0, 1.0, 1.0)).unwrap();
        assert_eq!(s.sample(&[0.1, 3.0, 3.0, -1.0], &[]).unwrap(), 1);
        // Penalty 2 turns 3.0 into 1.5 for id 1 and 2: id 4 (2.0) wins.
        let mut s = Sampler::new(cfg(0.0, 0, 1.0, 2.0)).unwrap();
        assert_eq!(s.sample(&[0.1, 3.0, 3.0, -1.0, 2.0], &[1, 2]).unwrap(), 4);
    }

    #[test]
    fn non_finite_logits_are_errors() {
        let mut s = Sampler::new(cfg(0.8, 0, 1.0, 1.0)).unwrap();
        assert!(matches!(
            s.sample(&[0.0, f32::NAN], &[]),
            Err(SamplerError::NonFinite { index: 1, value }) if value.is_nan()
        ));
        assert!(matches!(
            s.sample(&[f32::INFINITY], &[]),
            Err(SamplerError::NonFinite { index: 0, .. })
        ));
        assert_eq!(s.sample(&[], &[]), Err(SamplerError::Empty));
    }

    #[test]
    fn bad_settings_are_errors() {
        for c in [
            cfg(-1.0, 0, 1.0, 1.0),
            cfg(f32::NAN, 0, 1.0, 1.0),
            cfg(1.0, 0, 0.0, 1.0),
            cfg(1.0, 0, 1.5, 1.0),
            cfg(1.0, 0, 1.0, 0.0),
        ] {
            assert!(matches!(Sampler::new(c), Err(SamplerError::Config { .. })));
        }
    }

    #[test]
    fn top_k_keeps_the_k_largest() {
        let mut c: Vec<(u32, f32)> = [0.5, 2.0, -1.0, 2.0, 1.0]
            .iter()
            .enumerate()
            .map(|(i, &v)| (i as u32, v))
            .collect();
        top_k(&mut c, 3);
        c.sort_unstable_by(by_value_desc);
        assert_eq!(c, vec![(1, 2.0), (3, 2.0), (4, 1.0)]);
        // Ties at the cut keep the lower id.
        let mut t = vec![(0, 1.0), (1, 2.0), (2, 1.0), (3, 1.0)];
        top_k(&mut t, 2);
        t.sort_unstable_by(by_value_desc);
        assert_eq!(t, vec![(1, 2.0), (0, 1.0)]);
        let mut all = vec![(0, 1.0), (1, 3.0)];
        top_k(&mut all, 0);
        assert_eq!(all.len(), 2);
        top_k(&mut all, 5);
        assert_eq!(all.len(), 2);
    }

    #[test]
    fn temperature_softmax_probabilities() {
        // Logits [1, 0] at temperature 0.5 are [2, 0]: p0 = 1 / (1 + e^-2) = 0.880797.
        let mut c = vec![(0, 1.0 / 0.5), (1, 0.0 / 0.5)];
        softmax(&mut c);
        assert!((c[0].1 - 0.880_797).abs() < 1e-6);
        assert!((c[1].1 - 0.119_203).abs() < 1e-6);
    }

    #[test]
    fn softmax_then_top_p_keeps_smallest_reaching_prefix() {
        // logits ln(0.5), ln(0.3), ln(0.2): probabilities 0.5, 0.3, 0.2.
        let mut c = vec![(2, 0.5f32.ln()), (0, 0.3f32.ln()), (1, 0.2f32.ln())];
        softmax(&mut c);
        for (x, p) in c.iter().zip([0.5, 0.3, 0.2]) {
            assert!((x.1 - p).abs() < 1e-6);
        }
        let mut a = c.clone();
        top_p(&mut a, 0.5);
        assert_eq!(a.iter().map(|x| x.0).collect::<Vec<_>>(), vec![2]);
        let mut b = c.clone();
        top_p(&mut b, 0.7);
        assert_eq!(b.iter().map(|x| x.0).collect::<Vec<_>>(), vec![2, 0]);
        let mut d = c.clone();
        top_p(&mut d, 0.81);
        assert_eq!(d.len(), 3);
        let mut e = c;
        top_p(&mut e, 1e-9);
        assert_eq!(e.len(), 1);
    }

    #[test]
    fn draw_walks_the_cumulative_distribution() {
        let c = [(7, 0.5), (3, 0.3), (9, 0.2)];
        assert_eq!(draw(&c, 0.0), 7);
        assert_eq!(draw(&c, 0.49), 7);
        assert_eq!(draw(&c, 0.51), 3);
        assert_eq!(draw(&c, 0.79), 3);
        assert_eq!(draw(&c, 0.81), 9);
        assert_eq!(draw(&c, 0.999_999), 9);
        // Unnormalized weights after top-p: [0.5, 0.3] -> 5/8, 3/8.
        assert_eq!(draw(&c[..2], 0.6), 7);
        assert_eq!(draw(&c[..2], 0.65), 3);
    }

    #[test]
    fn temperature_scales_before_softmax() {
        // Two logits 1 and 0 at temperature 0.5 are 2 and 0: p = [1/(1+e^-2), ...].
        let mut s = Sampler::new(cfg(0.5, 0, 1.0, 1.0)).unwrap();
        let n = 20000;
        let zeros = (0..n)
            .filter(|_| s.sample(&[1.0, 0.0], &[]).unwrap() == 0)
            .count();
        let p = 1.0 / (1.0 + (-2.0f64).exp());
        let freq = zeros as f64 / n as f64;
        // 5 standard deviations of a binomial proportion.
        let sd = (p * (1.0 - p) / n as f64).sqrt();
        assert!((freq - p).abs() < 5.0 * sd, "{freq} vs {p}");
    }

    #[test]
    fn top_k_one_and_tiny_top_p_are_greedy() {
        let logits = [0.3, 0.1, 0.9, 0.85];
        let mut k1 = Sampler::new(cfg(1.0, 1, 1.0, 1.0)).unwrap();
        let mut p0 = Sampler::new(cfg(1.0, 0, 1e-6, 1.0)).unwrap();
        for _ in 0..100 {
            assert_eq!(k1.sample(&logits, &[]).unwrap(), 2);
            assert_eq!(p0.sample(&logits, &[]).unwrap(), 2);
        }
    }

    #[test]
    fn min_p_keeps_the_tokens_at_least_p_times_as_likely_as_the_best() {
        // At temperature 1, probabilities are proportional to exp(logit): with logits
        // ln(8), ln(4), ln(2), ln(1) the ratios to the best are 1, 1/2, 1/4, 1/8.
        let logits = [8f32.ln(), 4f32.ln(), 2f32.ln(), 0.0];
        for (p, allowed) in [(0.3, 2), (0.25, 3), (0.1, 4), (1.0, 1)] {
            let config = SamplerConfig {
                min_p: p,
                ..cfg(1.0, 0, 1.0, 1.0)
            };
            let mut s = Sampler::new(config).unwrap();
            let mut seen = [0usize; 4];
            for _ in 0..4000 {
                seen[s.sample(&logits, &[]).unwrap() as usize] += 1;
            }
            for (id, &n) in seen.iter().enumerate() {
                assert_eq!(n > 0, id < allowed, "min_p {p}: id {id} drawn {n} times");
            }
        }
        // Direct: the kept candidates keep their order.
        let mut c = vec![(3, 0.05), (0, 0.5), (1, 0.3), (2, 0.15)];
        min_p(&mut c, 0.3);
        assert_eq!(c, vec![(0, 0.5), (1, 0.3), (2, 0.15)]);
        let bad = SamplerConfig {
            min_p: 1.5,
            ..cfg(1.0, 0, 1.0, 1.0)
        };
        assert!(matches!(
            Sampler::new(bad),
            Err(SamplerError::Config { what: "min_p", .. })
        ));
    }

    #[test]
    fn repeat_last_n_limits_the_penalty_to_the_recent_tokens() {
        let logits = [3.0, 2.0, 0.0];
        let previous = [0, 1, 2];
        // The penalty 4 over all previous tokens: 0.75, 0.5, 0.0: id 0 wins.
        let mut all = Sampler::new(cfg(0.0, 0, 1.0, 4.0)).unwrap();
        assert_eq!(all.sample(&logits, &previous).unwrap(), 0);
        // Over the last 2 only (ids 1, 2): 3.0, 0.5, 0.0: id 0 wins, unpenalized; with id 0
        // among the last 2 instead, id 1 (2.0) beats its 0.75.
        let last = |n| SamplerConfig {
            repeat_last_n: n,
            ..cfg(0.0, 0, 1.0, 4.0)
        };
        let mut two = Sampler::new(last(2)).unwrap();
        assert_eq!(two.sample(&logits, &[0, 1, 2]).unwrap(), 0);
        assert_eq!(two.sample(&logits, &[1, 2, 0]).unwrap(), 1);
        // 0: no penalty at all, whatever came before.
        let mut none = Sampler::new(last(0)).unwrap();
        assert_eq!(none.sample(&[2.0, 3.0], &[1]).unwrap(), 1);
        let mut one = Sampler::new(last(1)).unwrap();
        assert_eq!(one.sample(&[2.0, 3.0], &[1]).unwrap(), 0);
        assert_eq!(one.sample(&[2.0, 3.0], &[1, 0]).unwrap(), 1);
    }

    #[test]
    fn same_seed_same_ids() {
        let rows: Vec<Vec<f32>> = (0..50)
            .map(|i| {
                (0..100)
                    .map(|j| ((i * 31 + j * 17) % 23) as f32 * 0.1)
                    .collect()
            })
            .collect();
        let run = |seed| {
            let mut s = Sampler::new(SamplerConfig {
                temperature: 0.9,
                top_k: 40,
                top_p: 0.95,
                repeat_penalty: 1.1,
                seed,
                ..SamplerConfig::default()
            })
            .unwrap();
            let mut prev = Vec::new();
            for r in &rows {
                let t = s.sample(r, &prev).unwrap();
                prev.push(t);
            }
            prev
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }

    #[test]
    fn rng_is_splitmix64() {
        // First outputs of splitmix64 seeded with 0 (Vigna's reference implementation).
        let mut r = Rng::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        let mut r = Rng::new(7);
        for _ in 0..1000 {
            let x = r.next_f64();
            assert!((0.0..1.0).contains(&x));
        }
    }
}
