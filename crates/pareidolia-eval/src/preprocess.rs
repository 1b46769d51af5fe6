//! From 8-bit images (row-major, channels interleaved, gray or RGB, as encodings render them)
//! to the model's input tensor: channel order, value range, normalisation and layout.
//!
//! A per-pixel mean image (`[input.mean_image]`) is applied after the per-channel table, as
//! `table[c][p] - scale * M[c, i] / std[c]`; without one the fill is exactly the table look-up
//! it always was.

use crate::{ColorOrder, EvalError, InputSpec, Layout};

/// Precomputed per-channel affine maps `byte -> value` for one input spec.
#[derive(Debug, Clone)]
pub struct Preprocessor {
    layout: Layout,
    channels: usize,
    pixels: usize,
    /// `table[c][p]`: the value of byte `p` in model channel `c`.
    table: Vec<[f32; 256]>,
    /// Model channel `c` reads image channel `source[c]`.
    source: Vec<usize>,
    /// `offset[c * pixels + i]`: what the mean image takes off model channel `c` at pixel `i`,
    /// already divided by that channel's std; `None` without a mean image.
    offset: Option<Vec<f32>>,
}

impl Preprocessor {
    /// Builds the maps for an input spec.
    pub fn new(spec: &InputSpec) -> Self {
        let channels = spec.channels as usize;
        let pick = |v: &[f32], c: usize| if v.len() == 1 { v[0] } else { v[c] };
        let table = (0..channels)
            .map(|c| {
                let (mean, std) = (pick(&spec.mean, c), pick(&spec.std, c));
                let mut t = [0.0f32; 256];
                for (p, v) in t.iter_mut().enumerate() {
                    let unit = p as f32 / 255.0;
                    *v = (unit * (spec.range[1] - spec.range[0]) + spec.range[0] - mean) / std;
                }
                t
            })
            .collect();
        let source = match spec.color {
            ColorOrder::Bgr => vec![2, 1, 0],
            _ => (0..channels).collect(),
        };
        let pixels = (spec.width * spec.height) as usize;
        let offset = spec.mean_image.as_ref().map(|m| {
            debug_assert_eq!(
                m.values.len(),
                channels * pixels,
                "checked by Manifest::parse"
            );
            m.values
                .iter()
                .enumerate()
                .map(|(k, v)| m.scale * v / pick(&spec.std, k / pixels))
                .collect()
        });
        Self {
            layout: spec.layout,
            channels,
            pixels,
            table,
            source,
            offset,
        }
    }

    /// Bytes in one image.
    pub fn image_len(&self) -> usize {
        self.pixels * self.channels
    }

    /// Checks that `images` holds exactly `batch` (at least one) images of this input, for
    /// every backend's `infer`.
    pub fn check_batch(&self, model: &str, images: &[u8], batch: usize) -> Result<(), EvalError> {
        let n = self.image_len();
        if images.len() != batch * n || batch == 0 {
            return Err(EvalError::BadInput(format!(
                "model {model}: {} bytes for {batch} images of {n} bytes",
                images.len()
            )));
        }
        Ok(())
    }

    /// Fills `out` (exactly `batch * image_len` values) from `images` (the same count of bytes).
    pub fn fill(&self, images: &[u8], out: &mut [f32]) {
        debug_assert_eq!(images.len(), out.len());
        let n = self.image_len();
        for (img, dst) in images.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
            match self.layout {
                Layout::Nchw => {
                    for c in 0..self.channels {
                        let (t, s) = (&self.table[c], self.source[c]);
                        let plane = &mut dst[c * self.pixels..(c + 1) * self.pixels];
                        for (i, v) in plane.iter_mut().enumerate() {
                            *v = t[img[i * self.channels + s] as usize];
                        }
                        if let Some(offset) = &self.offset {
                            let off = &offset[c * self.pixels..(c + 1) * self.pixels];
                            for (v, o) in plane.iter_mut().zip(off) {
                                *v -= o;
                            }
                        }
                    }
                }
                Layout::Nhwc => {
                    for (i, (px, d)) in img
                        .chunks_exact(self.channels)
                        .zip(dst.chunks_exact_mut(self.channels))
                        .enumerate()
                    {
                        for c in 0..self.channels {
                            d[c] = self.table[c][px[self.source[c]] as usize];
                            if let Some(offset) = &self.offset {
                                d[c] -= offset[c * self.pixels + i];
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(layout: Layout, color: ColorOrder) -> InputSpec {
        InputSpec {
            name: "x".into(),
            layout,
            channels: 3,
            height: 1,
            width: 2,
            color,
            range: [0.0, 255.0],
            mean: vec![100.0, 110.0, 120.0],
            std: vec![1.0],
            mean_image: None,
        }
    }

    /// A mean image of `values` (channel-major) with `scale`, on `spec`.
    fn with_mean_image(mut spec: InputSpec, values: Vec<f32>, scale: f32) -> InputSpec {
        spec.mean_image = Some(crate::MeanImage {
            file: "mean.npy".into(),
            scale,
            sha256: None,
            values,
        });
        spec
    }

    #[test]
    fn mean_image_is_subtracted_per_pixel_in_both_layouts() {
        // Model channel B at pixel 1 reads image channel R there; its mean image value is
        // values[0 * 2 + 1], scaled by 0.5.
        let values = vec![2.0, 4.0, 6.0, 8.0, 10.0, 12.0];
        let rgb = [10u8, 20, 30, 40, 50, 60];
        let base = Preprocessor::new(&spec(Layout::Nchw, ColorOrder::Bgr));
        let mut plain = [0.0; 6];
        base.fill(&rgb, &mut plain);
        let p = Preprocessor::new(&with_mean_image(
            spec(Layout::Nchw, ColorOrder::Bgr),
            values.clone(),
            0.5,
        ));
        let mut out = [0.0; 6];
        p.fill(&rgb, &mut out);
        for k in 0..6 {
            assert_eq!(out[k], plain[k] - 0.5 * values[k], "value {k}");
        }
        let p = Preprocessor::new(&with_mean_image(
            spec(Layout::Nhwc, ColorOrder::Rgb),
            values.clone(),
            1.0,
        ));
        let mut out = [0.0; 6];
        p.fill(&[100, 110, 120, 101, 111, 121], &mut out);
        // Pixel i, channel c at out[i * 3 + c]; mean image value at values[c * 2 + i].
        assert_eq!(out, [-2.0, -6.0, -10.0, 1.0 - 4.0, 1.0 - 8.0, 1.0 - 12.0]);
    }

    #[test]
    fn caffe_mnist_preprocessing_is_pixel_minus_mean_over_256() {
        // Caffe's MNIST evaluation net: (pixel - mean_file[y, x]) * 0.00390625.
        let gray = InputSpec {
            name: "x".into(),
            layout: Layout::Nchw,
            channels: 1,
            height: 1,
            width: 3,
            color: ColorOrder::Gray,
            range: [0.0, 0.99609375],
            mean: vec![0.0],
            std: vec![1.0],
            mean_image: None,
        };
        let mean = vec![0.0, 33.3, 139.55];
        let p = Preprocessor::new(&with_mean_image(gray, mean.clone(), 0.00390625));
        let pixels = [0u8, 128, 255];
        let mut out = [0.0; 3];
        p.fill(&pixels, &mut out);
        for i in 0..3 {
            let caffe = (f64::from(pixels[i]) - f64::from(mean[i])) * 0.00390625;
            assert!(
                (f64::from(out[i]) - caffe).abs() < 1e-6,
                "{i}: {} vs {caffe}",
                out[i]
            );
        }
    }

    #[test]
    fn bgr_nchw_reorders_channels_then_subtracts_mean() {
        let p = Preprocessor::new(&spec(Layout::Nchw, ColorOrder::Bgr));
        let rgb = [10u8, 20, 30, 40, 50, 60];
        let mut out = [0.0; 6];
        p.fill(&rgb, &mut out);
        // plane B (mean 100), plane G (110), plane R (120)
        assert_eq!(
            out,
            [
                30.0 - 100.0,
                60.0 - 100.0,
                20.0 - 110.0,
                50.0 - 110.0,
                10.0 - 120.0,
                40.0 - 120.0
            ]
        );
    }

    #[test]
    fn rgb_nhwc_keeps_interleaving() {
        let p = Preprocessor::new(&spec(Layout::Nhwc, ColorOrder::Rgb));
        let mut out = [0.0; 6];
        p.fill(&[100, 110, 120, 101, 111, 121], &mut out);
        assert_eq!(out, [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
    }
}
