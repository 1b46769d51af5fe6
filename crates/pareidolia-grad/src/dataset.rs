//! Labelled image sets in IDX, the format MNIST and Fashion-MNIST ship in, for training a
//! classifier (`--train-data`): a folder with `train-images-idx3-ubyte.gz` and
//! `train-labels-idx1-ubyte.gz` (gzipped or not) and, optionally, the held-out
//! `t10k-images-idx3-ubyte.gz` / `t10k-labels-idx1-ubyte.gz`. `data/mnist-5k/` in the
//! repository is one; Debian's `dataset-fashion-mnist` installs another in
//! `/usr/share/datasets/fashion-mnist/`.
//!
//! IDX is a big-endian header (two zero bytes, the element type, the rank, then each dimension
//! as a `u32`) followed by the elements row-major. Images are rank 3 (`N x H x W`, gray) or rank
//! 4 (`N x H x W x C`, channels interleaved, C = 1 or 3); labels are rank 1. Only unsigned bytes
//! (type `0x08`) are read: that is what image sets use, and it is the 8-bit form every encoding
//! renders, so one image's bytes go to [`pareidolia_eval::Preprocessor`] as they are. Whether a file is
//! gzipped is decided by its first two bytes, not by its name.
//!
//! Reading checks the files on their own (magic, type, rank, length, image and label counts);
//! [`TrainingData::check_for`] checks them against a model: image size and channels equal to its
//! input, labels below its class count, no class without a training image. Each failure is an
//! [`EvalError::Dataset`] naming the file and a [`DatasetProblem`].

use std::io::Read;
use std::path::{Path, PathBuf};

use pareidolia_eval::{DatasetProblem, EvalError, InputSpec};

/// Images with one label each, read from an IDX pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelledImages {
    /// The images file (for messages).
    pub images_path: PathBuf,
    /// The labels file (for messages).
    pub labels_path: PathBuf,
    /// Rows per image.
    pub height: u32,
    /// Columns per image.
    pub width: u32,
    /// Channels per pixel (1 gray, 3 RGB), interleaved.
    pub channels: u32,
    pixels: Vec<u8>,
    labels: Vec<u8>,
}

impl LabelledImages {
    /// Reads an images file and its labels file (each IDX, gzipped or not) and checks that
    /// they agree.
    pub fn read(images_path: &Path, labels_path: &Path) -> Result<Self, EvalError> {
        let fail = |path: &Path, problem| EvalError::Dataset {
            path: path.to_owned(),
            problem,
        };
        let (dims, pixels) = read_idx(images_path, "training or held-out images")?;
        let (height, width, channels) = match dims[..] {
            [_, h, w] => (h, w, 1),
            [_, h, w, c] => (h, w, c),
            _ => {
                return Err(fail(
                    images_path,
                    DatasetProblem::Rank {
                        found: dims.len() as u8,
                        expected: "an images file has rank 3 (N x H x W) or 4 (N x H x W x C)",
                    },
                ));
            }
        };
        if height == 0 || width == 0 || !(channels == 1 || channels == 3) {
            return Err(fail(
                images_path,
                DatasetProblem::ImageShape {
                    height,
                    width,
                    channels,
                },
            ));
        }
        if dims[0] == 0 {
            return Err(fail(images_path, DatasetProblem::Empty));
        }
        let (ldims, labels) = read_idx(labels_path, "labels")?;
        if ldims.len() != 1 {
            return Err(fail(
                labels_path,
                DatasetProblem::Rank {
                    found: ldims.len() as u8,
                    expected: "a labels file has rank 1 (one label per image)",
                },
            ));
        }
        if labels.len() != dims[0] as usize {
            return Err(fail(
                images_path,
                DatasetProblem::CountMismatch {
                    images: dims[0] as usize,
                    labels: labels.len(),
                    labels_file: labels_path.to_owned(),
                },
            ));
        }
        Ok(Self {
            images_path: images_path.to_owned(),
            labels_path: labels_path.to_owned(),
            height,
            width,
            channels,
            pixels,
            labels,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no images (never, for a set that was read).
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Bytes per image (`height * width * channels`).
    pub fn image_len(&self) -> usize {
        (self.height * self.width * self.channels) as usize
    }

    /// Image `i`: row-major, channels interleaved, as [`pareidolia_eval::PreparedModel::infer`] and
    /// [`pareidolia_eval::Preprocessor`] take it.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.pixels[i * n..(i + 1) * n]
    }

    /// Every image back to back.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// Every label, in image order.
    pub fn labels(&self) -> &[u8] {
        &self.labels
    }

    /// Images per label, for labels `0..classes` (labels beyond are not counted).
    pub fn class_counts(&self, classes: usize) -> Vec<usize> {
        let mut counts = vec![0; classes];
        for &l in &self.labels {
            if let Some(c) = counts.get_mut(l as usize) {
                *c += 1;
            }
        }
        counts
    }

    /// `WxHxC`, for messages.
    pub fn shape_text(&self) -> String {
        format!("{}x{}x{}", self.width, self.height, self.channels)
    }

    /// Checks image size and labels against a model's input and classes.
    fn check_for(
        &self,
        input: &InputSpec,
        labels: &[String],
        model: &str,
    ) -> Result<(), EvalError> {
        let fail = |problem| EvalError::Dataset {
            path: self.images_path.clone(),
            problem,
        };
        if (self.width, self.height, self.channels) != (input.width, input.height, input.channels) {
            return Err(fail(DatasetProblem::ImageSize {
                found: self.shape_text(),
                expected: format!("{}x{}x{}", input.width, input.height, input.channels),
                model: model.to_owned(),
            }));
        }
        let classes = labels.len();
        let mut bad = self
            .labels
            .iter()
            .enumerate()
            .filter(|&(_, &l)| l as usize >= classes);
        if let Some((index, &label)) = bad.next() {
            return Err(EvalError::Dataset {
                path: self.labels_path.clone(),
                problem: DatasetProblem::LabelOutOfRange {
                    label,
                    index,
                    count: 1 + bad.count(),
                    classes,
                    max: classes.saturating_sub(1),
                    model: model.to_owned(),
                },
            });
        }
        Ok(())
    }
}

/// A training set and, where the folder has one, a held-out set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainingData {
    /// The folder it was read from.
    pub dir: PathBuf,
    /// `train-*`.
    pub train: LabelledImages,
    /// `t10k-*`, when present (both files, or neither).
    pub held_out: Option<LabelledImages>,
}

/// The names an IDX file of a set may have, gzipped first: MNIST's own, its `.`-spelled mirror
/// names, and the rank-4 form.
fn candidates(split: &str, kind: &str) -> Vec<String> {
    let ranks: &[&str] = if kind == "images" {
        &["idx3", "idx4"]
    } else {
        &["idx1"]
    };
    let mut names = Vec::new();
    for ext in [".gz", ""] {
        for rank in ranks {
            names.push(format!("{split}-{kind}-{rank}-ubyte{ext}"));
            names.push(format!("{split}-{kind}.{rank}-ubyte{ext}"));
        }
    }
    names
}

fn find(dir: &Path, split: &str, kind: &str) -> Result<PathBuf, Vec<String>> {
    let names = candidates(split, kind);
    names
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
        .ok_or(names)
}

impl TrainingData {
    /// Reads `train-images-idx3-ubyte[.gz]` and `train-labels-idx1-ubyte[.gz]` from `dir`, and
    /// the `t10k-*` pair when there is one.
    pub fn open(dir: &Path) -> Result<Self, EvalError> {
        let missing = |what, looked: Vec<String>| EvalError::Dataset {
            path: dir.to_owned(),
            problem: DatasetProblem::Missing {
                what,
                looked: looked.join(", "),
            },
        };
        if !dir.is_dir() {
            return Err(EvalError::Read {
                what: "training data folder",
                path: dir.to_owned(),
                cause: std::fs::metadata(dir).err().unwrap_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a folder")
                }),
            });
        }
        let images = find(dir, "train", "images").map_err(|l| missing("training images", l))?;
        let labels = find(dir, "train", "labels").map_err(|l| missing("training labels", l))?;
        let train = LabelledImages::read(&images, &labels)?;
        let held_out = match (find(dir, "t10k", "images"), find(dir, "t10k", "labels")) {
            (Ok(images), Ok(labels)) => Some(LabelledImages::read(&images, &labels)?),
            (Err(_), Err(_)) => None,
            (Ok(_), Err(looked)) => return Err(missing("held-out labels", looked)),
            (Err(looked), Ok(_)) => return Err(missing("held-out images", looked)),
        };
        if let Some(h) = &held_out
            && (h.width, h.height, h.channels) != (train.width, train.height, train.channels)
        {
            return Err(EvalError::Dataset {
                path: h.images_path.clone(),
                problem: DatasetProblem::SplitMismatch {
                    found: h.shape_text(),
                    expected: train.shape_text(),
                    train: train.images_path.clone(),
                },
            });
        }
        Ok(Self {
            dir: dir.to_owned(),
            train,
            held_out,
        })
    }

    /// Checks the set against a model's input and labels (one class per label): images of
    /// the input's size and channels, labels below the class count, and at least one training
    /// image of every class.
    pub fn check_for(
        &self,
        input: &InputSpec,
        labels: &[String],
        model: &str,
    ) -> Result<(), EvalError> {
        self.train.check_for(input, labels, model)?;
        if let Some(h) = &self.held_out {
            h.check_for(input, labels, model)?;
        }
        let empty: Vec<String> = self
            .train
            .class_counts(labels.len())
            .iter()
            .enumerate()
            .filter(|&(_, &n)| n == 0)
            .map(|(c, _)| format!("{c} ({})", labels[c]))
            .collect();
        if !empty.is_empty() {
            return Err(EvalError::Dataset {
                path: self.train.labels_path.clone(),
                problem: DatasetProblem::EmptyClass {
                    classes: empty.join(", "),
                    model: model.to_owned(),
                },
            });
        }
        Ok(())
    }
}

/// Reads one IDX file of unsigned bytes: its dimensions and its data.
fn read_idx(path: &Path, what: &'static str) -> Result<(Vec<u32>, Vec<u8>), EvalError> {
    let raw = std::fs::read(path).map_err(|cause| EvalError::Read {
        what,
        path: path.to_owned(),
        cause,
    })?;
    parse_idx(&raw).map_err(|problem| EvalError::Dataset {
        path: path.to_owned(),
        problem,
    })
}

/// Parses IDX bytes, gunzipping them first when they start with gzip's magic.
fn parse_idx(raw: &[u8]) -> Result<(Vec<u32>, Vec<u8>), DatasetProblem> {
    let mut bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(raw)
            .read_to_end(&mut out)
            .map_err(|e| DatasetProblem::Gzip(e.to_string()))?;
        out
    } else {
        raw.to_vec()
    };
    let hex = |b: &[u8]| {
        b.iter()
            .take(4)
            .map(|x| format!("{x:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 || bytes[3] == 0 {
        return Err(DatasetProblem::NotIdx { found: hex(&bytes) });
    }
    if bytes[2] != 0x08 {
        return Err(DatasetProblem::ElementType(bytes[2]));
    }
    let rank = bytes[3] as usize;
    let header = 4 + 4 * rank;
    if bytes.len() < header {
        return Err(DatasetProblem::Truncated {
            dims: Vec::new(),
            expected: 0,
            found: 0,
        });
    }
    let dims: Vec<u32> = bytes[4..header]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    // At most 4 dimensions of u32 each multiply to under 2^128; u128 never overflows.
    let expected: u128 = dims.iter().map(|&d| d as u128).product();
    let found = (bytes.len() - header) as u128;
    if found < expected {
        return Err(DatasetProblem::Truncated {
            dims,
            expected: expected.min(u64::MAX as u128) as u64,
            found: found as u64,
        });
    }
    if found > expected {
        return Err(DatasetProblem::TrailingBytes {
            dims,
            expected: expected as u64,
            extra: (found - expected) as u64,
        });
    }
    bytes.drain(..header);
    Ok((dims, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pareidolia_eval::{Backend, Model, ModelRef, TractBackend};

    fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut out = vec![0, 0, 0x08, dims.len() as u8];
        for d in dims {
            out.extend(d.to_be_bytes());
        }
        out.extend(data);
        out
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    fn repo() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    /// A fresh folder per test.
    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("pareidolia-dataset-{name}-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A folder with a training pair of `n` 2x3 gray images labelled `labels`.
    fn set(name: &str, labels: &[u8]) -> PathBuf {
        let dir = scratch(name);
        let n = labels.len() as u32;
        let pixels: Vec<u8> = (0..n * 6).map(|i| i as u8).collect();
        std::fs::write(
            dir.join("train-images-idx3-ubyte.gz"),
            gz(&idx(&[n, 2, 3], &pixels)),
        )
        .unwrap();
        std::fs::write(dir.join("train-labels-idx1-ubyte"), idx(&[n], labels)).unwrap();
        dir
    }

    fn lenet() -> Model {
        Model::load(&ModelRef::Path(
            repo().join("models/lenet-mnist/manifest.toml"),
        ))
        .unwrap()
    }

    fn problem(e: EvalError) -> DatasetProblem {
        match e {
            EvalError::Dataset { problem, .. } => problem,
            other => panic!("not a data set error: {other}"),
        }
    }

    #[test]
    fn the_shipped_split_is_what_lenet_was_measured_on() {
        let data = TrainingData::open(&repo().join("data/mnist-5k")).unwrap();
        let held_out = data.held_out.as_ref().unwrap();
        assert_eq!((data.train.len(), held_out.len()), (4000, 1000));
        assert_eq!(data.train.class_counts(10), vec![400; 10]);
        assert_eq!(held_out.class_counts(10), vec![100; 10]);
        let model = lenet();
        data.check_for(&model.manifest.input, &model.labels, model.name())
            .unwrap();
        // The held-out digit 100 is the shipped sample 100_1.png, pixel for pixel.
        let sample = pareidolia_core::image_io::read_png(
            &repo().join("models/lenet-mnist/samples/100_1.png"),
        )
        .unwrap();
        assert_eq!(held_out.image(100), &sample.pixels[..]);
        // tract on these files gives the held-out accuracy of models/lenet-mnist/metrics.json.
        let mut prepared = TractBackend.prepare(&model).unwrap();
        let logits = prepared.infer(held_out.pixels(), held_out.len()).unwrap();
        let correct = logits
            .chunks(10)
            .zip(held_out.labels())
            .filter(|(l, y)| {
                let best = (0..10).max_by(|&a, &b| l[a].total_cmp(&l[b])).unwrap();
                best == **y as usize
            })
            .count();
        assert_eq!(correct, 978, "metrics.json: held_out_accuracy 0.978");
    }

    #[test]
    fn fashion_mnist_from_debian_reads_and_fits_a_28x28_ten_class_model() {
        // Debian's dataset-fashion-mnist (.ci/run installs it).
        let data = TrainingData::open(Path::new("/usr/share/datasets/fashion-mnist")).unwrap();
        let held_out = data.held_out.as_ref().unwrap();
        assert_eq!((data.train.len(), held_out.len()), (60000, 10000));
        assert_eq!(data.train.class_counts(10), vec![6000; 10]);
        assert_eq!(held_out.class_counts(10), vec![1000; 10]);
        assert_eq!(data.train.shape_text(), "28x28x1");
        let model = lenet();
        data.check_for(&model.manifest.input, &model.labels, model.name())
            .unwrap();
        // Against a 227x227 RGB model it is refused by size.
        let alex = Model::load(&ModelRef::Path(
            repo().join("models/alexnet-light/manifest.toml"),
        ))
        .unwrap();
        let e = data
            .check_for(&alex.manifest.input, &alex.labels, alex.name())
            .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("train-images-idx3-ubyte.gz")
                && text.contains("28x28x1 images but model alexnet-light takes 227x227x3"),
            "{text}"
        );
    }

    #[test]
    fn labels_beyond_the_models_classes_are_refused_with_the_first_one() {
        let dir = set("range", &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 10]);
        let data = TrainingData::open(&dir).unwrap();
        let mut input = lenet().manifest.input;
        (input.height, input.width) = (2, 3);
        let labels: Vec<String> = (0..10).map(|c| c.to_string()).collect();
        let e = data.check_for(&input, &labels, "m").unwrap_err();
        assert!(e.to_string().contains("train-labels-idx1-ubyte"), "{e}");
        assert_eq!(
            problem(e),
            DatasetProblem::LabelOutOfRange {
                label: 12,
                index: 10,
                count: 2,
                classes: 10,
                max: 9,
                model: "m".into()
            }
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_class_without_training_images_is_refused_by_name() {
        let dir = set("empty", &[0, 1, 1, 3, 0]);
        let data = TrainingData::open(&dir).unwrap();
        let mut input = lenet().manifest.input;
        (input.height, input.width) = (2, 3);
        let labels: Vec<String> = ["zero", "one", "two", "three", "four"]
            .map(String::from)
            .into();
        let e = data
            .check_for(&input, &labels, "m")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no training image of class 2 (two), 4 (four) of model m"),
            "{e}"
        );
        // Against the 28x28 LeNet the 2x3 images are refused first, by size.
        let model = lenet();
        let e = data
            .check_for(&model.manifest.input, &model.labels, model.name())
            .unwrap_err();
        assert!(matches!(problem(e), DatasetProblem::ImageSize { .. }));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn truncated_garbled_and_mismatched_files_each_say_what_is_wrong() {
        let good = idx(&[2, 2, 3], &[7; 12]);
        type Expect = fn(&DatasetProblem) -> bool;
        let cases: Vec<(&str, Vec<u8>, Expect)> = vec![
            ("cut data", good[..good.len() - 5].to_vec(), |p| {
                matches!(
                    p,
                    DatasetProblem::Truncated {
                        expected: 12,
                        found: 7,
                        ..
                    }
                )
            }),
            ("cut header", good[..9].to_vec(), |p| {
                matches!(p, DatasetProblem::Truncated { .. })
            }),
            ("extra bytes", [&good[..], &[1, 2]].concat(), |p| {
                matches!(p, DatasetProblem::TrailingBytes { extra: 2, .. })
            }),
            (
                "a PNG",
                b"\x89PNG\r\n\x1a\n....".to_vec(),
                |p| matches!(p, DatasetProblem::NotIdx { found } if found == "89 50 4e 47"),
            ),
            ("empty file", Vec::new(), |p| {
                matches!(p, DatasetProblem::NotIdx { .. })
            }),
            ("floats", [&[0, 0, 0x0d, 3][..], &good[4..]].concat(), |p| {
                *p == DatasetProblem::ElementType(0x0d)
            }),
            ("cut gzip", gz(&good)[..20].to_vec(), |p| {
                matches!(p, DatasetProblem::Gzip(_))
            }),
            ("rank 2", idx(&[2, 6], &[7; 12]), |p| {
                matches!(p, DatasetProblem::Rank { found: 2, .. })
            }),
            ("2 channels", idx(&[1, 2, 3, 2], &[7; 12]), |p| {
                matches!(p, DatasetProblem::ImageShape { channels: 2, .. })
            }),
            ("no images", idx(&[0, 28, 28], &[]), |p| {
                *p == DatasetProblem::Empty
            }),
        ];
        let dir = scratch("garbled");
        let labels = dir.join("labels");
        std::fs::write(&labels, idx(&[2], &[0, 1])).unwrap();
        for (name, bytes, expected) in cases {
            let images = dir.join("images");
            std::fs::write(&images, &bytes).unwrap();
            let e = LabelledImages::read(&images, &labels).expect_err(name);
            let text = e.to_string();
            assert!(
                text.contains(&images.display().to_string()),
                "{name}: {text}"
            );
            let p = problem(e);
            assert!(expected(&p), "{name}: {p:?}");
        }
        // Three labels for two images; a labels file of rank 2.
        let images = dir.join("images");
        std::fs::write(&images, &good).unwrap();
        std::fs::write(&labels, idx(&[3], &[0, 1, 2])).unwrap();
        let e = LabelledImages::read(&images, &labels)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("holds 2 images but its labels file") && e.contains("3 labels"),
            "{e}"
        );
        std::fs::write(&labels, idx(&[1, 2], &[0, 1])).unwrap();
        let e = problem(LabelledImages::read(&images, &labels).unwrap_err());
        assert!(matches!(e, DatasetProblem::Rank { found: 2, .. }), "{e:?}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_folder_without_its_files_names_what_it_looked_for() {
        let dir = scratch("missing");
        let e = TrainingData::open(&dir).unwrap_err().to_string();
        assert!(
            e.contains("has no training images") && e.contains("train-images-idx3-ubyte.gz"),
            "{e}"
        );
        let dir2 = set("halfheld", &[0, 1]);
        std::fs::copy(
            dir2.join("train-images-idx3-ubyte.gz"),
            dir2.join("t10k-images-idx3-ubyte.gz"),
        )
        .unwrap();
        let e = TrainingData::open(&dir2).unwrap_err().to_string();
        assert!(
            e.contains("has no held-out labels") && e.contains("t10k-labels-idx1-ubyte"),
            "{e}"
        );
        // Held-out images of 3x2 beside training images of 2x3.
        std::fs::write(
            dir2.join("t10k-images-idx3-ubyte.gz"),
            gz(&idx(&[2, 3, 2], &[0; 12])),
        )
        .unwrap();
        std::fs::write(
            dir2.join("t10k-labels-idx1-ubyte.gz"),
            gz(&idx(&[2], &[0, 1])),
        )
        .unwrap();
        let e = TrainingData::open(&dir2).unwrap_err().to_string();
        assert!(
            e.contains("t10k-images-idx3-ubyte.gz holds 2x3x1 images but the training images")
                && e.contains("are 3x2x1"),
            "{e}"
        );
        let e = TrainingData::open(&dir.join("nope"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read training data folder"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
        std::fs::remove_dir_all(&dir2).ok();
    }
}
