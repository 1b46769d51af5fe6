//! A memo in front of the SDK's `ColorSpace::to_rgb`, which costs about as much per pixel
//! as evaluating several CPPN nodes (it calls libm's `floorf` and `rintf`, and cannot be
//! inlined across the crate boundary).
//!
//! CPPN images repeat colours a lot (a few hundred to a few tens of thousands of distinct
//! ones in 65,536 pixels), so a direct-mapped table keyed by the three bytes and the colour
//! space answers most pixels with one load and compare. A miss calls `to_rgb` and overwrites
//! the slot, so results are always exactly `to_rgb`'s. The table lives in the renderer's
//! thread-local scratch space and survives across renders, which helps more in evolution,
//! where a thread renders children of the same few parents.

use pareidolia_plugin::color::ColorSpace;

/// Slots in the table: 64 Ki of 8 bytes (512 KiB per rendering thread), one per pixel of a
/// 256x256 canvas. With a quarter of that, a busy 256x256 image (24,000 colours) spent
/// 1.15 ms of its render converting colours; with this size, 0.63 ms.
const SLOTS: usize = 1 << 16;

/// The memo; empty until first used so gray-only threads never allocate it.
#[derive(Debug, Default)]
pub struct ColourMemo {
    /// Per slot, `key << 32 | rgb`, where `key = space tag << 24 | bytes` and tags start
    /// at 1, so 0 is an empty slot. One load answers a hit.
    slots: Vec<u64>,
}

impl ColourMemo {
    /// `color_space.to_rgb(bytes)`, remembered.
    #[inline]
    pub fn convert(&mut self, color_space: ColorSpace, bytes: [u8; 3]) -> [u8; 3] {
        let tag: u32 = match color_space {
            // Identity: nothing to remember.
            ColorSpace::Rgb => return bytes,
            ColorSpace::Hsv => 1,
            ColorSpace::HlsOpencv => 2,
        };
        if self.slots.is_empty() {
            self.slots = vec![0; SLOTS];
        }
        let key = tag << 24 | u32::from_le_bytes([bytes[2], bytes[1], bytes[0], 0]);
        // Fibonacci hashing: neighbouring colours land far apart.
        let slot = (key.wrapping_mul(0x9e37_79b1) >> (32 - SLOTS.trailing_zeros())) as usize;
        let entry = self.slots[slot & (SLOTS - 1)];
        let rgb = if (entry >> 32) as u32 == key {
            entry as u32
        } else {
            self.miss(color_space, bytes, key, slot)
        };
        let [r, g, b, _] = rgb.to_le_bytes();
        [r, g, b]
    }

    /// Converts, stores and returns the packed result; kept out of line so the hit path
    /// inlines into the pixel loop.
    #[cold]
    #[inline(never)]
    fn miss(&mut self, color_space: ColorSpace, bytes: [u8; 3], key: u32, slot: usize) -> u32 {
        let [r, g, b] = color_space.to_rgb(bytes);
        let rgb = u32::from_le_bytes([r, g, b, 0]);
        self.slots[slot & (SLOTS - 1)] = u64::from(key) << 32 | u64::from(rgb);
        rgb
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn always_answers_what_to_rgb_answers() {
        let mut memo = ColourMemo::default();
        // Far more colours than slots, visited twice, alternating spaces.
        for pass in 0..2 {
            for i in 0..200_000u32 {
                let bytes = (i.wrapping_mul(2_654_435_761) >> 8).to_le_bytes();
                let bytes = [bytes[0], bytes[1], bytes[2]];
                for space in [ColorSpace::Hsv, ColorSpace::HlsOpencv, ColorSpace::Rgb] {
                    assert_eq!(
                        memo.convert(space, bytes),
                        space.to_rgb(bytes),
                        "pass {pass}, {space:?} {bytes:?}"
                    );
                }
            }
        }
    }
}
