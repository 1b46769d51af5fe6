//! Kernels on whole tensors of any rank, with the batch axis wherever the graph puts it (a
//! ViT's attention permutes `[N, T, 3, H, D]` to `[3, N, H, T, D]` and splits the first axis):
//! numpy broadcasting for elementwise ops, batched matrix products, layer normalisation,
//! softmax over one axis, slicing, gathering, concatenation and reductions. Each takes shapes
//! and row-major slices; every backward adds into its outputs. The convolution and pooling
//! kernels, which need NCHW, are in `kernels`. Every backward here is checked against central
//! finite differences in f64 (tests below).

use super::real::Real;

/// ONNX Reshape's shape rule (0 copies a dimension, one -1 is inferred).
pub(crate) fn reshape(shape: &[usize], target: &[i64]) -> Result<Vec<usize>, String> {
    let total: usize = shape.iter().product();
    let mut out: Vec<usize> = Vec::with_capacity(target.len());
    let mut infer = None;
    for (i, &t) in target.iter().enumerate() {
        match t {
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            0 => out.push(*shape.get(i).ok_or("0 beyond the input's rank")?),
            t if t > 0 => out.push(t as usize),
            t => return Err(format!("bad target dimension {t}")),
        }
    }
    let known: usize = out.iter().product();
    if let Some(i) = infer {
        if known == 0 || !total.is_multiple_of(known) {
            return Err(format!("cannot reshape {shape:?} to {target:?}"));
        }
        out[i] = total / known;
    }
    if out.iter().product::<usize>() != total {
        return Err(format!("cannot reshape {shape:?} to {target:?}"));
    }
    Ok(out)
}

/// A numerically stable softmax, in place.
pub(crate) fn softmax_in_place<T: Real>(row: &mut [T]) {
    let max = row
        .iter()
        .copied()
        .fold(None, |m: Option<T>, v| {
            Some(if m.is_none_or(|m| v > m) {
                v
            } else {
                m.unwrap_or(v)
            })
        })
        .unwrap_or(T::ZERO);
    let mut sum = 0.0f64;
    for v in row.iter_mut() {
        let e = (*v - max).to_f64().exp();
        sum += e;
        *v = T::from_f64(e);
    }
    for v in row.iter_mut() {
        *v = T::from_f64(v.to_f64() / sum);
    }
}

/// Row-major strides of `shape`.
pub(crate) fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Numpy broadcasting of two shapes, or `None` when they do not broadcast.
pub(crate) fn broadcast(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let n = a.len().max(b.len());
    let at = |s: &[usize], i: usize| {
        if i + s.len() >= n {
            s[i + s.len() - n]
        } else {
            1
        }
    };
    (0..n)
        .map(|i| match (at(a, i), at(b, i)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

/// The strides of an operand of `shape` read as a tensor of `out` (0 along broadcast axes).
pub(crate) fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let mut s = vec![0; out.len()];
    let own = strides(shape);
    let off = out.len() - shape.len();
    for (i, &d) in shape.iter().enumerate() {
        if d != 1 {
            s[i + off] = own[i];
        }
    }
    s
}

/// Walks a row-major tensor of `shape` whose elements are read from `K` operands with the given
/// strides, in runs along its last (coalesced) axis: `f(first, offsets, len, steps)` is called
/// for output elements `first..first + len`, operand `k` being read at `offsets[k] + j *
/// steps[k]` for element `first + j`.
pub(crate) fn runs<const K: usize>(
    shape: &[usize],
    strides: [&[usize]; K],
    mut f: impl FnMut(usize, [usize; K], usize, [usize; K]),
) {
    if shape.contains(&0) {
        return;
    }
    // Axes longer than 1; neighbours merged where every operand reads them as one axis.
    let mut dims: Vec<(usize, [usize; K])> = Vec::new();
    for (i, &n) in shape.iter().enumerate() {
        if n == 1 {
            continue;
        }
        let s: [usize; K] = std::array::from_fn(|k| strides[k][i]);
        if let Some(last) = dims.last_mut()
            && (0..K).all(|k| last.1[k] == s[k] * n)
        {
            last.0 *= n;
            last.1 = s;
            continue;
        }
        dims.push((n, s));
    }
    let (len, step) = dims.pop().unwrap_or((1, [0; K]));
    let mut index = vec![0usize; dims.len()];
    let mut off = [0usize; K];
    let mut first = 0;
    loop {
        f(first, off, len, step);
        first += len;
        let mut d = dims.len();
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            index[d] += 1;
            for (o, s) in off.iter_mut().zip(dims[d].1) {
                *o += s;
            }
            if index[d] < dims[d].0 {
                break;
            }
            for (o, s) in off.iter_mut().zip(dims[d].1) {
                *o -= s * dims[d].0;
            }
            index[d] = 0;
        }
    }
}

/// `x` of `shape` with its axes permuted (`out.shape[i] = shape[perm[i]]`): the output shape
/// and values, read in output order through permuted strides.
pub(crate) fn transpose<T: Real>(shape: &[usize], perm: &[usize], x: &[T]) -> (Vec<usize>, Vec<T>) {
    let own = strides(shape);
    let out: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let read: Vec<usize> = perm.iter().map(|&p| own[p]).collect();
    let mut y = vec![T::ZERO; x.len()];
    runs(&out, [&read], |o, [i], len, [d]| {
        for (j, v) in y[o..o + len].iter_mut().enumerate() {
            *v = x[i + j * d];
        }
    });
    (out, y)
}

/// Adds `f(out_index, a_index, b_index)` into `target` at the index of operand `which` (0 for
/// `a`, 1 for `b`), over an output of `shape` read through the operands' broadcast strides.
fn accumulate<T: Real>(
    shape: &[usize],
    strides: [&[usize]; 2],
    which: usize,
    target: &mut [T],
    f: impl Fn(usize, usize, usize) -> T,
) {
    runs(shape, strides, |o, [ia, ib], len, [ja, jb]| {
        for j in 0..len {
            let (p, q) = (ia + j * ja, ib + j * jb);
            target[if which == 0 { p } else { q }] += f(o + j, p, q);
        }
    });
}

/// An elementwise op of two tensors, numpy-broadcast (ONNX `Add`, `Sub`, `Mul`, `Div`, `Pow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Binary {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
}

fn zip_broadcast<T: Real>(
    shape: &[usize],
    a: (&[usize], &[T]),
    b: (&[usize], &[T]),
    f: impl Fn(T, T) -> T,
) -> Vec<T> {
    let total: usize = shape.iter().product();
    if a.0 == shape && b.0 == shape {
        return a.1.iter().zip(b.1).map(|(&x, &y)| f(x, y)).collect();
    }
    let mut out = vec![T::ZERO; total];
    let (sa, sb) = (broadcast_strides(a.0, shape), broadcast_strides(b.0, shape));
    runs(shape, [&sa, &sb], |o, [ia, ib], len, [da, db]| {
        for (j, v) in out[o..o + len].iter_mut().enumerate() {
            *v = f(a.1[ia + j * da], b.1[ib + j * db]);
        }
    });
    out
}

impl Binary {
    /// `a op b` with broadcasting: the output shape and values, or why the shapes do not fit.
    pub(crate) fn forward<T: Real>(
        self,
        a: (&[usize], &[T]),
        b: (&[usize], &[T]),
    ) -> Result<(Vec<usize>, Vec<T>), String> {
        let shape = broadcast(a.0, b.0)
            .ok_or_else(|| format!("shapes {:?} and {:?} do not broadcast", a.0, b.0))?;
        let out = match self {
            Binary::Add => zip_broadcast(&shape, a, b, |x, y| x + y),
            Binary::Sub => zip_broadcast(&shape, a, b, |x, y| x - y),
            Binary::Mul => zip_broadcast(&shape, a, b, |x, y| x * y),
            Binary::Div => zip_broadcast(&shape, a, b, |x, y| x / y),
            Binary::Pow => zip_broadcast(&shape, a, b, |x, y| x.powf(y)),
        };
        Ok((shape, out))
    }

    /// The backward of [`Binary::forward`] with output `y` and its gradient `dy`: adds into
    /// `da` and `db` (each in its operand's shape) where given.
    pub(crate) fn backward<T: Real>(
        self,
        a: (&[usize], &[T]),
        b: (&[usize], &[T]),
        y: (&[usize], &[T]),
        dy: &[T],
        da: Option<&mut [T]>,
        db: Option<&mut [T]>,
    ) {
        let shape = y.0;
        let (sa, sb) = (broadcast_strides(a.0, shape), broadcast_strides(b.0, shape));
        let st = [&sa[..], &sb[..]];
        let (av, bv, yv) = (a.1, b.1, y.1);
        // One pass per operand, each with its own monomorphic loop.
        if let Some(da) = da {
            match self {
                Binary::Add | Binary::Sub => accumulate(shape, st, 0, da, |i, _, _| dy[i]),
                Binary::Mul => accumulate(shape, st, 0, da, |i, _, q| dy[i] * bv[q]),
                Binary::Div => accumulate(shape, st, 0, da, |i, _, q| dy[i] / bv[q]),
                Binary::Pow => accumulate(shape, st, 0, da, |i, p, q| {
                    dy[i] * bv[q] * av[p].powf(bv[q] - T::ONE)
                }),
            }
        }
        if let Some(db) = db {
            match self {
                Binary::Add => accumulate(shape, st, 1, db, |i, _, _| dy[i]),
                Binary::Sub => accumulate(shape, st, 1, db, |i, _, _| -dy[i]),
                Binary::Mul => accumulate(shape, st, 1, db, |i, p, _| dy[i] * av[p]),
                Binary::Div => {
                    accumulate(shape, st, 1, db, |i, p, q| -dy[i] * av[p] / (bv[q] * bv[q]))
                }
                Binary::Pow => accumulate(shape, st, 1, db, |i, p, _| dy[i] * yv[i] * av[p].ln()),
            }
        }
    }
}

/// How a (batched) matrix product `a @ b` runs (numpy `matmul`: 1-D operands promoted, batch
/// axes broadcast).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MatMulPlan {
    pub out: Vec<usize>,
    batch: Vec<usize>,
    a_strides: Vec<usize>,
    b_strides: Vec<usize>,
    m: usize,
    k: usize,
    n: usize,
    /// `b` has no batch axes and `a` all of them: one product of `(batch * m) x k` by `k x n`.
    fold: bool,
}

impl MatMulPlan {
    /// The plan for operands of shapes `a` and `b`, or why they do not multiply.
    pub(crate) fn new(a: &[usize], b: &[usize]) -> Result<Self, String> {
        if a.is_empty() || b.is_empty() {
            return Err(format!("matmul of shapes {a:?} and {b:?} (scalars)"));
        }
        let a2: Vec<usize> = if a.len() == 1 {
            vec![1, a[0]]
        } else {
            a.to_vec()
        };
        let b2: Vec<usize> = if b.len() == 1 {
            vec![b[0], 1]
        } else {
            b.to_vec()
        };
        let (ra, rb) = (a2.len(), b2.len());
        let (m, k, kb, n) = (a2[ra - 2], a2[ra - 1], b2[rb - 2], b2[rb - 1]);
        if k != kb {
            return Err(format!("matmul of shapes {a:?} and {b:?}: {k} != {kb}"));
        }
        let (ab, bb) = (&a2[..ra - 2], &b2[..rb - 2]);
        let batch = broadcast(ab, bb).ok_or_else(|| {
            format!("matmul of shapes {a:?} and {b:?}: batch axes do not broadcast")
        })?;
        let scale = |s: Vec<usize>, by: usize| s.into_iter().map(|v| v * by).collect();
        let a_strides = scale(broadcast_strides(ab, &batch), m * k);
        let b_strides = scale(broadcast_strides(bb, &batch), k * n);
        let fold = bb.iter().all(|&d| d == 1) && ab.len() == batch.len() && ab == &batch[..];
        let mut out = batch.clone();
        if a.len() > 1 {
            out.push(m);
        }
        if b.len() > 1 {
            out.push(n);
        }
        Ok(MatMulPlan {
            out,
            batch,
            a_strides,
            b_strides,
            m,
            k,
            n,
            fold,
        })
    }

    /// Calls `f(out_offset, a_offset, b_offset, rows)` for each product of `rows x k` by
    /// `k x n` (one per batch element, or one for everything when folded).
    fn each(&self, mut f: impl FnMut(usize, usize, usize, usize)) {
        let (m, n) = (self.m, self.n);
        if self.fold {
            let count: usize = self.batch.iter().product();
            f(0, 0, 0, count * m);
            return;
        }
        runs(
            &self.batch,
            [&self.a_strides, &self.b_strides],
            |o, [ia, ib], len, [ja, jb]| {
                for j in 0..len {
                    f((o + j) * m * n, ia + j * ja, ib + j * jb, m);
                }
            },
        );
    }

    /// `a @ b`.
    pub(crate) fn forward<T: Real>(&self, a: &[T], b: &[T]) -> Vec<T> {
        let (k, n) = (self.k, self.n);
        let mut out = vec![T::ZERO; self.out.iter().product()];
        self.each(|o, ia, ib, rows| {
            T::gemm(
                rows,
                k,
                n,
                T::ONE,
                (&a[ia..], k, 1),
                (&b[ib..], n, 1),
                T::ZERO,
                (&mut out[o..], n, 1),
            );
        });
        out
    }

    /// The backward: `da += dy @ b^T`, `db += a^T @ dy` (summed over broadcast batch axes).
    pub(crate) fn backward<T: Real>(
        &self,
        a: &[T],
        b: &[T],
        dy: &[T],
        mut da: Option<&mut [T]>,
        mut db: Option<&mut [T]>,
    ) {
        let (k, n) = (self.k, self.n);
        self.each(|o, ia, ib, rows| {
            if let Some(da) = da.as_deref_mut() {
                T::gemm(
                    rows,
                    n,
                    k,
                    T::ONE,
                    (&dy[o..], n, 1),
                    (&b[ib..], 1, n),
                    T::ONE,
                    (&mut da[ia..], k, 1),
                );
            }
            if let Some(db) = db.as_deref_mut() {
                T::gemm(
                    k,
                    rows,
                    n,
                    T::ONE,
                    (&a[ia..], 1, k),
                    (&dy[o..], n, 1),
                    T::ONE,
                    (&mut db[ib..], n, 1),
                );
            }
        });
    }
}

/// Layer normalisation of rows of `inner` values: `y = (x - mean) / sqrt(var + eps) * scale +
/// bias`, `scale` and `bias` holding `inner` values or one.
pub(crate) fn layer_norm_forward<T: Real>(
    x: &[T],
    inner: usize,
    scale: &[T],
    bias: Option<&[T]>,
    eps: f64,
) -> Vec<T> {
    let mut out = vec![T::ZERO; x.len()];
    let pick = |v: &[T], j: usize| if v.len() == 1 { v[0] } else { v[j] };
    for (row, dst) in x.chunks_exact(inner).zip(out.chunks_exact_mut(inner)) {
        let (mean, r) = moments(row, eps);
        for (j, (d, &v)) in dst.iter_mut().zip(row).enumerate() {
            *d = (v - mean) * r * pick(scale, j) + bias.map_or(T::ZERO, |b| pick(b, j));
        }
    }
    out
}

/// A row's mean and `1 / sqrt(var + eps)`, accumulated in f64.
fn moments<T: Real>(row: &[T], eps: f64) -> (T, T) {
    let d = row.len() as f64;
    let mean = row.iter().map(|v| v.to_f64()).sum::<f64>() / d;
    let var = row.iter().map(|v| (v.to_f64() - mean).powi(2)).sum::<f64>() / d;
    (T::from_f64(mean), T::from_f64(1.0 / (var + eps).sqrt()))
}

/// The backward of [`layer_norm_forward`] (the closed form: `dx = r * (g - mean(g) - xhat *
/// mean(g * xhat))` with `g = dy * scale`), adding into `dx`, `dscale` and `dbias` where given.
#[allow(clippy::too_many_arguments)]
pub(crate) fn layer_norm_backward<T: Real>(
    x: &[T],
    inner: usize,
    scale: &[T],
    eps: f64,
    dy: &[T],
    mut dx: Option<&mut [T]>,
    mut dscale: Option<&mut [T]>,
    mut dbias: Option<&mut [T]>,
) {
    let pick = |v: &[T], j: usize| if v.len() == 1 { v[0] } else { v[j] };
    let d = T::from_f64(1.0 / inner as f64);
    let mut xhat = vec![T::ZERO; inner];
    let mut g = vec![T::ZERO; inner];
    for (r0, (row, dyr)) in x
        .chunks_exact(inner)
        .zip(dy.chunks_exact(inner))
        .enumerate()
    {
        let (mean, r) = moments(row, eps);
        for j in 0..inner {
            xhat[j] = (row[j] - mean) * r;
            g[j] = dyr[j] * pick(scale, j);
        }
        if let Some(ds) = dscale.as_deref_mut() {
            for j in 0..inner {
                ds[if ds.len() == 1 { 0 } else { j }] += dyr[j] * xhat[j];
            }
        }
        if let Some(db) = dbias.as_deref_mut() {
            for (j, &v) in dyr.iter().enumerate() {
                db[if db.len() == 1 { 0 } else { j }] += v;
            }
        }
        if let Some(dx) = dx.as_deref_mut() {
            let mean_g = g.iter().copied().sum::<T>() * d;
            let mean_gx = g.iter().zip(&xhat).map(|(&a, &b)| a * b).sum::<T>() * d;
            for j in 0..inner {
                dx[r0 * inner + j] += r * (g[j] - mean_g - xhat[j] * mean_gx);
            }
        }
    }
}

/// Softmax along an axis of `len` values with `inner` values after it (row-major), in place.
pub(crate) fn softmax_forward<T: Real>(x: &mut [T], len: usize, inner: usize) {
    if inner == 1 {
        for row in x.chunks_exact_mut(len) {
            softmax_in_place(row);
        }
        return;
    }
    let mut row = vec![T::ZERO; len];
    for block in x.chunks_exact_mut(len * inner) {
        for i in 0..inner {
            for (j, r) in row.iter_mut().enumerate() {
                *r = block[j * inner + i];
            }
            softmax_in_place(&mut row);
            for (j, &r) in row.iter().enumerate() {
                block[j * inner + i] = r;
            }
        }
    }
}

/// The backward of [`softmax_forward`] with output `y`: `dx += y * (dy - sum(y * dy))` along
/// the axis.
pub(crate) fn softmax_backward<T: Real>(y: &[T], dy: &[T], len: usize, inner: usize, dx: &mut [T]) {
    for ((yb, db), xb) in y
        .chunks_exact(len * inner)
        .zip(dy.chunks_exact(len * inner))
        .zip(dx.chunks_exact_mut(len * inner))
    {
        for i in 0..inner {
            let dot: T = (0..len)
                .map(|j| yb[j * inner + i] * db[j * inner + i])
                .sum();
            for j in 0..len {
                let at = j * inner + i;
                xb[at] += yb[at] * (db[at] - dot);
            }
        }
    }
}

/// One axis of a slice: elements `start, start + step, ...` below `end` (step > 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SliceAxis {
    pub axis: i64,
    pub start: i64,
    pub end: i64,
    pub step: i64,
}

/// Resolves ONNX `Slice` ranges against `shape` (negative starts, ends and axes count from
/// the end; everything clamped): the output shape, the first element's offset and the input
/// strides per output axis.
pub(crate) fn slice_plan(
    shape: &[usize],
    axes: &[SliceAxis],
) -> Result<(Vec<usize>, usize, Vec<usize>), String> {
    let rank = shape.len() as i64;
    let own = strides(shape);
    let mut out = shape.to_vec();
    let mut step_strides = own.clone();
    let mut base = 0;
    for s in axes {
        let a = if s.axis < 0 { s.axis + rank } else { s.axis };
        if !(0..rank).contains(&a) {
            return Err(format!("axis {} for shape {shape:?}", s.axis));
        }
        if s.step <= 0 {
            return Err(format!(
                "step {} (only positive steps are supported)",
                s.step
            ));
        }
        let a = a as usize;
        let dim = shape[a] as i64;
        let clamp = |v: i64| (if v < 0 { v + dim } else { v }).clamp(0, dim);
        let (start, end) = (clamp(s.start), clamp(s.end));
        let len = if end > start {
            (end - start + s.step - 1) / s.step
        } else {
            0
        };
        out[a] = len as usize;
        base += start as usize * own[a];
        step_strides[a] = own[a] * s.step as usize;
    }
    Ok((out, base, step_strides))
}

/// Gathers the slice `(out, base, strides)` of `x` (see [`slice_plan`]).
pub(crate) fn slice_forward<T: Real>(x: &[T], plan: &(Vec<usize>, usize, Vec<usize>)) -> Vec<T> {
    let (out, base, st) = plan;
    let mut y = vec![T::ZERO; out.iter().product()];
    runs(out, [st], |o, [i], len, [d]| {
        for (j, v) in y[o..o + len].iter_mut().enumerate() {
            *v = x[base + i + j * d];
        }
    });
    y
}

/// The backward of [`slice_forward`]: adds `dy` into the sliced elements of `dx`.
pub(crate) fn slice_backward<T: Real>(
    dy: &[T],
    plan: &(Vec<usize>, usize, Vec<usize>),
    dx: &mut [T],
) {
    let (out, base, st) = plan;
    runs(out, [st], |o, [i], len, [d]| {
        for (j, &v) in dy[o..o + len].iter().enumerate() {
            dx[base + i + j * d] += v;
        }
    });
}

/// ONNX `Gather` along `axis` of `shape` with constant `indices` (negative ones count from the
/// end): the output shape, or why it does not fit.
pub(crate) fn gather_shape(
    shape: &[usize],
    axis: usize,
    indices: &[i64],
    index_shape: &[usize],
) -> Result<Vec<usize>, String> {
    let dim = *shape
        .get(axis)
        .ok_or_else(|| format!("axis {axis} for shape {shape:?}"))? as i64;
    if let Some(i) = indices.iter().find(|&&i| i < -dim || i >= dim) {
        return Err(format!(
            "index {i} out of range for axis {axis} of {shape:?}"
        ));
    }
    let mut out = shape[..axis].to_vec();
    out.extend_from_slice(index_shape);
    out.extend_from_slice(&shape[axis + 1..]);
    Ok(out)
}

/// Gathers (`forward = true`: `y[o, j, i] = x[o, idx[j], i]`) or scatters the gradient back
/// (`dx[o, idx[j], i] += dy[o, j, i]`), for `x` of `shape` along `axis`.
pub(crate) fn gather<T: Real>(
    shape: &[usize],
    axis: usize,
    indices: &[i64],
    x: &[T],
    y: &mut [T],
    forward: bool,
) {
    let dim = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let outer: usize = shape[..axis].iter().product();
    let k = indices.len();
    for o in 0..outer {
        for (j, &i) in indices.iter().enumerate() {
            let i = if i < 0 { i + dim as i64 } else { i } as usize;
            let src = (o * dim + i) * inner;
            let dst = (o * k + j) * inner;
            if forward {
                y[dst..dst + inner].copy_from_slice(&x[src..src + inner]);
            } else {
                // Here `x` is dy and `y` is dx.
                for (a, &b) in y[src..src + inner].iter_mut().zip(&x[dst..dst + inner]) {
                    *a += b;
                }
            }
        }
    }
}

/// The shape a reduction over `axes` (already non-negative) keeps: 1 on the reduced axes.
pub(crate) fn reduced_shape(shape: &[usize], axes: &[usize]) -> Vec<usize> {
    shape
        .iter()
        .enumerate()
        .map(|(d, &n)| if axes.contains(&d) { 1 } else { n })
        .collect()
}

/// Sums `x` (of `shape`) into a tensor of `kept` (see [`reduced_shape`]), times `scale`.
pub(crate) fn reduce_forward<T: Real>(
    x: &[T],
    shape: &[usize],
    kept: &[usize],
    scale: T,
) -> Vec<T> {
    let mut out = vec![T::ZERO; kept.iter().product()];
    let sk = broadcast_strides(kept, shape);
    runs(shape, [&sk], |o, [k], len, [d]| {
        for (j, &v) in x[o..o + len].iter().enumerate() {
            out[k + j * d] += v;
        }
    });
    for v in &mut out {
        *v *= scale;
    }
    out
}

/// The backward of [`reduce_forward`]: `dx += scale * dy` broadcast back to `shape`.
pub(crate) fn reduce_backward<T: Real>(
    dy: &[T],
    shape: &[usize],
    kept: &[usize],
    scale: T,
    dx: &mut [T],
) {
    let sk = broadcast_strides(kept, shape);
    runs(shape, [&sk], |o, [k], len, [d]| {
        for (j, v) in dx[o..o + len].iter_mut().enumerate() {
            *v += scale * dy[k + j * d];
        }
    });
}

/// Concatenates `parts` (shapes and values) along `axis`: the output shape and values.
pub(crate) fn concat_forward<T: Real>(
    parts: &[(&[usize], &[T])],
    axis: usize,
) -> Result<(Vec<usize>, Vec<T>), String> {
    let first = parts[0].0;
    let mut shape = first.to_vec();
    if axis >= shape.len() {
        return Err(format!("axis {axis} for shape {first:?}"));
    }
    shape[axis] = 0;
    for (s, _) in parts {
        if s.len() != first.len()
            || s[..axis] != first[..axis]
            || s[axis + 1..] != first[axis + 1..]
        {
            return Err(format!(
                "concatenates shapes {first:?} and {s:?} along axis {axis}"
            ));
        }
        shape[axis] += s[axis];
    }
    let outer: usize = first[..axis].iter().product();
    let mut data = Vec::with_capacity(shape.iter().product());
    for o in 0..outer {
        for (s, v) in parts {
            let inner: usize = s[axis..].iter().product();
            data.extend_from_slice(&v[o * inner..(o + 1) * inner]);
        }
    }
    Ok((shape, data))
}

/// The backward of [`concat_forward`]: part `p`'s gradient, for parts of `shapes`.
pub(crate) fn concat_backward<T: Real>(dy: &[T], shapes: &[&[usize]], axis: usize) -> Vec<Vec<T>> {
    let outer: usize = shapes[0][..axis].iter().product();
    let inners: Vec<usize> = shapes.iter().map(|s| s[axis..].iter().product()).collect();
    let total: usize = inners.iter().sum();
    let mut out: Vec<Vec<T>> = inners
        .iter()
        .map(|&i| Vec::with_capacity(i * outer))
        .collect();
    for o in 0..outer {
        let mut at = o * total;
        for (p, &inner) in inners.iter().enumerate() {
            out[p].extend_from_slice(&dy[at..at + inner]);
            at += inner;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::kernels::tests::{check_gradient, noise};
    use super::*;

    /// `sum(w * f(x))` for fixed random weights `w`: a scalar whose gradient is `f`'s
    /// vector-Jacobian product with `w`.
    fn weights(n: usize) -> Vec<f64> {
        noise(77, n)
    }

    fn dot(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn broadcast_runs_visit_every_element_once_in_order() {
        let shape = [2, 3, 1, 4];
        let sb = broadcast_strides(&[3, 1, 1], &shape);
        let mut seen = Vec::new();
        runs(&shape, [&sb], |o, [k], len, [d]| {
            for j in 0..len {
                seen.push((o + j, k + j * d));
            }
        });
        let expected: Vec<(usize, usize)> = (0..24).map(|i| (i, (i / 4) % 3)).collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn broadcast_binary_ops_match_finite_differences() {
        for op in [
            Binary::Add,
            Binary::Sub,
            Binary::Mul,
            Binary::Div,
            Binary::Pow,
        ] {
            for (sa, sb) in [
                (vec![2, 3, 4], vec![2, 3, 4]),
                (vec![2, 3, 4], vec![3, 1]),
                (vec![1, 4], vec![2, 3, 1]),
                (vec![2, 3, 4], vec![]),
            ] {
                let na: usize = sa.iter().product();
                let nb: usize = sb.iter().product();
                // Positive operands, so that Pow and Div are smooth.
                let a: Vec<f64> = noise(1, na).iter().map(|v| 1.5 + v).collect();
                let b: Vec<f64> = noise(2, nb).iter().map(|v| 1.5 + v).collect();
                let (shape, y) = op.forward((&sa, &a), (&sb, &b)).unwrap();
                let w = weights(y.len());
                let f_a = |x: &[f64]| dot(&op.forward((&sa, x), (&sb, &b)).unwrap().1, &w);
                let f_b = |x: &[f64]| dot(&op.forward((&sa, &a), (&sb, x)).unwrap().1, &w);
                let (mut da, mut db) = (vec![0.0; na], vec![0.0; nb]);
                op.backward(
                    (&sa, &a),
                    (&sb, &b),
                    (&shape, &y),
                    &w,
                    Some(&mut da),
                    Some(&mut db),
                );
                check_gradient(&f_a, &a, &da, &format!("{op:?} {sa:?} {sb:?} a"));
                check_gradient(&f_b, &b, &db, &format!("{op:?} {sa:?} {sb:?} b"));
            }
        }
    }

    #[test]
    fn matmul_broadcasts_batch_axes_and_its_backward_matches_finite_differences() {
        for (sa, sb) in [
            (vec![2, 5, 3], vec![3, 4]),          // folded: a weight
            (vec![5, 3], vec![2, 3, 4]),          // a constant on the left, batched right
            (vec![2, 2, 5, 3], vec![2, 1, 3, 4]), // broadcast batch
            (vec![3], vec![2, 3, 4]),             // 1-D left
            (vec![2, 5, 3], vec![3]),             // 1-D right
        ] {
            let plan = MatMulPlan::new(&sa, &sb).unwrap();
            let na: usize = sa.iter().product();
            let nb: usize = sb.iter().product();
            let (a, b) = (noise(3, na), noise(4, nb));
            let y = plan.forward(&a, &b);
            // Against the definition, element by element.
            let mut want = vec![0.0; y.len()];
            let (k, n, m) = (plan.k, plan.n, plan.m);
            let batch: usize = plan.batch.iter().product();
            let sa_b = broadcast_strides(&sa[..sa.len().saturating_sub(2)], &plan.batch);
            let sb_b = broadcast_strides(&sb[..sb.len().saturating_sub(2)], &plan.batch);
            let bst = strides(&plan.batch);
            for bi in 0..batch {
                let idx: Vec<usize> = bst
                    .iter()
                    .zip(&plan.batch)
                    .map(|(s, d)| bi / s % d)
                    .collect();
                let oa: usize = idx.iter().zip(&sa_b).map(|(i, s)| i * s).sum::<usize>() * m * k;
                let ob: usize = idx.iter().zip(&sb_b).map(|(i, s)| i * s).sum::<usize>() * k * n;
                for r in 0..m {
                    for c in 0..n {
                        want[(bi * m + r) * n + c] =
                            (0..k).map(|p| a[oa + r * k + p] * b[ob + p * n + c]).sum();
                    }
                }
            }
            for (g, w) in y.iter().zip(&want) {
                assert!((g - w).abs() < 1e-12, "{sa:?} @ {sb:?}");
            }
            let w = weights(y.len());
            let (mut da, mut db) = (vec![0.0; na], vec![0.0; nb]);
            plan.backward(&a, &b, &w, Some(&mut da), Some(&mut db));
            check_gradient(&|x| dot(&plan.forward(x, &b), &w), &a, &da, "matmul a");
            check_gradient(&|x| dot(&plan.forward(&a, x), &w), &b, &db, "matmul b");
        }
    }

    #[test]
    fn transpose_moves_every_element_to_its_permuted_place() {
        let shape = [2, 3, 4, 5];
        let x = noise(12, 120);
        let perm = [2, 0, 3, 1];
        let (out, y) = transpose(&shape, &perm, &x);
        assert_eq!(out, vec![4, 2, 5, 3]);
        let (si, so) = (strides(&shape), strides(&out));
        for (i, &v) in x.iter().enumerate() {
            let idx: Vec<usize> = (0..4).map(|d| i / si[d] % shape[d]).collect();
            let at: usize = perm.iter().zip(&so).map(|(&p, s)| idx[p] * s).sum();
            assert_eq!(y[at], v);
        }
    }

    #[test]
    fn layer_norm_backward_matches_finite_differences() {
        let (rows, inner) = (3, 8);
        let x: Vec<f64> = noise(5, rows * inner)
            .iter()
            .map(|v| 2.0 * v + 0.3)
            .collect();
        let scale: Vec<f64> = noise(6, inner).iter().map(|v| 1.0 + 0.5 * v).collect();
        let bias = noise(7, inner);
        let w = weights(rows * inner);
        let f = |x: &[f64], s: &[f64], b: &[f64]| {
            dot(&layer_norm_forward(x, inner, s, Some(b), 1e-5), &w)
        };
        let (mut dx, mut ds, mut db) = (vec![0.0; x.len()], vec![0.0; inner], vec![0.0; inner]);
        layer_norm_backward(
            &x,
            inner,
            &scale,
            1e-5,
            &w,
            Some(&mut dx),
            Some(&mut ds),
            Some(&mut db),
        );
        check_gradient(&|v| f(v, &scale, &bias), &x, &dx, "layer norm x");
        check_gradient(&|v| f(&x, v, &bias), &scale, &ds, "layer norm scale");
        check_gradient(&|v| f(&x, &scale, v), &bias, &db, "layer norm bias");
    }

    #[test]
    fn softmax_over_a_middle_axis_and_its_backward() {
        let (outer, len, inner) = (2, 5, 3);
        let x = noise(8, outer * len * inner);
        let mut y = x.clone();
        softmax_forward(&mut y, len, inner);
        for o in 0..outer {
            for i in 0..inner {
                let s: f64 = (0..len).map(|j| y[(o * len + j) * inner + i]).sum();
                assert!((s - 1.0).abs() < 1e-12);
            }
        }
        let w = weights(y.len());
        let mut dx = vec![0.0; x.len()];
        softmax_backward(&y, &w, len, inner, &mut dx);
        let f = |v: &[f64]| {
            let mut y = v.to_vec();
            softmax_forward(&mut y, len, inner);
            dot(&y, &w)
        };
        check_gradient(&f, &x, &dx, "softmax axis 1 of 3");
    }

    #[test]
    fn slices_gathers_reductions_and_concatenations_are_adjoint() {
        let shape = [2, 5, 4];
        let x = noise(9, 40);
        let plan = slice_plan(
            &shape,
            &[
                SliceAxis {
                    axis: -2,
                    start: 1,
                    end: 100,
                    step: 2,
                },
                SliceAxis {
                    axis: 2,
                    start: -3,
                    end: -1,
                    step: 1,
                },
            ],
        )
        .unwrap();
        assert_eq!(plan.0, vec![2, 2, 2]);
        let y = slice_forward(&x, &plan);
        assert_eq!(y[0], x[4 + 1]);
        assert_eq!(y[3], x[3 * 4 + 2]);
        // <slice(x), w> == <x, slice^T(w)> for the adjoint.
        let w = weights(y.len());
        let mut dx = vec![0.0; x.len()];
        slice_backward(&w, &plan, &mut dx);
        assert!((dot(&y, &w) - dot(&x, &dx)).abs() < 1e-12);

        let idx = [3i64, -5, 3];
        let gs = gather_shape(&shape, 1, &idx, &[3]).unwrap();
        assert_eq!(gs, vec![2, 3, 4]);
        let mut g = vec![0.0; 24];
        gather(&shape, 1, &idx, &x, &mut g, true);
        assert_eq!(g[4..8], x[0..4]);
        let w = weights(24);
        let mut dx = vec![0.0; 40];
        gather(&shape, 1, &idx, &w, &mut dx, false);
        assert!((dot(&g, &w) - dot(&x, &dx)).abs() < 1e-12);

        let kept = reduced_shape(&shape, &[0, 2]);
        let r = reduce_forward(&x, &shape, &kept, 0.125);
        assert_eq!(kept, vec![1, 5, 1]);
        let want: f64 = (0..2)
            .flat_map(|o| (0..4).map(move |i| o * 20 + 4 + i))
            .map(|i| x[i])
            .sum();
        assert!((r[1] - want / 8.0).abs() < 1e-12);
        let w = weights(5);
        let mut dx = vec![0.0; 40];
        reduce_backward(&w, &shape, &kept, 0.125, &mut dx);
        assert!((dot(&r, &w) - dot(&x, &dx)).abs() < 1e-12);

        let (a, b) = (noise(10, 2 * 3 * 4), noise(11, 2 * 4));
        let (cs, c) = concat_forward(&[(&[2, 3, 4], &a[..]), (&[2, 1, 4], &b[..])], 1).unwrap();
        assert_eq!(cs, vec![2, 4, 4]);
        assert_eq!(c[12..16], b[0..4]);
        let parts = concat_backward(&c, &[&[2, 3, 4], &[2, 1, 4]], 1);
        assert_eq!((parts[0].clone(), parts[1].clone()), (a, b));
    }
}
