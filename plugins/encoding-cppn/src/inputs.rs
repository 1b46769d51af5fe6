//! The four network inputs of a pixel, as the released code feeds them
//! (`phen_color_image.hpp`, `phen_grayscale_image.hpp`): x, y, d and a bias of 1.
//!
//! x and y are the raw column and row index by default, or x/(W-1), y/(H-1) with
//! `coordinates = "unit"`. d = sqrt(xn² + yn²) with xn = -1 + 2x/(W-1) and yn likewise is
//! always computed from normalised coordinates. The released canvases are square and at least
//! 28 wide; for a canvas 1 pixel wide (or high) we take the normalised coordinate to be 0
//! (the centre), where the formula would divide by zero.
//!
//! [`Planes`] holds the inputs of a canvas, computed once in `Cppn::new` so a render only
//! reads them, each at its shape (x per column, y per row, d per pixel); [`pixel_inputs`]
//! computes one pixel's inputs for the reference evaluator. Both go through the same
//! function, so they agree to the bit.

use pareidolia_plugin::Canvas;

use crate::params::Coordinates;

/// x / (size - 1), or 0 on a one-pixel axis.
fn unit(index: u32, size: u32) -> f64 {
    if size > 1 {
        f64::from(index) / f64::from(size - 1)
    } else {
        0.0
    }
}

/// The inputs [x, y, d, bias] of pixel (`col`, `row`).
pub fn pixel_inputs(canvas: Canvas, coordinates: Coordinates, col: u32, row: u32) -> [f32; 4] {
    let (ux, uy) = (unit(col, canvas.width), unit(row, canvas.height));
    let (xn, yn) = (2.0 * ux - 1.0, 2.0 * uy - 1.0);
    let (xn, yn) = (
        if canvas.width > 1 { xn } else { 0.0 },
        if canvas.height > 1 { yn } else { 0.0 },
    );
    let d = (xn * xn + yn * yn).sqrt() as f32;
    match coordinates {
        Coordinates::Pixel => [col as f32, row as f32, d, 1.0],
        Coordinates::Unit => [ux as f32, uy as f32, d, 1.0],
    }
}

/// The inputs of every pixel of a canvas, each stored at its shape: x once per column, y
/// once per row, d per pixel (row-major); bias is the constant 1.
#[derive(Debug, Clone)]
pub struct Planes {
    columns: Vec<f32>,
    rows: Vec<f32>,
    d: Vec<f32>,
}

impl Planes {
    /// Computes the planes of `canvas`.
    pub fn new(canvas: Canvas, coordinates: Coordinates) -> Self {
        let at = |col, row| pixel_inputs(canvas, coordinates, col, row);
        let mut d = Vec::with_capacity(canvas.width as usize * canvas.height as usize);
        for row in 0..canvas.height {
            d.extend((0..canvas.width).map(|col| at(col, row)[2]));
        }
        Self {
            columns: (0..canvas.width).map(|col| at(col, 0)[0]).collect(),
            rows: (0..canvas.height).map(|row| at(0, row)[1]).collect(),
            d,
        }
    }

    /// x of every column.
    pub fn columns(&self) -> &[f32] {
        &self.columns
    }

    /// y of every row.
    pub fn rows(&self) -> &[f32] {
        &self.rows
    }

    /// d of every pixel, row-major.
    pub fn d(&self) -> &[f32] {
        &self.d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CANVAS: Canvas = Canvas {
        width: 5,
        height: 3,
        channels: 1,
    };

    #[test]
    fn pixel_coordinates_are_raw_indices_and_d_is_normalised() {
        assert_eq!(
            pixel_inputs(CANVAS, Coordinates::Pixel, 0, 0),
            [0.0, 0.0, 2f64.sqrt() as f32, 1.0]
        );
        assert_eq!(
            pixel_inputs(CANVAS, Coordinates::Pixel, 2, 1),
            [2.0, 1.0, 0.0, 1.0]
        );
        assert_eq!(
            pixel_inputs(CANVAS, Coordinates::Pixel, 4, 1),
            [4.0, 1.0, 1.0, 1.0]
        );
    }

    #[test]
    fn unit_coordinates_span_zero_to_one() {
        assert_eq!(
            pixel_inputs(CANVAS, Coordinates::Unit, 4, 2),
            [1.0, 1.0, 2f64.sqrt() as f32, 1.0]
        );
        assert_eq!(
            pixel_inputs(CANVAS, Coordinates::Unit, 1, 1),
            [0.25, 0.5, 0.5, 1.0]
        );
    }

    #[test]
    fn one_pixel_axes_sit_at_the_centre() {
        let line = Canvas {
            width: 1,
            height: 3,
            channels: 1,
        };
        assert_eq!(
            pixel_inputs(line, Coordinates::Unit, 0, 2),
            [0.0, 1.0, 1.0, 1.0]
        );
        assert!(
            pixel_inputs(line, Coordinates::Pixel, 0, 0)
                .iter()
                .all(|v| v.is_finite())
        );
    }

    #[test]
    fn planes_hold_what_pixel_inputs_gives() {
        for coordinates in [Coordinates::Pixel, Coordinates::Unit] {
            let planes = Planes::new(CANVAS, coordinates);
            for row in 0..3 {
                for col in 0..5 {
                    let [x, y, d, bias] = pixel_inputs(CANVAS, coordinates, col, row);
                    assert_eq!(planes.columns()[col as usize], x);
                    assert_eq!(planes.rows()[row as usize], y);
                    assert_eq!(planes.d()[(row * 5 + col) as usize], d);
                    assert_eq!(bias, 1.0);
                }
            }
        }
    }
}
