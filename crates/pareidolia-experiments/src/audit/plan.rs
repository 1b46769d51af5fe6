//! The audit's plan: which parts run (method × seed), and how long each one is, from the
//! budget and the measured cost of each method. Plain data and arithmetic; nothing here runs.
//!
//! How the budget becomes generations: every method is first run briefly in memory (a
//! calibration run of about a second of search, with no run folder), which
//! measures its setup time (loading and compiling the model, the core split) and its time per
//! evaluation (MAP-Elites) or per step (gradient ascent). The budget is shared equally
//! between the parts; a part's share less its setup time, divided by the time of one
//! generation (`offspring_per_generation` evaluations) after the initial population, gives
//! its generations, rounded down. A part that would not get one generation is refused with
//! the budget that would give it one. The plan is written to the audit folder and read back
//! by a resumed audit, so an interrupted audit continues the very plan it started with.

use serde::{Deserialize, Serialize};

/// The searches an audit runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// MAP-Elites with the direct (pixel) encoding (the paper's section 3.1).
    Direct,
    /// MAP-Elites with the CPPN encoding (section 3.2).
    Cppn,
    /// Gradient ascent on the pixels (the released `find_fooling_image.py` recipe,
    /// unregularised).
    Ascent,
}

impl Method {
    /// Every method, in the order the audit runs them.
    pub const ALL: [Method; 3] = [Method::Direct, Method::Cppn, Method::Ascent];

    /// The short name (part folders, CSV, JSON).
    pub fn name(self) -> &'static str {
        match self {
            Method::Direct => "direct",
            Method::Cppn => "cppn",
            Method::Ascent => "ascent",
        }
    }

    /// What a reader calls it.
    pub fn title(self) -> &'static str {
        match self {
            Method::Direct => "MAP-Elites, direct encoding",
            Method::Cppn => "MAP-Elites, CPPN encoding",
            Method::Ascent => "gradient ascent",
        }
    }

    /// Forward-pass equivalents of one evaluation: a gradient step is a forward and a
    /// backward pass, the backward counted as two forward passes.
    pub fn cost_per_evaluation(self) -> u64 {
        match self {
            Method::Ascent => 3,
            _ => 1,
        }
    }
}

/// What calibration measured for one method.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    /// Seconds from config to a prepared experiment.
    pub setup_s: f64,
    /// Seconds per evaluation (MAP-Elites) or per step (gradient ascent).
    pub unit_s: f64,
    /// Evaluations of the initial population (MAP-Elites; 0 for ascent).
    pub initial: u64,
    /// Evaluations per generation (MAP-Elites), or 1 (a gradient step).
    pub per_generation: u64,
}

impl Cost {
    /// Generations (steps) that fit in `seconds`, or `None` when not even one does.
    pub fn generations_in(&self, seconds: f64) -> Option<u64> {
        let run = seconds - self.setup_s;
        if run.is_nan() || run <= 0.0 || self.unit_s.is_nan() || self.unit_s <= 0.0 {
            return None;
        }
        let units = run / self.unit_s - self.initial as f64;
        let generations = (units / self.per_generation.max(1) as f64).floor();
        (generations >= 1.0).then_some(generations.min(1e9) as u64)
    }

    /// Seconds one part needs for one generation (setup, initial population, one generation).
    pub fn seconds_for_one(&self) -> f64 {
        self.setup_s + self.unit_s * (self.initial + self.per_generation.max(1)) as f64
    }
}

/// One part: an ordinary run folder under `parts/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Part {
    /// Its method.
    pub method: Method,
    /// Its seed.
    pub seed: u64,
    /// Generations (steps, for gradient ascent).
    pub generations: u64,
}

impl Part {
    /// The folder name under `parts/`: `direct-seed1`.
    pub fn name(&self) -> String {
        format!("{}-seed{}", self.method.name(), self.seed)
    }
}

/// A method the audit does not run, and why (gradient ascent on a graph the differentiable
/// evaluator cannot take).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    /// The method.
    pub method: Method,
    /// Why, in the words of the error that refused it.
    pub reason: String,
}

/// Why a plan cannot be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The budget does not give some part one generation.
    #[error(
        "a budget of {budget} is too small for one generation of every part: {part} alone needs {needed:.1} s (setup {setup:.1} s plus its first generation) and gets {share:.1} s of {parts} equal shares; give --budget {advice} or more, or fewer --seeds"
    )]
    TooSmall {
        /// The budget as given.
        budget: String,
        /// The part that does not fit.
        part: String,
        /// Seconds it needs.
        needed: f64,
        /// Its setup seconds.
        setup: f64,
        /// Seconds it gets.
        share: f64,
        /// Parts in all.
        parts: usize,
        /// A budget that would do.
        advice: String,
    },
    /// No method can run.
    #[error("no method can run on this model")]
    Nothing,
}

/// Parses a duration: `90s`, `1.5m`, `2min`, `1h`, or a plain number of seconds.
pub fn parse_budget(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let (number, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix("min") {
        (n, 60.0)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (t, 1.0)
    };
    match number.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v * scale),
        _ => Err(format!(
            "`{text}` is not a duration; give seconds or a number with a unit: 90s, 1.5m, 2min, 1h"
        )),
    }
}

/// The budget when `--budget` is not given, from the model's input size (`width * height *
/// channels` values): one minute up to 64 x 64 x 3 (MNIST, CIFAR: about a minute on 2 cores),
/// 30 minutes from 224 x 224 x 3 (ImageNet), and in between log-linear in the input size, in
/// whole seconds. A model's cost grows with its input, and so does what one generation of every
/// part needs: EfficientNet-Lite0 needs about 260 s for one.
pub fn default_budget_s(values: u64) -> f64 {
    const SMALL: (f64, f64) = ((64 * 64 * 3) as f64, 60.0);
    const LARGE: (f64, f64) = ((224 * 224 * 3) as f64, 1800.0);
    let v = values as f64;
    if v <= SMALL.0 {
        return SMALL.1;
    }
    if v >= LARGE.0 {
        return LARGE.1;
    }
    let t = (v.ln() - SMALL.0.ln()) / (LARGE.0.ln() - SMALL.0.ln());
    (SMALL.1.ln() + t * (LARGE.1.ln() - SMALL.1.ln()))
        .exp()
        .round()
}

/// Formats seconds as the budget syntax reads them back.
pub fn format_seconds(s: f64) -> String {
    if s >= 120.0 && (s / 60.0).fract() == 0.0 {
        format!("{}m", s / 60.0)
    } else {
        format!("{}s", s.ceil())
    }
}

/// The parts: every method with a cost, over `seeds` seeds (1, 2, ...), each with an equal
/// share of `budget_s`.
pub fn plan_parts(
    costs: &[(Method, Cost)],
    seeds: u64,
    budget_s: f64,
    budget_text: &str,
) -> Result<Vec<Part>, PlanError> {
    let count = costs.len() * seeds as usize;
    if count == 0 {
        return Err(PlanError::Nothing);
    }
    let share = budget_s / count as f64;
    let mut parts = Vec::with_capacity(count);
    for &(method, cost) in costs {
        let Some(generations) = cost.generations_in(share) else {
            let worst = costs
                .iter()
                .map(|(_, c)| c.seconds_for_one())
                .fold(0.0, f64::max);
            return Err(PlanError::TooSmall {
                budget: budget_text.to_owned(),
                part: method.title().to_owned(),
                needed: cost.seconds_for_one(),
                setup: cost.setup_s,
                share,
                parts: count,
                advice: format_seconds((worst * count as f64 * 1.2).max(1.0)),
            });
        };
        for seed in 1..=seeds {
            parts.push(Part {
                method,
                seed,
                generations,
            });
        }
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost(setup_s: f64, unit_s: f64, initial: u64, per_generation: u64) -> Cost {
        Cost {
            setup_s,
            unit_s,
            initial,
            per_generation,
        }
    }

    #[test]
    fn the_default_budget_follows_the_input_size() {
        assert_eq!(default_budget_s(28 * 28), 60.0);
        assert_eq!(default_budget_s(32 * 32 * 3), 60.0);
        assert_eq!(default_budget_s(224 * 224 * 3), 1800.0);
        assert_eq!(default_budget_s(256 * 256 * 3), 1800.0);
        let mid = default_budget_s(112 * 112 * 3);
        assert!(mid > 60.0 && mid < 1800.0, "{mid}");
        assert!(default_budget_s(160 * 160 * 3) > mid);
    }

    #[test]
    fn budgets_parse_with_units() {
        assert_eq!(parse_budget("90"), Ok(90.0));
        assert_eq!(parse_budget("90s"), Ok(90.0));
        assert_eq!(parse_budget("1.5m"), Ok(90.0));
        assert_eq!(parse_budget("2min"), Ok(120.0));
        assert_eq!(parse_budget("1h"), Ok(3600.0));
        assert_eq!(parse_budget("500ms"), Ok(0.5));
        assert!(parse_budget("0").is_err());
        assert!(parse_budget("soon").is_err());
        assert!(parse_budget("-3s").is_err());
    }

    #[test]
    fn generations_follow_the_share_less_setup() {
        // 1 s setup, 1 ms per evaluation, 200 initial, 200 per generation: 9 s leave 9000
        // evaluations, 8800 after the initial population, 44 generations.
        let c = cost(1.0, 0.001, 200, 200);
        assert_eq!(c.generations_in(10.0), Some(44));
        assert_eq!(c.generations_in(1.3), None);
        assert_eq!(c.generations_in(0.5), None);
        assert!((c.seconds_for_one() - 1.4).abs() < 1e-9);
        // A gradient step: no initial population, one unit per step.
        let a = cost(0.5, 0.01, 0, 1);
        assert_eq!(a.generations_in(1.5), Some(100));
    }

    #[test]
    fn the_budget_scales_every_part_and_a_small_one_is_refused() {
        let costs = [
            (Method::Direct, cost(0.5, 0.0001, 200, 200)),
            (Method::Ascent, cost(0.5, 0.01, 0, 1)),
        ];
        let small = plan_parts(&costs, 2, 20.0, "20s").unwrap();
        let big = plan_parts(&costs, 2, 40.0, "40s").unwrap();
        assert_eq!(small.len(), 4);
        assert_eq!(small[0].name(), "direct-seed1");
        assert_eq!(small[3].name(), "ascent-seed2");
        for (s, b) in small.iter().zip(&big) {
            assert!(b.generations > 2 * s.generations - 2, "{s:?} {b:?}");
        }
        let err = plan_parts(&costs, 2, 1.0, "1s").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("too small for one generation"), "{text}");
        assert!(text.contains("--budget"), "{text}");
        // The advised budget is enough.
        let PlanError::TooSmall { advice, .. } = err else {
            panic!("{err:?}")
        };
        let advised = parse_budget(&advice).unwrap();
        assert!(plan_parts(&costs, 2, advised, &advice).is_ok(), "{advice}");
        assert_eq!(plan_parts(&[], 2, 60.0, "60s"), Err(PlanError::Nothing));
    }
}
