//! A loaded model: manifest, ONNX bytes (checked against the manifest's sha256) and labels.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::{EvalError, Manifest, OutputKind, builtin};

/// Where a model comes from: a manifest on disk, or one built into the binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelRef {
    /// `manifest.toml` on disk.
    Path(PathBuf),
    /// A model embedded in the binary, by name (e.g. `lenet-mnist`).
    Builtin(String),
}

impl ModelRef {
    /// Reads a config value: `builtin:NAME` or a path (relative paths resolved against `base`).
    pub fn parse(value: &str, base: &Path) -> Self {
        match value.strip_prefix("builtin:") {
            Some(name) => ModelRef::Builtin(name.to_owned()),
            None => ModelRef::Path(base.join(value)),
        }
    }
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelRef::Path(p) => write!(f, "{}", p.display()),
            ModelRef::Builtin(n) => write!(f, "builtin:{n}"),
        }
    }
}

/// A model whose files are read and verified.
#[derive(Debug, Clone)]
pub struct Model {
    /// The manifest.
    pub manifest: Manifest,
    /// The ONNX file's bytes.
    pub onnx: Arc<[u8]>,
    /// Where the ONNX file came from (for messages).
    pub onnx_path: PathBuf,
    /// sha256 of the ONNX bytes (hex), equal to the manifest's.
    pub sha256: String,
    /// One label per class.
    pub labels: Vec<String>,
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, EvalError> {
    std::fs::read(path).map_err(|source| EvalError::Read {
        what,
        path: path.to_owned(),
        cause: source,
    })
}

/// Hex sha256 of some bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Model {
    /// Loads and verifies a model.
    pub fn load(model: &ModelRef) -> Result<Self, EvalError> {
        match model {
            ModelRef::Builtin(name) => {
                let b = builtin::find(name)?;
                let origin = PathBuf::from(format!("builtin:{name}/manifest.toml"));
                let manifest = Manifest::parse(b.manifest, &origin)?;
                Self::assemble(
                    manifest,
                    b.onnx.to_vec(),
                    origin.with_file_name(b.onnx_name),
                    b.labels,
                )
            }
            ModelRef::Path(path) => {
                let text = read("model manifest", path)?;
                let text = String::from_utf8(text).map_err(|_| EvalError::Manifest {
                    path: path.clone(),
                    message: "not UTF-8 text".into(),
                })?;
                let manifest = Manifest::parse(&text, path)?;
                let dir = path.parent().unwrap_or(Path::new("."));
                let onnx_path = dir.join(&manifest.onnx);
                let onnx = read("ONNX model", &onnx_path)?;
                let labels_path = dir.join(&manifest.labels);
                let labels = read("labels file", &labels_path)?;
                let labels = String::from_utf8_lossy(&labels).into_owned();
                Self::assemble(manifest, onnx, onnx_path, &labels)
            }
        }
    }

    /// A small one-channel model held in memory, for tests and examples: `onnx` reads an
    /// input `x` (`NCHW`, gray, `width` x `height`, pixels scaled to `0..=range_max`, mean 0,
    /// std 1) and gives `output` over one class per label; no file is read and the sha256 is
    /// the bytes' own.
    pub fn tiny(
        onnx: Vec<u8>,
        (width, height): (u32, u32),
        range_max: f32,
        output: OutputKind,
        labels: &[&str],
    ) -> Model {
        let output = output.as_str();
        let manifest = format!(
            r#"
            name = "tiny"
            onnx = "tiny.onnx"
            labels = "labels.txt"
            output = "{output}"
            [input]
            name = "x"
            layout = "NCHW"
            channels = 1
            height = {height}
            width = {width}
            color = "gray"
            range = [0.0, {range_max:?}]
            mean = [0.0]
            std = [1.0]
            "#
        );
        Model {
            manifest: Manifest::parse(&manifest, "tiny/manifest.toml".as_ref())
                .expect("the tiny manifest is valid"),
            sha256: sha256_hex(&onnx),
            onnx: onnx.into(),
            onnx_path: "tiny/tiny.onnx".into(),
            labels: labels.iter().map(|l| l.to_string()).collect(),
        }
    }

    fn assemble(
        manifest: Manifest,
        onnx: Vec<u8>,
        onnx_path: PathBuf,
        labels: &str,
    ) -> Result<Self, EvalError> {
        let sha256 = sha256_hex(&onnx);
        match &manifest.sha256 {
            Some(expected) if !sha256.eq_ignore_ascii_case(expected) => {
                return Err(EvalError::Checksum {
                    path: onnx_path,
                    expected: expected.clone(),
                    actual: sha256,
                });
            }
            Some(_) => {}
            None => tracing::warn!(
                model = %manifest.name,
                file = %onnx_path.display(),
                %sha256,
                "the manifest gives no sha256, so the file is not checked; add `sha256 = \"{sha256}\"` to pin it (runs record it either way)"
            ),
        }
        let labels: Vec<String> = labels
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        Ok(Self {
            manifest,
            onnx: onnx.into(),
            onnx_path,
            sha256,
            labels,
        })
    }

    /// The model's name.
    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    /// Number of classes (labels).
    pub fn classes(&self) -> usize {
        self.labels.len()
    }

    /// Bytes of one input image (height x width x channels).
    pub fn image_len(&self) -> usize {
        let i = &self.manifest.input;
        (i.width * i.height * i.channels) as usize
    }

    /// The label of a class, or its index when the labels file is short.
    pub fn label(&self, class: usize) -> String {
        self.labels
            .get(class)
            .cloned()
            .unwrap_or_else(|| class.to_string())
    }
}
