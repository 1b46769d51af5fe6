//! Stop conditions: when a run ends before its last generation. A condition is a small
//! expression over the archive's per-class champion scores ("until fooled"), checked
//! after every generation; a wall-clock budget (`max_seconds`) ends a run at the first
//! generation boundary past it. Plain data and pure functions: the archive actor asks
//! [`StopConfig::reached`] after each generation, the command line and the config parse
//! conditions with [`StopCondition::from_str`](std::str::FromStr).
//!
//! The grammar ([`GRAMMAR`]):
//!
//! ```text
//! min>=C          every class's champion at confidence C or more
//! median>=C       the median class at C or more
//! mean>=C         the mean confidence at C or more
//! classes>=C:N    at least N classes at C or more (N a count, or a percentage like 95%)
//! ```
//!
//! `C` is a number from 0 to 1 (`0.9999`) or a percentage (`99.99%`). A condition compares
//! the champions' fitness, the score MAP-Elites keeps (the model's probability with the
//! `confidence` fitness); prefixed with `probability:` (`probability:min>=0.9999`) it compares
//! the models' probability of each champion's class instead, whatever the fitness. Empty cells
//! count as 0, as in every statistic of the archive. Fitness only rises during a run (a
//! champion is replaced only by a better child), so a fitness condition that holds stays true;
//! a probability condition may not, with a fitness other than `confidence`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::archive::Archive;

/// The grammar, as errors quote it.
pub const GRAMMAR: &str = "a stop condition is one of `min>=C` (every class's champion scoring C or more), \
     `median>=C`, `mean>=C`, or `classes>=C:N` (at least N classes at C or more; N a count or a \
     percentage such as 95%), where C is a number from 0 to 1 (0.9999) or a percentage \
     (99.99%); it compares the fitness (the probability with the confidence fitness), or with \
     the prefix `probability:` the models' probability; for example --until \"min>=0.9999\", \
     --until \"classes>=0.99:950\" or --until \"probability:min>=0.99\"";

/// How many classes a `classes>=` condition asks for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ClassCount {
    /// This many classes.
    Count(usize),
    /// This percentage of the run's classes (rounded up).
    Percent(f64),
}

impl ClassCount {
    /// The number of classes, for a run of `classes`.
    pub fn of(self, classes: usize) -> usize {
        match self {
            ClassCount::Count(n) => n,
            ClassCount::Percent(p) => {
                ((p / 100.0 * classes as f64) - 1e-9).ceil().max(0.0) as usize
            }
        }
    }
}

/// What a condition compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Measure {
    /// The champions' fitness scores (the default).
    #[default]
    Fitness,
    /// The models' probability of each champion's class ([`crate::Champion::confidence`]).
    Probability,
}

/// One condition on the archive's per-class champions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StopCondition {
    /// What it compares.
    pub measure: Measure,
    /// The test on the per-class values.
    pub test: Test,
}

/// A test on per-class values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Test {
    /// Every class at or above this confidence.
    Min(f32),
    /// The median class at or above it.
    Median(f32),
    /// The mean confidence at or above it.
    Mean(f32),
    /// At least `count` classes at or above `confidence`.
    Classes {
        /// The confidence.
        confidence: f32,
        /// How many classes.
        count: ClassCount,
    },
}

/// A stop condition that does not parse; its message quotes the input and the grammar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid stop condition `{input}`: {problem}; {GRAMMAR}")]
pub struct StopConditionError {
    /// What was given.
    pub input: String,
    /// What is wrong with it.
    pub problem: String,
}

fn confidence(text: &str) -> Result<f32, String> {
    let t = text.trim();
    let (number, scale) = match t.strip_suffix('%') {
        Some(p) => (p.trim(), 100.0),
        None => (t, 1.0),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{t}` is not a confidence"))?;
    let value = value / scale;
    if !(value.is_finite() && (0.0..=1.0).contains(&value)) {
        return Err(format!("confidence `{t}` is outside 0 to 1 (0% to 100%)"));
    }
    Ok(value as f32)
}

fn class_count(text: &str) -> Result<ClassCount, String> {
    let t = text.trim();
    if let Some(p) = t.strip_suffix('%') {
        let p: f64 = p
            .trim()
            .parse()
            .map_err(|_| format!("`{t}` is not a percentage of the classes"))?;
        if !(p.is_finite() && p > 0.0 && p <= 100.0) {
            return Err(format!("`{t}` is not a percentage from above 0 to 100"));
        }
        return Ok(ClassCount::Percent(p));
    }
    match t.parse::<usize>() {
        Ok(0) => Err("the class count must be at least 1".into()),
        Ok(n) => Ok(ClassCount::Count(n)),
        Err(_) => Err(format!(
            "`{t}` is not a class count (a whole number, or a percentage)"
        )),
    }
}

impl FromStr for StopCondition {
    type Err = StopConditionError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let fail = |problem: String| StopConditionError {
            input: input.to_owned(),
            problem,
        };
        let trimmed = input.trim();
        let (measure, rest) = match trimmed.split_once(':') {
            Some((m, rest)) if m.trim().eq_ignore_ascii_case("probability") => {
                (Measure::Probability, rest)
            }
            Some((m, rest)) if m.trim().eq_ignore_ascii_case("fitness") => (Measure::Fitness, rest),
            _ => (Measure::Fitness, trimmed),
        };
        let test = parse_test(rest).map_err(fail)?;
        Ok(StopCondition { measure, test })
    }
}

fn parse_test(input: &str) -> Result<Test, String> {
    let fail = |problem: String| problem;
    {
        let Some((stat, value)) = input.split_once(">=") else {
            return Err(fail("there is no `>=`".into()));
        };
        let stat = stat.trim().to_ascii_lowercase();
        match stat.as_str() {
            "min" | "median" | "mean" => {
                if value.contains(':') {
                    return Err(fail(format!(
                        "`{stat}>=` takes a confidence only; a class count (`:N`) belongs to `classes>=`"
                    )));
                }
                let c = confidence(value).map_err(fail)?;
                Ok(match stat.as_str() {
                    "min" => Test::Min(c),
                    "median" => Test::Median(c),
                    _ => Test::Mean(c),
                })
            }
            "classes" => {
                let Some((c, n)) = value.split_once(':') else {
                    return Err(fail(
                        "`classes>=` needs a class count after a colon, like classes>=0.99:950"
                            .into(),
                    ));
                };
                Ok(Test::Classes {
                    confidence: confidence(c).map_err(fail)?,
                    count: class_count(n).map_err(fail)?,
                })
            }
            "" => Err(fail("the statistic before `>=` is missing".into())),
            other => Err(fail(format!("unknown statistic `{other}`"))),
        }
    }
}

impl fmt::Display for StopCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.measure == Measure::Probability {
            write!(f, "probability:")?;
        }
        write!(f, "{}", self.test)
    }
}

impl fmt::Display for Test {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Test::Min(c) => write!(f, "min>={c}"),
            Test::Median(c) => write!(f, "median>={c}"),
            Test::Mean(c) => write!(f, "mean>={c}"),
            Test::Classes {
                confidence,
                count: ClassCount::Count(n),
            } => write!(f, "classes>={confidence}:{n}"),
            Test::Classes {
                confidence,
                count: ClassCount::Percent(p),
            } => write!(f, "classes>={confidence}:{p}%"),
        }
    }
}

impl Serialize for StopCondition {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for StopCondition {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Per cell: the champion's fitness (or probability) in its class, 0 for an empty cell
/// (classes a run skips, `archive.classes`, are not cells and do not count).
fn values(archive: &Archive, measure: Measure) -> Vec<f32> {
    archive
        .cells()
        .iter()
        .enumerate()
        .filter(|(class, _)| archive.is_cell(*class))
        .map(|(class, c)| {
            c.as_ref().map_or(0.0, |c| match measure {
                Measure::Fitness => c.score(class),
                Measure::Probability => c.confidence(class),
            })
        })
        .collect()
}

impl StopCondition {
    /// Whether the archive meets it.
    pub fn holds_on(&self, archive: &Archive) -> bool {
        self.test.holds(&values(archive, self.measure))
    }

    /// Why it can never hold in a run of `classes` classes, if so (a class count above it).
    pub fn impossible_for(&self, classes: usize) -> Option<String> {
        self.test
            .impossible_for(classes)
            .map(|why| format!("`{self}` {why}"))
    }
}

impl Test {
    /// Whether per-class values `scores` (one per class, 0 for an empty cell) meet it.
    /// A run without classes meets nothing.
    pub fn holds(&self, scores: &[f32]) -> bool {
        if scores.is_empty() {
            return false;
        }
        match *self {
            Test::Min(c) => scores.iter().all(|&s| s >= c),
            Test::Median(c) => {
                let mut sorted = scores.to_vec();
                sorted.sort_by(f32::total_cmp);
                let n = sorted.len();
                let median = if n % 2 == 1 {
                    sorted[n / 2]
                } else {
                    (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
                };
                median >= c
            }
            Test::Mean(c) => {
                let mean = scores.iter().map(|&s| s as f64).sum::<f64>() / scores.len() as f64;
                mean as f32 >= c
            }
            Test::Classes { confidence, count } => {
                scores.iter().filter(|&&s| s >= confidence).count() >= count.of(scores.len())
            }
        }
    }

    /// Why it can never hold in a run of `classes` classes, if so (a class count above it).
    fn impossible_for(&self, classes: usize) -> Option<String> {
        match *self {
            Test::Classes {
                count: ClassCount::Count(n),
                ..
            } if n > classes => Some(format!(
                "asks for {n} classes, but the run's model has {classes}; \
                 lower the count or give a percentage (`:95%`)"
            )),
            _ => None,
        }
    }
}

/// `[stop]`: when a run ends before its last generation. Any condition met ends it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StopConfig {
    /// Conditions on the archive, checked after every generation; the first met ends the run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub until: Vec<StopCondition>,
    /// Wall-clock budget of the evolution in seconds, summed over resumed sessions like
    /// `generations` (0 = none); checked after every generation.
    #[serde(skip_serializing_if = "is_zero")]
    pub max_seconds: f64,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

/// What ended a run early, and when: recorded in checkpoints, `/status` and `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StopReached {
    /// The condition met (`min>=0.9999`), or `max_seconds=N` for the budget.
    pub condition: String,
    /// The generation after which it held.
    pub generation: u64,
    /// The run's evolution time then, seconds (summed over resumed sessions).
    pub elapsed_s: f64,
}

/// A run's stop conditions and whether one was reached, as `summary.json` and `/status`
/// show them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StopStatus {
    /// The conditions (`until`).
    pub until: Vec<String>,
    /// The budget in seconds, if any.
    pub max_seconds: Option<f64>,
    /// The one that ended the run, if one did.
    pub reached: Option<StopReached>,
}

impl StopConfig {
    /// No condition and no budget.
    pub fn is_empty(&self) -> bool {
        self.until.is_empty() && self.max_seconds == 0.0
    }

    /// Checks ranges and that each condition can hold in a run of `classes` (when known);
    /// an error names the key (`stop.max_seconds`, `stop.until`) and what is wrong.
    pub fn check(&self, classes: Option<usize>) -> Result<(), (&'static str, String)> {
        if !(self.max_seconds.is_finite() && self.max_seconds >= 0.0) {
            return Err((
                "stop.max_seconds",
                "must be a number of seconds >= 0 (0 = no budget)".into(),
            ));
        }
        if let Some(classes) = classes {
            for c in &self.until {
                if let Some(why) = c.impossible_for(classes) {
                    return Err(("stop.until", why));
                }
            }
        }
        Ok(())
    }

    /// The first condition the archive meets after `generation`, then the budget: what ends
    /// the run now, if anything.
    pub fn reached(
        &self,
        archive: &Archive,
        generation: u64,
        elapsed_s: f64,
    ) -> Option<StopReached> {
        let at = |condition: String| StopReached {
            condition,
            generation,
            elapsed_s,
        };
        if let Some(c) = self.until.iter().find(|c| c.holds_on(archive)) {
            return Some(at(c.to_string()));
        }
        (self.max_seconds > 0.0 && elapsed_s >= self.max_seconds)
            .then(|| at(format!("max_seconds={}", self.max_seconds)))
    }

    /// The status to report, with what was reached.
    pub fn status(&self, reached: Option<StopReached>) -> Option<StopStatus> {
        if self.is_empty() && reached.is_none() {
            return None;
        }
        Some(StopStatus {
            until: self.until.iter().map(ToString::to_string).collect(),
            max_seconds: (self.max_seconds > 0.0).then_some(self.max_seconds),
            reached,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::Evaluated;

    fn parse(s: &str) -> StopCondition {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn conditions_parse_and_print_back() {
        let fitness = |test| StopCondition {
            measure: Measure::Fitness,
            test,
        };
        assert_eq!(parse("min>=0.9999"), fitness(Test::Min(0.9999)));
        assert_eq!(parse(" Median >= 99% "), fitness(Test::Median(0.99)));
        assert_eq!(parse("mean>=0.5"), fitness(Test::Mean(0.5)));
        assert_eq!(
            parse("classes>=0.99:950"),
            fitness(Test::Classes {
                confidence: 0.99,
                count: ClassCount::Count(950)
            })
        );
        assert_eq!(
            parse("classes >= 99.99% : 95%"),
            fitness(Test::Classes {
                confidence: 0.9999,
                count: ClassCount::Percent(95.0)
            })
        );
        assert_eq!(parse("fitness:min>=0.5"), parse("min>=0.5"));
        assert_eq!(
            parse("Probability: min>=0.99"),
            StopCondition {
                measure: Measure::Probability,
                test: Test::Min(0.99)
            }
        );
        for text in [
            "min>=0.9999",
            "median>=0.99",
            "classes>=0.99:950",
            "classes>=0.5:95%",
            "probability:min>=0.99",
            "probability:classes>=0.5:95%",
        ] {
            assert_eq!(parse(text).to_string(), text);
            assert_eq!(parse(&parse(text).to_string()), parse(text));
        }
    }

    /// Issue 30, item 8: with a fitness other than the probability, a condition says which it
    /// compares.
    #[test]
    fn a_condition_compares_the_fitness_or_the_probability_as_it_says() {
        let mut archive = Archive::new(2);
        archive.insert(Evaluated {
            id: 1,
            generation: 1,
            genome: vec![1].into(),
            scores: vec![-0.2, 0.1],
            probabilities: vec![0.995, 0.999],
        });
        assert!(!parse("min>=0.99").holds_on(&archive));
        assert!(parse("probability:min>=0.99").holds_on(&archive));
        assert!(!parse("probability:min>=0.999").holds_on(&archive));
        let config = StopConfig {
            until: vec![parse("min>=0.5"), parse("probability:mean>=0.99")],
            max_seconds: 0.0,
        };
        let r = config.reached(&archive, 1, 1.0).unwrap();
        assert_eq!(r.condition, "probability:mean>=0.99");
    }

    #[test]
    fn malformed_conditions_say_what_is_wrong_and_list_the_grammar() {
        let cases = [
            ("min", "there is no `>=`"),
            ("min>0.9", "there is no `>=`"),
            ("mni>=0.9", "unknown statistic `mni`"),
            (">=0.9", "statistic before `>=` is missing"),
            ("min>=abc", "`abc` is not a confidence"),
            ("min>=1.5", "outside 0 to 1"),
            ("min>=-0.1", "outside 0 to 1"),
            ("min>=NaN", "outside 0 to 1"),
            ("median>=101%", "outside 0 to 1"),
            ("min>=0.9:10", "belongs to `classes>=`"),
            ("classes>=0.99", "needs a class count"),
            ("classes>=0.99:0", "at least 1"),
            ("classes>=0.99:many", "not a class count"),
            ("classes>=0.99:150%", "percentage from above 0 to 100"),
            ("", "there is no `>=`"),
        ];
        for (input, problem) in cases {
            let e = input.parse::<StopCondition>().expect_err(input).to_string();
            assert!(e.contains(problem), "{input}: {e}");
            assert!(e.contains(&format!("`{input}`")), "{input}: {e}");
            assert!(
                e.contains("min>=C") && e.contains("classes>=C:N") && e.contains("median>=C"),
                "{input}: {e}"
            );
        }
    }

    #[test]
    fn conditions_hold_on_the_confidences_they_name() {
        let scores = [0.999, 0.5, 0.99, 0.2];
        assert!(parse("min>=0.2").test.holds(&scores));
        assert!(!parse("min>=0.21").test.holds(&scores));
        // median of 0.2, 0.5, 0.99, 0.999 = 0.745
        assert!(parse("median>=0.745").test.holds(&scores));
        assert!(!parse("median>=0.75").test.holds(&scores));
        assert!(parse("mean>=0.67").test.holds(&scores));
        assert!(!parse("mean>=0.68").test.holds(&scores));
        assert!(parse("classes>=0.99:2").test.holds(&scores));
        assert!(!parse("classes>=0.99:3").test.holds(&scores));
        assert!(parse("classes>=0.5:75%").test.holds(&scores));
        assert!(!parse("classes>=0.5:76%").test.holds(&scores));
        assert!(!parse("min>=0").test.holds(&[]));
        assert_eq!(ClassCount::Percent(95.0).of(1000), 950);
        assert_eq!(ClassCount::Percent(95.0).of(10), 10);
        assert_eq!(ClassCount::Percent(50.0).of(10), 5);
    }

    #[test]
    fn the_archive_reaches_the_first_condition_then_the_budget() {
        let mut archive = Archive::new(2);
        let config = StopConfig {
            until: vec![parse("classes>=0.9:2"), parse("min>=0.5")],
            max_seconds: 10.0,
        };
        assert_eq!(config.reached(&archive, 0, 1.0), None);
        archive.insert(Evaluated {
            id: 1,
            generation: 3,
            genome: vec![1].into(),
            scores: vec![0.6, 0.7],
            probabilities: Vec::new(),
        });
        let r = config.reached(&archive, 3, 2.5).unwrap();
        assert_eq!(
            (r.condition.as_str(), r.generation, r.elapsed_s),
            ("min>=0.5", 3, 2.5)
        );
        let budget = StopConfig {
            until: vec![parse("min>=0.99")],
            max_seconds: 10.0,
        };
        assert_eq!(budget.reached(&archive, 4, 9.9), None);
        assert_eq!(
            budget.reached(&archive, 5, 10.0).unwrap().condition,
            "max_seconds=10"
        );
        assert!(StopConfig::default().reached(&archive, 5, 1e9).is_none());
    }

    #[test]
    fn skipped_classes_do_not_hold_a_condition_back() {
        // Class 2 is not a cell (archive.classes = [0, 1]): its empty cell is not a 0.
        let mut archive = Archive::new(3);
        archive.restrict(&[0, 1]).unwrap();
        archive.insert(Evaluated {
            id: 1,
            generation: 1,
            genome: vec![1].into(),
            scores: vec![0.6, 0.7, 0.9],
            probabilities: Vec::new(),
        });
        let config = StopConfig {
            until: vec![parse("min>=0.5")],
            max_seconds: 0.0,
        };
        assert_eq!(
            config.reached(&archive, 1, 1.0).unwrap().condition,
            "min>=0.5"
        );
    }

    #[test]
    fn a_class_count_above_the_model_and_a_bad_budget_are_refused() {
        let c = StopConfig {
            until: vec![parse("classes>=0.99:950")],
            max_seconds: 0.0,
        };
        assert!(c.check(Some(1000)).is_ok());
        let (key, e) = c.check(Some(10)).unwrap_err();
        assert_eq!(key, "stop.until");
        assert!(e.contains("950 classes") && e.contains("has 10"), "{e}");
        let pct = StopConfig {
            until: vec![parse("classes>=0.99:95%")],
            max_seconds: 0.0,
        };
        assert!(pct.check(Some(10)).is_ok());
        let bad = StopConfig {
            until: vec![],
            max_seconds: -1.0,
        };
        assert_eq!(bad.check(None).unwrap_err().0, "stop.max_seconds");
    }
}
