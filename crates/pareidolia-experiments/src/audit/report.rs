//! The audit's figures as one serialisable [`AuditReport`] (`audit.json`), its one-paragraph
//! verdict, and `report.html`: a self-contained page (tables, curves as inline SVG, one
//! montage per method as an inline base64 PNG) that opens from disk with no network.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::measure::{Reach, THRESHOLDS};
use super::ood::OodResult;
use super::plan::{Cost, Method, Part, Skipped};

/// The audited model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Its name.
    pub name: String,
    /// The manifest as given.
    pub manifest: String,
    /// sha256 of the ONNX file.
    pub sha256: String,
    /// Classes.
    pub classes: usize,
    /// `logits` or `probabilities`.
    pub output: String,
    /// Input WIDTHxHEIGHTxCHANNELS.
    pub input: String,
}

/// One class of one part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassResult {
    /// Class index.
    pub class: usize,
    /// Its label.
    pub label: String,
    /// The champion's confidence as the run scored it.
    pub confidence: Option<f64>,
    /// The generation (step) its champion was found in.
    pub generation: Option<u64>,
    /// Its PNG in the part's folder (relative to the audit folder).
    pub image: Option<String>,
    /// The PNG file rescored by the model (the 8-bit image).
    pub png_confidence: Option<f64>,
    /// Gradient ascent only: forward-pass equivalents of the run until this class first
    /// reached 50, 99 and 99.99%.
    pub first_reach: Option<[Option<u64>; 3]>,
}

/// One part's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartResult {
    /// The part.
    pub part: Part,
    /// Its run folder, relative to the audit folder.
    pub dir: String,
    /// Generations (steps) run.
    pub generations: u64,
    /// Evaluations as the run counts them.
    pub evaluations: u64,
    /// Forward-pass equivalents.
    pub forward_equivalents: u64,
    /// Seconds of search (from its summary).
    pub wall_time_s: f64,
    /// Per class.
    pub classes: Vec<ClassResult>,
    /// Evaluations until first/half/all classes reached each threshold.
    pub reach: Vec<Reach>,
    /// Per threshold: (forward-pass equivalents, classes at or above).
    pub curves: Vec<Vec<(u64, u64)>>,
}

/// One method over its seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodResult {
    /// The method.
    pub method: Method,
    /// Seeds run.
    pub seeds: usize,
    /// Per class, the best confidence over the seeds (as the run scored it).
    pub best: Vec<Option<f64>>,
    /// Per class, the best PNG confidence over the seeds.
    pub best_png: Vec<Option<f64>>,
    /// Median over classes of `best`.
    pub median_best: Option<f64>,
    /// Lowest of `best`.
    pub min_best: Option<f64>,
    /// Per threshold: classes at or above it in the best seed... over seeds (union by class).
    pub classes_at: Vec<usize>,
    /// Per threshold: median over seeds of the forward-pass equivalents until every class
    /// reached it (seeds that did not are left out).
    pub median_all: Vec<Option<f64>>,
    /// Per threshold: seeds in which every class reached it.
    pub seeds_all: Vec<usize>,
    /// Champions whose PNG keeps its class at or above 99% when the run had it there, of
    /// those the run had there.
    pub png_kept_99: (usize, usize),
    /// Largest drop from the run's confidence to the PNG's.
    pub png_max_drop: Option<f64>,
}

/// One reference model's transfer figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferResult {
    /// The reference's name.
    pub model: String,
    /// Its manifest.
    pub manifest: String,
    /// Given with --reference, or found among the shipped models (same labels).
    pub origin: String,
    /// The class map file, if any.
    pub class_map: Option<String>,
    /// Per method: fooling images scored, share at or above 50/99/99.99% in the mapped
    /// class, and the median confidence.
    pub by_method: Vec<TransferMethod>,
}

/// Transfer of one method's champions to one reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferMethod {
    /// The method.
    pub method: Method,
    /// Images scored (champions whose class the reference has).
    pub images: usize,
    /// Share at or above each of [`THRESHOLDS`].
    pub share_at: Vec<f64>,
    /// Median confidence.
    pub median: Option<f64>,
}

/// One image of the fooling set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FoolingImage {
    /// Path relative to the audit folder.
    pub file: String,
    /// Target class.
    pub class: usize,
    /// Its label.
    pub label: String,
    /// The PNG's confidence in the target class.
    pub confidence: f64,
    /// The method.
    pub method: Method,
    /// The seed.
    pub seed: u64,
}

/// Everything the audit found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditReport {
    /// `pareidolia <version>`.
    pub tool: String,
    /// When the report was written (Unix seconds).
    pub created_unix_s: f64,
    /// The audit's command line, and per part how to rerun it.
    pub commands: Vec<String>,
    /// The model.
    pub model: ModelInfo,
    /// The budget in seconds.
    pub budget_s: f64,
    /// Seeds per method.
    pub seeds: u64,
    /// The classes audited (archive cells).
    pub cells: Vec<usize>,
    /// Calibration per method.
    pub calibration: Vec<(Method, Cost)>,
    /// Methods not run, and why.
    pub skipped: Vec<Skipped>,
    /// Per part.
    pub parts: Vec<PartResult>,
    /// Per method.
    pub methods: Vec<MethodResult>,
    /// Per reference model.
    pub transfer: Vec<TransferResult>,
    /// Shipped models looked at for transfer and left out, and why.
    pub transfer_notes: Vec<String>,
    /// The OOD figures, with --data.
    pub ood: Option<OodResult>,
    /// Without --data: what cannot be reported.
    pub ood_missing: Option<String>,
    /// The fooling set.
    pub fooling_set: Vec<FoolingImage>,
    /// The one-paragraph verdict.
    pub verdict: String,
}

fn pct(x: f64) -> String {
    let p = x * 100.0;
    if (99.99..100.0).contains(&p) {
        format!("{p:.4}%")
    } else if (99.0..100.0).contains(&p) {
        format!("{p:.2}%")
    } else {
        format!("{p:.1}%")
    }
}

fn count(n: f64) -> String {
    if n >= 1e6 {
        format!("{:.2} million", n / 1e6)
    } else {
        format!("{}", n.round() as u64)
    }
}

/// The verdict: per method how far it fooled the model and at what cost, then the PNG check,
/// the OOD detectors and transfer.
pub fn verdict(r: &AuditReport) -> String {
    let cells = r.cells.len();
    let mut s = format!(
        "{} (sha256 {}…, {} classes audited):",
        r.model.name,
        &r.model.sha256[..12.min(r.model.sha256.len())],
        cells
    );
    for m in &r.methods {
        let at = m.classes_at[2];
        let _ = write!(s, " {} ", m.method.title());
        if at == cells {
            let _ = write!(
                s,
                "fooled every class at ≥ 99.99%{}",
                match m.median_all[2] {
                    Some(e) => format!(
                        " within a median of {} evaluations ({} of {} seeds every class)",
                        count(e),
                        m.seeds_all[2],
                        m.seeds
                    ),
                    None => " (combining its seeds)".to_owned(),
                }
            );
        } else {
            let _ = write!(
                s,
                "brought {at} of {cells} classes to ≥ 99.99% and {} to ≥ 99% (lowest best confidence {})",
                m.classes_at[1],
                m.min_best.map_or("-".into(), pct)
            );
        }
        s.push(';');
    }
    for k in &r.skipped {
        let _ = write!(s, " {} was not run: {};", k.method.title(), k.reason);
    }
    let (kept, of) = r.methods.iter().fold((0, 0), |a, m| {
        (a.0 + m.png_kept_99.0, a.1 + m.png_kept_99.1)
    });
    let _ = write!(
        s,
        " the 8-bit PNGs keep {kept} of {of} champions at ≥ 99% that the search had there."
    );
    match &r.ood {
        Some(o) => {
            let _ = write!(
                s,
                " On {} held-out images (accuracy {}), at 95% TPR",
                o.images,
                pct(o.accuracy)
            );
            let parts: Vec<String> = o
                .detectors
                .iter()
                .map(|d| match (d.available, d.fooling_passed) {
                    (true, Some(p)) => {
                        format!("{} passes {} of the fooling images", d.detector, pct(p))
                    }
                    _ => format!("{} is not available", d.detector),
                })
                .collect();
            let _ = write!(s, " {}.", parts.join(", "));
        }
        None => s.push_str(" Without --data, no OOD detector was measured."),
    }
    if let Some(sentence) = transfer_sentence(&r.transfer) {
        s.push(' ');
        s.push_str(&sentence);
    }
    s
}

/// The verdict's sentence on transfer: the method whose champions stay at >= 99% on a
/// reference most often; where none does, the most at >= 50%; where none reaches even that,
/// says so (it never names a "best" method at 0%).
fn transfer_sentence(transfer: &[TransferResult]) -> Option<String> {
    let pairs = || {
        transfer
            .iter()
            .flat_map(|t| t.by_method.iter().map(move |m| (t, m)))
    };
    let best_at = |k: usize| {
        pairs()
            .filter(|(_, m)| m.share_at.get(k).is_some_and(|&v| v > 0.0))
            .max_by(|a, b| a.1.share_at[k].total_cmp(&b.1.share_at[k]))
    };
    if transfer.is_empty() {
        return None;
    }
    Some(if let Some((t, m)) = best_at(1) {
        format!(
            "Transfer: the champions that carry over best are {}'s: {} of them stay at ≥ 99% on {}.",
            m.method.name(),
            pct(m.share_at[1]),
            t.model
        )
    } else if let Some((t, m)) = best_at(0) {
        format!(
            "Transfer: no champion stays at ≥ 99% on another model; the most at ≥ 50% are {}'s: {} on {}.",
            m.method.name(),
            pct(m.share_at[0]),
            t.model
        )
    } else {
        let models: Vec<&str> = transfer.iter().map(|t| t.model.as_str()).collect();
        format!(
            "Transfer: no champion reaches 50% on {}.",
            models.join(", ")
        )
    })
}

/// Base64 (standard alphabet, padded).
pub fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Escapes text for HTML.
pub fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A method's colour in the curves.
fn colour(m: Method) -> &'static str {
    match m {
        Method::Direct => "#1f77b4",
        Method::Cppn => "#d62728",
        Method::Ascent => "#2ca02c",
    }
}

/// Classes at or above `THRESHOLDS[t]` against forward-pass equivalents (log scale), one
/// line per part, as an inline SVG.
pub fn curve_svg(parts: &[PartResult], t: usize, cells: usize) -> String {
    let (w, h, left, bottom, top, right) = (520.0, 260.0, 48.0, 36.0, 24.0, 12.0);
    let xs: Vec<f64> = parts
        .iter()
        .flat_map(|p| {
            p.curves
                .get(t)
                .into_iter()
                .flatten()
                .map(|&(e, _)| e.max(1) as f64)
        })
        .collect();
    let lo = xs
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min)
        .max(1.0)
        .log10()
        .floor();
    let hi = xs
        .iter()
        .copied()
        .fold(1.0, f64::max)
        .log10()
        .ceil()
        .max(lo + 1.0);
    let x = |e: f64| left + (e.max(1.0).log10() - lo) / (hi - lo) * (w - left - right);
    let y = |c: f64| h - bottom - c / cells.max(1) as f64 * (h - bottom - top);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" class=\"curve\">"
    );
    let _ = write!(
        s,
        "<text x=\"{left}\" y=\"14\" font-size=\"12\">classes at ≥ {}% (of {cells})</text>",
        (THRESHOLDS[t] * 1e6).round() / 1e4
    );
    let _ = write!(
        s,
        "<line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#000\"/><line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{}\" stroke=\"#000\"/>",
        h - bottom,
        w - right,
        h - bottom,
        h - bottom
    );
    let mut d = lo as i32;
    while d <= hi as i32 {
        let px = x(10f64.powi(d));
        let _ = write!(
            s,
            "<line x1=\"{px:.1}\" y1=\"{}\" x2=\"{px:.1}\" y2=\"{}\" stroke=\"#000\"/><text x=\"{px:.1}\" y=\"{}\" font-size=\"10\" text-anchor=\"middle\">1e{d}</text>",
            h - bottom,
            h - bottom + 4.0,
            h - bottom + 16.0
        );
        d += 1;
    }
    let _ = write!(
        s,
        "<text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"middle\">evaluations (forward-pass equivalents)</text>",
        (w + left) / 2.0,
        h - 4.0
    );
    for c in [0.0, cells as f64 / 2.0, cells as f64] {
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\">{}</text>",
            left - 4.0,
            y(c) + 3.0,
            c
        );
    }
    for p in parts {
        let Some(points) = p.curves.get(t) else {
            continue;
        };
        let mut path = String::new();
        let mut prev: Option<f64> = None;
        for &(e, c) in points {
            let (px, py) = (x(e as f64), y(c as f64));
            match prev {
                None => {
                    let _ = write!(path, "M{px:.1},{py:.1}");
                }
                Some(last_y) => {
                    // A step: the count holds until the evaluation it changed at.
                    let _ = write!(path, " L{px:.1},{last_y:.1} L{px:.1},{py:.1}");
                }
            }
            prev = Some(py);
        }
        let _ = write!(
            s,
            "<path d=\"{path}\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\" stroke-opacity=\"0.8\"><title>{}</title></path>",
            colour(p.part.method),
            esc(&p.part.name())
        );
    }
    let mut ly = top + 6.0;
    let mut seen = Vec::new();
    for p in parts {
        if seen.contains(&p.part.method) {
            continue;
        }
        seen.push(p.part.method);
        let _ = write!(
            s,
            "<rect x=\"{}\" y=\"{:.1}\" width=\"10\" height=\"10\" fill=\"{}\"/><text x=\"{}\" y=\"{:.1}\" font-size=\"10\">{}</text>",
            w - 150.0,
            ly + 90.0,
            colour(p.part.method),
            w - 136.0,
            ly + 99.0,
            esc(p.part.method.name())
        );
        ly += 14.0;
    }
    s.push_str("</svg>");
    s
}

fn opt_pct(x: Option<f64>) -> String {
    x.map_or("–".into(), pct)
}

fn opt_count(x: Option<f64>) -> String {
    x.map_or("–".into(), count)
}

/// `report.html`; `montages` is one (method, PNG bytes) per method.
pub fn html(r: &AuditReport, montages: &[(Method, Vec<u8>)], labels: &[String]) -> String {
    let mut h = String::new();
    let _ = writeln!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Audit of {name}</title><style>
body{{font-family:sans-serif;max-width:1100px;margin:1em auto;padding:0 1em;color:#111}}
table{{border-collapse:collapse;margin:.5em 0}}td,th{{border:1px solid #999;padding:2px 6px;text-align:right}}
th{{background:#eee}}td:first-child,th:first-child{{text-align:left}}
.verdict{{font-size:1.1em;background:#fff4d6;border:2px solid #c90;padding:.7em}}
img.montage{{max-width:100%;image-rendering:pixelated;border:1px solid #999}}
.curves svg{{margin-right:8px}} code{{font-size:.9em}}
</style></head><body>\n<h1>Fooling audit of {name}</h1>\n<p id=\"verdict\" class=\"verdict\"><b>Verdict.</b> {verdict}</p>",
        name = esc(&r.model.name),
        verdict = esc(&r.verdict)
    );
    let _ = writeln!(
        h,
        "<h2>Model</h2><table><tr><th>name</th><td>{}</td></tr><tr><th>manifest</th><td>{}</td></tr><tr><th>sha256</th><td><code>{}</code></td></tr><tr><th>input</th><td>{}</td></tr><tr><th>output</th><td>{}</td></tr><tr><th>classes audited</th><td>{} of {}</td></tr><tr><th>budget</th><td>{:.0} s, {} seed(s) per method</td></tr><tr><th>tool</th><td>{}</td></tr></table>",
        esc(&r.model.name),
        esc(&r.model.manifest),
        esc(&r.model.sha256),
        esc(&r.model.input),
        esc(&r.model.output),
        r.cells.len(),
        r.model.classes,
        r.budget_s,
        r.seeds,
        esc(&r.tool)
    );
    h.push_str("<h2>Methods</h2><table id=\"methods\"><tr><th>method</th><th>seeds</th><th>median best</th><th>lowest best</th><th>classes ≥ 50%</th><th>≥ 99%</th><th>≥ 99.99%</th><th>evaluations until every class ≥ 50% (median)</th><th>≥ 99%</th><th>≥ 99.99%</th><th>PNG keeps ≥ 99%</th><th>largest PNG drop</th></tr>\n");
    for m in &r.methods {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} of {}</td><td>{}</td></tr>",
            esc(m.method.title()),
            m.seeds,
            opt_pct(m.median_best),
            opt_pct(m.min_best),
            m.classes_at[0],
            m.classes_at[1],
            m.classes_at[2],
            opt_count(m.median_all[0]),
            opt_count(m.median_all[1]),
            opt_count(m.median_all[2]),
            m.png_kept_99.0,
            m.png_kept_99.1,
            opt_pct(m.png_max_drop)
        );
    }
    for k in &r.skipped {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td colspan=\"11\" style=\"text-align:left\">not run: {}</td></tr>",
            esc(k.method.title()),
            esc(&k.reason)
        );
    }
    h.push_str("</table><p>Evaluations are forward-pass equivalents of the whole run (all classes together); a gradient step counts one forward and one backward pass per image, the backward as two forward passes.</p>\n");
    h.push_str("<h2>Parts</h2><table id=\"parts\"><tr><th>part</th><th>generations</th><th>evaluations</th><th>seconds</th><th>first class ≥ 99.99%</th><th>half ≥ 99.99%</th><th>all ≥ 99.99%</th><th>run folder</th></tr>\n");
    for p in &r.parts {
        let reach = &p.reach[2];
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            esc(&p.part.name()),
            p.generations,
            p.forward_equivalents,
            p.wall_time_s,
            opt_count(reach.first_class.map(|v| v as f64)),
            opt_count(reach.half.map(|v| v as f64)),
            opt_count(reach.all.map(|v| v as f64)),
            esc(&p.dir)
        );
    }
    h.push_str("</table>\n<h2>Curves</h2><div class=\"curves\">");
    for t in 0..THRESHOLDS.len() {
        h.push_str(&curve_svg(&r.parts, t, r.cells.len()));
    }
    h.push_str("</div>\n<h2>Per class (best over seeds; run / PNG)</h2><table id=\"classes\"><tr><th>class</th>");
    for m in &r.methods {
        let _ = write!(h, "<th>{}</th>", esc(m.method.name()));
    }
    h.push_str("</tr>\n");
    for (i, &class) in r.cells.iter().enumerate() {
        let _ = write!(
            h,
            "<tr><td>{class} {}</td>",
            esc(labels.get(class).map_or("", String::as_str))
        );
        for m in &r.methods {
            let _ = write!(
                h,
                "<td>{} / {}</td>",
                opt_pct(m.best.get(i).copied().flatten()),
                opt_pct(m.best_png.get(i).copied().flatten())
            );
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</table>\n<h2>Montages (best champion per class, as its PNG)</h2>\n");
    for (m, png) in montages {
        let _ = writeln!(
            h,
            "<h3>{}</h3><img class=\"montage\" alt=\"{} montage\" src=\"data:image/png;base64,{}\">",
            esc(m.title()),
            esc(m.name()),
            base64(png)
        );
    }
    h.push_str("<h2>OOD detectors</h2>\n");
    match &r.ood {
        Some(o) => {
            let _ = write!(
                h,
                "<p>Held-out data: {} — {} images, top-1 accuracy {}. Thresholds at 95% true-positive rate on them; a fooling image at or above the threshold passes as in-distribution ({} fooling images).</p><table id=\"ood\"><tr><th>detector</th><th>threshold</th><th>TPR</th><th>fooling images passed</th>",
                esc(&o.data),
                o.images,
                pct(o.accuracy),
                o.fooling_images
            );
            for m in &r.methods {
                let _ = write!(h, "<th>{}</th>", esc(m.method.name()));
            }
            h.push_str("</tr>\n");
            for d in &o.detectors {
                if !d.available {
                    let _ = writeln!(
                        h,
                        "<tr><td>{}</td><td colspan=\"{}\" style=\"text-align:left\">not available: {}</td></tr>",
                        esc(&d.detector),
                        3 + r.methods.len(),
                        esc(d.unavailable_because.as_deref().unwrap_or(""))
                    );
                    continue;
                }
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{:.4}</td><td>{}</td><td>{}</td>",
                    esc(&d.detector),
                    d.threshold.unwrap_or(f64::NAN),
                    opt_pct(d.tpr),
                    opt_pct(d.fooling_passed)
                );
                for m in &r.methods {
                    let v = d
                        .fooling_passed_by_method
                        .iter()
                        .find(|(name, _)| name == m.method.name())
                        .map(|(_, v)| *v);
                    let _ = write!(h, "<td>{}</td>", opt_pct(v));
                }
                h.push_str("</tr>\n");
            }
            h.push_str("</table>\n");
        }
        None => {
            let _ = writeln!(
                h,
                "<p id=\"ood\">{}</p>",
                esc(r.ood_missing.as_deref().unwrap_or(""))
            );
        }
    }
    h.push_str("<h2>Transfer to other models</h2>\n");
    if r.transfer.is_empty() {
        h.push_str("<p>No reference model (none given with --reference, no shipped model with the same labels).</p>\n");
    } else {
        h.push_str("<table id=\"transfer\"><tr><th>model</th><th>origin</th><th>method</th><th>images</th><th>≥ 50%</th><th>≥ 99%</th><th>≥ 99.99%</th><th>median</th></tr>\n");
        for t in &r.transfer {
            for m in &t.by_method {
                let _ = writeln!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&t.model),
                    esc(&t.origin),
                    esc(m.method.name()),
                    m.images,
                    pct(m.share_at[0]),
                    pct(m.share_at[1]),
                    pct(m.share_at[2]),
                    opt_pct(m.median)
                );
            }
        }
        h.push_str("</table>\n");
    }
    for n in &r.transfer_notes {
        let _ = writeln!(h, "<p>{}</p>", esc(n));
    }
    let _ = writeln!(
        h,
        "<h2>Files</h2><p><code>audit.json</code> (every figure), <code>fooling-set/</code> ({} PNG files in one folder per class, <code>fooling-set/index.csv</code>: an ImageFolder layout), <code>parts/</code> (one ordinary run folder per part: <code>pareidolia resume</code>, <code>export</code> and <code>transfer</code> take them).</p><h2>Commands</h2><pre>{}</pre></body></html>",
        r.fooling_set.len(),
        esc(&r.commands.join("\n"))
    );
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_examples() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn the_transfer_sentence_names_a_best_method_only_above_zero() {
        let row = |model: &str, shares: [[f64; 3]; 2]| TransferResult {
            model: model.into(),
            manifest: String::new(),
            origin: String::new(),
            class_map: None,
            by_method: [Method::Direct, Method::Cppn]
                .into_iter()
                .zip(shares)
                .map(|(method, share)| TransferMethod {
                    method,
                    images: 10,
                    share_at: share.to_vec(),
                    median: None,
                })
                .collect(),
        };
        assert_eq!(transfer_sentence(&[]), None);
        let some = transfer_sentence(&[row("b", [[0.5, 0.2, 0.0], [0.9, 0.4, 0.1]])]).unwrap();
        assert!(
            some.contains("cppn's: 40.0% of them stay at ≥ 99% on b"),
            "{some}"
        );
        let half = transfer_sentence(&[row("b", [[0.0; 3], [0.023, 0.0, 0.0]])]).unwrap();
        assert!(
            half.contains("no champion stays at ≥ 99%") && half.contains("cppn's: 2.3% on b"),
            "{half}"
        );
        let none = transfer_sentence(&[row("b", [[0.0; 3]; 2]), row("c", [[0.0; 3]; 2])]).unwrap();
        assert_eq!(none, "Transfer: no champion reaches 50% on b, c.");
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(esc("<a & \"b\">"), "&lt;a &amp; &quot;b&quot;&gt;");
    }

    fn part(method: Method, curve: Vec<(u64, u64)>) -> PartResult {
        PartResult {
            part: Part {
                method,
                seed: 1,
                generations: 3,
            },
            dir: "parts/x".into(),
            generations: 3,
            evaluations: 800,
            forward_equivalents: 800,
            wall_time_s: 1.0,
            classes: Vec::new(),
            reach: Vec::new(),
            curves: vec![curve.clone(), curve.clone(), curve],
        }
    }

    #[test]
    fn curves_are_svg_paths_per_part() {
        let parts = [
            part(Method::Direct, vec![(200, 0), (600, 2), (800, 10)]),
            part(Method::Ascent, vec![(30, 1), (90, 10)]),
        ];
        let svg = curve_svg(&parts, 2, 10);
        assert!(svg.starts_with("<svg"));
        assert!(svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<path").count(), 2);
        assert!(svg.contains("99.99%"));
        assert!(svg.contains("1e1") && svg.contains("1e3"), "{svg}");
    }
}
