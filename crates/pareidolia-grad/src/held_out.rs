//! Labelled images to measure a model on (`classify --data`, `audit --data`): a folder with an
//! IDX pair (its held-out `t10k-*` pair, else its `train-*` pair, gzipped or not, as
//! [`LabelledImages`] reads them) or one folder of PNG files per class, each named by class
//! index or by label. Every image must be the model's input size (PNGs are converted to its
//! channel count) and every label one of its classes; each refusal says which file and what
//! to give instead.

use std::path::{Path, PathBuf};

use pareidolia_core::image_io::read_png;
use pareidolia_eval::Model;

use crate::LabelledImages;

/// What the two layouts name: the IDX pair and the class folders.
const LAYOUTS: &str = "an IDX pair (t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz], or train-*) or one folder of PNG files per class";

/// Labelled images read from a `--data` folder.
#[derive(Debug, Clone)]
pub struct HeldOut {
    /// What was read, for reports: the file or folder and the image count.
    pub what: String,
    /// Images back to back at the model's input size and channels.
    pub pixels: Vec<u8>,
    /// One class per image.
    pub labels: Vec<usize>,
    /// How the set was laid out.
    pub layout: HeldOutLayout,
}

/// How a [`HeldOut`] set was laid out on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeldOutLayout {
    /// An IDX pair.
    Idx,
    /// One folder of PNGs per class; how many folders.
    Folders(usize),
}

impl HeldOut {
    /// How many classes the set's labels span: the largest label plus one (0 when empty).
    pub fn label_span(&self) -> usize {
        self.labels.iter().max().map_or(0, |m| m + 1)
    }
}

/// The IDX pair of `split` (`t10k` or `train`) in `dir`, if both files are there.
fn idx_pair(dir: &Path, split: &str) -> Option<(PathBuf, PathBuf)> {
    let find = |kind: &str, ranks: &[&str]| {
        ranks.iter().find_map(|rank| {
            [".gz", ""].iter().find_map(|ext| {
                let p = dir.join(format!("{split}-{kind}-{rank}-ubyte{ext}"));
                p.is_file().then_some(p)
            })
        })
    };
    Some((
        find("images", &["idx3", "idx4"])?,
        find("labels", &["idx1"])?,
    ))
}

/// Up to ten labels, then how many there are.
fn abbreviated(labels: &[String]) -> String {
    let mut text = labels
        .iter()
        .take(10)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if labels.len() > 10 {
        text.push_str(&format!(", ... ({} in all)", labels.len()));
    }
    text
}

/// Reads `dir` (see the module docs) for `model`.
pub fn read_held_out(dir: &Path, model: &Model) -> Result<HeldOut, String> {
    let input = &model.manifest.input;
    let classes = model.classes();
    let name = model.name();
    if !dir.is_dir() {
        return Err(format!(
            "--data {} is not a folder; give a folder with {LAYOUTS}",
            dir.display()
        ));
    }
    if let Some((images, labels)) = idx_pair(dir, "t10k").or_else(|| idx_pair(dir, "train")) {
        let set = LabelledImages::read(&images, &labels).map_err(|e| e.to_string())?;
        if (set.width, set.height, set.channels) != (input.width, input.height, input.channels) {
            return Err(format!(
                "--data {} holds {} images, but model {name} takes {}x{}x{}; give images of the model's input size",
                images.display(),
                set.shape_text(),
                input.width,
                input.height,
                input.channels
            ));
        }
        let labels: Vec<usize> = set.labels().iter().map(|&l| usize::from(l)).collect();
        if let Some((i, l)) = labels.iter().enumerate().find(|(_, l)| **l >= classes) {
            let span = labels.iter().max().map_or(0, |m| m + 1);
            return Err(format!(
                "--data {}: image {i} has label {l}; its labels run from 0 to {} ({span} classes), but model {name} has {classes} labels (0 to {}); give data labelled with the model's classes",
                set.labels_path.display(),
                span - 1,
                classes - 1
            ));
        }
        return Ok(HeldOut {
            what: format!("{} ({} images)", images.display(), set.len()),
            pixels: set.pixels().to_vec(),
            labels,
            layout: HeldOutLayout::Idx,
        });
    }
    let mut folders: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read --data folder {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    folders.sort();
    if folders.is_empty() {
        return Err(format!(
            "--data {} holds neither an IDX pair (t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz], or train-*) nor class folders of PNG files",
            dir.display()
        ));
    }
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for folder in &folders {
        let folder_name = folder
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let class = match folder_name.parse::<usize>() {
            Ok(c) if c < classes => c,
            _ => model
                .labels
                .iter()
                .position(|l| *l == folder_name)
                .ok_or_else(|| {
                    format!(
                        "--data folder {} is neither a class index below {classes} nor a label of model {name} (labels: {}); name each class folder by index or label",
                        folder.display(),
                        abbreviated(&model.labels)
                    )
                })?,
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(folder)
            .map_err(|e| format!("cannot read {}: {e}", folder.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")))
            .collect();
        files.sort();
        for file in files {
            let image = read_png(&file)
                .map_err(|e| format!("{}: {e}", file.display()))?
                .to_channels(input.channels);
            if (image.width, image.height) != (input.width, input.height) {
                return Err(format!(
                    "--data image {} is {}x{} pixels, but model {name} takes {}x{}; give images of the model's input size",
                    file.display(),
                    image.width,
                    image.height,
                    input.width,
                    input.height
                ));
            }
            pixels.extend_from_slice(&image.pixels);
            labels.push(class);
        }
    }
    if labels.is_empty() {
        return Err(format!(
            "--data {}: its class folders hold no PNG files",
            dir.display()
        ));
    }
    Ok(HeldOut {
        what: format!(
            "{} ({} images in {} class folders)",
            dir.display(),
            labels.len(),
            folders.len()
        ),
        pixels,
        labels,
        layout: HeldOutLayout::Folders(folders.len()),
    })
}
