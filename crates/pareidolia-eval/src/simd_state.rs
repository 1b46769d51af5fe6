//! tract's hand-written x86-64 matrix kernels (`tract-linalg`'s `fma_mmm_*` assembly) return
//! without `vzeroupper`, so a thread that ran tract keeps the upper halves of its YMM
//! registers "dirty" afterwards. On the Xeons we run on, every legacy-SSE instruction on such a
//! thread then pays a merge with that state: measured here, the direct encoding's mutation
//! (f64 arithmetic and glibc's `pow`) ran 2 to 5 times slower on a thread that had run tract
//! before than on one that had not (BENCHMARKS.md, "The dirty-upper-state stall"). The
//! compiled Rust code around the kernels is SSE (the x86-64 baseline) and the plugins are too,
//! so the tract backend clears the state after each call into tract.

/// Clears the upper halves of the vector registers (`vzeroupper`) where the CPU has AVX; a
/// no-op elsewhere.
#[inline]
pub(crate) fn clear_upper_state() {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU has AVX (checked just above), which is all `vzeroupper` needs.
        unsafe { zero_upper() }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
fn zero_upper() {
    // The intrinsic, not inline assembly: the compiler knows what it clobbers.
    std::arch::x86_64::_mm256_zeroupper();
}

/// Whether this thread's upper YMM halves are in use (not in their initial, zeroed state),
/// read from the XINUSE bitmap (`xgetbv` with ECX = 1, bit 2). `None` where the CPU cannot
/// tell (no AVX, or no XGETBV with ECX = 1).
#[cfg(test)]
pub(crate) fn upper_state_in_use() -> Option<bool> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::__cpuid_count;
        if !std::arch::is_x86_feature_detected!("avx")
            || !std::arch::is_x86_feature_detected!("xsave")
        {
            return None;
        }
        // CPUID.(EAX=0DH, ECX=1):EAX bit 2: XGETBV with ECX = 1 is supported.
        let leaf = __cpuid_count(0xd, 1);
        if leaf.eax & 0b100 == 0 {
            return None;
        }
        // SAFETY: XSAVE and XGETBV with ECX = 1 are supported (checked above).
        let in_use = unsafe { xinuse() };
        Some(in_use & 0b100 != 0)
    }
    #[cfg(not(target_arch = "x86_64"))]
    None
}

/// Whether XINUSE reports the upper state in use right after a 256-bit AVX instruction (and
/// clean after `vzeroupper`) on this thread.
#[cfg(test)]
fn xinuse_tracks_avx() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: only called where `upper_state_in_use` answered, i.e. the CPU has AVX.
        unsafe { touch_upper() };
        let dirty = upper_state_in_use() == Some(true);
        clear_upper_state();
        dirty && upper_state_in_use() == Some(false)
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

#[cfg(all(test, target_arch = "x86_64"))]
#[target_feature(enable = "avx")]
fn touch_upper() {
    use std::arch::x86_64::{_mm256_add_ps, _mm256_set1_ps};
    let a = _mm256_set1_ps(std::hint::black_box(1.5));
    std::hint::black_box(_mm256_add_ps(a, a));
}

#[cfg(all(test, target_arch = "x86_64"))]
#[target_feature(enable = "xsave")]
fn xinuse() -> u64 {
    // SAFETY: the caller checked that the CPU supports XGETBV with ECX = 1.
    unsafe { std::arch::x86_64::_xgetbv(1) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Model, ModelRef, PreparedModel, TractBackend};

    /// After a tract batch the thread's vector state is clean again: without the clearing,
    /// tract's kernels leave the upper halves in use (checked first with a raw tract run).
    #[test]
    fn tract_inference_leaves_the_upper_vector_state_clean() {
        let Some(_) = upper_state_in_use() else {
            eprintln!("this CPU cannot report the AVX state (XINUSE); nothing to check");
            return;
        };
        let model = Model::load(&ModelRef::parse("builtin:lenet-mnist", ".".as_ref())).unwrap();
        let (mut prepared, _) = TractBackend.prepare_plain(&model).unwrap();
        let images = vec![7u8; 2 * model.image_len()];
        // Run on a fresh thread, so nothing else this test process did is in the state.
        let (dirty_inside, clean_after) = std::thread::spawn(move || {
            let raw = prepared.run(&images, 2).unwrap();
            let dirty_inside = upper_state_in_use().unwrap();
            let out = prepared.infer(&images, 2).unwrap();
            assert_eq!(out, raw);
            (dirty_inside, !upper_state_in_use().unwrap())
        })
        .join()
        .unwrap();
        if !dirty_inside && !xinuse_tracks_avx() {
            // Some CPUs (seen on an AMD EPYC VM) never report the YMM state in use, even right
            // after an AVX instruction: there the state cannot be observed, only cleared.
            eprintln!("this CPU does not report YMM use in XINUSE; nothing to check");
            return;
        }
        assert!(
            dirty_inside,
            "tract's kernels no longer leave the upper state in use: the clearing may go"
        );
        assert!(
            clean_after,
            "the upper vector state is still in use after a tract batch"
        );
    }
}
