//! The model manifest (TOML): input name, shape, layout, colour order, value range and
//! normalisation, output kind, labels and provenance. Paths in it are relative to it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::EvalError;

/// Memory layout of the input tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum Layout {
    /// batch, channel, height, width
    #[serde(rename = "NCHW")]
    Nchw,
    /// batch, height, width, channel
    #[serde(rename = "NHWC")]
    Nhwc,
}

/// Channel order the model expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ColorOrder {
    /// One channel.
    Gray,
    /// Red, green, blue.
    Rgb,
    /// Blue, green, red (Caffe models).
    Bgr,
}

/// What the model's output vector holds (`output` in a manifest).
pub use pareidolia_core::OutputKind;

/// The input tensor and how 8-bit pixels map into it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Input name in the ONNX graph.
    pub name: String,
    /// Tensor layout.
    pub layout: Layout,
    /// 1 or 3.
    pub channels: u32,
    /// Height in pixels.
    pub height: u32,
    /// Width in pixels.
    pub width: u32,
    /// Channel order.
    pub color: ColorOrder,
    /// Pixel `p` becomes `((p / 255) * (range[1] - range[0]) + range[0] - mean[c]) / std[c]`.
    pub range: [f32; 2],
    /// Per-channel mean, in the model's channel order (one value broadcasts).
    pub mean: Vec<f32>,
    /// Per-channel standard deviation, in the model's channel order (one value broadcasts).
    pub std: Vec<f32>,
}

/// How the model was made; free-form apart from a few well-known keys.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct Provenance {
    /// Script or source that made the file.
    #[serde(default)]
    pub made_by: String,
    /// Everything else (data, training, measured accuracy...).
    #[serde(flatten)]
    pub other: toml::Table,
}

/// A parsed `manifest.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Model name.
    pub name: String,
    /// ONNX file, relative to the manifest.
    pub onnx: PathBuf,
    /// Expected sha256 of the ONNX file (hex).
    pub sha256: String,
    /// Labels file (one per line), relative to the manifest.
    pub labels: PathBuf,
    /// Output kind.
    pub output: OutputKind,
    /// Input tensor.
    pub input: InputSpec,
    /// Provenance.
    #[serde(default)]
    pub provenance: Provenance,
}

impl Manifest {
    /// Parses manifest text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Self, EvalError> {
        let manifest: Manifest = toml::from_str(text).map_err(|e| EvalError::Manifest {
            path: origin.to_owned(),
            message: e.to_string(),
        })?;
        manifest.validate(origin)?;
        Ok(manifest)
    }

    fn validate(&self, origin: &Path) -> Result<(), EvalError> {
        let bad = |message: String| {
            Err(EvalError::Manifest {
                path: origin.to_owned(),
                message,
            })
        };
        let i = &self.input;
        let expected_color = match i.channels {
            1 => i.color == ColorOrder::Gray,
            3 => i.color != ColorOrder::Gray,
            n => return bad(format!("input.channels must be 1 or 3, got {n}")),
        };
        if !expected_color {
            return bad(format!(
                "input.color {:?} does not fit {} channel(s)",
                i.color, i.channels
            ));
        }
        if i.width == 0 || i.height == 0 {
            return bad("input.width and input.height must be positive".into());
        }
        for (key, v) in [("mean", &i.mean), ("std", &i.std)] {
            if v.len() != 1 && v.len() != i.channels as usize {
                return bad(format!(
                    "input.{key} needs 1 or {} values, got {}",
                    i.channels,
                    v.len()
                ));
            }
        }
        if i.std.iter().any(|s| *s == 0.0 || !s.is_finite()) {
            return bad("input.std values must be finite and non-zero".into());
        }
        if self.sha256.len() != 64 || !self.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return bad(format!(
                "sha256 must be 64 hex digits, got `{}`",
                self.sha256
            ));
        }
        Ok(())
    }
}
