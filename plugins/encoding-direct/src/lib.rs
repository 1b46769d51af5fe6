//! The paper's direct encoding (Nguyen et al. 2015, section 3.1/3.3): one gene per pixel
//! channel, a float in [0, 1] drawn uniformly at the start, mutated gene by gene with Deb's
//! polynomial operator (strength 15) at a rate of 0.1 that halves every 1000 generations.
//!
//! A gene becomes the 8-bit value `trunc(g * 255)`, as the released code does, so the image
//! the model scores is exactly the PNG the host saves. Three-channel canvases read the genes
//! of a pixel in a colour space (`hsv` as the paper says, `hls-opencv` as the released code
//! does, or plain `rgb`) and render RGB. Genes are stored row-major with channels interleaved;
//! the released code stores columns first, which changes nothing because genes mutate
//! independently. SBX crossover is available through `crossover_rate`, 0 by default as in the
//! paper's text: `sbx = "deb"` (default) recombines each differing gene pair with probability
//! 0.5, as Deb's SBX does; `sbx = "released"` is exactly the released code's
//! `evo_float_image` SBX, which recombines every differing pair and leaves genes that are equal
//! in both parents at sferes' default of 0.5.
//!
//! The optional operations of plugin ABI 1.1, on gray canvases and with `color_space = "rgb"`
//! (where a gene is one pixel value; the `hsv` and `hls-opencv` conversions work on 8-bit
//! values and are not inverted or differentiated here, so they answer "not supported"):
//! `genome_from_pixels` stores gene `clamp(p / 255, 0, 1)` for pixel value p, which renders
//! back to `trunc(p)` for p in 0..=255 (exactly p for whole values); the parameter vector is
//! the genes in genome order, and `pullback` is the product with the Jacobian of the
//! real-valued image `255 g` (rendering then truncates it to bytes): dL/dg = 255 dL/dp,
//! gene by gene; `apply_step` adds the step and clamps each gene to [0, 1] (a gene at a bound
//! stays there under a step that pushes it out).
#![deny(unsafe_code)]

mod genome;
mod operators;

use pareidolia_plugin::prelude::*;
use serde::Deserialize;

use genome::Genome;
use pareidolia_plugin::color::{self, ColorSpace};

/// Parameters, as the run config's `[encoding.params]` table gives them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DirectParams {
    /// Per-gene probability of mutation at generation 0.
    pub mutation_rate: f64,
    /// The rate halves every this many generations; 0 keeps it constant (released code).
    pub halving_period: u64,
    /// Strength (distribution index) of polynomial mutation.
    pub eta_m: f64,
    /// Probability that a pair of parents is recombined with SBX instead of copied.
    pub crossover_rate: f64,
    /// Distribution index of SBX.
    pub eta_c: f64,
    /// Which SBX: Deb's (each differing gene with probability 0.5) or the released code's.
    pub sbx: operators::SbxVariant,
    /// How three genes make a colour pixel; ignored on gray canvases.
    pub color_space: ColorSpace,
}

impl Default for DirectParams {
    fn default() -> Self {
        Self {
            mutation_rate: 0.1,
            halving_period: 1000,
            eta_m: 15.0,
            crossover_rate: 0.0,
            eta_c: 10.0,
            sbx: operators::SbxVariant::Deb,
            color_space: ColorSpace::Hsv,
        }
    }
}

impl DirectParams {
    fn validate(&self) -> Result<(), PluginError> {
        let unit = |name: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(PluginError::new(format!(
                    "parameter `{name}` must lie in [0, 1], got {v}"
                )))
            }
        };
        unit("mutation_rate", self.mutation_rate)?;
        unit("crossover_rate", self.crossover_rate)?;
        for (name, v) in [("eta_m", self.eta_m), ("eta_c", self.eta_c)] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(PluginError::new(format!(
                    "parameter `{name}` must be a finite number >= 0, got {v}"
                )));
            }
        }
        Ok(())
    }

    /// The per-gene mutation probability at `generation`.
    pub fn rate_at(&self, generation: u64) -> f64 {
        if self.halving_period == 0 {
            return self.mutation_rate;
        }
        let halvings = (generation / self.halving_period).min(1074) as i32;
        self.mutation_rate * 0.5f64.powi(halvings)
    }
}

/// The direct encoding.
#[derive(Debug)]
pub struct Direct {
    params: DirectParams,
    canvas: Canvas,
}

impl Direct {
    /// Whether a gene is a pixel value, so the ABI 1.1 operations apply (see the crate doc).
    fn genes_are_pixels(&self, operation: &str) -> Result<(), PluginError> {
        if self.canvas.channels == 1 || self.params.color_space == ColorSpace::Rgb {
            Ok(())
        } else {
            Err(PluginError::unsupported(format!(
                "the direct encoding offers `{operation}` on gray canvases and with color_space = \"rgb\" only: \
                 with `{}` its genes are a colour space whose 8-bit conversion it does not invert or differentiate",
                serde_json::to_value(self.params.color_space)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            )))
        }
    }

    fn check_genes(&self, genome: &Genome) -> Result<(), PluginError> {
        if genome.genes().len() != self.canvas.len() {
            return Err(PluginError::new(format!(
                "genome has {} genes, the canvas needs {}: it was made for another canvas",
                genome.genes().len(),
                self.canvas.len()
            )));
        }
        Ok(())
    }
}

impl Encoding for Direct {
    type Genome = Genome;

    fn new(params: Params<'_>, canvas: Canvas) -> Result<Self, PluginError> {
        let params: DirectParams = params.parse()?;
        params.validate()?;
        if !matches!(canvas.channels, 1 | 3) || canvas.is_empty() {
            return Err(PluginError::new(format!(
                "the direct encoding draws 1 or 3 channels on a non-empty canvas, got {}x{}x{}",
                canvas.width, canvas.height, canvas.channels
            )));
        }
        Ok(Self { params, canvas })
    }

    fn random(&self, rng: &mut Rng) -> Genome {
        Genome::new(
            (0..self.canvas.len())
                .map(|_| rng.random::<f32>())
                .collect(),
        )
    }

    fn mutate(&self, genome: &mut Genome, mutation: Mutation, rng: &mut Rng) {
        let rate = self.params.rate_at(mutation.generation);
        operators::polynomial_mutation(genome.genes_mut(), rate, self.params.eta_m, rng);
    }

    fn crossover(&self, a: &Genome, b: &Genome, rng: &mut Rng) -> (Genome, Genome) {
        if self.params.crossover_rate > 0.0 && rng.random::<f64>() < self.params.crossover_rate {
            let (ca, cb) = match self.params.sbx {
                operators::SbxVariant::Deb => {
                    operators::sbx(a.genes(), b.genes(), self.params.eta_c, rng)
                }
                operators::SbxVariant::Released => {
                    operators::sbx_released(a.genes(), b.genes(), self.params.eta_c, rng)
                }
            };
            (Genome::new(ca), Genome::new(cb))
        } else {
            (a.clone(), b.clone())
        }
    }

    fn render(&self, genome: &Genome, pixels: &mut [u8]) -> Result<(), PluginError> {
        let genes = genome.genes();
        if genes.len() != pixels.len() {
            return Err(PluginError::new(format!(
                "genome has {} genes, the canvas needs {}: it was made for another canvas",
                genes.len(),
                pixels.len()
            )));
        }
        if self.canvas.channels == 1 {
            for (p, &g) in pixels.iter_mut().zip(genes) {
                *p = color::gene_to_byte(g);
            }
        } else {
            for (px, gs) in pixels.chunks_exact_mut(3).zip(genes.chunks_exact(3)) {
                let bytes = [gs[0], gs[1], gs[2]].map(color::gene_to_byte);
                px.copy_from_slice(&self.params.color_space.to_rgb(bytes));
            }
        }
        Ok(())
    }

    fn encode(&self, genome: &Genome) -> Vec<u8> {
        genome.encode()
    }

    fn decode(&self, bytes: &[u8]) -> Result<Genome, PluginError> {
        Genome::decode(bytes)
    }

    fn describe(&self, genome: &Genome) -> String {
        let genes = genome.genes();
        let mean = genes.iter().map(|&g| g as f64).sum::<f64>() / genes.len().max(1) as f64;
        serde_json::json!({
            "encoding": "direct",
            "format_version": genome::FORMAT_VERSION,
            "genes": genes.len(),
            "mean_gene": mean,
            "color_space": self.params.color_space,
        })
        .to_string()
    }

    fn genome_from_pixels(&self, pixels: &[f32]) -> Result<Genome, PluginError> {
        self.genes_are_pixels("genome_from_pixels")?;
        Ok(Genome::new(
            pixels.iter().map(|p| (p / 255.0).clamp(0.0, 1.0)).collect(),
        ))
    }

    fn pullback(&self, genome: &Genome, pixel_gradient: &[f32]) -> Result<Vec<f32>, PluginError> {
        self.genes_are_pixels("pullback")?;
        self.check_genes(genome)?;
        Ok(pixel_gradient.iter().map(|d| 255.0 * d).collect())
    }

    fn apply_step(&self, genome: &Genome, step: &[f32]) -> Result<Genome, PluginError> {
        self.genes_are_pixels("apply_step")?;
        self.check_genes(genome)?;
        if step.len() != genome.genes().len() {
            return Err(PluginError::new(format!(
                "the step has {} values, the genome {} genes",
                step.len(),
                genome.genes().len()
            )));
        }
        Ok(Genome::new(
            genome
                .genes()
                .iter()
                .zip(step)
                .map(|(g, s)| (g + s).clamp(0.0, 1.0))
                .collect(),
        ))
    }
}

export_encoding!(Direct, name = "direct", version = env!("CARGO_PKG_VERSION"));

#[cfg(test)]
mod tests {
    use super::*;

    fn gray(w: u32, h: u32) -> Direct {
        Direct::new(
            Params::new("{}"),
            Canvas {
                width: w,
                height: h,
                channels: 1,
            },
        )
        .unwrap()
    }

    #[test]
    fn rate_halves_every_period_and_period_zero_keeps_it() {
        let p = DirectParams::default();
        assert_eq!(p.rate_at(0), 0.1);
        assert_eq!(p.rate_at(999), 0.1);
        assert_eq!(p.rate_at(1000), 0.05);
        assert_eq!(p.rate_at(2500), 0.025);
        let constant = DirectParams {
            halving_period: 0,
            ..p
        };
        assert_eq!(constant.rate_at(5000), 0.1);
    }

    #[test]
    fn bad_parameters_are_refused_with_their_name() {
        let canvas = Canvas {
            width: 2,
            height: 2,
            channels: 1,
        };
        let e = Direct::new(Params::new(r#"{"mutation_rate": 2}"#), canvas).unwrap_err();
        assert!(e.message().contains("mutation_rate"), "{e}");
        let e = Direct::new(Params::new(r#"{"nope": 1}"#), canvas).unwrap_err();
        assert!(e.message().contains("nope"), "{e}");
        let e = Direct::new(
            Params::new("{}"),
            Canvas {
                channels: 2,
                ..canvas
            },
        )
        .unwrap_err();
        assert!(e.message().contains("1 or 3 channels"), "{e}");
    }

    #[test]
    fn random_genomes_are_uniform_and_reproducible() {
        let d = gray(28, 28);
        let a = d.random(&mut Rng::seed_from_u64(7));
        let b = d.random(&mut Rng::seed_from_u64(7));
        assert_eq!(a, b);
        let mean = a.genes().iter().sum::<f32>() / a.genes().len() as f32;
        assert!((mean - 0.5).abs() < 0.05, "mean {mean}");
        assert!(a.genes().iter().all(|g| (0.0..1.0).contains(g)));
    }

    #[test]
    fn mutation_touches_about_rate_of_the_genes_and_stays_in_bounds() {
        let d = gray(100, 100);
        let mut rng = Rng::seed_from_u64(1);
        let parent = d.random(&mut rng);
        let mut child = parent.clone();
        d.mutate(&mut child, Mutation { generation: 0 }, &mut rng);
        let changed = parent
            .genes()
            .iter()
            .zip(child.genes())
            .filter(|(a, b)| a != b)
            .count();
        assert!((800..1200).contains(&changed), "changed {changed} of 10000");
        assert!(child.genes().iter().all(|g| (0.0..=1.0).contains(g)));
        let mut late = parent.clone();
        d.mutate(&mut late, Mutation { generation: 1000 }, &mut rng);
        let changed = parent
            .genes()
            .iter()
            .zip(late.genes())
            .filter(|(a, b)| a != b)
            .count();
        assert!(
            (380..620).contains(&changed),
            "changed {changed} of 10000 after one halving"
        );
    }

    #[test]
    fn render_truncates_genes_to_bytes() {
        let d = gray(2, 2);
        let g = Genome::new(vec![0.0, 0.5, 0.999, 1.0]);
        let mut px = [0u8; 4];
        d.render(&g, &mut px).unwrap();
        assert_eq!(px, [0, 127, 254, 255]);
        let mut wrong = [0u8; 3];
        assert!(d.render(&g, &mut wrong).is_err());
    }

    #[test]
    fn crossover_off_by_default_copies_parents() {
        let d = gray(4, 4);
        let mut rng = Rng::seed_from_u64(3);
        let (a, b) = (d.random(&mut rng), d.random(&mut rng));
        let (ca, cb) = d.crossover(&a, &b, &mut rng);
        assert_eq!((ca, cb), (a, b));
    }

    #[test]
    fn released_sbx_is_chosen_by_name_and_resets_shared_genes() {
        let canvas = Canvas {
            width: 4,
            height: 4,
            channels: 1,
        };
        let d = Direct::new(
            Params::new(r#"{"crossover_rate": 1.0, "sbx": "released"}"#),
            canvas,
        )
        .unwrap();
        let a = d.random(&mut Rng::seed_from_u64(4));
        // The same parent twice: every gene is shared, so both children are all 0.5.
        let (ca, cb) = d.crossover(&a, &a, &mut Rng::seed_from_u64(5));
        assert!(ca.genes().iter().chain(cb.genes()).all(|&g| g == 0.5));
        let e = Direct::new(Params::new(r#"{"sbx": "nope"}"#), canvas).unwrap_err();
        assert!(e.message().contains("nope"), "{e}");
    }

    fn colour(space: &str) -> Direct {
        Direct::new(
            Params::new(&format!(r#"{{"color_space": "{space}"}}"#)),
            Canvas {
                width: 3,
                height: 2,
                channels: 3,
            },
        )
        .unwrap()
    }

    #[test]
    fn a_genome_from_pixels_renders_back_to_them() {
        // Every byte value, gray and RGB: exactly the same bytes.
        let d = gray(16, 16);
        let pixels: Vec<f32> = (0..256).map(|p| p as f32).collect();
        let g = d.genome_from_pixels(&pixels).unwrap();
        let mut out = [0u8; 256];
        d.render(&g, &mut out).unwrap();
        assert!(out.iter().enumerate().all(|(i, &p)| p as usize == i));
        let rgb = colour("rgb");
        let pixels: Vec<f32> = (0..18).map(|i| (i * 15) as f32).collect();
        let mut out = [0u8; 18];
        rgb.render(&rgb.genome_from_pixels(&pixels).unwrap(), &mut out)
            .unwrap();
        assert_eq!(out.map(f32::from).as_slice(), pixels.as_slice());
        // Real values truncate, out-of-range ones clamp, as the renderer reads genes.
        let g = gray(2, 2)
            .genome_from_pixels(&[12.7, -3.0, 300.0, 254.999])
            .unwrap();
        let mut out = [0u8; 4];
        gray(2, 2).render(&g, &mut out).unwrap();
        assert_eq!(out, [12, 0, 255, 254]);
        assert_eq!(g.genes()[0], 12.7 / 255.0);
    }

    #[test]
    fn the_pullback_scales_by_255_and_the_step_clamps() {
        let d = gray(2, 2);
        let g = Genome::new(vec![0.0, 0.5, 0.99, 1.0]);
        let pulled = d.pullback(&g, &[1.0, -2.0, 0.5, 0.0]).unwrap();
        assert_eq!(pulled, [255.0, -510.0, 127.5, 0.0]);
        let moved = d.apply_step(&g, &[-0.1, 0.25, 0.1, -0.5]).unwrap();
        assert_eq!(moved.genes(), [0.0, 0.75, 1.0, 0.5]);
        let e = d.apply_step(&g, &[0.0; 3]).unwrap_err();
        assert!(
            e.message().contains("3 values") && !e.is_unsupported(),
            "{e}"
        );
        let other = Genome::new(vec![0.5; 9]);
        assert!(d.pullback(&other, &[0.0; 4]).is_err());
        // The relaxed image 255 g: a step along the pull-back of dL/dp = 1 on one pixel
        // raises that pixel by 255 times the step, as the chain rule says.
        let step: Vec<f32> = pulled.iter().map(|v| v * 1e-4).collect();
        let moved = d.apply_step(&g, &step).unwrap();
        let rise = 255.0 * (moved.genes()[1] - g.genes()[1]);
        assert!((rise - 255.0 * -510.0 * 1e-4).abs() < 1e-3, "{rise}");
    }

    #[test]
    fn colour_spaces_other_than_rgb_answer_unsupported() {
        for space in ["hsv", "hls-opencv"] {
            let d = colour(space);
            let g = d.random(&mut Rng::seed_from_u64(1));
            let errors = [
                d.genome_from_pixels(&[0.0; 18]).map(drop).unwrap_err(),
                d.pullback(&g, &[0.0; 18]).map(drop).unwrap_err(),
                d.apply_step(&g, &[0.0; 18]).map(drop).unwrap_err(),
            ];
            for e in errors {
                assert!(
                    e.is_unsupported()
                        && e.message().contains(space)
                        && e.message().contains("rgb"),
                    "{e}"
                );
            }
        }
    }

    #[test]
    fn genomes_round_trip_through_bytes() {
        let d = gray(28, 28);
        let g = d.random(&mut Rng::seed_from_u64(9));
        assert_eq!(d.decode(&d.encode(&g)).unwrap(), g);
        assert!(d.decode(&[9, 0, 0]).is_err());
    }
}
