//! From 8-bit images (row-major, channels interleaved, gray or RGB, as encodings render them)
//! to the model's input tensor: channel order, value range, normalisation and layout.

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
        Self {
            layout: spec.layout,
            channels,
            pixels: (spec.width * spec.height) as usize,
            table,
            source,
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
                    }
                }
                Layout::Nhwc => {
                    for (px, d) in img
                        .chunks_exact(self.channels)
                        .zip(dst.chunks_exact_mut(self.channels))
                    {
                        for c in 0..self.channels {
                            d[c] = self.table[c][px[self.source[c]] as usize];
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
