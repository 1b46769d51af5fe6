//! The element types the differentiable evaluator runs in: `f32` for searches, `f64` for
//! finite-difference checks. Matrix products go to `matrixmultiply`'s packed kernels.

use std::fmt::Debug;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Div, Mul, MulAssign, Neg, Sub, SubAssign};

/// A floating-point element type of the evaluator (`f32` or `f64`).
pub trait Real:
    Copy
    + Send
    + Sync
    + Debug
    + Default
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + Sum
    + 'static
{
    /// 0.
    const ZERO: Self;
    /// 1.
    const ONE: Self;
    /// The type's name, for messages.
    const NAME: &'static str;
    /// Rounds an `f64`.
    fn from_f64(v: f64) -> Self;
    /// Widens to `f64`.
    fn to_f64(self) -> f64;
    /// `self ^ e`.
    fn powf(self, e: Self) -> Self;
    /// The square root.
    fn sqrt(self) -> Self;
    /// `e ^ self`.
    fn exp(self) -> Self;
    /// The natural logarithm.
    fn ln(self) -> Self;
    /// The hyperbolic tangent.
    fn tanh(self) -> Self;
    /// The error function (`libm`'s, a port of musl's, accurate to about an ulp).
    fn erf(self) -> Self;
    /// Whether neither infinite nor NaN.
    fn is_finite(self) -> bool;
    /// Whether NaN.
    fn is_nan(self) -> bool;
    /// `c = alpha * a * b + beta * c` for an `m x k` matrix `a`, a `k x n` matrix `b` and an
    /// `m x n` matrix `c`, each given by its slice and (row, column) strides in elements.
    /// With `beta == 0`, `c` is not read. Panics if a matrix does not fit in its slice.
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: (&[Self], usize, usize),
        b: (&[Self], usize, usize),
        beta: Self,
        c: (&mut [Self], usize, usize),
    );
}

/// One past the last element a `rows x cols` matrix with these strides touches.
fn span(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * rs + (cols - 1) * cs + 1
    }
}

macro_rules! real {
    ($t:ty, $gemm:ident, $erf:ident) => {
        impl Real for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const NAME: &'static str = stringify!($t);
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn powf(self, e: Self) -> Self {
                <$t>::powf(self, e)
            }
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            fn erf(self) -> Self {
                libm::$erf(self)
            }
            fn is_finite(self) -> bool {
                <$t>::is_finite(self)
            }
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
            fn gemm(
                m: usize,
                k: usize,
                n: usize,
                alpha: Self,
                a: (&[Self], usize, usize),
                b: (&[Self], usize, usize),
                beta: Self,
                c: (&mut [Self], usize, usize),
            ) {
                assert!(span(m, k, a.1, a.2) <= a.0.len(), "gemm: a does not fit");
                assert!(span(k, n, b.1, b.2) <= b.0.len(), "gemm: b does not fit");
                assert!(span(m, n, c.1, c.2) <= c.0.len(), "gemm: c does not fit");
                if m == 0 || n == 0 {
                    return;
                }
                // SAFETY: the asserts above check that every element the strides reach lies
                // inside its slice; `c` is borrowed mutably, so it aliases neither `a` nor `b`.
                unsafe {
                    matrixmultiply::$gemm(
                        m,
                        k,
                        n,
                        alpha,
                        a.0.as_ptr(),
                        a.1 as isize,
                        a.2 as isize,
                        b.0.as_ptr(),
                        b.1 as isize,
                        b.2 as isize,
                        beta,
                        c.0.as_mut_ptr(),
                        c.1 as isize,
                        c.2 as isize,
                    )
                }
            }
        }
    };
}

real!(f32, sgemm, erff);
real!(f64, dgemm, erf);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemm_with_transposed_strides_matches_the_definition() {
        // a: 2x3 row-major; b given as its transpose (3x2 read through column strides).
        let a = [1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0];
        let bt = [1.0f64, 0.0, -1.0, 2.0, 1.0, 0.5]; // b^T, 2x3 row-major, so b is 3x2
        let mut c = [10.0f64; 4];
        f64::gemm(2, 3, 2, 2.0, (&a, 3, 1), (&bt, 1, 3), 1.0, (&mut c, 2, 1));
        let dot = |i: usize, j: usize| (0..3).map(|p| a[i * 3 + p] * bt[j * 3 + p]).sum::<f64>();
        for i in 0..2 {
            for j in 0..2 {
                assert_eq!(c[i * 2 + j], 10.0 + 2.0 * dot(i, j));
            }
        }
    }
}
