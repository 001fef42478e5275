//! Choosing the next token from logits: greedy, or llama.cpp's chain (repetition penalty,
//! top-k, top-p, min-p, temperature) and a seeded draw, so a run is reproducible.

/// Sampling settings, named and defaulted as llama.cpp's command line does.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplerConfig {
    /// Temperature; 0 or below means greedy.
    pub temp: f32,
    /// Keep the k most likely tokens (0 = all).
    pub top_k: usize,
    /// Keep the smallest set whose probability reaches p (1 = all).
    pub top_p: f32,
    /// Drop tokens less likely than min_p times the most likely one (0 = none).
    pub min_p: f32,
    /// Penalty for tokens among the last `repeat_last_n` (1 = none).
    pub repeat_penalty: f32,
    /// How many recent tokens the penalty looks at.
    pub repeat_last_n: usize,
    /// Seed of the draw.
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temp: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 0x5eed,
        }
    }
}

/// A sampling setting outside the values it can take.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{setting} {value} is out of range: it must be {expected}")]
pub struct SamplerError {
    /// The setting, as llama.cpp names it.
    pub setting: &'static str,
    /// The value given.
    pub value: f32,
    /// The values it takes.
    pub expected: &'static str,
}

impl SamplerConfig {
    /// Refuses settings that would make the draw meaningless (NaN, infinities, a probability
    /// outside 0..1, a penalty that divides by zero or flips signs) instead of sampling
    /// garbage.
    pub fn validate(&self) -> Result<(), SamplerError> {
        let check = |setting, value: f32, ok: bool, expected| {
            if ok && value.is_finite() {
                Ok(())
            } else {
                Err(SamplerError {
                    setting,
                    value,
                    expected,
                })
            }
        };
        check(
            "temperature",
            self.temp,
            self.temp >= 0.0,
            "0 (greedy) or more",
        )?;
        let unit = (0.0..=1.0).contains(&self.top_p);
        check("top-p", self.top_p, unit, "from 0 to 1 (1 = off)")?;
        let unit = (0.0..=1.0).contains(&self.min_p);
        check("min-p", self.min_p, unit, "from 0 to 1 (0 = off)")?;
        check(
            "repeat-penalty",
            self.repeat_penalty,
            self.repeat_penalty > 0.0,
            "above 0 (1 = off)",
        )
    }
}

/// A sampler with its own random state.
pub struct Sampler {
    config: SamplerConfig,
    rng: u64,
}

impl Sampler {
    /// A sampler seeded from the config.
    pub fn new(config: SamplerConfig) -> Sampler {
        let rng = config.seed ^ 0x9e37_79b9_7f4a_7c15;
        Sampler { config, rng }
    }

    fn next_f64(&mut self) -> f64 {
        // splitmix64: small, seedable, good enough for a categorical draw.
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Whether the draw is greedy (temperature 0 or below): the argmax, no randomness.
    pub fn is_greedy(&self) -> bool {
        self.config.temp <= 0.0
    }

    /// A uniform draw from [0, 1) off this sampler's random state (speculative decoding's
    /// acceptance test uses the same stream, so a seeded run stays reproducible).
    pub fn uniform(&mut self) -> f64 {
        self.next_f64()
    }

    /// The next token given `logits` and the tokens so far (`history`, for the penalty).
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let dist = self.distribution(logits, history);
        if self.is_greedy() {
            return dist[0].0;
        }
        self.draw(&dist)
    }

    /// The distribution [`Sampler::sample`] draws from: the surviving candidates, best first,
    /// with their probabilities (summing to 1) after the penalty, top-k, top-p, min-p and the
    /// temperature. Greedy: the argmax alone, with probability 1. Speculative decoding needs it
    /// whole: a draft token is accepted by comparing these probabilities.
    pub fn distribution(&self, logits: &[f32], history: &[u32]) -> Vec<(u32, f64)> {
        let c = &self.config;
        let mut l = logits.to_vec();
        if c.repeat_penalty != 1.0 {
            let recent = &history[history.len().saturating_sub(c.repeat_last_n)..];
            let mut seen = std::collections::HashSet::new();
            for &t in recent {
                if let Some(v) = l.get_mut(t as usize) {
                    if seen.insert(t) {
                        *v = if *v > 0.0 {
                            *v / c.repeat_penalty
                        } else {
                            *v * c.repeat_penalty
                        };
                    }
                }
            }
        }
        if c.temp <= 0.0 {
            return vec![(crate::ops::argmax(&l) as u32, 1.0)];
        }
        // Candidates sorted by logit, best first (stable: lower id wins ties).
        let mut cand: Vec<(u32, f32)> = l.iter().enumerate().map(|(i, &v)| (i as u32, v)).collect();
        cand.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if c.top_k > 0 {
            cand.truncate(c.top_k.max(1));
        }
        let probs = |cand: &[(u32, f32)], temp: f32| -> Vec<f64> {
            let m = f64::from(cand[0].1);
            let e: Vec<f64> = cand
                .iter()
                .map(|&(_, v)| ((f64::from(v) - m) / f64::from(temp)).exp())
                .collect();
            let z: f64 = e.iter().sum();
            e.into_iter().map(|x| x / z).collect()
        };
        if c.top_p < 1.0 {
            let p = probs(&cand, 1.0);
            let mut acc = 0.0;
            let keep = p
                .iter()
                .position(|&x| {
                    acc += x;
                    acc >= f64::from(c.top_p)
                })
                .map_or(cand.len(), |i| i + 1);
            cand.truncate(keep.max(1));
        }
        if c.min_p > 0.0 {
            let p = probs(&cand, 1.0);
            let floor = p[0] * f64::from(c.min_p);
            let keep = p.iter().take_while(|&&x| x >= floor).count();
            cand.truncate(keep.max(1));
        }
        let p = probs(&cand, c.temp);
        cand.iter().map(|&(id, _)| id).zip(p).collect()
    }

    /// One seeded draw from `dist` (ids with probabilities summing to 1, as
    /// [`Sampler::distribution`] gives).
    pub fn draw(&mut self, dist: &[(u32, f64)]) -> u32 {
        let mut r = self.next_f64();
        for &(id, x) in dist {
            if r < x {
                return id;
            }
            r -= x;
        }
        dist.last().map_or(0, |d| d.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn greedy() -> SamplerConfig {
        SamplerConfig {
            temp: 0.0,
            ..SamplerConfig::default()
        }
    }

    #[test]
    fn greedy_takes_the_argmax_and_penalty_can_change_it() {
        let logits = [1.0, 3.0, 2.9, -1.0];
        assert_eq!(Sampler::new(greedy()).sample(&logits, &[]), 1);
        let pen = SamplerConfig {
            repeat_penalty: 1.1,
            ..greedy()
        };
        assert_eq!(Sampler::new(pen).sample(&logits, &[1]), 2);
    }

    #[test]
    fn settings_out_of_range_are_refused() {
        assert_eq!(SamplerConfig::default().validate(), Ok(()));
        assert_eq!(greedy().validate(), Ok(()));
        let bad = [
            (
                SamplerConfig {
                    temp: f32::NAN,
                    ..greedy()
                },
                "temperature",
            ),
            (
                SamplerConfig {
                    temp: -0.5,
                    ..greedy()
                },
                "temperature",
            ),
            (
                SamplerConfig {
                    temp: f32::INFINITY,
                    ..greedy()
                },
                "temperature",
            ),
            (
                SamplerConfig {
                    top_p: 1.5,
                    ..greedy()
                },
                "top-p",
            ),
            (
                SamplerConfig {
                    top_p: f32::NAN,
                    ..greedy()
                },
                "top-p",
            ),
            (
                SamplerConfig {
                    min_p: -0.1,
                    ..greedy()
                },
                "min-p",
            ),
            (
                SamplerConfig {
                    repeat_penalty: 0.0,
                    ..greedy()
                },
                "repeat-penalty",
            ),
            (
                SamplerConfig {
                    repeat_penalty: f32::NAN,
                    ..greedy()
                },
                "repeat-penalty",
            ),
        ];
        for (c, setting) in bad {
            let e = c.validate().unwrap_err();
            assert_eq!(e.setting, setting, "{c:?}");
            assert!(e.to_string().contains("out of range"), "{e}");
        }
    }

    #[test]
    fn filters_restrict_the_draw_and_seeds_reproduce() {
        let logits: Vec<f32> = (0..50).map(|i| -(i as f32) * 0.1).collect();
        let k3 = SamplerConfig {
            temp: 5.0,
            top_k: 3,
            top_p: 1.0,
            min_p: 0.0,
            ..SamplerConfig::default()
        };
        let mut s = Sampler::new(k3.clone());
        let draws: Vec<u32> = (0..300).map(|_| s.sample(&logits, &[])).collect();
        assert!(draws.iter().all(|&t| t < 3));
        for t in 0..3 {
            assert!(draws.contains(&t), "a hot top-3 draw uses all three");
        }
        let mut s2 = Sampler::new(k3);
        let again: Vec<u32> = (0..300).map(|_| s2.sample(&logits, &[])).collect();
        assert_eq!(draws, again);
        let minp = SamplerConfig {
            temp: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.9,
            ..SamplerConfig::default()
        };
        let mut s3 = Sampler::new(minp);
        // Only tokens within 10% of the best probability: exp(-0.1) = 0.905 keeps token 1 too.
        assert!((0..200).all(|_| s3.sample(&logits, &[]) <= 1));
        let topp = SamplerConfig {
            temp: 1.0,
            top_k: 0,
            top_p: 0.05,
            min_p: 0.0,
            ..SamplerConfig::default()
        };
        assert!((0..50).all(|_| Sampler::new(topp.clone()).sample(&logits, &[]) == 0));
    }
}
