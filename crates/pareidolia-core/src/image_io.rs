//! 8-bit images on disk: PNG writing and reading (gray or RGB), nothing else.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};

/// An 8-bit image, row-major, channels interleaved (1 = gray, 3 = RGB).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// 1 or 3.
    pub channels: u32,
    /// `width * height * channels` bytes.
    pub pixels: Vec<u8>,
}

/// An image could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// I/O failure.
    #[error("cannot {action} {path}: {cause}")]
    Io {
        /// read or write.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        cause: std::io::Error,
    },
    /// Not a PNG we can read.
    #[error("{path} is not a readable PNG image: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// The decoder's message.
        message: String,
    },
}

impl Image {
    /// Converts to `channels` (1 or 3): gray to RGB repeats, RGB to gray uses ITU-R 601 luma.
    pub fn to_channels(&self, channels: u32) -> Image {
        if channels == self.channels {
            return self.clone();
        }
        let pixels = match (self.channels, channels) {
            (1, 3) => self.pixels.iter().flat_map(|&v| [v, v, v]).collect(),
            (3, 1) => self
                .pixels
                .chunks_exact(3)
                .map(|p| {
                    ((299 * p[0] as u32 + 587 * p[1] as u32 + 114 * p[2] as u32 + 500) / 1000) as u8
                })
                .collect(),
            _ => self.pixels.clone(),
        };
        Image {
            channels,
            pixels,
            ..*self
        }
    }
}

/// Encodes a PNG (8-bit gray or RGB) into `out`, with the `png` crate's `Fast` compression
/// (fdeflate, tuned for PNG): several times faster than its default `Balanced` zlib level at
/// files a few percent larger, which is what writing a 1000-class gallery at the end of a run
/// needs. The pixels are the same at every level (PNG is lossless).
fn encode_png(out: impl std::io::Write, image: &Image) -> Result<(), png::EncodingError> {
    let mut encoder = png::Encoder::new(out, image.width, image.height);
    encoder.set_compression(png::Compression::Fast);
    encoder.set_color(if image.channels == 1 {
        png::ColorType::Grayscale
    } else {
        png::ColorType::Rgb
    });
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&image.pixels)?;
    writer.finish()
}

/// A PNG file's bytes (8-bit gray or RGB), for serving over HTTP. Fails only for an image
/// whose pixel count does not match its size.
pub fn png_bytes(image: &Image) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    encode_png(&mut out, image).map_err(std::io::Error::other)?;
    Ok(out)
}

/// Writes a PNG (8-bit gray or RGB).
pub fn write_png(path: &Path, image: &Image) -> Result<(), ImageError> {
    let io = |source| ImageError::Io {
        action: "write",
        path: path.to_owned(),
        cause: source,
    };
    let file = File::create(path).map_err(io)?;
    let mut out = BufWriter::new(file);
    encode_png(&mut out, image).map_err(|e| io(std::io::Error::other(e)))?;
    std::io::Write::flush(&mut out).map_err(io)
}

/// Reads a PNG as 8-bit gray or RGB (alpha dropped, palettes and 16-bit expanded/stripped).
pub fn read_png(path: &Path) -> Result<Image, ImageError> {
    let file = File::open(path).map_err(|source| ImageError::Io {
        action: "read",
        path: path.to_owned(),
        cause: source,
    })?;
    let format = |message: String| ImageError::Format {
        path: path.to_owned(),
        message,
    };
    let mut decoder = png::Decoder::new(BufReader::new(file));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(|e| format(e.to_string()))?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| format("image too large".into()))?;
    let mut buf = vec![0; size];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| format(e.to_string()))?;
    buf.truncate(info.buffer_size());
    let (w, h) = (info.width, info.height);
    let (channels, pixels) = match info.color_type {
        png::ColorType::Grayscale => (1, buf),
        png::ColorType::GrayscaleAlpha => (1, buf.chunks_exact(2).map(|p| p[0]).collect()),
        png::ColorType::Rgb => (3, buf),
        png::ColorType::Rgba => (
            3,
            buf.chunks_exact(4)
                .flat_map(|p| [p[0], p[1], p[2]])
                .collect(),
        ),
        png::ColorType::Indexed => return Err(format("indexed colour was not expanded".into())),
    };
    Ok(Image {
        width: w,
        height: h,
        channels,
        pixels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_round_trips_exactly() {
        let dir = std::env::temp_dir().join(format!("pareidolia-png-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for channels in [1, 3] {
            let pixels = (0..(5 * 3 * channels))
                .map(|i| (i * 17 % 256) as u8)
                .collect();
            let img = Image {
                width: 5,
                height: 3,
                channels,
                pixels,
            };
            let path = dir.join(format!("t{channels}.png"));
            write_png(&path, &img).unwrap();
            assert_eq!(read_png(&path).unwrap(), img);
        }
        std::fs::write(dir.join("bad.png"), b"not a png").unwrap();
        assert!(matches!(
            read_png(&dir.join("bad.png")),
            Err(ImageError::Format { .. })
        ));
        std::fs::remove_dir_all(dir).ok();
    }
}
