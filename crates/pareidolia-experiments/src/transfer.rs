//! The paper's transfer question: do images evolved to fool one network fool another? A
//! run's champions (from its newest checkpoint) are rendered from their genomes at the run's
//! canvas, shown to other models through the run's view, and scored; [`TransferTable`] holds
//! each class's confidence on the source (the score it was evolved for) and on every target,
//! with the target's own top class, and writes it as CSV, as a markdown summary and as a
//! heatmap. Scoring is blocking (model preparation and inference).
//!
//! A target must have the run's classes (the same labels, class for class) unless its
//! [`TargetSpec::labels`] says how its classes answer for the run's: by index, or through a
//! class map ([`crate::class_map`]), where a champion's confidence is the summed probability of
//! the target classes its class maps to, and a class the map leaves out is not scored.
//!
//! A target whose input is larger than the run's canvas (EfficientNet-Lite2's 260x260 against
//! a 256x256 ImageNet run) cannot take a crop of it: it sees the champion scaled up (bilinear,
//! aspect kept) to the smallest canvas that holds its input, then through the run's view.

use std::path::Path;

use pareidolia_core::config::ModelConfig;
use pareidolia_core::image_io::Image;
use pareidolia_core::{Champion, EncodingPlugin, OutputKind, RunIdentity};
use pareidolia_eval::{BackendChoice, EvalError, View};
use pareidolia_plugin::softmax;

use pareidolia_daemon::run::setup::{ModelSetup, SetupError};

use crate::class_map::{ClassMap, LabelMatch};

/// What one target model says of one champion.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TargetScore {
    /// Its probability of the champion's class (through a class map: the summed
    /// probability of the target classes the champion's class maps to).
    pub confidence: f32,
    /// Its most probable class (in the target's classes).
    pub top_class: usize,
    /// That class's probability.
    pub top_confidence: f32,
    /// Whether that class is (one the map gives for) the champion's class.
    pub on_class: bool,
}

/// One class of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct TransferRow {
    /// Class index.
    pub class: usize,
    /// Its label.
    pub label: String,
    /// The champion's score on the run's own models (`None`: the class has no champion).
    pub source: Option<f32>,
    /// Per target, in order.
    pub targets: Vec<Option<TargetScore>>,
}

/// The whole transfer experiment of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct TransferTable {
    /// The source's name (the run's models, joined with `+`).
    pub source: String,
    /// Target names (made unique with `#2`, `#3` when a name repeats).
    pub targets: Vec<String>,
    /// Class labels, by index.
    pub labels: Vec<String>,
    /// Per target, its class labels (the run's, unless a class map or index matching is in
    /// use), for naming its top class.
    pub target_labels: Vec<Vec<String>>,
    /// Per target, how its classes were matched, in words (`same labels`, `by class index`,
    /// `class map FILE: N of M classes`).
    pub matching: Vec<String>,
    /// One row per class.
    pub rows: Vec<TransferRow>,
}

/// A target model as the command line names it.
#[derive(Debug, Clone)]
pub struct TargetSpec {
    /// `builtin:NAME` or a manifest path.
    pub manifest: String,
    /// Its backend.
    pub backend: BackendChoice,
    /// How it sees the champions; `None` = the run's view. Scoring a run's champions with its
    /// own model under another view shows what the view does to the scores (the paper's
    /// ten-crop averaging against the centre crop).
    pub view: Option<View>,
    /// How its classes answer for the run's where its labels differ.
    pub labels: LabelMatch,
}

/// A loaded target and how its classes answer for the run's.
pub struct Target {
    /// The model at the canvas and view it is shown.
    pub setup: ModelSetup,
    /// Per run class, its classes.
    pub map: ClassMap,
    /// The matching, in words.
    pub matching: String,
}

/// How `target` answers for the run's classes: the identity where the labels are the same;
/// otherwise as `labels` says, and refused, saying what to give, when it says `Same`.
fn match_classes(
    spec: &TargetSpec,
    run: &ModelSetup,
    target: &ModelSetup,
) -> Result<(ClassMap, String), SetupError> {
    let (a, b) = (&run.model.labels, &target.model.labels);
    if a == b {
        return Ok((ClassMap::identity(a.len()), "same labels".into()));
    }
    let refuse = |why: String| -> SetupError { EvalError::BadInput(why).into() };
    match &spec.labels {
        LabelMatch::Same => {
            let class = (0..a.len().max(b.len()))
                .find(|&i| a.get(i) != b.get(i))
                .unwrap_or(0);
            let label = |l: &[String]| l.get(class).cloned().unwrap_or_else(|| "<none>".into());
            Err(refuse(format!(
                "target {} has other classes than the run: {} ({} classes) and {} ({} classes) differ at class {class},                  `{}` against `{}`; give --class-map FILE (one `RUN LABEL,TARGET LABEL` pair per line) to say which                  target classes answer for which, or --ignore-labels to score class k as class k",
                spec.manifest,
                run.labels_origin,
                a.len(),
                target.labels_origin,
                b.len(),
                label(a),
                label(b)
            )))
        }
        LabelMatch::ByIndex => {
            if a.len() != b.len() {
                return Err(refuse(format!(
                    "--ignore-labels scores class k as class k, but target {} has {} classes and the run {};                      give --class-map FILE to map classes of different label spaces",
                    spec.manifest,
                    b.len(),
                    a.len()
                )));
            }
            Ok((
                ClassMap::identity(a.len()),
                "by class index (--ignore-labels)".into(),
            ))
        }
        LabelMatch::Map(path) => {
            let map = ClassMap::read(path, a, b).map_err(refuse)?;
            let words = format!(
                "class map {}: {} of {} classes",
                path.display(),
                map.mapped(),
                a.len()
            );
            Ok((map, words))
        }
    }
}

/// Loads the targets at the run's canvas and view, checks their channels and matches their
/// classes with the run's ([`TargetSpec::labels`]).
pub fn load_targets(
    targets: &[TargetSpec],
    run: &ModelSetup,
    base_dir: &Path,
) -> Result<Vec<Target>, SetupError> {
    let mut loaded = Vec::with_capacity(targets.len());
    for (i, t) in targets.iter().enumerate() {
        let mut config = ModelConfig {
            manifest: t.manifest.clone(),
            backend: t.backend,
            view: t.view.unwrap_or(run.view.view),
            canvas: Some([run.view.width, run.view.height]),
            onnxruntime: Default::default(),
            cuda: Default::default(),
        };
        let key = format!("--model {}", i + 1);
        // Its own input size first (canvas = input), then the canvas it will be shown.
        let own = ModelSetup::load(
            &key,
            &ModelConfig {
                canvas: None,
                ..config.clone()
            },
            base_dir,
        )?;
        let input = &own.model.manifest.input;
        config.canvas = Some(scaled_canvas(
            [run.view.width, run.view.height],
            [input.width, input.height],
        ));
        let target = ModelSetup::load(&key, &config, base_dir)?;
        let (map, matching) = match_classes(t, run, &target)?;
        let (a, b) = (run.canvas(), target.canvas());
        if a.channels != b.channels {
            return Err(EvalError::BadInput(format!(
                "target {} reads {} channel(s) but the run's images have {}",
                t.manifest, b.channels, a.channels
            ))
            .into());
        }
        loaded.push(Target {
            setup: target,
            map,
            matching,
        });
    }
    Ok(loaded)
}

/// The canvas a target is shown: the run's, or, when the target's input does not fit in it,
/// the run's scaled up (aspect kept, rounded up) until it does.
pub fn scaled_canvas(run: [u32; 2], input: [u32; 2]) -> [u32; 2] {
    if run[0] >= input[0] && run[1] >= input[1] {
        return run;
    }
    let scale = (input[0] as f64 / run[0] as f64).max(input[1] as f64 / run[1] as f64);
    let side = |n: u32, want: u32| ((n as f64 * scale).ceil() as u32).max(want);
    [side(run[0], input[0]), side(run[1], input[1])]
}

/// Bilinear resampling of interleaved 8-bit images (`channels` per pixel) with pixel centres
/// aligned (as PIL's bilinear filter when enlarging); same size gives the same bytes.
pub fn resize_bilinear(src: &[u8], from: [usize; 2], channels: usize, to: [usize; 2]) -> Vec<u8> {
    if from == to {
        return src.to_vec();
    }
    let axis = |n_from: usize, n_to: usize| -> Vec<(usize, usize, f32)> {
        (0..n_to)
            .map(|d| {
                let x = ((d as f64 + 0.5) * n_from as f64 / n_to as f64 - 0.5)
                    .clamp(0.0, (n_from - 1) as f64);
                let x0 = x.floor() as usize;
                let x1 = (x0 + 1).min(n_from - 1);
                (x0, x1, (x - x0 as f64) as f32)
            })
            .collect()
    };
    let (xs, ys) = (axis(from[0], to[0]), axis(from[1], to[1]));
    let mut out = vec![0u8; to[0] * to[1] * channels];
    let at = |x: usize, y: usize, c: usize| src[(y * from[0] + x) * channels + c] as f32;
    for (y, &(y0, y1, fy)) in ys.iter().enumerate() {
        for (x, &(x0, x1, fx)) in xs.iter().enumerate() {
            for c in 0..channels {
                let top = at(x0, y0, c) * (1.0 - fx) + at(x1, y0, c) * fx;
                let bottom = at(x0, y1, c) * (1.0 - fx) + at(x1, y1, c) * fx;
                let v = top * (1.0 - fy) + bottom * fy;
                out[(y * to[0] + x) * channels + c] = v.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

/// Probabilities from a model's output row.
fn probabilities(row: &[f32], kind: OutputKind) -> Vec<f32> {
    let mut p = row.to_vec();
    if kind == OutputKind::Logits {
        softmax(row, &mut p);
    }
    p
}

/// The most probable class and its probability (the first of equals).
fn top(p: &[f32]) -> (usize, f32) {
    p.iter()
        .copied()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (c, v)| {
            if v > best.1 { (c, v) } else { best }
        })
}

/// Renders every champion and scores it on every target, `batch` images at a time.
pub fn score(
    cells: &[Option<Champion>],
    encoding: &EncodingPlugin,
    identity: &RunIdentity,
    targets: &[Target],
    batch: usize,
) -> Result<TransferTable, SetupError> {
    let filled: Vec<(usize, &Champion)> = cells
        .iter()
        .enumerate()
        .filter_map(|(class, c)| c.as_ref().map(|c| (class, c)))
        .collect();
    let image_len = encoding.image_len();
    let mut pixels = vec![0u8; filled.len() * image_len];
    for ((class, champion), out) in filled.iter().zip(pixels.chunks_exact_mut(image_len)) {
        encoding.render(&champion.genome, out).map_err(|e| {
            EvalError::BadInput(format!("cannot render the champion of class {class}: {e}"))
        })?;
    }
    let mut rows: Vec<TransferRow> = (0..cells.len())
        .map(|class| TransferRow {
            class,
            label: identity.label(class),
            source: cells[class].as_ref().map(|c| c.score(class)),
            targets: vec![None; targets.len()],
        })
        .collect();
    let batch = batch.max(1);
    let canvas = encoding.canvas();
    let from = [canvas.width as usize, canvas.height as usize];
    for (
        t,
        Target {
            setup: target, map, ..
        },
    ) in targets.iter().enumerate()
    {
        let mut prepared = target.prepare()?;
        target.check_output(prepared.as_mut(), 1)?;
        let kind = target.output();
        let classes = target.model.classes();
        let shown = target.canvas();
        let to = [shown.width as usize, shown.height as usize];
        let channels = canvas.channels as usize;
        let scaled: Vec<u8>;
        let (images_of_target, len) = if to == from {
            (&pixels, image_len)
        } else {
            scaled = pixels
                .chunks_exact(image_len)
                .flat_map(|image| resize_bilinear(image, from, channels, to))
                .collect();
            (&scaled, to[0] * to[1] * channels)
        };
        for (chunk, images) in filled
            .chunks(batch)
            .zip(images_of_target.chunks(batch * len))
        {
            let outputs = prepared.infer(images, chunk.len())?;
            for ((class, _), row) in chunk.iter().zip(outputs.chunks_exact(classes)) {
                let answers = &map.to[*class];
                if answers.is_empty() {
                    continue;
                }
                let p = probabilities(row, kind);
                let (top_class, top_confidence) = top(&p);
                rows[*class].targets[t] = Some(TargetScore {
                    confidence: answers.iter().map(|&k| p[k]).sum::<f32>().min(1.0),
                    top_class,
                    top_confidence,
                    on_class: answers.contains(&top_class),
                });
            }
        }
    }
    let mut names: Vec<String> = Vec::new();
    for Target { setup: target, .. } in targets {
        // A view other than the centre crop is part of the name: one model under two views
        // makes two columns.
        let name = match target.view.view {
            View::Center => target.model.name().to_owned(),
            view => format!("{} ({view})", target.model.name()),
        };
        let seen = names
            .iter()
            .filter(|n| n.split('#').next() == Some(&name))
            .count();
        names.push(if seen == 0 {
            name
        } else {
            format!("{name}#{}", seen + 1)
        });
    }
    Ok(TransferTable {
        source: identity
            .models
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>()
            .join("+"),
        targets: names,
        labels: identity.labels.clone(),
        target_labels: targets
            .iter()
            .map(|t| t.setup.model.labels.clone())
            .collect(),
        matching: targets.iter().map(|t| t.matching.clone()).collect(),
        rows,
    })
}

/// Quotes a CSV field when it needs it.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// Median of a non-empty slice (mean of the middle two for an even length).
fn median(values: &mut [f32]) -> f32 {
    values.sort_by(f32::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Thresholds of the summary's "fraction at or above" columns.
pub const THRESHOLDS: [f32; 3] = [0.5, 0.99, 0.9999];

impl TransferTable {
    /// Per class: class, label, source confidence, then per target its confidence, top
    /// class and top label. Empty cells where a class has no champion.
    pub fn csv(&self) -> String {
        let mut out = String::from("class,label,source");
        for t in &self.targets {
            let t = csv_field(t);
            out += &format!(",{t},{t} top class,{t} top label");
        }
        out.push('\n');
        let label = |t: usize, c: usize| {
            self.target_labels
                .get(t)
                .unwrap_or(&self.labels)
                .get(c)
                .cloned()
                .unwrap_or_else(|| c.to_string())
        };
        for r in &self.rows {
            out += &format!(
                "{},{},{}",
                r.class,
                csv_field(&r.label),
                r.source.map(|s| s.to_string()).unwrap_or_default()
            );
            for (t, score) in r.targets.iter().enumerate() {
                match score {
                    Some(s) => {
                        out += &format!(
                            ",{},{},{}",
                            s.confidence,
                            s.top_class,
                            csv_field(&label(t, s.top_class))
                        )
                    }
                    None => out += ",,,",
                }
            }
            out.push('\n');
        }
        out
    }

    /// The column's confidences over classes with a champion: the source's (`None`) or a
    /// target's.
    fn column(&self, target: Option<usize>) -> Vec<f32> {
        self.rows
            .iter()
            .filter_map(|r| match target {
                None => r.source,
                Some(t) => r.targets[t].map(|s| s.confidence),
            })
            .collect()
    }

    /// A markdown table: per model (source first), the classes with a champion, the median
    /// confidence and the fraction at or above each of [`THRESHOLDS`]; plus how often the
    /// target's top class is the champion's class.
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "Champions of a run evolved against {} ({} classes, {} with a champion), scored by other models.\n\n",
            self.source,
            self.rows.len(),
            self.column(None).len()
        );
        out += "| model | champions | median | >= 0.5 | >= 0.99 | >= 0.9999 | top class = champion's class |\n";
        out += "|---|---|---|---|---|---|---|\n";
        let columns = std::iter::once((format!("{} (source)", self.source), None)).chain(
            self.targets
                .iter()
                .cloned()
                .enumerate()
                .map(|(i, t)| (t, Some(i))),
        );
        for (name, target) in columns {
            let mut values = self.column(target);
            let n = values.len();
            let frac = |t: f32| {
                if n == 0 {
                    "-".to_owned()
                } else {
                    format!(
                        "{:.1}%",
                        100.0 * values.iter().filter(|&&v| v >= t).count() as f64 / n as f64
                    )
                }
            };
            let fractions: Vec<String> = THRESHOLDS.iter().map(|&t| frac(t)).collect();
            let agree = match target {
                None => "-".to_owned(),
                Some(t) => {
                    let hits = self
                        .rows
                        .iter()
                        .filter(|r| r.targets[t].is_some_and(|s| s.on_class))
                        .count();
                    format!("{hits} of {n}")
                }
            };
            let med = if n == 0 {
                "-".to_owned()
            } else {
                format!("{:.4}%", 100.0 * median(&mut values))
            };
            out += &format!(
                "| {name} | {n} | {med} | {} | {} | {} | {agree} |\n",
                fractions[0], fractions[1], fractions[2]
            );
        }
        for (name, matching) in self.targets.iter().zip(&self.matching) {
            if matching != "same labels" {
                out += &format!("\n{name} classes matched {matching}.");
            }
        }
        out
    }

    /// Classes x models (source first), coloured by confidence.
    pub fn heatmap(&self) -> Image {
        let rows: Vec<String> = self
            .rows
            .iter()
            .map(|r| format!("{} {}", r.class, r.label))
            .collect();
        let columns: Vec<String> = std::iter::once("source".to_owned())
            .chain(self.targets.iter().cloned())
            .collect();
        let values: Vec<Vec<Option<f32>>> = self
            .rows
            .iter()
            .map(|r| {
                std::iter::once(r.source)
                    .chain(r.targets.iter().map(|t| t.map(|s| s.confidence)))
                    .collect()
            })
            .collect();
        pareidolia_core::gallery::heatmap(&rows, &columns, &values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_larger_than_the_canvas_sees_it_scaled_up() {
        assert_eq!(scaled_canvas([256, 256], [224, 224]), [256, 256]);
        assert_eq!(scaled_canvas([256, 256], [260, 260]), [260, 260]);
        assert_eq!(scaled_canvas([256, 128], [240, 240]), [480, 240]);
        assert_eq!(scaled_canvas([28, 28], [28, 28]), [28, 28]);
    }

    #[test]
    fn bilinear_resize_keeps_flat_images_and_interpolates_ramps() {
        let flat = vec![7u8; 4 * 3 * 3];
        assert_eq!(
            resize_bilinear(&flat, [4, 3], 3, [9, 5]),
            vec![7u8; 9 * 5 * 3]
        );
        let same: Vec<u8> = (0..12).collect();
        assert_eq!(resize_bilinear(&same, [4, 3], 1, [4, 3]), same);
        // 2x1 gray [0, 200] to 4x1: centres at -0.25, 0.25, 0.75, 1.25 of the source.
        assert_eq!(
            resize_bilinear(&[0, 200], [2, 1], 1, [4, 1]),
            vec![0, 50, 150, 200]
        );
    }

    fn table() -> TransferTable {
        let s = |confidence, top_class, class| {
            Some(TargetScore {
                confidence,
                top_class,
                top_confidence: confidence.max(0.5),
                on_class: top_class == class,
            })
        };
        TransferTable {
            source: "a".into(),
            targets: vec!["b".into(), "c, d".into()],
            labels: vec!["zero".into(), "one".into(), "two".into()],
            target_labels: vec![
                vec!["zero".into(), "one".into(), "two".into()],
                vec!["null".into(), "eins".into(), "zwei".into()],
            ],
            matching: vec![
                "same labels".into(),
                "class map m.csv: 3 of 3 classes".into(),
            ],
            rows: vec![
                TransferRow {
                    class: 0,
                    label: "zero".into(),
                    source: Some(0.99995),
                    targets: vec![s(0.995, 0, 0), s(0.25, 2, 0)],
                },
                TransferRow {
                    class: 1,
                    label: "one".into(),
                    source: None,
                    targets: vec![None, None],
                },
                TransferRow {
                    class: 2,
                    label: "two".into(),
                    source: Some(0.6),
                    targets: vec![s(0.1, 0, 2), s(0.75, 2, 2)],
                },
            ],
        }
    }

    #[test]
    fn csv_has_a_column_per_target_and_quotes_what_needs_it() {
        let csv = table().csv();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines[0],
            "class,label,source,b,b top class,b top label,\"c, d\",\"c, d\" top class,\"c, d\" top label"
        );
        // A target's top class is named in its own labels.
        assert_eq!(lines[1], "0,zero,0.99995,0.995,0,zero,0.25,2,zwei");
        assert_eq!(lines[2], "1,one,,,,,,,");
        assert_eq!(lines[3], "2,two,0.6,0.1,0,zero,0.75,2,zwei");
    }

    #[test]
    fn markdown_summarises_each_model_over_the_classes_with_a_champion() {
        let md = table().markdown();
        assert!(
            md.contains("evolved against a (3 classes, 2 with a champion)"),
            "{md}"
        );
        assert!(
            md.contains("| a (source) | 2 | 79.9975% | 100.0% | 50.0% | 50.0% | - |"),
            "{md}"
        );
        assert!(
            md.contains("| b | 2 | 54.7500% | 50.0% | 50.0% | 0.0% | 1 of 2 |"),
            "{md}"
        );
        assert!(
            md.contains("| c, d | 2 | 50.0000% | 50.0% | 0.0% | 0.0% | 1 of 2 |"),
            "{md}"
        );
        assert!(
            md.contains("c, d classes matched class map m.csv: 3 of 3 classes.")
                && !md.contains("b classes"),
            "{md}"
        );
    }

    #[test]
    fn top_takes_the_first_of_equals_and_probabilities_softmax_logits() {
        assert_eq!(top(&[0.2, 0.4, 0.4]), (1, 0.4));
        let p = probabilities(&[0.0, 0.0], OutputKind::Logits);
        assert_eq!(p, [0.5, 0.5]);
        assert_eq!(
            probabilities(&[0.3, 0.7], OutputKind::Probabilities),
            [0.3, 0.7]
        );
        let heat = table().heatmap();
        assert_eq!(heat.channels, 3);
    }
}
