//! Colour helpers for encodings: how the paper's code turns values into 8-bit pixels, and
//! the three colour spaces a three-channel genome can be read in (all rendered as RGB).

use serde::{Deserialize, Serialize};

/// How three 8-bit genes of a pixel become RGB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ColorSpace {
    /// Hue, saturation, value; hue spans the full byte range once (the paper's text).
    Hsv,
    /// OpenCV's 8-bit HLS as `cvtColor(CV_HLS2BGR)` reads it (the released code): hue is
    /// `H * 6 / 180` sectors and wraps above 180, so bytes 180..255 repeat hues 0..75.
    HlsOpencv,
    /// The genes are the red, green and blue bytes.
    Rgb,
}

/// `trunc(g * 255)`, as the released code turns genes into pixel values.
// Inlined into the plugins' render loops (a call per pixel otherwise: 1% of a default run).
#[inline]
pub fn gene_to_byte(g: f32) -> u8 {
    (g.clamp(0.0, 1.0) * 255.0) as u8
}

fn to_byte(v: f32) -> u8 {
    // OpenCV's saturate_cast rounds half to even.
    (v * 255.0).round_ties_even().clamp(0.0, 255.0) as u8
}

impl ColorSpace {
    /// Converts one pixel's three bytes to RGB.
    pub fn to_rgb(self, [a, b, c]: [u8; 3]) -> [u8; 3] {
        match self {
            ColorSpace::Rgb => [a, b, c],
            ColorSpace::Hsv => hsv_to_rgb(a, b, c),
            ColorSpace::HlsOpencv => hls_opencv_to_rgb(a, b, c),
        }
    }
}

fn hsv_to_rgb(h: u8, s: u8, v: u8) -> [u8; 3] {
    let (s, v) = (s as f32 / 255.0, v as f32 / 255.0);
    let h = h as f32 / 256.0 * 6.0;
    let sector = h.floor();
    let f = h - sector;
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
    let (r, g, b) = match sector as u32 {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    };
    [to_byte(r), to_byte(g), to_byte(b)]
}

/// OpenCV `HLS2RGB_f` with `hscale = 6/180`, as used for `CV_HLS2BGR` on 8-bit images.
fn hls_opencv_to_rgb(h: u8, l: u8, s: u8) -> [u8; 3] {
    let (l, s) = (l as f32 / 255.0, s as f32 / 255.0);
    if s == 0.0 {
        let v = to_byte(l);
        return [v, v, v];
    }
    let mut h = h as f32 * (6.0 / 180.0);
    let p2 = if l <= 0.5 {
        l * (1.0 + s)
    } else {
        l + s - l * s
    };
    let p1 = 2.0 * l - p2;
    while h >= 6.0 {
        h -= 6.0;
    }
    let sector = h.floor() as usize;
    let h = h - sector as f32;
    let tab = [p2, p1, p1 + (p2 - p1) * (1.0 - h), p1 + (p2 - p1) * h];
    const SECTOR: [[usize; 3]; 6] = [
        [1, 3, 0],
        [1, 0, 2],
        [3, 0, 1],
        [0, 2, 1],
        [0, 1, 3],
        [2, 1, 0],
    ];
    let [bi, gi, ri] = SECTOR[sector.min(5)];
    [to_byte(tab[ri]), to_byte(tab[gi]), to_byte(tab[bi])]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hsv_primaries() {
        assert_eq!(hsv_to_rgb(0, 255, 255), [255, 0, 0]);
        assert_eq!(hsv_to_rgb(0, 0, 128), [128, 128, 128]);
        // a third of the way round is green
        assert_eq!(hsv_to_rgb(85, 255, 255)[1], 255);
    }

    #[test]
    fn hls_opencv_matches_cvtcolor_values() {
        // Values from OpenCV's cvtColor(CV_HLS2BGR), reordered to RGB.
        assert_eq!(hls_opencv_to_rgb(0, 128, 255), [255, 1, 1]);
        assert_eq!(hls_opencv_to_rgb(60, 128, 255), [1, 255, 1]);
        assert_eq!(hls_opencv_to_rgb(120, 128, 255), [1, 1, 255]);
        assert_eq!(hls_opencv_to_rgb(30, 64, 0), [64, 64, 64]);
        // Hue wraps above 180: byte 240 is the hue of byte 60.
        assert_eq!(
            hls_opencv_to_rgb(240, 128, 255),
            hls_opencv_to_rgb(60, 128, 255)
        );
    }

    #[test]
    fn gene_bytes_truncate() {
        assert_eq!(gene_to_byte(0.0), 0);
        assert_eq!(gene_to_byte(0.9999), 254);
        assert_eq!(gene_to_byte(1.0), 255);
    }
}
