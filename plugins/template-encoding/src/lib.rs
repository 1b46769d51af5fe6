//! Template encoding: an image is the sum of a few sine-wave stripes. Copy this crate to write
//! your own encoding; every piece a real encoding needs is here, small: parameters with
//! validation, a versioned genome format, mutation, rendering, a JSON description and tests.
#![deny(unsafe_code)]

use pareidolia_plugin::prelude::*;
use serde::{Deserialize, Serialize};

/// Parameters from the run config's `[encoding.params]`; unknown keys are refused.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StripesParams {
    /// Stripes per genome.
    pub stripes: usize,
    /// Probability that each number of the genome is nudged in a mutation.
    pub mutation_rate: f64,
}

impl Default for StripesParams {
    fn default() -> Self {
        Self {
            stripes: 4,
            mutation_rate: 0.2,
        }
    }
}

/// One stripe: a plane wave over the unit square.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stripe {
    /// Direction, radians.
    pub angle: f32,
    /// Waves across the image.
    pub frequency: f32,
    /// Phase, radians.
    pub phase: f32,
    /// Amplitude per channel, in [-1, 1].
    pub amplitude: [f32; 3],
}

/// The genome: the stripes.
pub type Genome = Vec<Stripe>;

/// First byte of every serialised genome. Bump it when the format changes, and keep
/// decoding the old versions: checkpoints hold genomes for weeks.
const FORMAT_VERSION: u8 = 1;
const FLOATS_PER_STRIPE: usize = 6;

/// The encoding (shared by all threads of a run, hence no interior mutability).
#[derive(Debug)]
pub struct Stripes {
    params: StripesParams,
    canvas: Canvas,
}

fn random_stripe(rng: &mut Rng) -> Stripe {
    Stripe {
        angle: rng.random_range(0.0..std::f32::consts::PI),
        frequency: rng.random_range(0.5..8.0),
        phase: rng.random_range(0.0..std::f32::consts::TAU),
        amplitude: [
            rng.random_range(-1.0..1.0),
            rng.random_range(-1.0..1.0),
            rng.random_range(-1.0..1.0),
        ],
    }
}

impl Encoding for Stripes {
    type Genome = Genome;

    fn new(params: Params<'_>, canvas: Canvas) -> Result<Self, PluginError> {
        let params: StripesParams = params.parse()?;
        if params.stripes == 0 || params.stripes > 64 {
            return Err(PluginError::new(format!(
                "parameter `stripes` must be 1..=64, got {}",
                params.stripes
            )));
        }
        if !(0.0..=1.0).contains(&params.mutation_rate) {
            return Err(PluginError::new(format!(
                "parameter `mutation_rate` must lie in [0, 1], got {}",
                params.mutation_rate
            )));
        }
        if !matches!(canvas.channels, 1 | 3) {
            return Err(PluginError::new(format!(
                "stripes draw 1 or 3 channels, not {}",
                canvas.channels
            )));
        }
        Ok(Self { params, canvas })
    }

    fn random(&self, rng: &mut Rng) -> Genome {
        (0..self.params.stripes)
            .map(|_| random_stripe(rng))
            .collect()
    }

    fn mutate(&self, genome: &mut Genome, _mutation: Mutation, rng: &mut Rng) {
        let p = self.params.mutation_rate;
        for s in genome.iter_mut() {
            if rng.random::<f64>() < p {
                s.angle += rng.random_range(-0.2..0.2);
            }
            if rng.random::<f64>() < p {
                s.frequency = (s.frequency * rng.random_range(0.8..1.25)).clamp(0.1, 32.0);
            }
            if rng.random::<f64>() < p {
                s.phase += rng.random_range(-0.5..0.5);
            }
            for a in s.amplitude.iter_mut() {
                if rng.random::<f64>() < p {
                    *a = (*a + rng.random_range(-0.2..0.2)).clamp(-1.0, 1.0);
                }
            }
        }
    }

    fn render(&self, genome: &Genome, pixels: &mut [u8]) -> Result<(), PluginError> {
        let (w, h, c) = (
            self.canvas.width as usize,
            self.canvas.height as usize,
            self.canvas.channels as usize,
        );
        if pixels.len() != w * h * c {
            return Err(PluginError::new("render buffer does not match the canvas"));
        }
        let scale = 1.0 / genome.len().max(1) as f32;
        for y in 0..h {
            for x in 0..w {
                let (u, v) = (x as f32 / w as f32, y as f32 / h as f32);
                let mut sum = [0.0f32; 3];
                for s in genome {
                    let t = (s.angle.cos() * u + s.angle.sin() * v)
                        * s.frequency
                        * std::f32::consts::TAU
                        + s.phase;
                    let wave = t.sin();
                    for (k, acc) in sum.iter_mut().enumerate() {
                        *acc += s.amplitude[k] * wave;
                    }
                }
                for k in 0..c {
                    // [-1, 1] to 0..255
                    pixels[(y * w + x) * c + k] =
                        ((sum[k] * scale + 1.0) * 127.5).clamp(0.0, 255.0) as u8;
                }
            }
        }
        Ok(())
    }

    fn encode(&self, genome: &Genome) -> Vec<u8> {
        let mut out = vec![FORMAT_VERSION];
        for s in genome {
            for f in [
                s.angle,
                s.frequency,
                s.phase,
                s.amplitude[0],
                s.amplitude[1],
                s.amplitude[2],
            ] {
                out.extend_from_slice(&f.to_le_bytes());
            }
        }
        out
    }

    fn decode(&self, bytes: &[u8]) -> Result<Genome, PluginError> {
        let (&version, body) = bytes
            .split_first()
            .ok_or_else(|| PluginError::new("empty genome"))?;
        if version != FORMAT_VERSION {
            return Err(PluginError::new(format!(
                "genome format version {version}; this plugin reads {FORMAT_VERSION}"
            )));
        }
        if body.is_empty() || body.len() % (4 * FLOATS_PER_STRIPE) != 0 {
            return Err(PluginError::new(format!(
                "genome body of {} bytes is not whole stripes",
                body.len()
            )));
        }
        let floats: Vec<f32> = body
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if floats.iter().any(|f| !f.is_finite()) {
            return Err(PluginError::new("genome holds a non-finite number"));
        }
        Ok(floats
            .chunks_exact(FLOATS_PER_STRIPE)
            .map(|f| Stripe {
                angle: f[0],
                frequency: f[1],
                phase: f[2],
                amplitude: [f[3], f[4], f[5]],
            })
            .collect())
    }

    fn describe(&self, genome: &Genome) -> String {
        serde_json::json!({ "encoding": "stripes", "format_version": FORMAT_VERSION, "stripes": genome }).to_string()
    }
}

export_encoding!(
    Stripes,
    name = "stripes",
    version = env!("CARGO_PKG_VERSION")
);

#[cfg(test)]
mod tests {
    use super::*;

    fn gray() -> Stripes {
        Stripes::new(
            Params::new("{}"),
            Canvas {
                width: 16,
                height: 16,
                channels: 1,
            },
        )
        .unwrap()
    }

    #[test]
    fn genomes_round_trip_and_garbage_is_refused() {
        let s = gray();
        let g = s.random(&mut Rng::seed_from_u64(1));
        assert_eq!(s.decode(&s.encode(&g)).unwrap(), g);
        assert!(s.decode(&[]).is_err());
        assert!(s.decode(&[2, 0, 0, 0, 0]).is_err());
        assert!(s.decode(&[1, 0, 0]).is_err());
    }

    #[test]
    fn mutation_changes_the_image_and_rendering_is_deterministic() {
        let s = gray();
        let mut rng = Rng::seed_from_u64(2);
        let g = s.random(&mut rng);
        let mut child = g.clone();
        for _ in 0..5 {
            s.mutate(&mut child, Mutation { generation: 0 }, &mut rng);
        }
        let (mut a, mut b, mut c) = (vec![0; 256], vec![0; 256], vec![0; 256]);
        s.render(&g, &mut a).unwrap();
        s.render(&g, &mut b).unwrap();
        s.render(&child, &mut c).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn bad_parameters_are_named() {
        let canvas = Canvas {
            width: 4,
            height: 4,
            channels: 1,
        };
        let e = Stripes::new(Params::new(r#"{"stripes": 0}"#), canvas).unwrap_err();
        assert!(e.message().contains("stripes"));
    }
}
