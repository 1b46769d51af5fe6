//! Variation operators on genes in [0, 1], as the released code (sferes2's `evo_float`)
//! implements them: polynomial mutation without bound-distance scaling, and bounded SBX.

use pareidolia_plugin::prelude::*;
use serde::Deserialize;

/// Which SBX the `sbx` parameter picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SbxVariant {
    /// [`sbx`]: each differing gene pair with probability 0.5.
    Deb,
    /// [`sbx_released`]: the released code's operator, quirk included.
    Released,
}

/// Mutates each gene with probability `rate`: `g += delta`, clamped to [0, 1], where
/// `delta = (2r)^(1/(eta+1)) - 1` for `r < 0.5` and `1 - (2(1-r))^(1/(eta+1))` otherwise.
pub fn polynomial_mutation(genes: &mut [f32], rate: f64, eta: f64, rng: &mut Rng) {
    if rate <= 0.0 {
        return;
    }
    let exponent = 1.0 / (eta + 1.0);
    for g in genes.iter_mut() {
        if rng.random::<f64>() < rate {
            let r: f64 = rng.random();
            let delta = if r < 0.5 {
                (2.0 * r).powf(exponent) - 1.0
            } else {
                1.0 - (2.0 * (1.0 - r)).powf(exponent)
            };
            *g = (*g as f64 + delta).clamp(0.0, 1.0) as f32;
        }
    }
}

/// Simulated binary crossover (Deb & Agrawal), bounded to [0, 1]: each gene pair that
/// differs is recombined with probability 0.5; children take the two results in random order.
pub fn sbx(a: &[f32], b: &[f32], eta: f64, rng: &mut Rng) -> (Vec<f32>, Vec<f32>) {
    let (mut ca, mut cb) = (a.to_vec(), b.to_vec());
    let exponent = 1.0 / (eta + 1.0);
    for i in 0..a.len().min(b.len()) {
        let (p1, p2) = (a[i] as f64, b[i] as f64);
        if rng.random::<f64>() > 0.5 || (p1 - p2).abs() <= f64::from(f32::EPSILON) {
            continue;
        }
        let (y1, y2) = (p1.min(p2), p1.max(p2));
        let r: f64 = rng.random();
        let betaq = |beta: f64| {
            let alpha = 2.0 - beta.powf(-(eta + 1.0));
            if r <= 1.0 / alpha {
                (r * alpha).powf(exponent)
            } else {
                (1.0 / (2.0 - r * alpha)).powf(exponent)
            }
        };
        let c1 = 0.5 * ((y1 + y2) - betaq(1.0 + 2.0 * y1 / (y2 - y1)) * (y2 - y1));
        let c2 = 0.5 * ((y1 + y2) + betaq(1.0 + 2.0 * (1.0 - y2) / (y2 - y1)) * (y2 - y1));
        let (c1, c2) = (c1.clamp(0.0, 1.0) as f32, c2.clamp(0.0, 1.0) as f32);
        if rng.random::<bool>() {
            (ca[i], cb[i]) = (c2, c1);
        } else {
            (ca[i], cb[i]) = (c1, c2);
        }
    }
    (ca, cb)
}

/// The released code's SBX (`sferes/exp/images/gen/evo_float_image.hpp`, `CrossOver_f<sbx>`):
/// the children are new genomes whose genes start at 0.5 (sferes' `Float` default); every gene
/// pair differing by more than `f32::EPSILON` is recombined (no per-gene coin), with one draw
/// for both children and a coin for which child gets which; genes equal in both parents stay
/// 0.5. The arithmetic is in f32, as there.
pub fn sbx_released(a: &[f32], b: &[f32], eta: f64, rng: &mut Rng) -> (Vec<f32>, Vec<f32>) {
    let n = a.len().min(b.len());
    let (mut ca, mut cb) = (vec![0.5f32; n], vec![0.5f32; n]);
    let eta = eta as f32;
    let exponent = 1.0 / (eta + 1.0);
    for i in 0..n {
        let (y1, y2) = (a[i].min(b[i]), a[i].max(b[i]));
        if (y1 - y2).abs() <= f32::EPSILON {
            continue;
        }
        let r: f32 = rng.random();
        let betaq = |beta: f32| {
            let alpha = 2.0 - beta.powf(-(eta + 1.0));
            if r <= 1.0 / alpha {
                (r * alpha).powf(exponent)
            } else {
                (1.0 / (2.0 - r * alpha)).powf(exponent)
            }
        };
        let c1 = 0.5 * ((y1 + y2) - betaq(1.0 + 2.0 * y1 / (y2 - y1)) * (y2 - y1));
        let c2 = 0.5 * ((y1 + y2) + betaq(1.0 + 2.0 * (1.0 - y2) / (y2 - y1)) * (y2 - y1));
        let (c1, c2) = (c1.clamp(0.0, 1.0), c2.clamp(0.0, 1.0));
        if rng.random::<bool>() {
            (ca[i], cb[i]) = (c1, c2);
        } else {
            (ca[i], cb[i]) = (c2, c1);
        }
    }
    (ca, cb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polynomial_step_has_the_expected_mean_size() {
        // With eta = 15, E|delta| = 1/17 when nothing clamps.
        let mut rng = Rng::seed_from_u64(5);
        let mut genes = vec![0.5f32; 20000];
        polynomial_mutation(&mut genes, 1.0, 15.0, &mut rng);
        let mean = genes.iter().map(|g| (g - 0.5).abs() as f64).sum::<f64>() / 20000.0;
        assert!((mean - 1.0 / 17.0).abs() < 0.003, "mean |delta| {mean}");
    }

    #[test]
    fn sbx_children_stay_between_bounds_and_average_to_parents() {
        let mut rng = Rng::seed_from_u64(11);
        let a: Vec<f32> = (0..1000).map(|i| i as f32 / 1000.0).collect();
        let b: Vec<f32> = a.iter().map(|g| 1.0 - g).collect();
        let (ca, cb) = sbx(&a, &b, 10.0, &mut rng);
        let changed = ca.iter().zip(&a).filter(|(x, y)| x != y).count();
        assert!(changed > 300, "{changed}");
        assert!(ca.iter().chain(&cb).all(|g| (0.0..=1.0).contains(g)));
        for i in 0..1000 {
            // SBX preserves the pair's mean unless a bound clamps a child.
            let (m0, m1) = (a[i] + b[i], ca[i] + cb[i]);
            if ca[i] > 0.0 && ca[i] < 1.0 && cb[i] > 0.0 && cb[i] < 1.0 {
                assert!((m0 - m1).abs() < 1e-4, "gene {i}: {m0} vs {m1}");
            }
        }
    }

    #[test]
    fn released_sbx_recombines_every_differing_gene_and_resets_equal_ones() {
        let mut rng = Rng::seed_from_u64(12);
        let a: Vec<f32> = (0..1000).map(|i| i as f32 / 1000.0).collect();
        let mut b: Vec<f32> = a.iter().map(|g| 1.0 - g).collect();
        b[10] = a[10]; // one shared gene
        let (ca, cb) = sbx_released(&a, &b, 10.0, &mut rng);
        assert_eq!((ca[10], cb[10]), (0.5, 0.5));
        let pairs_kept = (0..1000)
            .filter(|&i| i != 10 && i != 500)
            .filter(|&i| (ca[i], cb[i]) == (a[i], b[i]) || (ca[i], cb[i]) == (b[i], a[i]))
            .count();
        assert_eq!(pairs_kept, 0, "every differing pair is recombined");
        for i in (0..1000).filter(|&i| i != 10) {
            let (m0, m1) = (a[i] + b[i], ca[i] + cb[i]);
            if ca[i] > 0.0 && ca[i] < 1.0 && cb[i] > 0.0 && cb[i] < 1.0 {
                assert!((m0 - m1).abs() < 1e-4, "gene {i}: {m0} vs {m1}");
            }
        }
    }
}
