//! What the fuzz targets share: how the first bytes of an input pick the canvas and the
//! encoding parameters a genome decoder is fuzzed with.

use pareidolia_plugin::Canvas;

/// Bytes of the header [`setup`] reads.
pub const HEADER: usize = 3;

/// What the header picks.
#[derive(Debug, Clone, Copy)]
pub struct Setup {
    /// The canvas.
    pub canvas: Canvas,
    /// `color_space` parameter.
    pub color: &'static str,
    /// CPPN `coordinates` parameter.
    pub coordinates: &'static str,
}

/// A canvas and encoding parameters from the first [`HEADER`] bytes of an input, and the rest.
///
/// Byte 0: bit 0 = 3 channels (else 1), bits 1-2 = colour space (`hsv`, `hls-opencv`,
/// `rgb`, `hsv`), bit 3 = CPPN coordinates `unit` (else `pixel`); byte 1: width - 1 (mod 16);
/// byte 2: height - 1 (mod 16).
pub fn setup(data: &[u8]) -> Option<(Setup, &[u8])> {
    let (head, rest) = data.split_at_checked(HEADER)?;
    let canvas = Canvas {
        width: 1 + u32::from(head[1] % 16),
        height: 1 + u32::from(head[2] % 16),
        channels: if head[0] & 1 == 1 { 3 } else { 1 },
    };
    let color = ["hsv", "hls-opencv", "rgb", "hsv"][usize::from((head[0] >> 1) & 3)];
    let coordinates = if head[0] & 8 == 8 { "unit" } else { "pixel" };
    Some((
        Setup {
            canvas,
            color,
            coordinates,
        },
        rest,
    ))
}

/// The header [`setup`] reads back as this canvas, colour space index and coordinates.
pub fn header(canvas: Canvas, color: u8, unit: bool) -> [u8; HEADER] {
    [
        u8::from(canvas.channels == 3) | (color & 3) << 1 | u8::from(unit) << 3,
        (canvas.width - 1) as u8,
        (canvas.height - 1) as u8,
    ]
}

/// The canvases the seed corpus has genomes for.
pub fn seed_canvases() -> Vec<Canvas> {
    [(1, 1, 1), (4, 3, 1), (5, 5, 3), (16, 16, 1), (7, 2, 3)]
        .map(|(width, height, channels)| Canvas {
            width,
            height,
            channels,
        })
        .to_vec()
}
