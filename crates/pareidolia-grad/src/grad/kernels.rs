//! Forward and backward kernels on plain slices, NCHW, one image (or one channel plane) at a
//! time; the network runs them over a batch. Every backward here is checked against central
//! finite differences in f64 (tests below).

use super::real::Real;

/// The output positions `o` in `0..out_len` whose input index `o * stride + offset` lies in
/// `0..in_len`, as a half-open range.
pub(crate) fn valid(offset: isize, stride: usize, in_len: usize, out_len: usize) -> (usize, usize) {
    let s = stride as isize;
    // o * s + offset >= 0  <=>  o >= ceil(-offset / s)
    let lo = if offset >= 0 {
        0
    } else {
        (-offset + s - 1) / s
    };
    // o * s + offset <= in_len - 1  <=>  o <= floor((in_len - 1 - offset) / s)
    let last = in_len as isize - 1 - offset;
    let hi = if last < 0 { 0 } else { last / s + 1 };
    let lo = (lo as usize).min(out_len);
    (lo, (hi as usize).clamp(lo, out_len))
}

/// The geometry of a 2-D convolution or pooling window over one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    /// Input height and width.
    pub h: usize,
    pub w: usize,
    /// Kernel height and width.
    pub kh: usize,
    pub kw: usize,
    /// Strides.
    pub sh: usize,
    pub sw: usize,
    /// Dilations.
    pub dh: usize,
    pub dw: usize,
    /// Padding at the top and left (bottom and right only shape `oh`, `ow`).
    pub pt: usize,
    pub pl: usize,
    /// Output height and width.
    pub oh: usize,
    pub ow: usize,
}

impl Window {
    /// Row offset of kernel row `ky`: input row = `oy * sh + row_offset(ky)`.
    fn row_offset(&self, ky: usize) -> isize {
        (ky * self.dh) as isize - self.pt as isize
    }
    fn col_offset(&self, kx: usize) -> isize {
        (kx * self.dw) as isize - self.pl as isize
    }
    /// Calls `f` with the index of each input pixel of output `(oy, ox)`'s window that lies
    /// inside the input.
    fn each_input(&self, oy: usize, ox: usize, mut f: impl FnMut(usize)) {
        for ky in 0..self.kh {
            let iy = (oy * self.sh) as isize + self.row_offset(ky);
            if iy < 0 || iy >= self.h as isize {
                continue;
            }
            for kx in 0..self.kw {
                let ix = (ox * self.sw) as isize + self.col_offset(kx);
                if ix >= 0 && ix < self.w as isize {
                    f(iy as usize * self.w + ix as usize);
                }
            }
        }
    }

    /// Output pixels per plane.
    pub fn out_len(&self) -> usize {
        self.oh * self.ow
    }

    /// Per kernel row, the output rows whose input row lies inside the input (computed once
    /// per call of a kernel rather than per channel: the divisions cost more than a small
    /// plane's copy).
    fn tap_rows(&self) -> Vec<(usize, usize)> {
        (0..self.kh)
            .map(|ky| valid(self.row_offset(ky), self.sh, self.h, self.oh))
            .collect()
    }

    /// Per kernel column, its input offset and the output columns it reaches inside the input.
    fn tap_cols(&self) -> Vec<(isize, usize, usize)> {
        (0..self.kw)
            .map(|kx| {
                let off = self.col_offset(kx);
                let (lo, hi) = valid(off, self.sw, self.w, self.ow);
                (off, lo, hi)
            })
            .collect()
    }
}

/// `col[(c * kh + ky) * kw + kx][oy * ow + ox] = x[c][iy][ix]` (zero in the padding), for
/// `channels` planes of `x`.
pub(crate) fn im2col<T: Real>(x: &[T], channels: usize, g: &Window, col: &mut [T]) {
    let (hw, ohw) = (g.h * g.w, g.out_len());
    let (rows, cols) = (g.tap_rows(), g.tap_cols());
    for c in 0..channels {
        let plane = &x[c * hw..(c + 1) * hw];
        for (ky, &(ylo, yhi)) in rows.iter().enumerate() {
            for (kx, &(off, xlo, xhi)) in cols.iter().enumerate() {
                let row = (c * g.kh + ky) * g.kw + kx;
                let dst = &mut col[row * ohw..(row + 1) * ohw];
                dst[..ylo * g.ow].fill(T::ZERO);
                dst[yhi.max(ylo) * g.ow..].fill(T::ZERO);
                for oy in ylo..yhi {
                    let out = &mut dst[oy * g.ow..(oy + 1) * g.ow];
                    let iy = (oy * g.sh) as isize + g.row_offset(ky);
                    let src = &plane[iy as usize * g.w..(iy as usize + 1) * g.w];
                    out[..xlo].fill(T::ZERO);
                    out[xhi..].fill(T::ZERO);
                    if g.sw == 1 {
                        let start = (xlo as isize + off) as usize;
                        out[xlo..xhi].copy_from_slice(&src[start..start + (xhi - xlo)]);
                    } else {
                        for (ox, o) in out.iter_mut().enumerate().take(xhi).skip(xlo) {
                            *o = src[((ox * g.sw) as isize + off) as usize];
                        }
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: adds `col` back into `dx`.
pub(crate) fn col2im<T: Real>(col: &[T], channels: usize, g: &Window, dx: &mut [T]) {
    let (hw, ohw) = (g.h * g.w, g.out_len());
    let (rows, cols) = (g.tap_rows(), g.tap_cols());
    for c in 0..channels {
        let plane = &mut dx[c * hw..(c + 1) * hw];
        for (ky, &(ylo, yhi)) in rows.iter().enumerate() {
            for (kx, &(off, xlo, xhi)) in cols.iter().enumerate() {
                let row = (c * g.kh + ky) * g.kw + kx;
                let src = &col[row * ohw..(row + 1) * ohw];
                for oy in ylo..yhi {
                    let iy = ((oy * g.sh) as isize + g.row_offset(ky)) as usize;
                    let dst = &mut plane[iy * g.w..(iy + 1) * g.w];
                    let s = &src[oy * g.ow + xlo..oy * g.ow + xhi];
                    if g.sw == 1 {
                        // Contiguous on both sides: a plain add the compiler vectorises.
                        let start = (xlo as isize + off) as usize;
                        for (d, &v) in dst[start..start + s.len()].iter_mut().zip(s) {
                            *d += v;
                        }
                    } else {
                        for (i, &v) in s.iter().enumerate() {
                            dst[(((xlo + i) * g.sw) as isize + off) as usize] += v;
                        }
                    }
                }
            }
        }
    }
}

/// One depthwise plane: `out[oy][ox] = bias + sum w[ky][kx] * x[iy][ix]`.
pub(crate) fn depthwise_forward<T: Real>(x: &[T], w: &[T], bias: T, g: &Window, out: &mut [T]) {
    out.fill(bias);
    for ky in 0..g.kh {
        let (ylo, yhi) = valid(g.row_offset(ky), g.sh, g.h, g.oh);
        for kx in 0..g.kw {
            let wv = w[ky * g.kw + kx];
            let off = g.col_offset(kx);
            let (xlo, xhi) = valid(off, g.sw, g.w, g.ow);
            if xlo >= xhi {
                continue;
            }
            for oy in ylo..yhi {
                let iy = ((oy * g.sh) as isize + g.row_offset(ky)) as usize;
                let src = &x[iy * g.w..(iy + 1) * g.w];
                let dst = &mut out[oy * g.ow + xlo..oy * g.ow + xhi];
                let start = (xlo * g.sw) as isize + off;
                if g.sw == 1 {
                    let s = &src[start as usize..start as usize + dst.len()];
                    for (d, &v) in dst.iter_mut().zip(s) {
                        *d += wv * v;
                    }
                } else {
                    for (i, d) in dst.iter_mut().enumerate() {
                        *d += wv * src[start as usize + i * g.sw];
                    }
                }
            }
        }
    }
}

/// The backward of [`depthwise_forward`]: adds into `dx`, and into `dw` when given.
pub(crate) fn depthwise_backward<T: Real>(
    x: &[T],
    w: &[T],
    dout: &[T],
    g: &Window,
    dx: &mut [T],
    mut dw: Option<&mut [T]>,
) {
    for ky in 0..g.kh {
        let (ylo, yhi) = valid(g.row_offset(ky), g.sh, g.h, g.oh);
        for kx in 0..g.kw {
            let wv = w[ky * g.kw + kx];
            let off = g.col_offset(kx);
            let (xlo, xhi) = valid(off, g.sw, g.w, g.ow);
            if xlo >= xhi {
                continue;
            }
            let mut acc = T::ZERO;
            for oy in ylo..yhi {
                let iy = ((oy * g.sh) as isize + g.row_offset(ky)) as usize;
                let d = &dout[oy * g.ow + xlo..oy * g.ow + xhi];
                let start = ((xlo * g.sw) as isize + off) as usize;
                let row = iy * g.w;
                if g.sw == 1 {
                    let dst = &mut dx[row + start..row + start + d.len()];
                    for (t, &v) in dst.iter_mut().zip(d) {
                        *t += wv * v;
                    }
                    if dw.is_some() {
                        let src = &x[row + start..row + start + d.len()];
                        acc += src.iter().zip(d).map(|(&a, &b)| a * b).sum::<T>();
                    }
                } else {
                    for (i, &v) in d.iter().enumerate() {
                        dx[row + start + i * g.sw] += wv * v;
                    }
                    if dw.is_some() {
                        for (i, &v) in d.iter().enumerate() {
                            acc += x[row + start + i * g.sw] * v;
                        }
                    }
                }
            }
            if let Some(dw) = dw.as_deref_mut() {
                dw[ky * g.kw + kx] += acc;
            }
        }
    }
}

/// Max pooling of whole planes (`x` holds any number of `h x w` planes, `out` and `arg` as
/// many `oh x ow` ones); padding never wins. `arg[o]` is the index within its plane of each
/// output's maximum (the first, where several tie).
pub(crate) fn max_pool_forward<T: Real>(x: &[T], g: &Window, out: &mut [T], arg: &mut [u32]) {
    // The window's bounds once per call, not per plane (their divisions cost more than a
    // small plane's pooling); then tap by tap over whole output rows, keeping the best so far.
    let (hw, ohw) = (g.h * g.w, g.out_len());
    let rows: Vec<(usize, usize)> = (0..g.oh)
        .map(|oy| inside(oy * g.sh, g.pt, g.dh, g.kh, g.h))
        .collect();
    let cols: Vec<(usize, usize)> = (0..g.ow)
        .map(|ox| inside(ox * g.sw, g.pl, g.dw, g.kw, g.w))
        .collect();
    let taps = g.tap_cols();
    for ((xp, op), ap) in x
        .chunks_exact(hw)
        .zip(out.chunks_exact_mut(ohw))
        .zip(arg.chunks_exact_mut(ohw))
    {
        for (oy, &(ky0, ky1)) in rows.iter().enumerate() {
            let o = &mut op[oy * g.ow..(oy + 1) * g.ow];
            let a = &mut ap[oy * g.ow..(oy + 1) * g.ow];
            if ky0 >= ky1 {
                o.fill(T::ZERO);
                a.fill(0);
                continue;
            }
            // Each output starts at its window's first pixel inside the input.
            let row0 = (oy * g.sh + ky0 * g.dh - g.pt) * g.w;
            for (ox, &(kx0, kx1)) in cols.iter().enumerate() {
                let (v, i) = if kx0 < kx1 {
                    let i = row0 + ox * g.sw + kx0 * g.dw - g.pl;
                    (xp[i], i as u32)
                } else {
                    (T::ZERO, 0)
                };
                o[ox] = v;
                a[ox] = i;
            }
            for ky in ky0..ky1 {
                let row = ((oy * g.sh + ky * g.dh - g.pt) * g.w) as isize;
                for &(off, lo, hi) in &taps {
                    for ox in lo..hi {
                        let i = (row + (ox * g.sw) as isize + off) as usize;
                        let v = xp[i];
                        // NaN wins, so it propagates as in the other backends; a tie keeps
                        // the first. Selected by masks: as a branch, a comparison of noise
                        // mispredicts half the time.
                        let better = (v > o[ox]) | v.is_nan();
                        let m = (better as u32).wrapping_neg();
                        a[ox] = (a[ox] & !m) | (i as u32 & m);
                        o[ox] = xp[a[ox] as usize];
                    }
                }
            }
        }
    }
}

/// The kernel taps `k0..k1` of a window starting at `start - pad` (taps `dilation` apart)
/// whose input index lies in `0..len`; empty where none does.
fn inside(start: usize, pad: usize, dilation: usize, taps: usize, len: usize) -> (usize, usize) {
    // start + k * dilation >= pad  and  start + k * dilation < len + pad
    let k0 = pad.saturating_sub(start).div_ceil(dilation);
    let k1 = if len + pad <= start {
        0
    } else {
        (len + pad - start - 1) / dilation + 1
    };
    let k1 = k1.min(taps);
    (k0.min(k1), k1)
}

/// The backward of [`max_pool_forward`]: each output's gradient goes to its maximum.
pub(crate) fn max_pool_backward<T: Real>(dout: &[T], arg: &[u32], dx: &mut [T]) {
    for (&d, &i) in dout.iter().zip(arg) {
        dx[i as usize] += d;
    }
}

/// Average pooling of one plane, each window divided by the number of its pixels inside the
/// input (ONNX `count_include_pad = 0`).
pub(crate) fn avg_pool_forward<T: Real>(x: &[T], g: &Window, out: &mut [T]) {
    for oy in 0..g.oh {
        for ox in 0..g.ow {
            let (mut sum, mut count) = (T::ZERO, 0usize);
            g.each_input(oy, ox, |i| {
                sum += x[i];
                count += 1;
            });
            out[oy * g.ow + ox] = if count == 0 {
                T::ZERO
            } else {
                sum * T::from_f64(1.0 / count as f64)
            };
        }
    }
}

/// The backward of [`avg_pool_forward`]: each output's gradient is shared equally by the
/// input pixels of its window.
pub(crate) fn avg_pool_backward<T: Real>(dout: &[T], g: &Window, dx: &mut [T]) {
    for oy in 0..g.oh {
        for ox in 0..g.ow {
            let mut count = 0usize;
            g.each_input(oy, ox, |_| count += 1);
            if count == 0 {
                continue;
            }
            let d = dout[oy * g.ow + ox] * T::from_f64(1.0 / count as f64);
            g.each_input(oy, ox, |i| dx[i] += d);
        }
    }
}

/// Local response normalisation across channels (ONNX `LRN`) for one image of `channels`
/// planes of `hw` pixels: `y = x / (bias + alpha / size * sum_{window} x^2) ^ beta`, the window
/// `c - floor((size - 1) / 2) ..= c + ceil((size - 1) / 2)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Lrn {
    pub size: usize,
    pub alpha: f64,
    pub beta: f64,
    pub bias: f64,
}

impl Lrn {
    fn window(&self, c: usize, channels: usize) -> (usize, usize) {
        let lo = (self.size - 1) / 2;
        let hi = self.size - 1 - lo;
        (c.saturating_sub(lo), (c + hi + 1).min(channels))
    }

    /// `s[c][p] = bias + alpha / size * sum x^2` over the window of `c`.
    fn scale<T: Real>(&self, x: &[T], channels: usize, hw: usize) -> Vec<T> {
        let k = T::from_f64(self.alpha / self.size as f64);
        let mut s = vec![T::from_f64(self.bias); channels * hw];
        for c in 0..channels {
            let (a, b) = self.window(c, channels);
            let dst = &mut s[c * hw..(c + 1) * hw];
            for j in a..b {
                for (d, &v) in dst.iter_mut().zip(&x[j * hw..(j + 1) * hw]) {
                    *d += k * v * v;
                }
            }
        }
        s
    }

    pub fn forward<T: Real>(&self, x: &[T], channels: usize, hw: usize, out: &mut [T]) {
        let s = self.scale(x, channels, hw);
        let beta = T::from_f64(self.beta);
        for ((o, &v), &s) in out.iter_mut().zip(x).zip(&s) {
            *o = v / s.powf(beta);
        }
    }

    /// Adds the gradient of `forward` at `x` into `dx`.
    pub fn backward<T: Real>(&self, x: &[T], dout: &[T], channels: usize, hw: usize, dx: &mut [T]) {
        let s = self.scale(x, channels, hw);
        let beta = T::from_f64(self.beta);
        // t[c] = dout[c] * x[c] * s[c]^(-beta - 1)
        let t: Vec<T> = dout
            .iter()
            .zip(x)
            .zip(&s)
            .map(|((&d, &v), &s)| d * v / s.powf(beta + T::ONE))
            .collect();
        let k = T::from_f64(2.0 * self.beta * self.alpha / self.size as f64);
        for j in 0..channels {
            let (lo, hi) = ((self.size - 1) / 2, self.size - 1 - (self.size - 1) / 2);
            // Channels c whose window holds j: j - hi <= c <= j + lo.
            let (a, b) = (j.saturating_sub(hi), (j + lo + 1).min(channels));
            let range = j * hw..(j + 1) * hw;
            let mut sum = vec![T::ZERO; hw];
            for c in a..b {
                for (u, &v) in sum.iter_mut().zip(&t[c * hw..(c + 1) * hw]) {
                    *u += v;
                }
            }
            for (p, i) in range.enumerate() {
                dx[i] += dout[i] / s[i].powf(beta) - k * x[i] * sum[p];
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A deterministic pseudo-random sequence in [-1, 1) (xorshift), for test data.
    pub(crate) fn noise(seed: u64, n: usize) -> Vec<f64> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 11) as f64 / (1u64 << 52) as f64 * 2.0 - 1.0
            })
            .collect()
    }

    /// Checks `grad` (the gradient of `f` at `x`) against central differences along three
    /// random directions: relative error at most 1e-6 in f64.
    pub(crate) fn check_gradient(f: &dyn Fn(&[f64]) -> f64, x: &[f64], grad: &[f64], what: &str) {
        for seed in 1..=3u64 {
            let v = noise(seed + 100, x.len());
            let eps = 1e-6;
            let plus: Vec<f64> = x.iter().zip(&v).map(|(a, b)| a + eps * b).collect();
            let minus: Vec<f64> = x.iter().zip(&v).map(|(a, b)| a - eps * b).collect();
            let fd = (f(&plus) - f(&minus)) / (2.0 * eps);
            let ad: f64 = grad.iter().zip(&v).map(|(a, b)| a * b).sum();
            let rel = (fd - ad).abs() / fd.abs().max(ad.abs()).max(1e-12);
            assert!(
                rel < 1e-6,
                "{what}: analytic {ad} vs finite difference {fd} ({rel:e})"
            );
        }
    }

    fn window(h: usize, w: usize, k: usize, s: usize, pad: [usize; 4], d: usize) -> Window {
        let [pt, pl, pb, pr] = pad;
        let oh = (h + pt + pb - d * (k - 1) - 1) / s + 1;
        let ow = (w + pl + pr - d * (k - 1) - 1) / s + 1;
        Window {
            h,
            w,
            kh: k,
            kw: k,
            sh: s,
            sw: s,
            dh: d,
            dw: d,
            pt,
            pl,
            oh,
            ow,
        }
    }

    #[test]
    fn average_pool_gradients_match_finite_differences() {
        for g in geometries().into_iter().filter(|g| g.dh == 1) {
            let x = noise(7, g.h * g.w);
            let v = noise(8, g.out_len());
            let f = |x: &[f64]| {
                let mut out = vec![0.0; g.out_len()];
                avg_pool_forward(x, &g, &mut out);
                out.iter().zip(&v).map(|(a, b)| a * b).sum::<f64>()
            };
            let mut dx = vec![0.0; x.len()];
            avg_pool_backward(&v, &g, &mut dx);
            check_gradient(&f, &x, &dx, "average pool");
            // A window inside the input is the plain mean.
            let mut out = vec![0.0; g.out_len()];
            avg_pool_forward(&x, &g, &mut out);
            if g.pt == 0 && g.pl == 0 {
                let mean = (0..g.kh)
                    .flat_map(|r| (0..g.kw).map(move |c| (r, c)))
                    .map(|(r, c)| x[r * g.w + c])
                    .sum::<f64>()
                    / (g.kh * g.kw) as f64;
                assert!((out[0] - mean).abs() < 1e-12);
            }
        }
    }

    /// The geometries of the shipped models' convolutions and pools, and a dilated one.
    fn geometries() -> Vec<Window> {
        vec![
            window(7, 6, 3, 1, [1, 1, 1, 1], 1),
            window(7, 8, 3, 2, [0, 0, 1, 1], 1),
            window(9, 9, 5, 2, [1, 1, 2, 2], 1),
            window(8, 7, 5, 1, [2, 2, 2, 2], 1),
            window(9, 8, 3, 1, [1, 2, 1, 0], 2),
            window(13, 13, 3, 2, [0, 0, 1, 1], 1),
        ]
    }

    #[test]
    fn valid_ranges_are_exactly_the_in_bounds_outputs() {
        for offset in -5isize..5 {
            for stride in 1..4 {
                for in_len in 1..8 {
                    let (lo, hi) = valid(offset, stride, in_len, 6);
                    for o in 0..6usize {
                        let i = o as isize * stride as isize + offset;
                        let inside = i >= 0 && i < in_len as isize;
                        assert_eq!(
                            inside,
                            (lo..hi).contains(&o),
                            "{offset} {stride} {in_len} {o}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn inside_is_exactly_the_taps_within_the_input() {
        for start in 0..8 {
            for pad in 0..4 {
                for dilation in 1..4 {
                    for len in 1..7 {
                        let taps = 4;
                        let (k0, k1) = inside(start, pad, dilation, taps, len);
                        for k in 0..taps {
                            let i = (start + k * dilation) as isize - pad as isize;
                            assert_eq!(
                                (0..len as isize).contains(&i),
                                (k0..k1).contains(&k),
                                "{start} {pad} {dilation} {len} {k}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn im2col_convolution_and_depthwise_agree_with_the_definition_and_fd() {
        for g in geometries() {
            let x = noise(1, g.h * g.w);
            let w = noise(2, g.kh * g.kw);
            let r = noise(3, g.out_len());
            // Direct definition of one plane's convolution.
            let reference = |x: &[f64], w: &[f64]| -> Vec<f64> {
                let mut out = vec![0.5; g.out_len()];
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        for ky in 0..g.kh {
                            for kx in 0..g.kw {
                                let iy = (oy * g.sh + ky * g.dh) as isize - g.pt as isize;
                                let ix = (ox * g.sw + kx * g.dw) as isize - g.pl as isize;
                                if iy >= 0 && ix >= 0 && (iy as usize) < g.h && (ix as usize) < g.w
                                {
                                    out[oy * g.ow + ox] +=
                                        w[ky * g.kw + kx] * x[iy as usize * g.w + ix as usize];
                                }
                            }
                        }
                    }
                }
                out
            };
            let mut out = vec![0.0; g.out_len()];
            depthwise_forward(&x, &w, 0.5, &g, &mut out);
            assert_eq!(out.len(), reference(&x, &w).len());
            for (a, b) in out.iter().zip(reference(&x, &w)) {
                assert!((a - b).abs() < 1e-12, "{g:?}");
            }
            // im2col + a product with the kernel row gives the same plane.
            let mut col = vec![0.0; g.kh * g.kw * g.out_len()];
            im2col(&x, 1, &g, &mut col);
            let mut via = vec![0.5; g.out_len()];
            f64::gemm(
                1,
                g.kh * g.kw,
                g.out_len(),
                1.0,
                (&w, g.kh * g.kw, 1),
                (&col, g.out_len(), 1),
                1.0,
                (&mut via, g.out_len(), 1),
            );
            for (a, b) in via.iter().zip(&out) {
                assert!((a - b).abs() < 1e-12);
            }
            // Gradients of r . conv(x, w) in x and w.
            let mut dx = vec![0.0; x.len()];
            let mut dw = vec![0.0; w.len()];
            depthwise_backward(&x, &w, &r, &g, &mut dx, Some(&mut dw));
            let dot = |v: Vec<f64>| v.iter().zip(&r).map(|(a, b)| a * b).sum::<f64>();
            check_gradient(&|x| dot(reference(x, &w)), &x, &dx, "depthwise dx");
            check_gradient(&|w| dot(reference(&x, w)), &w, &dw, "depthwise dw");
            // col2im is im2col's adjoint: <im2col(x), c> == <x, col2im(c)>.
            let c = noise(4, col.len());
            let mut back = vec![0.0; x.len()];
            col2im(&c, 1, &g, &mut back);
            let lhs: f64 = col.iter().zip(&c).map(|(a, b)| a * b).sum();
            let rhs: f64 = x.iter().zip(&back).map(|(a, b)| a * b).sum();
            assert!((lhs - rhs).abs() < 1e-10, "{g:?}: {lhs} vs {rhs}");
        }
    }

    #[test]
    fn max_pool_picks_the_first_maximum_inside_the_input_and_lets_nan_win() {
        // The definition, by the window's bounds-tested walk.
        let reference = |x: &[f64], g: &Window| -> (Vec<f64>, Vec<u32>) {
            let (mut out, mut arg) = (vec![0.0; g.out_len()], vec![0; g.out_len()]);
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let mut best: Option<(f64, usize)> = None;
                    g.each_input(oy, ox, |i| {
                        if best.is_none_or(|(b, _)| x[i] > b || x[i].is_nan()) {
                            best = Some((x[i], i));
                        }
                    });
                    let (v, i) = best.unwrap_or((0.0, 0));
                    out[oy * g.ow + ox] = v;
                    arg[oy * g.ow + ox] = i as u32;
                }
            }
            (out, arg)
        };
        let mut geometries = geometries();
        // Ties (a plateau of equal values) and a window that overhangs by more than a tap.
        geometries.push(window(6, 6, 2, 2, [0, 0, 0, 0], 1));
        geometries.push(window(5, 5, 3, 3, [2, 2, 2, 2], 1));
        for g in geometries {
            let mut x = noise(9, g.h * g.w);
            for v in x.iter_mut().step_by(5) {
                *v = 0.25; // equal values: the first one must win
            }
            for nan in [false, true] {
                if nan {
                    x[g.w + 1] = f64::NAN;
                    x[g.h * g.w - 1] = f64::NAN;
                }
                let (mut out, mut arg) = (vec![0.0; g.out_len()], vec![0; g.out_len()]);
                max_pool_forward(&x, &g, &mut out, &mut arg);
                let (want, want_arg) = reference(&x, &g);
                assert_eq!(arg, want_arg, "{g:?}");
                for (a, b) in out.iter().zip(&want) {
                    assert!(a == b || (a.is_nan() && b.is_nan()), "{g:?}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn overlapping_max_pool_gradients_match_finite_differences() {
        for g in geometries() {
            let x = noise(5, g.h * g.w);
            let r = noise(6, g.out_len());
            let f = |x: &[f64]| {
                let mut out = vec![0.0; g.out_len()];
                let mut arg = vec![0; g.out_len()];
                max_pool_forward(x, &g, &mut out, &mut arg);
                out.iter().zip(&r).map(|(a, b)| a * b).sum::<f64>()
            };
            let mut out = vec![0.0; g.out_len()];
            let mut arg = vec![0; g.out_len()];
            max_pool_forward(&x, &g, &mut out, &mut arg);
            let mut dx = vec![0.0; x.len()];
            max_pool_backward(&r, &arg, &mut dx);
            check_gradient(&f, &x, &dx, "max pool");
        }
    }

    #[test]
    fn lrn_gradients_match_finite_differences() {
        for (size, channels) in [(5, 7), (5, 3), (4, 6), (1, 2)] {
            let lrn = Lrn {
                size,
                alpha: 0.3,
                beta: 0.75,
                bias: 1.0,
            };
            let hw = 5;
            let x: Vec<f64> = noise(7, channels * hw).iter().map(|v| 3.0 * v).collect();
            let r = noise(8, channels * hw);
            let f = |x: &[f64]| {
                let mut out = vec![0.0; x.len()];
                lrn.forward(x, channels, hw, &mut out);
                out.iter().zip(&r).map(|(a, b)| a * b).sum::<f64>()
            };
            let mut dx = vec![0.0; x.len()];
            lrn.backward(&x, &r, channels, hw, &mut dx);
            check_gradient(&f, &x, &dx, "lrn");
            // The definition: channel 0's window with size 5 is channels 0..=2.
            let mut out = vec![0.0; x.len()];
            lrn.forward(&x, channels, hw, &mut out);
            let (a, b) = lrn.window(0, channels);
            let sq: f64 = (a..b).map(|c| x[c * hw] * x[c * hw]).sum();
            let expected = x[0] / (1.0 + 0.3 / size as f64 * sq).powf(0.75);
            assert!((out[0] - expected).abs() < 1e-12);
        }
    }
}
