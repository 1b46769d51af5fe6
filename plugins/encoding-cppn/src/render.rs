//! The fast renderer: runs a [`Plan`] node by node over whole arrays of values, giving the
//! same bytes as [`crate::evaluate_reference`] run pixel by pixel.
//!
//! A node's values are computed in one buffer: zeroed, `weight * source` added for each
//! in-edge in edge-list order, then the activation; each step is a loop over plain slices
//! that the compiler vectorises. Nodes planned per column, row or image are computed first,
//! once per render, into a small buffer. Per-pixel nodes are then computed tile by tile: a
//! tile is a few whole rows (or part of one row on canvases wider than [`TILE`]), small
//! enough that every node's tile buffer stays in cache; a per-column, per-row or constant
//! source is broadcast into the sum as it is read. Pixels are independent, so tiling and
//! broadcasting change no value: each pixel's sum adds the same `f32` products in the same
//! order as the reference, and the activations are the same scalar functions.
//!
//! When the plan asks for synchronous steps (see `plan`), every planned node is computed per
//! pixel with two buffers, the previous step's and the next, for `depth` steps per tile.
//!
//! Scratch buffers live in a thread-local pool that grows to the largest plan seen by the
//! thread and is reused: the encoding is shared by all threads through `&self`. The same
//! pool holds the colour memo (`colour`).

use std::cell::RefCell;
use std::ops::Range;

use pareidolia_plugin::color::ColorSpace;

use crate::colour::ColourMemo;
use crate::genome::Genome;
use crate::inputs::Planes;
use crate::plan::{Mode, Plan, Shape, Source};

/// Most pixels per tile: 4 KiB per node buffer, so a few dozen nodes stay in L2.
pub const TILE: usize = 1024;

/// Per-thread space reused across renders.
#[derive(Debug, Default)]
struct Scratch {
    /// Values of the nodes planned per column, per row or per image.
    small: Vec<f32>,
    /// `TILE` floats per per-pixel node (twice that when stepping).
    tiles: Vec<f32>,
    colours: ColourMemo,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// A rectangle of values being computed: `rows` rows of `cols` values, starting at
/// (`row`, `col`) of a canvas `width` wide. A per-pixel tile is whole rows or part of one
/// row, so its pixels are contiguous in row-major order.
#[derive(Debug, Clone, Copy)]
struct Tile {
    row: usize,
    rows: usize,
    col: usize,
    cols: usize,
    width: usize,
}

impl Tile {
    fn len(&self) -> usize {
        self.rows * self.cols
    }

    /// Row-major pixel indices covered.
    fn pixels(&self) -> Range<usize> {
        let start = self.row * self.width + self.col;
        start..start + self.len()
    }

    /// The tiles of a `width` x `height` canvas.
    fn cover(width: usize, height: usize) -> Vec<Tile> {
        let tile = |row, rows, col, cols| Tile {
            row,
            rows,
            col,
            cols,
            width,
        };
        if width <= TILE {
            let per = TILE / width;
            (0..height)
                .step_by(per)
                .map(|row| tile(row, per.min(height - row), 0, width))
                .collect()
        } else {
            (0..height)
                .flat_map(|row| {
                    (0..width)
                        .step_by(TILE)
                        .map(move |col| tile(row, 1, col, TILE.min(width - col)))
                })
                .collect()
        }
    }

    /// The values of a node planned per column, per row or per image, as one "tile".
    fn of_shape(shape: Shape, width: usize, height: usize) -> Tile {
        let (rows, cols) = match shape {
            Shape::Constant => (1, 1),
            Shape::Columns => (1, width),
            Shape::Rows => (height, 1),
            Shape::Pixels => unreachable!("per-pixel nodes are computed in tiles"),
        };
        Tile {
            row: 0,
            rows,
            col: 0,
            cols,
            width,
        }
    }
}

/// The values an in-edge reads, at their shape.
#[derive(Debug, Clone, Copy)]
enum Operand<'a> {
    /// One per value of the tile being computed.
    Pixels(&'a [f32]),
    /// One per canvas column.
    Columns(&'a [f32]),
    /// One per canvas row.
    Rows(&'a [f32]),
    /// One for all.
    Constant(f32),
}

fn input_operand(input: usize, planes: &Planes, tile: Tile) -> Operand<'_> {
    match input {
        0 => Operand::Columns(planes.columns()),
        1 => Operand::Rows(planes.rows()),
        2 => Operand::Pixels(&planes.d()[tile.pixels()]),
        _ => Operand::Constant(1.0),
    }
}

/// `target[i] += weight * values[i]`.
#[inline]
fn axpy(target: &mut [f32], weight: f32, values: &[f32]) {
    for (t, &v) in target.iter_mut().zip(values) {
        *t += weight * v;
    }
}

/// Adds `weight * operand` to `target`, laid out as `tile`. The product is formed per value
/// exactly as the reference forms it (`weight * value`, then added), broadcast or not.
fn accumulate(target: &mut [f32], weight: f32, operand: Operand<'_>, tile: Tile) {
    match operand {
        Operand::Pixels(values) => axpy(target, weight, values),
        Operand::Columns(values) => {
            let values = &values[tile.col..tile.col + tile.cols];
            for row in target.chunks_exact_mut(tile.cols) {
                axpy(row, weight, values);
            }
        }
        Operand::Rows(values) if tile.cols == 1 => {
            axpy(target, weight, &values[tile.row..tile.row + tile.rows]);
        }
        Operand::Rows(values) => {
            for (row, &v) in target.chunks_exact_mut(tile.cols).zip(&values[tile.row..]) {
                let term = weight * v;
                row.iter_mut().for_each(|t| *t += term);
            }
        }
        Operand::Constant(v) => {
            let term = weight * v;
            target.iter_mut().for_each(|t| *t += term);
        }
    }
}

/// Where each planned node's values live: an offset into the small buffer for nodes planned
/// per column, row or image, a slot of the tile buffers for per-pixel nodes.
struct Layout {
    at: Vec<usize>,
    small: usize,
    slots: usize,
    width: usize,
    height: usize,
}

impl Layout {
    fn new(plan: &Plan, width: usize, height: usize, stepping: bool) -> Self {
        let (mut small, mut slots) = (0, 0);
        let at = plan
            .nodes
            .iter()
            .map(|node| {
                if stepping || node.shape == Shape::Pixels {
                    slots += 1;
                    slots - 1
                } else {
                    let at = small;
                    small += Tile::of_shape(node.shape, width, height).len();
                    at
                }
            })
            .collect();
        Self {
            at,
            small,
            slots,
            width,
            height,
        }
    }

    /// The values of planned node `j`, which is not per pixel, in the small buffer.
    fn small_operand<'a>(&self, plan: &Plan, small: &'a [f32], j: usize) -> Operand<'a> {
        let at = self.at[j];
        match plan.nodes[j].shape {
            Shape::Constant => Operand::Constant(small[at]),
            Shape::Columns => Operand::Columns(&small[at..at + self.width]),
            Shape::Rows => Operand::Rows(&small[at..at + self.height]),
            Shape::Pixels => unreachable!("per-pixel nodes live in the tile buffers"),
        }
    }
}

/// Computes one node into `target` (laid out as `tile`); `operand` gives each source.
fn compute<'a>(
    plan: &Plan,
    node: usize,
    target: &mut [f32],
    tile: Tile,
    operand: impl Fn(Source) -> Operand<'a>,
) {
    target.fill(0.0);
    let node = &plan.nodes[node];
    for &(source, weight) in &plan.edges[node.edges.clone()] {
        accumulate(target, weight, operand(source), tile);
    }
    node.activation.apply_in_place(target);
}

/// Computes the nodes planned per column, row or image into `small`, in plan order: their
/// sources are inputs or earlier small nodes.
fn small_nodes(plan: &Plan, layout: &Layout, planes: &Planes, small: &mut [f32]) {
    for (k, node) in plan.nodes.iter().enumerate() {
        if node.shape == Shape::Pixels {
            continue;
        }
        let tile = Tile::of_shape(node.shape, layout.width, layout.height);
        let (done, rest) = small.split_at_mut(layout.at[k]);
        let done = &*done;
        compute(
            plan,
            k,
            &mut rest[..tile.len()],
            tile,
            |source| match source {
                Source::Input(i) => input_operand(i, planes, tile),
                Source::Node(j) => layout.small_operand(plan, done, j),
            },
        );
    }
}

/// Computes the per-pixel nodes over `tile` into their slots of `buffers`, in plan order.
fn feed_forward_tile(
    plan: &Plan,
    layout: &Layout,
    planes: &Planes,
    small: &[f32],
    buffers: &mut [f32],
    tile: Tile,
) {
    let len = tile.len();
    for (k, node) in plan.nodes.iter().enumerate() {
        if node.shape != Shape::Pixels {
            continue;
        }
        // Per-pixel sources sit in earlier slots, so split there.
        let (done, rest) = buffers.split_at_mut(layout.at[k] * TILE);
        let done = &*done;
        compute(plan, k, &mut rest[..len], tile, |source| match source {
            Source::Input(i) => input_operand(i, planes, tile),
            Source::Node(j) if plan.nodes[j].shape == Shape::Pixels => {
                let at = layout.at[j] * TILE;
                Operand::Pixels(&done[at..at + len])
            }
            Source::Node(j) => layout.small_operand(plan, small, j),
        });
    }
}

/// Runs `steps` synchronous steps of every planned node over `tile`, from all-zero states,
/// alternating between the two buffers; returns the one holding the last step.
fn step_tile<'a>(
    plan: &Plan,
    planes: &Planes,
    mut previous: &'a mut [f32],
    mut following: &'a mut [f32],
    tile: Tile,
    steps: usize,
) -> &'a [f32] {
    let len = tile.len();
    previous.fill(0.0);
    for _ in 0..steps {
        for k in 0..plan.nodes.len() {
            let target = &mut following[k * TILE..k * TILE + len];
            let previous = &*previous;
            compute(plan, k, target, tile, |source| match source {
                Source::Input(i) => input_operand(i, planes, tile),
                Source::Node(j) => Operand::Pixels(&previous[j * TILE..j * TILE + len]),
            });
        }
        std::mem::swap(&mut previous, &mut following);
    }
    previous
}

/// `|trunc(v * 255)|`, at most 255: the released code's `int(v * 255)` and absolute value.
#[inline]
pub fn output_byte(v: f32) -> u8 {
    // `as u8` truncates toward zero and saturates (NaN gives 0); truncation commutes with
    // the absolute value.
    (v * 255.0).abs() as u8
}

/// Writes one pixel from its output values: gray, or three bytes read in `color_space`.
/// (The reference path; the renderer does the same through a [`ColourMemo`].)
pub fn write_pixel(values: [f32; 3], channels: usize, color_space: ColorSpace, out: &mut [u8]) {
    if channels == 1 {
        out[0] = output_byte(values[0]);
    } else {
        out.copy_from_slice(&color_space.to_rgb(values.map(output_byte)));
    }
}

/// Renders `genome` into `pixels` (row-major, `genome.outputs()` channels interleaved) on
/// the canvas of `planes`; the caller has checked that the sizes match.
pub fn render(genome: &Genome, planes: &Planes, color_space: ColorSpace, pixels: &mut [u8]) {
    let plan = Plan::new(genome);
    let (width, height) = (planes.columns().len(), planes.rows().len());
    let steps = match plan.mode {
        Mode::FeedForward => None,
        Mode::Synchronous { steps } => Some(steps),
    };
    let layout = Layout::new(&plan, width, height, steps.is_some());
    SCRATCH.with_borrow_mut(|scratch| {
        let Scratch {
            small,
            tiles,
            colours,
        } = scratch;
        let buffers = if steps.is_some() { 2 } else { 1 };
        let need = buffers * layout.slots * TILE;
        tiles.resize(tiles.len().max(need), 0.0);
        let (current, next) = tiles[..need].split_at_mut(need / buffers);
        if steps.is_none() {
            small.resize(small.len().max(layout.small), 0.0);
            small_nodes(&plan, &layout, planes, small);
        }
        for tile in Tile::cover(width, height) {
            let finals: &[f32] = match steps {
                None => {
                    feed_forward_tile(&plan, &layout, planes, small, current, tile);
                    current
                }
                Some(steps) => step_tile(&plan, planes, current, next, tile, steps),
            };
            write_tile(&plan, &layout, finals, tile, color_space, colours, pixels);
        }
    });
}

/// Turns the outputs' values over `tile` into pixels.
fn write_tile(
    plan: &Plan,
    layout: &Layout,
    finals: &[f32],
    tile: Tile,
    color_space: ColorSpace,
    colours: &mut ColourMemo,
    pixels: &mut [u8],
) {
    let len = tile.len();
    let output = |c: usize| {
        let at = layout.at[plan.outputs[c]] * TILE;
        &finals[at..at + len]
    };
    let range = tile.pixels();
    let channels = plan.outputs.len();
    let pixels = &mut pixels[range.start * channels..range.end * channels];
    if channels == 1 {
        for (p, &v) in pixels.iter_mut().zip(output(0)) {
            *p = output_byte(v);
        }
    } else {
        let (a, b, c) = (output(0), output(1), output(2));
        for (i, px) in pixels.chunks_exact_mut(3).enumerate() {
            let bytes = [a[i], b[i], c[i]].map(output_byte);
            px.copy_from_slice(&colours.convert(color_space, bytes));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_cover_the_canvas_once() {
        for (w, h) in [
            (28, 28),
            (256, 256),
            (1, 1),
            (1000, 3),
            (1500, 2),
            (3000, 1),
        ] {
            let mut seen = vec![0u8; w * h];
            for t in Tile::cover(w, h) {
                assert!(t.len() <= TILE && t.len() > 0);
                assert!(t.rows == 1 || (t.col == 0 && t.cols == w));
                for p in t.pixels() {
                    seen[p] += 1;
                }
            }
            assert!(seen.iter().all(|&s| s == 1), "{w}x{h}");
        }
    }

    #[test]
    fn broadcasts_form_each_product_like_the_reference() {
        // A 2-row, 3-column tile starting at column 1 of a 5-wide canvas.
        let tile = Tile {
            row: 1,
            rows: 2,
            col: 1,
            cols: 3,
            width: 5,
        };
        let columns = [0.5, 1.5, 2.5, 3.5, 4.5];
        let rows = [10.0, 20.0, 30.0];
        let mut t = vec![0.0f32; 6];
        accumulate(&mut t, 0.1, Operand::Columns(&columns), tile);
        accumulate(&mut t, 0.3, Operand::Rows(&rows), tile);
        accumulate(&mut t, 0.7, Operand::Constant(1.0), tile);
        let mut want = vec![];
        for row in &rows[1..3] {
            for column in &columns[1..4] {
                want.push(0.0f32 + 0.1 * column + 0.3 * row + 0.7 * 1.0);
            }
        }
        assert_eq!(t, want);
    }
}
