//! The four activation functions of the released code's CPPN set (`af_cppn.hpp`) and the
//! branch-free `f32` kernels that compute them.
//!
//! | name | function | note |
//! |---|---|---|
//! | `sine` | sin(p) | |
//! | `sigmoid` | 2 / (1 + e^-p) - 1 | bipolar, in (-1, 1) |
//! | `gaussian` | e^(-p²) | |
//! | `linear` | clamp(p, -3, 3) / 3 | |
//!
//! `tanh(5p)` exists in the released enum but not in its sampled set, so it is not offered.
//!
//! Why our own `sin` and `exp`: the renderer evaluates a node over a whole tile of pixels at
//! once, and libm calls would keep those loops scalar. The kernels below use only IEEE basic
//! operations and bit manipulation, so the compiler vectorises them *and* a vector lane gives
//! bit for bit what the scalar call gives, which is what lets the reference evaluator and the
//! fast renderer agree byte for byte. Accuracy against `f64` libm: `exp` within about 2 ulp,
//! `sin` within about 2e-7 absolute for |p| up to about 2e5 (Cody–Waite reduction with a
//! three-part π), degrading slowly beyond that; arguments are clamped to ±1e7, where an `f32`
//! no longer resolves the phase anyway. A pixel byte is `trunc(|v| * 255)`, so these errors
//! can only move a byte whose exact value sits within 1e-4 of an integer.

use std::fmt;

/// One activation function. The discriminants are the genome byte format's codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Activation {
    /// sin(p).
    Sine = 0,
    /// Bipolar sigmoid 2 / (1 + e^-p) - 1.
    Sigmoid = 1,
    /// e^(-p²).
    Gaussian = 2,
    /// clamp(p, -3, 3) / 3.
    Linear = 3,
}

impl Activation {
    /// Every activation, in code order.
    pub const ALL: [Activation; 4] = [
        Activation::Sine,
        Activation::Sigmoid,
        Activation::Gaussian,
        Activation::Linear,
    ];

    /// The name used in parameters, `describe()` and DOT labels.
    pub fn name(self) -> &'static str {
        match self {
            Activation::Sine => "sine",
            Activation::Sigmoid => "sigmoid",
            Activation::Gaussian => "gaussian",
            Activation::Linear => "linear",
        }
    }

    /// The activation of this name, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The byte-format code.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The activation of this byte-format code, if any.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(usize::from(code)).copied()
    }

    /// Applies the function to one value.
    #[inline(always)]
    pub fn apply(self, p: f32) -> f32 {
        match self {
            Activation::Sine => sine(p),
            Activation::Sigmoid => sigmoid(p),
            Activation::Gaussian => gaussian(p),
            Activation::Linear => linear(p),
        }
    }

    /// Applies the function to every value in place; the `match` sits outside the loops so
    /// each loop body is straight-line code the compiler vectorises.
    pub fn apply_in_place(self, values: &mut [f32]) {
        match self {
            Activation::Sine => map(values, sine),
            Activation::Sigmoid => map(values, sigmoid),
            Activation::Gaussian => map(values, gaussian),
            Activation::Linear => map(values, linear),
        }
    }
}

/// Applies `f` to every value, in a loop of its own per activation.
#[inline(always)]
fn map(values: &mut [f32], f: impl Fn(f32) -> f32) {
    values.iter_mut().for_each(|v| *v = f(*v));
}

impl fmt::Display for Activation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// 1.5 * 2^23: adding and subtracting it rounds an `f32` of magnitude below 2^22 to the
/// nearest integer (ties to even) with plain additions, which SSE2 vectorises (`round`
/// would need SSE4.1), and leaves that integer in the low mantissa bits.
const ROUND_MAGIC: f32 = 12_582_912.0;

/// π in three parts (Cephes): `PI_A` has 8 significant bits, so `k * PI_A` is exact for
/// |k| < 2^16 and the reduction stays accurate far beyond the ±2550 a raw pixel index times
/// a weight of 10 reaches.
const PI_A: f32 = 3.140_625;
const PI_B: f32 = 9.675_026e-4;
const PI_C: f32 = 1.509_958e-7;
/// Beyond this, `k` would leave the range where `ROUND_MAGIC` rounds exactly.
const SINE_LIMIT: f32 = 1.0e7;

#[inline(always)]
fn sine(p: f32) -> f32 {
    let x = p.clamp(-SINE_LIMIT, SINE_LIMIT);
    let t = x * std::f32::consts::FRAC_1_PI + ROUND_MAGIC;
    // sin(x) = (-1)^k sin(x - kπ): the parity of k is the low mantissa bit of t.
    let sign = t.to_bits() << 31;
    let k = t - ROUND_MAGIC;
    let r = ((x - k * PI_A) - k * PI_B) - k * PI_C;
    let r2 = r * r;
    // Odd degree-11 minimax polynomial on [-π/2, π/2] (fitted with Lawson's algorithm): 2e-11
    // in exact arithmetic, so f32 rounding (about 1.2e-7) is all the error left.
    let poly = -0.166_666_67
        + r2 * (8.333_33e-3 + r2 * (-1.984_080_3e-4 + r2 * (2.752_255e-6 - r2 * 2.384_551_2e-8)));
    let s = r + r * r2 * poly;
    f32::from_bits(s.to_bits() ^ sign)
}

/// e^x is 0 in `f32` (flushed, not subnormal) below this, and 2^n stays a normal float.
const EXP_MIN: f32 = -87.3;
/// Keeps 2^n finite; only sigmoid sees large arguments, where 2 / (1 + 2e38) - 1 is -1.
const EXP_MAX: f32 = 88.3;

/// ln 2 in two parts (Cephes): `LN2_HI` is 355/512 exactly, so `n * LN2_HI` is exact.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;

#[inline(always)]
fn exp(x: f32) -> f32 {
    let xc = x.clamp(EXP_MIN, EXP_MAX);
    let t = xc * std::f32::consts::LOG2_E + ROUND_MAGIC;
    let n = t - ROUND_MAGIC;
    // 2^n built from its exponent bits; n lies in [-126, 127].
    let scale = f32::from_bits(
        t.to_bits()
            .wrapping_sub(ROUND_MAGIC.to_bits())
            .wrapping_add(127)
            << 23,
    );
    // Cephes expf: ln 2 in two parts, then a degree-7 polynomial on [-ln2/2, ln2/2].
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let y = (((((1.987_569_1e-4 * r + 1.398_2e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5)
        * (r * r)
        + r
        + 1.0;
    if x < EXP_MIN { 0.0 } else { y * scale }
}

#[inline(always)]
fn sigmoid(p: f32) -> f32 {
    2.0 / (1.0 + exp(-p)) - 1.0
}

#[inline(always)]
fn gaussian(p: f32) -> f32 {
    exp(-(p * p))
}

#[inline(always)]
fn linear(p: f32) -> f32 {
    p.clamp(-3.0, 3.0) / 3.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(a: Activation, p: f64) -> f64 {
        match a {
            Activation::Sine => p.sin(),
            Activation::Sigmoid => 2.0 / (1.0 + (-p).exp()) - 1.0,
            Activation::Gaussian => (-p * p).exp(),
            Activation::Linear => p.clamp(-3.0, 3.0) / 3.0,
        }
    }

    #[test]
    fn names_and_codes_round_trip() {
        for a in Activation::ALL {
            assert_eq!(Activation::from_name(a.name()), Some(a));
            assert_eq!(Activation::from_code(a.code()), Some(a));
        }
        assert_eq!(Activation::from_name("tanh"), None);
        assert_eq!(Activation::from_code(4), None);
    }

    #[test]
    fn known_values() {
        assert_eq!(Activation::Sine.apply(0.0), 0.0);
        assert_eq!(Activation::Sigmoid.apply(0.0), 0.0);
        assert_eq!(Activation::Gaussian.apply(0.0), 1.0);
        assert_eq!(Activation::Linear.apply(1.5), 0.5);
        assert_eq!(Activation::Linear.apply(-7.0), -1.0);
        assert_eq!(Activation::Sigmoid.apply(200.0), 1.0);
        assert_eq!(Activation::Sigmoid.apply(-200.0), -1.0);
        assert_eq!(Activation::Gaussian.apply(10.0), 0.0);
        assert!((Activation::Sine.apply(std::f32::consts::FRAC_PI_2) - 1.0).abs() <= 2e-7);
    }

    #[test]
    fn kernels_match_f64_libm() {
        // A dense sweep over the range sums of raw pixel indices times weights reach.
        let mut worst = [0.0f64; 4];
        let mut p = -3000.0f32;
        while p < 3000.0 {
            for (i, a) in Activation::ALL.into_iter().enumerate() {
                let err = (a.apply(p) as f64 - exact(a, p as f64)).abs();
                worst[i] = worst[i].max(err);
            }
            p += 0.0137;
        }
        assert!(worst.iter().all(|&e| e < 5e-7), "worst errors {worst:?}");
        // Far arguments stay accurate while the reduction is exact, and bounded after.
        for p in [1.0e4f32, 5.0e4, 2.0e5, -1.5e5] {
            let err = (sine(p) as f64 - (p as f64).sin()).abs();
            assert!(err < 1e-6, "sin({p}) off by {err}");
        }
        for p in [3.0e6f32, -9.9e6, 1.0e30, f32::MAX] {
            assert!(sine(p).abs() <= 1.0 + 1e-6, "sin({p}) = {}", sine(p));
        }
    }

    #[test]
    fn exp_has_relative_accuracy_over_its_range() {
        let mut x = -87.0f32;
        while x < 88.0 {
            let rel = ((exp(x) as f64) / (x as f64).exp() - 1.0).abs();
            assert!(rel < 3e-7, "exp({x}) relative error {rel}");
            x += 0.0271;
        }
        assert_eq!(exp(-100.0), 0.0);
        assert!(exp(1000.0).is_finite());
    }

    #[test]
    fn slices_give_the_scalar_results_bit_for_bit() {
        let values: Vec<f32> = (0..4099).map(|i| (i as f32 - 2049.0) * 0.731).collect();
        for a in Activation::ALL {
            let mut v = values.clone();
            a.apply_in_place(&mut v);
            for (out, &p) in v.iter().zip(&values) {
                assert_eq!(out.to_bits(), a.apply(p).to_bits(), "{a} at {p}");
            }
        }
    }
}
