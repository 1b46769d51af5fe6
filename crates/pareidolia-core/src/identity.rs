//! What a run is: its models (each with its file's sha256, class count, output kind and the
//! backend that runs it), its encoding and fitness plugins, and its class labels. One
//! [`RunIdentity`] is built at setup and used by every place that records or compares it:
//! checkpoints, `summary.json`, the daemon's `/status`, the `_info` metrics and resume's check
//! that it continues the same run.

use serde::{Deserialize, Serialize};

use crate::choices::{BackendChoice, OutputKind};

/// One model of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelIdentity {
    /// Model name (its manifest's `name`).
    pub name: String,
    /// sha256 of its ONNX file.
    pub sha256: String,
    /// Classes it scores.
    pub classes: usize,
    /// What its output vector holds, as the fitness plugin sees it (after the view); `None`
    /// where a format-1 checkpoint did not record it.
    #[serde(default)]
    pub output: Option<OutputKind>,
    /// The backend the config asked for.
    pub requested_backend: BackendChoice,
    /// The backend that runs it (what `auto` chose); `None` until the model is prepared, and
    /// where a format-1 checkpoint did not record it.
    #[serde(default)]
    pub backend: Option<String>,
    /// The device it runs on.
    #[serde(default)]
    pub device: Option<String>,
    /// Why `auto` chose that backend (what it refused first); `None` for a named backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_selection: Option<String>,
}

impl ModelIdentity {
    /// `backend (device)` as the summary shows it, or the requested backend when the model
    /// was not prepared here.
    pub fn backend_text(&self) -> String {
        match (&self.backend, &self.device) {
            (Some(b), Some(d)) => format!("{b} ({d})"),
            (Some(b), None) => b.clone(),
            _ => format!("{} (not recorded)", self.requested_backend),
        }
    }
}

/// Everything that makes two runs the same run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunIdentity {
    /// The models, in config order (at least one).
    pub models: Vec<ModelIdentity>,
    /// The encoding plugin.
    pub encoding: PluginSummary,
    /// The fitness plugin.
    pub fitness: PluginSummary,
    /// Class labels, by index (empty where a format-1 checkpoint did not record them).
    #[serde(default)]
    pub labels: Vec<String>,
    /// The daemon run's id (`crate::resume::new_run_id`), the same in every checkpoint of
    /// the run and in its folder's `run-id` file; `None` before a daemon starts the run, for
    /// `pareidolia run`, and in checkpoints written before run ids (format 1, early format 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// The classes that are archive cells, ascending (the config's `archive.classes`);
    /// `None` = every class. The others are scored but hold no champion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cells: Option<Vec<usize>>,
}

/// A plugin as the run used it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginSummary {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
}

/// One way two identities differ, as [`RunIdentity::differences`] lists them. Which of them
/// matter, in which order, and how to say so, is the caller's: a resume
/// ([`RunIdentity::check_resume`]) and the daemon taking a worker node in judge differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdentityDifference {
    /// Another number of models (nothing more is compared).
    ModelCount,
    /// Model `i` has another number of classes.
    Classes(usize),
    /// Model `i`'s file has another sha256.
    Sha256(usize),
    /// Model `i` has another name.
    ModelName(usize),
    /// Model `i` gives another kind of output.
    Output(usize),
    /// The classes that are cells differ.
    Cells,
    /// The encoding plugin's name or version differs.
    Encoding,
    /// The fitness plugin's name or version differs.
    Fitness,
    /// The class labels differ.
    Labels,
}

/// Which differences a resume accepts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AllowedChanges {
    /// A model file may differ from the one the run started with.
    pub model: bool,
    /// A plugin's name or version may differ.
    pub plugins: bool,
}

/// Why a run cannot continue with what is installed now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityMismatch {
    /// The config names another number of models than the run used.
    #[error(
        "this run scored with {was} model(s), the config names {now}; resuming would mix scores of different ensembles"
    )]
    ModelCount {
        /// Models then.
        was: usize,
        /// Models now.
        now: usize,
    },
    /// A model file changed.
    #[error(
        "the model file changed since this run started (sha256 {was} then, {now} now); resuming would mix scores \
         of two models. Restore the model, or pass --allow-model-change"
    )]
    Model {
        /// sha256 then.
        was: String,
        /// sha256 now.
        now: String,
    },
    /// A plugin changed.
    #[error(
        "plugin {was} started this run, {now} is installed now; pass --allow-plugin-change to continue anyway"
    )]
    Plugin {
        /// `name version` then.
        was: String,
        /// `name version` now.
        now: String,
    },
    /// The classes that are cells changed.
    #[error(
        "this run's cells are classes {was}, the config now says {now}; a run cannot change its cells"
    )]
    Cells {
        /// The cells then (`all` for every class).
        was: String,
        /// The cells now.
        now: String,
    },
    /// The number of classes changed (the archive's cells would not fit).
    #[error(
        "this run's archive has {was} classes, the model now has {now}; a run cannot change its classes"
    )]
    Classes {
        /// Classes then.
        was: usize,
        /// Classes now.
        now: usize,
    },
}

impl RunIdentity {
    /// A one-model identity for tests and examples, one class per label: model `m`
    /// (sha256 `ab`, logits, on tract on the CPU, requested `auto`), encoding `direct` and
    /// fitness `confidence` at 0.1.0, no run id, every class pushed. Tests change the fields
    /// they are about.
    pub fn sample(labels: &[&str]) -> RunIdentity {
        RunIdentity {
            models: vec![ModelIdentity {
                name: "m".into(),
                sha256: "ab".into(),
                classes: labels.len(),
                output: Some(OutputKind::Logits),
                requested_backend: BackendChoice::Auto,
                backend: Some("tract".into()),
                device: Some("cpu".into()),
                backend_selection: None,
            }],
            encoding: PluginSummary {
                name: "direct".into(),
                version: "0.1.0".into(),
            },
            fitness: PluginSummary {
                name: "confidence".into(),
                version: "0.1.0".into(),
            },
            labels: labels.iter().map(|l| l.to_string()).collect(),
            run_id: None,
            cells: None,
        }
    }

    /// The first model (every run has one).
    pub fn primary(&self) -> &ModelIdentity {
        &self.models[0]
    }

    /// Classes of the run (the archive's cells).
    pub fn classes(&self) -> usize {
        self.models.first().map_or(0, |m| m.classes)
    }

    /// Whether `class` is an archive cell of this run.
    pub fn is_cell(&self, class: usize) -> bool {
        self.cells
            .as_ref()
            .is_none_or(|c| c.binary_search(&class).is_ok())
    }

    /// The classes that are not cells, ascending (empty when every class is one).
    pub fn skipped_classes(&self) -> Vec<usize> {
        (0..self.classes()).filter(|&c| !self.is_cell(c)).collect()
    }

    /// A class's label, or its index when the run has no label for it.
    pub fn label(&self, class: usize) -> String {
        self.labels
            .get(class)
            .cloned()
            .unwrap_or_else(|| class.to_string())
    }

    /// Every way `other` differs from this identity, model by model (classes, sha256, name,
    /// output), then cells, plugins and labels; backends, devices and the run id are not
    /// compared. The one comparison of identities: each caller picks what it refuses.
    pub fn differences(&self, other: &RunIdentity) -> Vec<IdentityDifference> {
        use IdentityDifference as D;
        if self.models.len() != other.models.len() {
            return vec![D::ModelCount];
        }
        let mut out = Vec::new();
        for (i, (a, b)) in self.models.iter().zip(&other.models).enumerate() {
            let differs = [
                (a.classes != b.classes, D::Classes(i)),
                (a.sha256 != b.sha256, D::Sha256(i)),
                (a.name != b.name, D::ModelName(i)),
                (a.output != b.output, D::Output(i)),
            ];
            out.extend(differs.into_iter().filter(|(d, _)| *d).map(|(_, d)| d));
        }
        let rest = [
            (self.cells != other.cells, D::Cells),
            (self.encoding != other.encoding, D::Encoding),
            (self.fitness != other.fitness, D::Fitness),
            (self.labels != other.labels, D::Labels),
        ];
        out.extend(rest.into_iter().filter(|(d, _)| *d).map(|(_, d)| d));
        out
    }

    /// Checks that `now` (what is installed and configured) continues this run.
    pub fn check_resume(
        &self,
        now: &RunIdentity,
        allow: AllowedChanges,
    ) -> Result<(), IdentityMismatch> {
        use IdentityDifference as D;
        let plugin = |p: &PluginSummary| format!("{} {}", p.name, p.version);
        let cells =
            |c: &Option<Vec<usize>>| c.as_ref().map_or("all".to_owned(), |c| format!("{c:?}"));
        for d in self.differences(now) {
            return Err(match d {
                D::ModelCount => IdentityMismatch::ModelCount {
                    was: self.models.len(),
                    now: now.models.len(),
                },
                D::Classes(i) => IdentityMismatch::Classes {
                    was: self.models[i].classes,
                    now: now.models[i].classes,
                },
                D::Sha256(i) if !allow.model => IdentityMismatch::Model {
                    was: self.models[i].sha256.clone(),
                    now: now.models[i].sha256.clone(),
                },
                D::Cells => IdentityMismatch::Cells {
                    was: cells(&self.cells),
                    now: cells(&now.cells),
                },
                D::Encoding if !allow.plugins => IdentityMismatch::Plugin {
                    was: plugin(&self.encoding),
                    now: plugin(&now.encoding),
                },
                D::Fitness if !allow.plugins => IdentityMismatch::Plugin {
                    was: plugin(&self.fitness),
                    now: plugin(&now.fitness),
                },
                // A model's name, its output kind, the labels, and what `allow` accepts.
                _ => continue,
            });
        }
        Ok(())
    }

    /// Fills what a format-1 checkpoint did not record (labels, output kinds) from `loaded`,
    /// the identity of the same models loaded now; a model whose file changed keeps its gaps.
    pub fn fill_unrecorded(&mut self, loaded: &RunIdentity) {
        if self.labels.is_empty() {
            self.labels = loaded.labels.clone();
        }
        for (m, now) in self.models.iter_mut().zip(&loaded.models) {
            if m.output.is_none() && m.sha256 == now.sha256 {
                m.output = now.output;
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> RunIdentity {
        RunIdentity::sample(&["zero", "one"])
    }

    #[test]
    fn resume_refuses_changed_models_and_plugins_unless_allowed() {
        let was = sample();
        assert_eq!(was.check_resume(&was, AllowedChanges::default()), Ok(()));
        let mut model = was.clone();
        model.models[0].sha256 = "11".into();
        let e = was
            .check_resume(&model, AllowedChanges::default())
            .unwrap_err();
        assert!(e.to_string().contains("sha256 ab then, 11 now"), "{e}");
        let allow_model = AllowedChanges {
            model: true,
            plugins: false,
        };
        assert_eq!(was.check_resume(&model, allow_model), Ok(()));
        let mut plugin = was.clone();
        plugin.fitness.version = "0.2.0".into();
        let e = was.check_resume(&plugin, allow_model).unwrap_err();
        assert_eq!(
            e.to_string(),
            "plugin confidence 0.1.0 started this run, confidence 0.2.0 is installed now; pass --allow-plugin-change to continue anyway"
        );
        let allow_all = AllowedChanges {
            model: true,
            plugins: true,
        };
        assert_eq!(was.check_resume(&plugin, allow_all), Ok(()));
        // Neither flag lets a run change its classes or its number of models.
        let mut classes = was.clone();
        classes.models[0].classes = 3;
        assert!(matches!(
            was.check_resume(&classes, allow_all),
            Err(IdentityMismatch::Classes { was: 2, now: 3 })
        ));
        let mut two = was.clone();
        two.models.push(two.models[0].clone());
        assert!(matches!(
            was.check_resume(&two, allow_all),
            Err(IdentityMismatch::ModelCount { was: 1, now: 2 })
        ));
        // Nor its cells.
        let mut cells = was.clone();
        cells.cells = Some(vec![1]);
        assert_eq!(
            was.check_resume(&cells, allow_all).unwrap_err().to_string(),
            "this run's cells are classes all, the config now says [1]; a run cannot change its cells"
        );
        assert_eq!((cells.is_cell(0), cells.is_cell(1)), (false, true));
        assert_eq!(
            (cells.skipped_classes(), was.skipped_classes()),
            (vec![0], vec![])
        );
    }

    #[test]
    fn gaps_of_old_checkpoints_are_filled_from_the_same_model_only() {
        let loaded = sample();
        let mut old = sample();
        old.labels.clear();
        old.models[0].output = None;
        let mut changed = old.clone();
        changed.models[0].sha256 = "ff".into();
        old.fill_unrecorded(&loaded);
        assert_eq!(old.labels, loaded.labels);
        assert_eq!(old.models[0].output, Some(OutputKind::Logits));
        changed.fill_unrecorded(&loaded);
        assert_eq!(changed.models[0].output, None);
        assert_eq!(changed.label(1), "one");
        assert_eq!(changed.label(7), "7");
    }

    #[test]
    fn backend_text_says_what_ran_or_that_it_was_not_recorded() {
        let mut m = sample().models.remove(0);
        assert_eq!(m.backend_text(), "tract (cpu)");
        m.backend = None;
        m.device = None;
        assert_eq!(m.backend_text(), "auto (not recorded)");
    }
}
