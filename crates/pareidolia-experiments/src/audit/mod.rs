//! `pareidolia audit`: how foolable is one classifier? The paper's battery against it in one
//! command — MAP-Elites with the direct and CPPN encodings and gradient ascent (where the
//! model's graph can be differentiated), each over a few seeds — then what the field measures
//! today: per method and class the best confidence and the evaluations to 50/99/99.99%,
//! whether the 8-bit PNG keeps the score, transfer to other models, and how far the standard
//! OOD detectors (max-softmax, max-logit, energy) let the fooling images through.
//!
//! Every part is an ordinary run folder under `OUT/parts/` (resumable, exportable,
//! transferable by the usual commands), run in this process one after another through
//! [`pareidolia_daemon::Experiment`], as `run` and `retrain` drive them. An audit folder
//! holds `audit-plan.json` (the request and the parts, written before the first part
//! runs); the same command continues an interrupted audit from it: finished parts (with a
//! `summary.json`) are read, an interrupted part resumes from its newest checkpoint, a part
//! without one starts over. Then [`report`] writes `report.html`, `audit.json` and the
//! fooling set.
//!
//! The rooms: [`plan`] (budget → parts), [`measure`] (history and summaries → figures),
//! [`ood`] (data, detectors, the PNG scorer), [`report`] (verdict, HTML, JSON types).

pub mod measure;
pub mod ood;
pub mod plan;
pub mod report;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pareidolia_core::checkpoint::CheckpointStore;
use pareidolia_core::config::{CheckpointConfig, RunConfig};
use pareidolia_core::gallery::{GalleryEntry, montage};
use pareidolia_core::image_io::{Image, png_bytes};
use pareidolia_core::summary::RunSummary;
use pareidolia_core::{AllowedChanges, OutputKind};
use pareidolia_daemon::experiment::{Experiment, RunOptions};
use pareidolia_daemon::run::folder;
use pareidolia_daemon::run::history;
use pareidolia_daemon::run::outcome::{Progress, RunOutcome};
use pareidolia_daemon::run::setup::Setup;
use pareidolia_daemon::run::stop::StopHandle;
use pareidolia_eval::{Model, ModelRef};
use serde::{Deserialize, Serialize};

use crate::class_map::ClassMap;
use measure::THRESHOLDS;
use ood::{Labelled, Scorer};
use plan::{Cost, Method, Part, PlanError, Skipped};
use report::{
    AuditReport, ClassResult, FoolingImage, MethodResult, ModelInfo, PartResult, TransferMethod,
    TransferResult,
};

/// The CPPN experiment's config (the paper's section 3.2 settings).
const CPPN_CONFIG: &str = include_str!("../../../../configs/mnist-cppn.toml");
/// The released ascent recipe without regularisation.
const ASCENT_CONFIG: &str = include_str!("../../../../configs/ascent/mnist-unregularised.toml");

/// CPPN genomes grow as they evolve (nodes and connections are added), so a generation late
/// in a run costs more than the calibration's first ones: on LeNet, 2 cores, a 140-generation
/// part ran 1.5 times as long as its calibration predicted. The plan counts CPPN evaluations
/// at this many times their measured cost.
const CPPN_GROWTH: f64 = 1.5;

/// Seconds each method's calibration run searches (after its setup): long enough that a
/// load spike on a shared machine does not decide the plan, short beside a minute's budget.
const CALIBRATION_S: f64 = 1.0;

/// Generations of a calibration run: more than [`CALIBRATION_S`] allows on any model, so
/// the wall-clock stop ends it (checked after every generation).
const CALIBRATION_GENERATIONS: u64 = 1_000_000;

/// The plan file in an audit folder.
pub const PLAN_FILE: &str = "audit-plan.json";

/// Why an audit cannot go on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// Bad input, refused before anything runs.
    #[error("{0}")]
    Refused(String),
    /// The budget does not fit.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// A part failed.
    #[error("part {part}: {message}")]
    Part {
        /// The part (or calibration of a method).
        part: String,
        /// Why.
        message: String,
    },
    /// A file could not be read or written.
    #[error("cannot {what} {}: {cause}", path.display())]
    Io {
        /// What was done.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> AuditError + 'a {
    move |cause| AuditError::Io {
        what,
        path: path.to_owned(),
        cause,
    }
}

/// A reference model for transfer.
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    /// Its manifest (`builtin:NAME` or a path).
    pub manifest: String,
    /// A class map for a reference with other labels, in `transfer --class-map`'s format
    /// ([`ClassMap`]: lines `SOURCE,REFERENCE`, labels or class indices, `#` comments; a
    /// source class listed with several reference classes scores their summed probability).
    pub class_map: Option<PathBuf>,
}

impl std::str::FromStr for Reference {
    type Err = String;

    /// `MANIFEST` or `MANIFEST@CLASS_MAP`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.rsplit_once('@') {
            Some((m, map)) if !m.is_empty() && !map.is_empty() => Ok(Self {
                manifest: m.to_owned(),
                class_map: Some(PathBuf::from(map)),
            }),
            _ if s.is_empty() => Err("an empty --reference".into()),
            _ => Ok(Self {
                manifest: s.to_owned(),
                class_map: None,
            }),
        }
    }
}

/// What the command line asks for.
#[derive(Debug, Clone)]
pub struct Request {
    /// The model to audit (`builtin:NAME` or a manifest path).
    pub model: String,
    /// Labelled held-out data, for the OOD detectors.
    pub data: Option<PathBuf>,
    /// `--budget`: seconds, and as given; `None` for the default, which follows the model's
    /// input size ([`plan::default_budget_s`]).
    pub budget: Option<Budget>,
    /// Classes to audit (default: all).
    pub classes: Option<Vec<usize>>,
    /// Seeds per method.
    pub seeds: u64,
    /// Reference models for transfer.
    pub references: Vec<Reference>,
    /// A folder of shipped model folders: those with the audited model's labels are
    /// transfer targets too.
    pub shipped_models: Option<PathBuf>,
    /// The audit folder.
    pub out: PathBuf,
    /// The command line, for the report.
    pub command: Vec<String>,
    /// Relative paths are relative to this folder.
    pub base_dir: PathBuf,
}

/// A budget in seconds and as written.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    /// Seconds.
    pub seconds: f64,
    /// As given (or as the default was chosen), for messages.
    pub text: String,
}

/// What identifies an audit's request: a resumed audit must ask for the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Fingerprint {
    model_sha256: String,
    classes: Option<Vec<usize>>,
    seeds: u64,
    budget_s: f64,
    data: Option<String>,
    references: Vec<String>,
}

impl Fingerprint {
    /// The first difference, named as the flag that makes it.
    fn difference(&self, other: &Fingerprint) -> Option<String> {
        let show = |v: &dyn std::fmt::Debug| format!("{v:?}");
        let diffs = [
            (
                "--model (sha256)",
                show(&self.model_sha256),
                show(&other.model_sha256),
            ),
            ("--classes", show(&self.classes), show(&other.classes)),
            ("--seeds", show(&self.seeds), show(&other.seeds)),
            (
                "--budget (seconds)",
                show(&self.budget_s),
                show(&other.budget_s),
            ),
            ("--data", show(&self.data), show(&other.data)),
            (
                "--reference",
                show(&self.references),
                show(&other.references),
            ),
        ];
        diffs
            .into_iter()
            .find(|(_, a, b)| a != b)
            .map(|(k, a, b)| format!("{k}: the audit has {a}, this command {b}"))
    }
}

/// The plan file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct StoredPlan {
    fingerprint: Fingerprint,
    calibration: Vec<(Method, Cost)>,
    skipped: Vec<Skipped>,
    parts: Vec<Part>,
}

/// A loaded reference.
struct LoadedReference {
    manifest: String,
    origin: String,
    class_map: Option<String>,
    /// Per class of the audited model, the reference's classes whose probabilities make its
    /// confidence there (as `transfer --class-map` reads and scores them).
    map: ClassMap,
    model: Model,
}

/// What happens, for a display.
#[non_exhaustive]
pub enum Event<'a> {
    /// Measuring a method's cost.
    Calibrating(Method),
    /// The plan (new or read back).
    Planned {
        /// The parts.
        parts: &'a [Part],
        /// Read back from the folder (a resumed audit).
        resumed: bool,
    },
    /// A part is under way.
    Progress {
        /// Its index.
        index: usize,
        /// The part.
        part: &'a Part,
        /// Where it stands.
        progress: &'a Progress,
    },
    /// A part is done (run now, or read).
    PartDone {
        /// Its index.
        index: usize,
        /// The part.
        part: &'a Part,
        /// It was finished before this session.
        was_done: bool,
    },
    /// Measuring and writing the report.
    Measuring,
}

/// How an audit session ended.
#[derive(Debug)]
pub enum Finish {
    /// Every part ran and the report is written.
    Done(Box<AuditReport>),
    /// A stop request ended it during this part; the same command continues.
    Stopped {
        /// The part.
        part: String,
    },
}

/// An audit, checked and planned, ready to run.
pub struct Audit {
    request: Request,
    /// The budget: `--budget`, or the default for the model's input size.
    budget: Budget,
    model: Model,
    manifest: String,
    data: Option<Labelled>,
    references: Vec<LoadedReference>,
    transfer_notes: Vec<String>,
    plan: StoredPlan,
    cells: Vec<usize>,
}

/// The model path as a run config names it: absolute, so the part folders resolve it from
/// anywhere.
fn absolute_manifest(manifest: &str, base: &Path) -> String {
    if manifest.starts_with("builtin:") {
        return manifest.to_owned();
    }
    let p = base.join(manifest);
    std::path::absolute(&p).unwrap_or(p).display().to_string()
}

impl Audit {
    /// Checks the request (model, classes, data, references: each bad input refused here,
    /// before anything runs), then reads the folder's plan or, for a new audit, measures each
    /// method and plans the parts within the budget. Writes the plan file into a new folder.
    pub fn prepare(
        request: Request,
        events: &mut dyn FnMut(Event<'_>),
    ) -> Result<Self, AuditError> {
        let refused = AuditError::Refused;
        let base = request.base_dir.clone();
        let model = Model::load(&ModelRef::parse(&request.model, &base)).map_err(|e| {
            refused(format!(
                "cannot load the model to audit, {}: {e}",
                request.model
            ))
        })?;
        let classes = model.classes();
        let cells: Vec<usize> = match &request.classes {
            None => (0..classes).collect(),
            Some(list) => {
                if list.is_empty() {
                    return Err(refused(
                        "--classes is empty; name at least one class".into(),
                    ));
                }
                let mut seen = std::collections::HashSet::new();
                for &c in list {
                    if c >= classes {
                        return Err(refused(format!(
                            "--classes: class {c} is out of range; model {} has classes 0 to {}",
                            model.name(),
                            classes - 1
                        )));
                    }
                    if !seen.insert(c) {
                        return Err(refused(format!("--classes names class {c} twice")));
                    }
                }
                list.clone()
            }
        };
        if request.seeds == 0 {
            return Err(refused("--seeds must be at least 1".into()));
        }
        let data = match &request.data {
            Some(dir) => Some(ood::read_data(&base.join(dir), &model).map_err(refused)?),
            None => None,
        };
        let input = &model.manifest.input;
        let budget = request.budget.clone().unwrap_or_else(|| {
            let values =
                u64::from(input.width) * u64::from(input.height) * u64::from(input.channels);
            let seconds = plan::default_budget_s(values);
            Budget {
                seconds,
                text: format!(
                    "{} (the default for a {}x{}x{} input)",
                    plan::format_seconds(seconds),
                    input.width,
                    input.height,
                    input.channels
                ),
            }
        });
        let mut references = Vec::new();
        for r in &request.references {
            let m = Model::load(&ModelRef::parse(&r.manifest, &base))
                .map_err(|e| refused(format!("cannot load --reference {}: {e}", r.manifest)))?;
            let map = match &r.class_map {
                Some(path) => ClassMap::read(&base.join(path), &model.labels, &m.labels)
                    .map_err(|e| refused(format!("--reference {}: {e}", r.manifest)))?,
                None if m.labels == model.labels => ClassMap::identity(classes),
                None => {
                    return Err(refused(format!(
                        "--reference {} has other labels than {} ({} classes: {}…, against {}: {}…); give a class map, --reference {}@MAP.csv with lines SOURCE,REFERENCE",
                        r.manifest,
                        model.name(),
                        m.classes(),
                        m.labels
                            .iter()
                            .take(3)
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", "),
                        classes,
                        model
                            .labels
                            .iter()
                            .take(3)
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", "),
                        r.manifest
                    )));
                }
            };
            if m.manifest.input.channels != input.channels {
                return Err(refused(format!(
                    "--reference {} reads {} channel(s), but {} reads {}; give a reference with the same channels",
                    r.manifest,
                    m.manifest.input.channels,
                    model.name(),
                    input.channels
                )));
            }
            references.push(LoadedReference {
                manifest: r.manifest.clone(),
                origin: "--reference".into(),
                class_map: r.class_map.as_ref().map(|p| p.display().to_string()),
                map,
                model: m,
            });
        }
        let mut transfer_notes = Vec::new();
        if let Some(dir) = &request.shipped_models {
            let mut folders: Vec<PathBuf> = std::fs::read_dir(dir)
                .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
                .unwrap_or_default();
            folders.sort();
            for folder in folders {
                let manifest = folder.join("manifest.toml");
                if !manifest.is_file() {
                    continue;
                }
                // Only models with the audited model's labels are candidates; read the labels
                // first, so big models of other label spaces are not loaded.
                let labels = std::fs::read_to_string(folder.join("labels.txt")).unwrap_or_default();
                let same = labels
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .eq(model.labels.iter().map(|l| l.trim()));
                if !same {
                    continue;
                }
                let m = match Model::load(&ModelRef::Path(manifest.clone())) {
                    Ok(m) => m,
                    Err(e) => {
                        transfer_notes.push(format!(
                            "Shipped model {} has the same labels but was left out: {e}",
                            folder.display()
                        ));
                        continue;
                    }
                };
                if m.sha256 == model.sha256
                    || references.iter().any(|r| r.model.sha256 == m.sha256)
                    || m.labels != model.labels
                    || m.manifest.input.channels != input.channels
                {
                    continue;
                }
                references.push(LoadedReference {
                    manifest: manifest.display().to_string(),
                    origin: "shipped, same labels".into(),
                    class_map: None,
                    map: ClassMap::identity(classes),
                    model: m,
                });
            }
        }
        let fingerprint = Fingerprint {
            model_sha256: model.sha256.clone(),
            classes: request.classes.clone(),
            seeds: request.seeds,
            budget_s: budget.seconds,
            data: request.data.as_ref().map(|d| d.display().to_string()),
            references: request
                .references
                .iter()
                .map(|r| match &r.class_map {
                    Some(m) => format!("{}@{}", r.manifest, m.display()),
                    None => r.manifest.clone(),
                })
                .collect(),
        };
        let out = &request.out;
        let plan_path = out.join(PLAN_FILE);
        let manifest = absolute_manifest(&request.model, &base);
        let mut audit = Self {
            request: request.clone(),
            budget: budget.clone(),
            model,
            manifest,
            data,
            references,
            transfer_notes,
            plan: StoredPlan {
                fingerprint: fingerprint.clone(),
                calibration: Vec::new(),
                skipped: Vec::new(),
                parts: Vec::new(),
            },
            cells,
        };
        if plan_path.is_file() {
            let bytes = std::fs::read(&plan_path).map_err(io("read", &plan_path))?;
            let stored: StoredPlan = serde_json::from_slice(&bytes).map_err(|e| {
                refused(format!(
                    "{} is damaged ({e}); remove the audit folder {} to start over",
                    plan_path.display(),
                    out.display()
                ))
            })?;
            if let Some(d) = stored.fingerprint.difference(&fingerprint) {
                return Err(refused(format!(
                    "{} holds another audit ({d}); rerun it with its own flags to continue it, or choose another --out",
                    out.display()
                )));
            }
            audit.plan = stored;
            events(Event::Planned {
                parts: &audit.plan.parts,
                resumed: true,
            });
            return Ok(audit);
        }
        if out.exists()
            && std::fs::read_dir(out)
                .map_err(io("read", out))?
                .next()
                .is_some()
        {
            return Err(refused(format!(
                "--out {} already holds files but no {PLAN_FILE}: it is not an audit; choose another --out or empty it",
                out.display()
            )));
        }
        let runtime = runtime(out)?;
        for method in Method::ALL {
            events(Event::Calibrating(method));
            match audit.calibrate(method, &runtime)? {
                Ok(cost) => audit.plan.calibration.push((method, cost)),
                Err(reason) => audit.plan.skipped.push(Skipped { method, reason }),
            }
        }
        audit.plan.parts = plan::plan_parts(
            &audit.plan.calibration,
            request.seeds,
            budget.seconds,
            &budget.text,
        )?;
        std::fs::create_dir_all(out).map_err(io("create", out))?;
        write_atomic(
            &plan_path,
            &serde_json::to_vec_pretty(&audit.plan).expect("plain data"),
        )?;
        events(Event::Planned {
            parts: &audit.plan.parts,
            resumed: false,
        });
        Ok(audit)
    }

    /// The parts, in the order they run.
    pub fn parts(&self) -> &[Part] {
        &self.plan.parts
    }

    /// Methods not run, and why.
    pub fn skipped(&self) -> &[Skipped] {
        &self.plan.skipped
    }

    /// The run config of a part.
    fn config(&self, method: Method, seed: u64, generations: u64) -> Result<RunConfig, AuditError> {
        let parsed = |text: &str, origin: &str| {
            RunConfig::parse(text, origin, PathBuf::from(".")).map_err(|e| AuditError::Part {
                part: method.name().into(),
                message: e.to_string(),
            })
        };
        let mut c = match method {
            Method::Direct => RunConfig::builtin_default(),
            Method::Cppn => parsed(CPPN_CONFIG, "configs/mnist-cppn.toml")?,
            Method::Ascent => parsed(ASCENT_CONFIG, "configs/ascent/mnist-unregularised.toml")?,
        };
        if let Some(m) = c.model.as_mut() {
            m.manifest = self.manifest.clone();
        }
        c.seed = seed;
        c.generations = generations;
        c.archive.classes = self.request.classes.clone();
        c.checkpoint = CheckpointConfig {
            every_generations: 10,
            every_seconds: 5.0,
            keep: 2,
        };
        c.validate("the audit").map_err(|e| AuditError::Part {
            part: method.name().into(),
            message: e.to_string(),
        })?;
        Ok(c)
    }

    /// A short in-memory run of `method` ([`CALIBRATION_S`] of search, at least one
    /// generation): its setup time and time per evaluation (step).
    /// `Ok(Err(reason))` when gradient ascent cannot be set up on this model.
    fn calibrate(
        &self,
        method: Method,
        runtime: &tokio::runtime::Runtime,
    ) -> Result<Result<Cost, String>, AuditError> {
        let mut config = self.config(method, 1, CALIBRATION_GENERATIONS)?;
        config.stop.until.clear();
        config.stop.max_seconds = CALIBRATION_S;
        let (initial, offspring) = (
            u64::from(config.initial_population()),
            u64::from(config.offspring_per_generation),
        );
        let started = Instant::now();
        let mut experiment = match Experiment::setup(config) {
            Ok(e) => e,
            Err(e) if method == Method::Ascent => return Ok(Err(e.to_string())),
            Err(e) => {
                return Err(AuditError::Part {
                    part: format!("{} (calibration)", method.name()),
                    message: e.to_string(),
                });
            }
        };
        let setup_s = started.elapsed().as_secs_f64();
        let (tx, _rx) = tokio::sync::watch::channel(Progress::default());
        let outcome = runtime
            .block_on(experiment.run(tx))
            .map_err(|e| AuditError::Part {
                part: format!("{} (calibration)", method.name()),
                message: e.to_string(),
            })?;
        let p = &outcome.progress;
        Ok(Ok(match method {
            Method::Ascent => Cost {
                setup_s,
                unit_s: p.elapsed_s / p.generation.max(1) as f64,
                initial: 0,
                per_generation: 1,
            },
            Method::Cppn => Cost {
                setup_s,
                unit_s: CPPN_GROWTH * p.elapsed_s / p.evaluations.max(1) as f64,
                initial,
                per_generation: offspring,
            },
            Method::Direct => Cost {
                setup_s,
                unit_s: p.elapsed_s / p.evaluations.max(1) as f64,
                initial,
                per_generation: offspring,
            },
        }))
    }

    fn part_dir(&self, part: &Part) -> PathBuf {
        self.request.out.join("parts").join(part.name())
    }

    /// Runs every part not done yet, then measures and writes the report. `stop` (set by
    /// SIGTERM or SIGINT in the binary) ends the part in flight at its next generation with a
    /// checkpoint; the same command continues.
    pub fn run(
        &self,
        events: &mut dyn FnMut(Event<'_>),
        stop: Arc<AtomicBool>,
    ) -> Result<Finish, AuditError> {
        let runtime = runtime(&self.request.out)?;
        for (index, part) in self.plan.parts.iter().enumerate() {
            let dir = self.part_dir(part);
            if read_summary(&dir).is_some() {
                events(Event::PartDone {
                    index,
                    part,
                    was_done: true,
                });
                continue;
            }
            if stop.load(Ordering::SeqCst) {
                return Ok(Finish::Stopped { part: part.name() });
            }
            if !self.run_part(index, part, &dir, &runtime, events, &stop)? {
                return Ok(Finish::Stopped { part: part.name() });
            }
            events(Event::PartDone {
                index,
                part,
                was_done: false,
            });
        }
        events(Event::Measuring);
        let report = self.report()?;
        Ok(Finish::Done(Box::new(report)))
    }

    /// One part into `dir`: resumed from its newest checkpoint, or started afresh. Returns
    /// false when a stop request ended it (its checkpoint stays for the next session).
    fn run_part(
        &self,
        index: usize,
        part: &Part,
        dir: &Path,
        runtime: &tokio::runtime::Runtime,
        events: &mut dyn FnMut(Event<'_>),
        stop: &Arc<AtomicBool>,
    ) -> Result<bool, AuditError> {
        let fail = |message: String| AuditError::Part {
            part: part.name(),
            message,
        };
        let store = CheckpointStore::new(dir, 2);
        let (mut experiment, resume) = if !store.list().is_empty() {
            let (checkpoint, _path, _skipped) =
                store.load_newest().map_err(|e| fail(e.to_string()))?;
            let setup = Setup::load(checkpoint.config()).map_err(|e| fail(e.to_string()))?;
            checkpoint
                .meta
                .identity
                .check_resume(&setup.identity(), AllowedChanges::default())
                .map_err(|e| fail(e.to_string()))?;
            setup
                .check_champions(&checkpoint.cells, &checkpoint.meta.identity.encoding)
                .map_err(|e| fail(e.to_string()))?;
            let experiment = Experiment::new(setup).map_err(|e| fail(e.to_string()))?;
            (experiment, Some(checkpoint))
        } else {
            if dir.exists() {
                std::fs::remove_dir_all(dir).map_err(io("remove the unstarted part", dir))?;
            }
            std::fs::create_dir_all(dir).map_err(io("create", dir))?;
            let config = self.config(part.method, part.seed, part.generations)?;
            let text = format!(
                "# Resolved config of this run (part {} of an audit); relative paths are relative to {}\n{}",
                part.name(),
                config.base_dir.display(),
                toml::to_string(&config).map_err(|e| fail(e.to_string()))?
            );
            std::fs::write(dir.join("config.toml"), text).map_err(io("write", dir))?;
            let experiment = Experiment::setup(config).map_err(|e| fail(e.to_string()))?;
            (experiment, None)
        };
        let handle = StopHandle::new();
        let request = handle.clone();
        let (tx, mut rx) = tokio::sync::watch::channel(Progress::default());
        let watch_stop = stop.clone();
        let outcome: Result<RunOutcome, _> = runtime.block_on(async {
            let stopper = tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    if watch_stop.load(Ordering::SeqCst) {
                        request.request();
                        break;
                    }
                }
            });
            let options = RunOptions {
                run_dir: Some(dir.to_owned()),
                resume,
                metrics: None,
                stop: handle,
            };
            let mut run = Box::pin(experiment.run_with(tx, options));
            let outcome = loop {
                tokio::select! {
                    outcome = &mut run => break outcome,
                    changed = rx.changed() => {
                        if changed.is_err() {
                            break run.await;
                        }
                        let p = rx.borrow_and_update().clone();
                        events(Event::Progress { index, part, progress: &p });
                    }
                }
            };
            stopper.abort();
            outcome
        });
        let outcome = outcome.map_err(|e| fail(e.to_string()))?;
        if outcome.interrupted {
            return Ok(false);
        }
        folder::write(
            dir,
            &experiment.setup.encoding,
            &experiment.identity,
            experiment.config().seed,
            &outcome,
        )
        .map_err(|e| fail(e.to_string()))?;
        Ok(true)
    }

    /// Measures the finished parts and writes `audit.json`, `report.html` and the fooling set.
    fn report(&self) -> Result<AuditReport, AuditError> {
        let out = &self.request.out;
        let model = &self.model;
        let refused = |m: String| AuditError::Part {
            part: "report".into(),
            message: m,
        };
        let mut scorer = Scorer::new(model.clone(), &self.request.model).map_err(refused)?;
        let classes = model.classes();
        let mut parts = Vec::new();
        // Every champion PNG: (part index, class, pixels).
        let mut images: Vec<(usize, usize, Vec<u8>)> = Vec::new();
        for (pi, part) in self.plan.parts.iter().enumerate() {
            let dir = self.part_dir(part);
            let summary = read_summary(&dir).ok_or_else(|| {
                refused(format!("{} has no readable summary.json", dir.display()))
            })?;
            let hpath = dir.join(history::FILE_NAME);
            let text = std::fs::read_to_string(&hpath).map_err(io("read", &hpath))?;
            let points = measure::parse_history(&text)
                .map_err(|e| refused(format!("{}: {e}", hpath.display())))?;
            let cost = part.method.cost_per_evaluation();
            let mut class_results = Vec::new();
            let mut pixels = Vec::new();
            let mut with_image = Vec::new();
            for c in &summary.classes {
                if let Some(image) = &c.image {
                    let path = dir.join(image);
                    pixels.extend(scorer.read_image(&path).map_err(refused)?);
                    with_image.push(c.class);
                }
            }
            let probs = scorer.probabilities(&pixels).map_err(refused)?;
            let png: Vec<(usize, f64)> = with_image
                .iter()
                .zip(probs.chunks_exact(classes))
                .map(|(&c, row)| (c, f64::from(row[c])))
                .collect();
            let ascent_images = summary
                .ascent
                .as_ref()
                .map_or(0, |a| a.classes.len() as u64);
            for c in &summary.classes {
                let first_reach = summary.ascent.as_ref().and_then(|a| {
                    a.classes.iter().find(|x| x.class == c.class).map(|x| {
                        let f = x.first_step_reaching;
                        [f.majority, f.p99, f.p9999].map(|s| s.map(|s| s * ascent_images * cost))
                    })
                });
                class_results.push(ClassResult {
                    class: c.class,
                    label: c.label.clone(),
                    confidence: c.confidence.map(f64::from),
                    generation: c.generation,
                    image: c
                        .image
                        .as_ref()
                        .map(|i| format!("parts/{}/{i}", part.name())),
                    png_confidence: png.iter().find(|(k, _)| *k == c.class).map(|(_, v)| *v),
                    first_reach,
                });
            }
            for (&c, image) in with_image
                .iter()
                .zip(pixels.chunks_exact(scorer.image_len()))
            {
                images.push((pi, c, image.to_vec()));
            }
            let cells = summary.classes.len() as u64;
            parts.push(PartResult {
                part: part.clone(),
                dir: format!("parts/{}", part.name()),
                generations: summary.generations,
                evaluations: summary.evaluations,
                forward_equivalents: summary.evaluations * cost,
                wall_time_s: summary.wall_time_s,
                classes: class_results,
                reach: measure::reach(&points, cells, cost),
                curves: (0..THRESHOLDS.len())
                    .map(|t| measure::curve(&points, t, cost, 300))
                    .collect(),
            });
        }
        let methods: Vec<MethodResult> = self
            .plan
            .calibration
            .iter()
            .map(|(m, _)| method_result(*m, &parts, &self.cells))
            .collect();
        // The fooling set.
        let set_dir = out.join("fooling-set");
        if set_dir.exists() {
            std::fs::remove_dir_all(&set_dir).map_err(io("remove", &set_dir))?;
        }
        let width = (classes.max(2) - 1).to_string().len();
        let mut fooling_set = Vec::new();
        let mut csv = String::from("file,target_class,label,confidence,method,seed,part\n");
        for (pi, class, _) in &images {
            let p = &parts[*pi];
            let c = p
                .classes
                .iter()
                .find(|c| c.class == *class)
                .expect("the image's class is in its part");
            let folder = format!("{class:0width$}");
            let name = format!("{}-{class:0width$}.png", p.part.name());
            let dir = set_dir.join(&folder);
            std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
            let src = out.join(c.image.as_ref().expect("has an image"));
            std::fs::copy(&src, dir.join(&name)).map_err(io("copy", &src))?;
            let file = format!("fooling-set/{folder}/{name}");
            let confidence = c.png_confidence.unwrap_or(f64::NAN);
            csv.push_str(&format!(
                "{file},{class},{},{confidence},{},{},{}\n",
                csv_field(&c.label),
                p.part.method.name(),
                p.part.seed,
                p.part.name()
            ));
            fooling_set.push(FoolingImage {
                file,
                class: *class,
                label: c.label.clone(),
                confidence,
                method: p.part.method,
                seed: p.part.seed,
            });
        }
        std::fs::create_dir_all(&set_dir).map_err(io("create", &set_dir))?;
        write_atomic(&set_dir.join("index.csv"), csv.as_bytes())?;
        // Transfer.
        let input = &model.manifest.input;
        let from = [input.width as usize, input.height as usize];
        let mut transfer = Vec::new();
        for r in &self.references {
            let mut target = Scorer::new(r.model.clone(), &r.manifest).map_err(refused)?;
            let (tw, th, tc) = target.input();
            let mut pixels = Vec::new();
            let mut which = Vec::new();
            for (pi, class, image) in &images {
                let targets = &r.map.to[*class];
                if targets.is_empty() {
                    continue;
                }
                if [tw as usize, th as usize] == from {
                    pixels.extend_from_slice(image);
                } else {
                    pixels.extend(crate::transfer::resize_bilinear(
                        image,
                        from,
                        tc as usize,
                        [tw as usize, th as usize],
                    ));
                }
                which.push((parts[*pi].part.method, targets));
            }
            let probs = target.probabilities(&pixels).map_err(refused)?;
            let tclasses = r.model.classes();
            let scored: Vec<(Method, f64)> = which
                .iter()
                .zip(probs.chunks_exact(tclasses))
                .map(|(&(m, t), row)| (m, t.iter().map(|&k| f64::from(row[k])).sum()))
                .collect();
            let by_method = methods
                .iter()
                .map(|mr| {
                    let v: Vec<f64> = scored
                        .iter()
                        .filter(|(m, _)| *m == mr.method)
                        .map(|(_, v)| *v)
                        .collect();
                    TransferMethod {
                        method: mr.method,
                        images: v.len(),
                        share_at: THRESHOLDS.iter().map(|&t| ood::pass_share(&v, t)).collect(),
                        median: measure::median(&v),
                    }
                })
                .collect();
            transfer.push(TransferResult {
                model: r.model.name().to_owned(),
                manifest: r.manifest.clone(),
                origin: r.origin.clone(),
                class_map: r.class_map.clone(),
                by_method,
            });
        }
        // OOD.
        let (ood, ood_missing) = match &self.data {
            Some(data) => {
                let data_raw = scorer.raw(&data.pixels).map_err(refused)?;
                let fooling: Vec<u8> = images.iter().flat_map(|(_, _, p)| p.clone()).collect();
                let fooling_raw = scorer.raw(&fooling).map_err(refused)?;
                let names: Vec<String> = images
                    .iter()
                    .map(|(pi, _, _)| parts[*pi].part.method.name().to_owned())
                    .collect();
                (
                    Some(ood::evaluate(
                        data,
                        &data_raw,
                        &fooling_raw,
                        &names,
                        classes,
                        scorer.output(),
                    )),
                    None,
                )
            }
            None => (
                None,
                Some(
                    "Without --data, the model's held-out accuracy, the thresholds at 95% TPR of max-softmax, max-logit and energy, and the share of fooling images each lets through as in-distribution cannot be reported: they need real images of the model's classes. Give --data DIR (an IDX pair as `train` reads it, or one folder of PNG files per class)."
                        .to_owned(),
                ),
            ),
        };
        let mut commands = vec![self.request.command.join(" ")];
        for p in &parts {
            commands.push(format!(
                "pareidolia run --config {dir}/config.toml --out NEW_FOLDER   # part {name} again, from scratch (its folder: {dir}; `pareidolia export`/`transfer` take it)",
                dir = out.join(&p.dir).display(),
                name = p.part.name()
            ));
        }
        let mut report = AuditReport {
            tool: format!("pareidolia {}", env!("CARGO_PKG_VERSION")),
            created_unix_s: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            commands,
            model: ModelInfo {
                name: model.name().to_owned(),
                manifest: self.request.model.clone(),
                sha256: model.sha256.clone(),
                classes,
                output: match model.manifest.output {
                    OutputKind::Logits => "logits".into(),
                    OutputKind::Probabilities => "probabilities".into(),
                },
                input: format!("{}x{}x{}", input.width, input.height, input.channels),
            },
            budget_s: self.budget.seconds,
            seeds: self.request.seeds,
            cells: self.cells.clone(),
            calibration: self.plan.calibration.clone(),
            skipped: self.plan.skipped.clone(),
            parts,
            methods,
            transfer,
            transfer_notes: self.transfer_notes.clone(),
            ood,
            ood_missing,
            fooling_set,
            verdict: String::new(),
        };
        report.verdict = report::verdict(&report);
        // Montages: per method, each class's best PNG over the seeds.
        let mut montages = Vec::new();
        for m in &report.methods {
            let mut entries = Vec::new();
            for &class in &self.cells {
                let best = images
                    .iter()
                    .filter(|(pi, c, _)| *c == class && report.parts[*pi].part.method == m.method)
                    .filter_map(|(pi, c, px)| {
                        let cr = report.parts[*pi].classes.iter().find(|x| x.class == *c)?;
                        Some((
                            cr.png_confidence.unwrap_or(0.0),
                            cr.generation.unwrap_or(0),
                            px,
                        ))
                    })
                    .max_by(|a, b| a.0.total_cmp(&b.0));
                if let Some((score, generation, px)) = best {
                    entries.push(GalleryEntry {
                        class,
                        label: model.label(class),
                        confidence: score as f32,
                        fitness: None,
                        generation,
                        image: Image {
                            width: input.width,
                            height: input.height,
                            channels: input.channels,
                            pixels: px.clone(),
                        },
                    });
                }
            }
            if !entries.is_empty() {
                let png = png_bytes(&montage(&entries))
                    .map_err(|e| refused(format!("cannot encode the montage: {e}")))?;
                montages.push((m.method, png));
            }
        }
        write_atomic(
            &out.join("audit.json"),
            &serde_json::to_vec_pretty(&report).expect("plain data"),
        )?;
        write_atomic(
            &out.join("report.html"),
            report::html(&report, &montages, &model.labels).as_bytes(),
        )?;
        Ok(report)
    }
}

/// A method's figures over its parts.
fn method_result(method: Method, parts: &[PartResult], cells: &[usize]) -> MethodResult {
    let of: Vec<&PartResult> = parts.iter().filter(|p| p.part.method == method).collect();
    let best_of = |f: &dyn Fn(&ClassResult) -> Option<f64>| -> Vec<Option<f64>> {
        cells
            .iter()
            .map(|&class| {
                of.iter()
                    .filter_map(|p| p.classes.iter().find(|c| c.class == class).and_then(f))
                    .fold(None, |a: Option<f64>, v| Some(a.map_or(v, |a| a.max(v))))
            })
            .collect()
    };
    let best = best_of(&|c| c.confidence);
    let best_png = best_of(&|c| c.png_confidence);
    let values: Vec<f64> = best.iter().flatten().copied().collect();
    let (mut kept, mut had, mut drop) = (0, 0, None::<f64>);
    for p in &of {
        for c in &p.classes {
            if let (Some(run), Some(png)) = (c.confidence, c.png_confidence) {
                if run >= 0.99 {
                    had += 1;
                    kept += usize::from(png >= 0.99);
                }
                drop = Some(drop.map_or(run - png, |d: f64| d.max(run - png)));
            }
        }
    }
    MethodResult {
        method,
        seeds: of.len(),
        median_best: measure::median(&values),
        min_best: values.iter().copied().reduce(f64::min),
        classes_at: THRESHOLDS
            .iter()
            .map(|&t| best.iter().flatten().filter(|&&v| v >= t).count())
            .collect(),
        median_all: (0..THRESHOLDS.len())
            .map(|t| {
                let v: Vec<f64> = of
                    .iter()
                    .filter_map(|p| p.reach.get(t).and_then(|r| r.all))
                    .map(|e| e as f64)
                    .collect();
                measure::median(&v)
            })
            .collect(),
        seeds_all: (0..THRESHOLDS.len())
            .map(|t| {
                of.iter()
                    .filter(|p| p.reach.get(t).is_some_and(|r| r.all.is_some()))
                    .count()
            })
            .collect(),
        best,
        best_png,
        png_kept_99: (kept, had),
        png_max_drop: drop,
    }
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

fn runtime(out: &Path) -> Result<tokio::runtime::Runtime, AuditError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(io("start tokio for", out))
}

/// A finished part's summary, when its `summary.json` reads back.
fn read_summary(dir: &Path) -> Option<RunSummary> {
    let bytes = std::fs::read(dir.join("summary.json")).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Writes a file whole or not at all (a temporary file renamed over it).
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), AuditError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(io("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io("write", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_with_an_optional_class_map() {
        let r: Reference = "models/x/manifest.toml".parse().unwrap();
        assert_eq!(r.class_map, None);
        let r: Reference = "models/x/manifest.toml@map.csv".parse().unwrap();
        assert_eq!(r.manifest, "models/x/manifest.toml");
        assert_eq!(r.class_map, Some(PathBuf::from("map.csv")));
        assert!("".parse::<Reference>().is_err());
    }

    #[test]
    fn a_changed_request_is_named() {
        let a = Fingerprint {
            model_sha256: "ab".into(),
            classes: None,
            seeds: 2,
            budget_s: 60.0,
            data: None,
            references: Vec::new(),
        };
        assert_eq!(a.difference(&a.clone()), None);
        let b = Fingerprint {
            seeds: 3,
            ..a.clone()
        };
        let d = a.difference(&b).unwrap();
        assert!(d.starts_with("--seeds"), "{d}");
    }

    #[test]
    fn the_embedded_configs_parse() {
        for (text, origin) in [(CPPN_CONFIG, "cppn"), (ASCENT_CONFIG, "ascent")] {
            RunConfig::parse(text, origin, PathBuf::from(".")).unwrap();
        }
    }
}
