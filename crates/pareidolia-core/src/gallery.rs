//! The gallery of a run: one PNG per class champion (named with class index, label and
//! confidence: the models' probability of the class), a labelled montage of all of them, and
//! an HTML index (which shows the fitness too where it is not that probability).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use font8x8::UnicodeFonts;

use crate::image_io::{Image, ImageError, write_png};
use crate::parallel;

/// One champion as the gallery shows it.
#[derive(Debug, Clone)]
pub struct GalleryEntry {
    /// Class index.
    pub class: usize,
    /// Class label.
    pub label: String,
    /// The champion's confidence in its class: the models' probability of it.
    pub confidence: f32,
    /// Its fitness in the class, where that is not the probability (another fitness plugin);
    /// `None` where they are one.
    pub fitness: Option<f32>,
    /// Generation it was found in.
    pub generation: u64,
    /// The rendered image, exactly as scored.
    pub image: Image,
}

/// File-name-safe form of a label.
fn slug(label: &str) -> String {
    let s: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    if s.is_empty() { "class".into() } else { s }
}

/// The PNG file name of a champion: `007_label_0.999912.png`.
pub fn file_name(entry: &GalleryEntry) -> String {
    format!(
        "{:03}_{}_{:.6}.png",
        entry.class,
        slug(&entry.label),
        entry.confidence
    )
}

/// Writes `dir/<file_name>.png` for every entry, `dir/montage.png` and `dir/index.html`.
/// Returns the PNG paths, in entry order. The montage is composed and written on a thread
/// of its own while the champions' PNGs are encoded on every core.
pub fn write_gallery(dir: &Path, entries: &[GalleryEntry]) -> Result<Vec<PathBuf>, ImageError> {
    std::fs::create_dir_all(dir).map_err(|source| ImageError::Io {
        action: "create",
        path: dir.to_owned(),
        cause: source,
    })?;
    let paths: Vec<PathBuf> = entries.iter().map(|e| dir.join(file_name(e))).collect();
    let (written, montage_written) = std::thread::scope(|s| {
        let montage = (!entries.is_empty())
            .then(|| s.spawn(|| write_png(&dir.join("montage.png"), &montage(entries))));
        let indices: Vec<usize> = (0..entries.len()).collect();
        let written = parallel::map(&indices, parallel::threads(), |&i| {
            write_png(&paths[i], &entries[i].image)
        });
        let montage_written =
            montage.map(|m| m.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        (written, montage_written)
    });
    written.into_iter().collect::<Result<(), _>>()?;
    montage_written.transpose()?;
    let html_path = dir.join("index.html");
    std::fs::write(&html_path, index_html(entries)).map_err(|source| ImageError::Io {
        action: "write",
        path: html_path,
        cause: source,
    })?;
    Ok(paths)
}

fn index_html(entries: &[GalleryEntry]) -> String {
    let mut html = String::from(
        "<!doctype html><meta charset=utf-8><title>Pareidolia gallery</title>\
         <style>body{font-family:sans-serif}figure{display:inline-block;margin:8px;text-align:center}\
         img{width:140px;image-rendering:pixelated}</style><h1>Pareidolia gallery</h1>\n",
    );
    for e in entries {
        let label = e.label.replace('&', "&amp;").replace('<', "&lt;");
        let _ = writeln!(
            html,
            "<figure><img src=\"{}\" alt=\"{label}\"><figcaption>{} {label}<br>{:.4}%{} (gen {})</figcaption></figure>",
            file_name(e),
            e.class,
            e.confidence * 100.0,
            e.fitness
                .map(|f| format!(", fitness {f:.4}"))
                .unwrap_or_default(),
            e.generation
        );
    }
    html
}

/// A grid of the champions, each scaled up and captioned with its label and confidence.
pub fn montage(entries: &[GalleryEntry]) -> Image {
    let tile_w = entries.iter().map(|e| e.image.width).max().unwrap_or(1);
    let tile_h = entries.iter().map(|e| e.image.height).max().unwrap_or(1);
    // Tiles of about 112 pixels: small images (28x28 digits) are scaled up by an integer
    // factor, large ones (256x256 ImageNet canvases) averaged down by one, so a montage of
    // 1000 classes stays a few megabytes.
    let scale = (112 / tile_w.max(tile_h)).max(1);
    let shrink = tile_w.max(tile_h).div_ceil(112).max(1);
    let (tile_w, tile_h) = ((tile_w / shrink).max(1), (tile_h / shrink).max(1));
    let (cell_w, img_h) = ((tile_w * scale).max(96), tile_h * scale);
    let caption_h = 2 * 10;
    let cell_h = img_h + caption_h;
    let pad = 6;
    let cols = entries.len().clamp(1, 10) as u32;
    let rows = (entries.len() as u32).div_ceil(cols);
    let (width, height) = (cols * (cell_w + pad) + pad, rows * (cell_h + pad) + pad);
    let mut canvas = Image {
        width,
        height,
        channels: 3,
        pixels: vec![255; (width * height * 3) as usize],
    };
    for (k, e) in entries.iter().enumerate() {
        let (col, row) = (k as u32 % cols, k as u32 / cols);
        let (x0, y0) = (pad + col * (cell_w + pad), pad + row * (cell_h + pad));
        let rgb = shrunk(&e.image.to_channels(3), shrink);
        for y in 0..rgb.height * scale {
            for x in 0..rgb.width * scale {
                let src = (((y / scale) * rgb.width + x / scale) * 3) as usize;
                let dst = (((y0 + y) * width + x0 + x) * 3) as usize;
                canvas.pixels[dst..dst + 3].copy_from_slice(&rgb.pixels[src..src + 3]);
            }
        }
        let label: String = e.label.chars().take(12).collect();
        draw_text(&mut canvas, x0, y0 + img_h + 1, &label);
        draw_text(
            &mut canvas,
            x0,
            y0 + img_h + 11,
            &format!("{:.2}%", e.confidence * 100.0),
        );
    }
    canvas
}

/// `image` (RGB) with each `k x k` block averaged into one pixel (`k = 1`: unchanged).
fn shrunk(image: &Image, k: u32) -> Image {
    if k <= 1 {
        return image.clone();
    }
    let (width, height) = ((image.width / k).max(1), (image.height / k).max(1));
    let mut pixels = Vec::with_capacity((width * height * 3) as usize);
    for y in 0..height {
        for x in 0..width {
            let mut sum = [0u32; 3];
            let mut n = 0;
            for yy in y * k..((y + 1) * k).min(image.height) {
                for xx in x * k..((x + 1) * k).min(image.width) {
                    let i = ((yy * image.width + xx) * 3) as usize;
                    for (s, &v) in sum.iter_mut().zip(&image.pixels[i..i + 3]) {
                        *s += v as u32;
                    }
                    n += 1;
                }
            }
            pixels.extend(sum.map(|v| ((v + n / 2) / n.max(1)) as u8));
        }
    }
    Image {
        width,
        height,
        channels: 3,
        pixels,
    }
}

fn draw_text(canvas: &mut Image, x0: u32, y0: u32, text: &str) {
    for (i, ch) in text.chars().enumerate() {
        let glyph = font8x8::BASIC_FONTS
            .get(ch)
            .or_else(|| font8x8::BASIC_FONTS.get('?'))
            .unwrap_or([0; 8]);
        for (gy, bits) in glyph.iter().enumerate() {
            for gx in 0..8 {
                if bits >> gx & 1 == 1 {
                    let (x, y) = (x0 + i as u32 * 8 + gx, y0 + gy as u32);
                    if x < canvas.width && y < canvas.height {
                        let d = ((y * canvas.width + x) * 3) as usize;
                        canvas.pixels[d..d + 3].copy_from_slice(&[0, 0, 0]);
                    }
                }
            }
        }
    }
}

/// A heatmap of values in [0, 1]: one row per `rows` entry, one column per `columns` entry,
/// dark blue (0) through green to yellow (1), light grey where a value is missing, with a
/// colour scale (0%, 50%, 100%) under the cells. Column names head the columns in full,
/// wrapped over as many lines as the longest needs (at spaces where they have any); rows are
/// labelled when they are tall enough for the 8-pixel font (up to about 80 rows), and cells
/// shrink to a pixel row for runs of up to a few thousand classes.
pub fn heatmap(rows: &[String], columns: &[String], values: &[Vec<Option<f32>>]) -> Image {
    const FONT: u32 = 8;
    const LINE: u32 = FONT + 2;
    let row_h = (960 / rows.len().max(1) as u32).clamp(1, 24);
    let labelled = row_h >= FONT + 2;
    let label_w = if labelled {
        FONT * rows
            .iter()
            .map(|r| r.chars().count().min(24))
            .max()
            .unwrap_or(0) as u32
            + 8
    } else {
        0
    };
    let col_chars = columns
        .iter()
        .map(|c| c.chars().count().clamp(6, 20))
        .max()
        .unwrap_or(6);
    let col_w = FONT * col_chars as u32 + 8;
    let names: Vec<Vec<String>> = columns.iter().map(|c| wrap(c, col_chars)).collect();
    let lines = names.iter().map(Vec::len).max().unwrap_or(1).max(1) as u32;
    let header = lines * LINE + 6;
    let cells_w = col_w * columns.len().max(1) as u32;
    // The scale: a bar at least 160 pixels wide, tick labels under it.
    let (bar_w, bar_h) = (cells_w.max(160), 10);
    let legend = 8 + bar_h + 2 + FONT + 4;
    let width = label_w + cells_w.max(bar_w);
    let grid_h = row_h * rows.len() as u32;
    let height = header + grid_h + legend;
    let mut canvas = Image {
        width,
        height,
        channels: 3,
        pixels: vec![255; (width * height * 3) as usize],
    };
    for (c, name) in names.iter().enumerate() {
        for (l, line) in name.iter().enumerate() {
            draw_text(
                &mut canvas,
                label_w + c as u32 * col_w + 4,
                4 + l as u32 * LINE,
                line,
            );
        }
    }
    let fill = |canvas: &mut Image, x0: u32, y0: u32, w: u32, h: u32, rgb: [u8; 3]| {
        for y in y0..y0 + h {
            for x in x0..x0 + w {
                let d = ((y * width + x) * 3) as usize;
                canvas.pixels[d..d + 3].copy_from_slice(&rgb);
            }
        }
    };
    for (r, name) in rows.iter().enumerate() {
        let y0 = header + r as u32 * row_h;
        if labelled {
            let text: String = name.chars().take(24).collect();
            draw_text(&mut canvas, 4, y0 + (row_h - FONT) / 2, &text);
        }
        for c in 0..columns.len() {
            let value = values.get(r).and_then(|v| v.get(c)).copied().flatten();
            let rgb = value.map_or([220, 220, 220], ramp);
            let x0 = label_w + c as u32 * col_w;
            // A one-pixel white seam between columns (and tall rows) keeps cells apart.
            let (w, h) = (col_w - 1, if row_h > 3 { row_h - 1 } else { row_h });
            fill(&mut canvas, x0, y0, w, h, rgb);
        }
    }
    let bar_y = header + grid_h + 8;
    for x in 0..bar_w {
        let v = x as f32 / (bar_w - 1) as f32;
        fill(&mut canvas, label_w + x, bar_y, 1, bar_h, ramp(v));
    }
    let ticks_y = bar_y + bar_h + 2;
    draw_text(&mut canvas, label_w, ticks_y, "0%");
    draw_text(
        &mut canvas,
        label_w + bar_w / 2 - FONT * 3 / 2,
        ticks_y,
        "50%",
    );
    draw_text(&mut canvas, label_w + bar_w - FONT * 4, ticks_y, "100%");
    canvas
}

/// `text` in lines of at most `width` characters, broken at spaces where it has any and
/// inside words longer than a line.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        let mut word: Vec<char> = word.chars().collect();
        let used = line.chars().count();
        if used > 0 && used + 1 + word.len() <= width {
            line.push(' ');
            line.extend(&word);
            continue;
        }
        if used > 0 {
            lines.push(std::mem::take(&mut line));
        }
        while word.len() > width {
            lines.push(word.drain(..width).collect());
        }
        line = word.into_iter().collect();
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

/// Dark blue through teal and green to yellow (a viridis-like ramp) for `v` in [0, 1].
fn ramp(v: f32) -> [u8; 3] {
    const STOPS: [[f32; 3]; 5] = [
        [68.0, 1.0, 84.0],
        [59.0, 82.0, 139.0],
        [33.0, 145.0, 140.0],
        [94.0, 201.0, 98.0],
        [253.0, 231.0, 37.0],
    ];
    let t = if v.is_finite() {
        v.clamp(0.0, 1.0)
    } else {
        0.0
    } * 4.0;
    let i = (t.floor() as usize).min(3);
    let f = t - i as f32;
    let mix = |k: usize| (STOPS[i][k] + (STOPS[i + 1][k] - STOPS[i][k]) * f).round() as u8;
    [mix(0), mix(1), mix(2)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn montage_places_every_tile_and_captions_it() {
        let entries: Vec<GalleryEntry> = (0..12)
            .map(|c| GalleryEntry {
                class: c,
                label: c.to_string(),
                confidence: 0.5,
                fitness: None,
                generation: 1,
                image: Image {
                    width: 28,
                    height: 28,
                    channels: 1,
                    pixels: vec![0; 784],
                },
            })
            .collect();
        let m = montage(&entries);
        assert_eq!(m.channels, 3);
        // 10 columns, 2 rows of 112-px tiles
        assert_eq!(m.width, 10 * (112 + 6) + 6);
        assert_eq!(m.height, 2 * (112 + 20 + 6) + 6);
        let dark = m.pixels.chunks_exact(3).filter(|p| p[0] == 0).count();
        assert!(dark > 12 * 112 * 112, "tiles and captions drawn: {dark}");
        assert_eq!(file_name(&entries[3]), "003_3_0.500000.png");
    }

    #[test]
    fn large_images_are_averaged_down_to_small_tiles() {
        // A 256x256 canvas of 2x2 checks: each 3x3 block averages to mid grey or near it.
        let pixels = (0..256u32)
            .flat_map(|y| (0..256u32).map(move |x| if (x + y) % 2 == 0 { 255u8 } else { 0 }))
            .flat_map(|v| [v, v, v])
            .collect();
        let entry = GalleryEntry {
            class: 0,
            label: "checks".into(),
            confidence: 0.9,
            fitness: None,
            generation: 3,
            image: Image {
                width: 256,
                height: 256,
                channels: 3,
                pixels,
            },
        };
        let m = montage(std::slice::from_ref(&entry));
        // 256 / ceil(256 / 112) = 85-pixel tiles in a 96-pixel-wide cell.
        assert_eq!((m.width, m.height), (96 + 2 * 6, 85 + 20 + 2 * 6));
        let tile = shrunk(&entry.image, 3);
        assert_eq!((tile.width, tile.height), (85, 85));
        assert!(
            tile.pixels.iter().all(|&v| (113..=142).contains(&v)),
            "averaged"
        );
    }

    #[test]
    fn heatmaps_colour_each_cell_and_fit_a_thousand_rows() {
        let rows: Vec<String> = (0..10).map(|c| format!("{c} digit")).collect();
        let columns = vec!["source".to_owned(), "target".to_owned()];
        let mut values: Vec<Vec<Option<f32>>> = (0..10)
            .map(|c| vec![Some(1.0), Some(c as f32 / 9.0)])
            .collect();
        values[3][1] = None;
        let image = heatmap(&rows, &columns, &values);
        let at = |x: u32, y: u32| {
            let d = ((y * image.width + x) * 3) as usize;
            [image.pixels[d], image.pixels[d + 1], image.pixels[d + 2]]
        };
        // Rows of 24 pixels under a 16-pixel header, labels 8 * 7 + 8 = 64 wide, columns 56;
        // the scale (8 + 10 + 2 + 8 + 4 = 32 pixels) is 160 wide, wider than the cells.
        assert_eq!((image.width, image.height), (64 + 160, 16 + 10 * 24 + 32));
        assert_eq!(at(64 + 10, 16 + 10), ramp(1.0));
        assert_eq!(at(64 + 56 + 10, 16 + 10), ramp(0.0));
        assert_eq!(at(64 + 56 + 10, 16 + 3 * 24 + 10), [220, 220, 220]);
        assert_eq!(ramp(0.0), [68, 1, 84]);
        assert_eq!(ramp(1.0), [253, 231, 37]);
        // The scale runs from 0 at its left end to 1 at its right end.
        let bar = 16 + 10 * 24 + 8 + 5;
        assert_eq!(at(64, bar), ramp(0.0));
        assert_eq!(at(64 + 159, bar), ramp(1.0));
        let rows: Vec<String> = (0..1000).map(|c| c.to_string()).collect();
        let values = vec![vec![Some(0.5); 3]; 1000];
        let columns = vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
        let big = heatmap(&rows, &columns, &values);
        assert_eq!((big.width, big.height), (3 * 56, 16 + 1000 + 32));
    }

    #[test]
    fn heatmap_column_names_are_shown_in_full() {
        let columns = vec![
            "efficientnet-lite2 (ten-crop)#2".to_owned(),
            "lenet".to_owned(),
        ];
        let image = heatmap(&["0".to_owned()], &columns, &[vec![Some(0.5), None]]);
        // Two header lines of 10 pixels (+ 6): the long name wraps at its space.
        assert_eq!(image.height, 26 + 24 + 32);
        assert_eq!(
            wrap("efficientnet-lite2 (ten-crop)#2", 20),
            ["efficientnet-lite2", "(ten-crop)#2"]
        );
        assert_eq!(wrap("abcdefghij", 4), ["abcd", "efgh", "ij"]);
        assert_eq!(wrap("a b  c", 3), ["a b", "c"]);
        assert_eq!(wrap("", 5), [""]);
    }
}
