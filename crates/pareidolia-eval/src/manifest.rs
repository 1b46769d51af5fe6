//! The model manifest (TOML): input name, shape, layout, colour order, value range and
//! normalisation, output kind, labels and provenance. Paths in it are relative to it.
//!
//! An optional per-pixel mean image (`[input.mean_image]`, a `.npy` file) reproduces Caffe's
//! `mean_file` preprocessing; it is read when the manifest is parsed, so a manifest that names
//! one must be parsed from its place on disk (a built-in model cannot name one).

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

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
    /// A per-pixel mean subtracted too (Caffe's `mean_file`): pixel `p` at (c, y, x) becomes
    /// `((p / 255) * (range[1] - range[0]) + range[0] - mean[c] - scale * M[c, y, x]) / std[c]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_image: Option<MeanImage>,
}

/// `[input.mean_image]`: a mean image in a `.npy` file and the factor that brings its values
/// into the model's units.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MeanImage {
    /// A little-endian float32 or float64 `.npy` file (C order), relative to the manifest, of
    /// shape `[height, width]` (one channel) or `[channels, height, width]`, channels in the
    /// model's order.
    pub file: PathBuf,
    /// Multiplies the file's values before they are subtracted: a mean in 8-bit pixel levels
    /// for a model fed `p / 256` (Caffe's MNIST scale) has `scale = 0.00390625`.
    pub scale: f32,
    /// Optional sha256 (hex) of the file, checked when it is read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The file's values as read (before `scale`), channel-major (`[c][y][x]`); filled when
    /// the manifest is parsed.
    #[serde(skip)]
    pub values: Vec<f32>,
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

/// The largest input width or height a manifest may give.
const MAX_SIDE: u32 = 8192;

/// A parsed `manifest.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Model name.
    pub name: String,
    /// ONNX file, relative to the manifest.
    pub onnx: PathBuf,
    /// Expected sha256 of the ONNX file (hex). Optional: without it the file is not checked
    /// on load (a warning gives its sha256 to pin), and runs record the sha256 they read.
    #[serde(default)]
    pub sha256: Option<String>,
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
        let mut manifest = manifest;
        manifest.validate(origin)?;
        if let Some(mean) = &mut manifest.input.mean_image {
            let (c, h, w) = (
                manifest.input.channels as usize,
                manifest.input.height as usize,
                manifest.input.width as usize,
            );
            mean.values = read_mean_image(mean, origin, c, h, w)?;
        }
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
        // Bounded like a run's canvas, so that sizes multiply without overflow (the
        // preprocessor's pixel count is `width * height` in u32; found by fuzz/).
        if !(1..=MAX_SIDE).contains(&i.width) || !(1..=MAX_SIDE).contains(&i.height) {
            return bad(format!(
                "input.width and input.height must be from 1 to {MAX_SIDE} pixels, got {} x {}",
                i.width, i.height
            ));
        }
        if let Some(v) = i.range.iter().chain(&i.mean).find(|v| !v.is_finite()) {
            return bad(format!(
                "input.range and input.mean values must be finite, got {v}"
            ));
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
        if let Some(m) = &i.mean_image
            && !m.scale.is_finite()
        {
            return bad(format!(
                "input.mean_image.scale must be finite, got {}",
                m.scale
            ));
        }
        if let Some(sha) = &self.sha256
            && (sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return bad(format!("sha256 must be 64 hex digits, got `{sha}`"));
        }
        Ok(())
    }
}

/// Reads and checks `[input.mean_image]`'s file for an input of `c` x `h` x `w`.
fn read_mean_image(
    mean: &MeanImage,
    origin: &Path,
    c: usize,
    h: usize,
    w: usize,
) -> Result<Vec<f32>, EvalError> {
    let dir = origin.parent().unwrap_or(Path::new("."));
    let path = dir.join(&mean.file);
    let bad = |message: String| EvalError::Manifest {
        path: origin.to_owned(),
        message: format!("input.mean_image.file {}: {message}", path.display()),
    };
    let bytes = std::fs::read(&path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    if let Some(want) = &mean.sha256 {
        let got: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if !got.eq_ignore_ascii_case(want) {
            return Err(bad(format!(
                "has sha256 {got} but input.mean_image.sha256 is {want}"
            )));
        }
    }
    let (shape, values) = parse_npy(&bytes).map_err(bad)?;
    let fits = (c == 1 && shape == [h, w]) || shape == [c, h, w];
    if !fits {
        let want = if c == 1 {
            format!("[{h}, {w}] or [1, {h}, {w}]")
        } else {
            format!("[{c}, {h}, {w}]")
        };
        return Err(bad(format!(
            "has shape {shape:?} but the input needs {want} (channels, height, width)"
        )));
    }
    if let Some(v) = values.iter().find(|v| !v.is_finite()) {
        return Err(bad(format!("holds a non-finite value {v}")));
    }
    Ok(values)
}

/// A minimal reader of NumPy's `.npy` format (versions 1 to 3): little-endian `<f4` or `<f8`,
/// C order. Returns the shape and the values as f32.
fn parse_npy(bytes: &[u8]) -> Result<(Vec<usize>, Vec<f32>), String> {
    let not_npy = || "is not a NumPy .npy file".to_string();
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(not_npy());
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(format!("has .npy format version {v}, not 1, 2 or 3")),
    };
    let header = bytes
        .get(start..start + header_len)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(not_npy)?;
    let field = |key: &str| -> Option<&str> {
        let at = header.find(&format!("'{key}'"))? + key.len() + 2;
        let rest = header[at..].trim_start().strip_prefix(':')?.trim_start();
        Some(rest)
    };
    let descr = field("descr")
        .and_then(|r| r.strip_prefix('\''))
        .and_then(|r| r.split('\'').next())
        .ok_or_else(not_npy)?;
    let width = match descr {
        "<f4" => 4,
        "<f8" => 8,
        other => {
            return Err(format!(
                "holds dtype `{other}`; a mean image must be little-endian float32 (<f4) or float64 (<f8)"
            ));
        }
    };
    if field("fortran_order").is_some_and(|r| r.starts_with("True")) {
        return Err("is in Fortran order; save it in C order".into());
    }
    let shape_text = field("shape")
        .and_then(|r| r.strip_prefix('('))
        .and_then(|r| r.split(')').next())
        .ok_or_else(not_npy)?;
    let shape: Vec<usize> = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| not_npy()))
        .collect::<Result<_, _>>()?;
    // Checked: a header may claim any shape (found by fuzz/, an overflow).
    let Some(needed) = shape
        .iter()
        .try_fold(width, |n: usize, &d| n.checked_mul(d))
    else {
        return Err(format!(
            "has shape {shape:?}, more values than any file can hold"
        ));
    };
    let body = &bytes[start + header_len..];
    if body.len() != needed {
        return Err(format!(
            "has {} bytes of data for shape {shape:?} of {descr}, which needs {needed}",
            body.len(),
        ));
    }
    let values = if width == 4 {
        body.chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    } else {
        body.chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
            .collect()
    };
    Ok((shape, values))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
name = "tiny"
onnx = "tiny.onnx"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
labels = "labels.txt"
output = "logits"

[input]
name = "x"
layout = "NCHW"
channels = 1
height = 2
width = 3
color = "gray"
range = [0.0, 0.99609375]
mean = [0.0]
std = [1.0]
"#;

    /// A fresh folder for one test.
    fn dir(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("pareidolia-manifest-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A version-1 `.npy` file of little-endian values.
    fn npy(descr: &str, shape: &[usize], body: &[u8]) -> Vec<u8> {
        let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        let shape = if dims.len() == 1 {
            format!("({},)", dims[0])
        } else {
            format!("({})", dims.join(", "))
        };
        let mut header =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(body);
        out
    }

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn with_mean(extra: &str) -> String {
        format!("{BASE}\n[input.mean_image]\n{extra}\n")
    }

    /// Found by `fuzz/` (manifest_parse): sizes that overflow when multiplied (the input's
    /// width x height in the preprocessor, a mean image header's shape) panicked in checked
    /// builds and wrapped silently in release ones; non-finite `range` and `mean` values
    /// made every input NaN.
    #[test]
    fn sizes_that_overflow_and_non_finite_values_are_refused() {
        let origin = Path::new("m/manifest.toml");
        for (from, to, want) in [
            (
                "height = 2",
                "height = 65536",
                "from 1 to 8192 pixels, got 3 x 65536",
            ),
            ("width = 3", "width = 0", "got 0 x 2"),
            (
                "range = [0.0, 0.99609375]",
                "range = [0.0, inf]",
                "finite, got inf",
            ),
            ("mean = [0.0]", "mean = [nan]", "finite, got NaN"),
        ] {
            assert!(BASE.contains(from));
            let e = Manifest::parse(&BASE.replace(from, to), origin)
                .unwrap_err()
                .to_string();
            assert!(e.contains(want) && e.contains("manifest.toml"), "{to}: {e}");
        }
        let d = dir("overflow");
        let huge = npy("<f4", &[1 << 32, 1 << 32, 1 << 32], &[]);
        std::fs::write(d.join("huge.npy"), huge).unwrap();
        let e = Manifest::parse(
            &with_mean("file = \"huge.npy\"\nscale = 1.0"),
            &d.join("manifest.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("more values than any file can hold"), "{e}");
    }

    #[test]
    fn shipped_manifests_still_parse_without_a_mean_image() {
        let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
        for name in ["lenet-mnist", "efficientnet-lite0", "bvlcalexnet"] {
            let path = models.join(name).join("manifest.toml");
            let text = std::fs::read_to_string(&path).unwrap();
            let m = Manifest::parse(&text, &path).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(m.input.mean_image, None, "{name}");
        }
    }

    #[test]
    fn a_mean_image_is_read_relative_to_the_manifest() {
        let d = dir("ok");
        let values = [0.0f32, 1.0, 2.0, 3.0, 4.5, 255.0];
        std::fs::write(d.join("mean.npy"), npy("<f4", &[2, 3], &f32s(&values))).unwrap();
        let origin = d.join("manifest.toml");
        let m = Manifest::parse(
            &with_mean("file = \"mean.npy\"\nscale = 0.00390625"),
            &origin,
        )
        .unwrap();
        let mean = m.input.mean_image.unwrap();
        assert_eq!(mean.values, values);
        assert_eq!(mean.scale, 0.00390625);
        // float64 and an explicit channel axis work too, and a correct sha256 is accepted.
        let f64s: Vec<u8> = values
            .iter()
            .flat_map(|x| f64::from(*x).to_le_bytes())
            .collect();
        let bytes = npy("<f8", &[1, 2, 3], &f64s);
        let sha: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        std::fs::write(d.join("mean64.npy"), bytes).unwrap();
        let text = with_mean(&format!(
            "file = \"mean64.npy\"\nscale = 1.0\nsha256 = \"{sha}\""
        ));
        let m = Manifest::parse(&text, &origin).unwrap();
        assert_eq!(m.input.mean_image.unwrap().values, values);
    }

    #[test]
    fn a_bad_mean_image_is_refused_naming_the_file_and_the_key() {
        let d = dir("bad");
        let origin = d.join("manifest.toml");
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "wrong-size.npy",
                npy("<f4", &[3, 2], &f32s(&[0.0; 6])),
                "has shape [3, 2]",
            ),
            (
                "short.npy",
                npy("<f4", &[2, 3], &f32s(&[0.0; 5])),
                "bytes of data",
            ),
            ("ints.npy", npy("<i4", &[2, 3], &[0; 24]), "dtype `<i4`"),
            (
                "text.npy",
                b"not numpy at all".to_vec(),
                "not a NumPy .npy file",
            ),
            (
                "nan.npy",
                npy("<f4", &[2, 3], &f32s(&[0.0, 0.0, f32::NAN, 0.0, 0.0, 0.0])),
                "non-finite",
            ),
        ];
        for (file, bytes, needle) in cases {
            std::fs::write(d.join(file), bytes).unwrap();
            let text = with_mean(&format!("file = \"{file}\"\nscale = 1.0"));
            let e = Manifest::parse(&text, &origin).unwrap_err().to_string();
            for want in [needle, "input.mean_image.file", file, "manifest.toml"] {
                assert!(e.contains(want), "{file}: {e:?} lacks {want:?}");
            }
        }
        let e = Manifest::parse(&with_mean("file = \"missing.npy\"\nscale = 1.0"), &origin)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("input.mean_image.file")
                && e.contains("missing.npy")
                && e.contains("cannot read"),
            "{e}"
        );
        std::fs::write(d.join("m.npy"), npy("<f4", &[2, 3], &f32s(&[0.0; 6]))).unwrap();
        let text = with_mean(&format!(
            "file = \"m.npy\"\nscale = 1.0\nsha256 = \"{}\"",
            "ab".repeat(32)
        ));
        let e = Manifest::parse(&text, &origin).unwrap_err().to_string();
        assert!(
            e.contains("input.mean_image.sha256") && e.contains("m.npy"),
            "{e}"
        );
        let e = Manifest::parse(
            &with_mean("file = \"m.npy\"\nscale = 1.0\nextra = 1"),
            &origin,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("extra"), "{e}");
        let e = Manifest::parse(&with_mean("file = \"m.npy\""), &origin)
            .unwrap_err()
            .to_string();
        assert!(e.contains("scale"), "{e}");
    }
}
