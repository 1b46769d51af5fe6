//! `pareidolia plugins list` and `pareidolia plugins check PATH`: what is installed, and
//! whether a plugin a user just built works, before a run depends on it (a fitness is run on
//! real model outputs: [`crate::fitness_check`]).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use pareidolia_core::plugin_host::{PluginLibrary, search_path, shared_libraries_in};
use pareidolia_core::{EncodingPlugin, PluginKind};
use pareidolia_plugin::abi::CanvasSpec;

use crate::cli::PluginsCommand;
use crate::fitness_check::{FitnessInputs, check_fitness};

/// Runs the command.
pub fn plugins(cmd: PluginsCommand) -> Result<()> {
    match cmd {
        PluginsCommand::List { dir, all } => list(&dir, all),
        PluginsCommand::Check {
            path,
            params,
            canvas,
            rounds,
            seconds,
            png,
            models,
            images,
            backend,
        } => check(
            &path,
            &params,
            &canvas,
            &Rounds {
                rounds,
                seconds,
                png,
            },
            &FitnessInputs {
                models,
                images,
                backend,
            },
        ),
    }
}

/// File names of the workspace's test fixtures: broken on purpose, built beside the plugins.
const FIXTURE_PREFIX: &str = "pareidolia_fixture_";

fn is_fixture(file: &Path) -> bool {
    file.file_name().is_some_and(|n| {
        n.to_string_lossy()
            .strip_prefix(std::env::consts::DLL_PREFIX)
            .is_some_and(|rest| rest.starts_with(FIXTURE_PREFIX))
    })
}

fn list(extra: &[PathBuf], all: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<9} {:<16} {:<10} {:<5} FILE",
        "KIND", "NAME", "VERSION", "ABI"
    )?;
    let mut seen = std::collections::BTreeSet::new();
    for dir in search_path(extra) {
        for file in shared_libraries_in(&dir) {
            if !all && is_fixture(&file) {
                continue;
            }
            let Ok(canonical) = file.canonicalize() else {
                continue;
            };
            if !seen.insert(canonical) {
                continue;
            }
            // Only libraries that are Pareidolia plugins are listed; a refused one is shown
            // with the reason when it at least exports the descriptor.
            match PluginLibrary::open(&file) {
                Ok(lib) => {
                    let i = lib.info();
                    writeln!(
                        out,
                        "{:<9} {:<16} {:<10} {:<5} {}",
                        i.kind.to_string(),
                        i.name,
                        i.version,
                        i.abi,
                        file.display()
                    )?;
                }
                Err(
                    pareidolia_core::PluginError::MissingSymbol { .. }
                    | pareidolia_core::PluginError::NotALibrary { .. },
                ) => {}
                Err(e) => writeln!(
                    out,
                    "{:<9} {:<16} {:<10} {:<5} {} ({e})",
                    "refused",
                    "-",
                    "-",
                    "-",
                    file.display()
                )?,
            }
        }
    }
    Ok(())
}

fn parse_canvas(text: &str) -> Result<CanvasSpec> {
    let parts: Vec<u32> = text
        .split('x')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("canvas `{text}` is not WIDTHxHEIGHTxCHANNELS"))?;
    match parts[..] {
        [width, height, channels] if width > 0 && height > 0 && matches!(channels, 1 | 3) => {
            Ok(CanvasSpec {
                width,
                height,
                channels,
            })
        }
        _ => bail!(
            "canvas `{text}` must be WIDTHxHEIGHTxCHANNELS with positive sizes and 1 or 3 channels"
        ),
    }
}

fn timed<T>(out: &mut impl std::io::Write, what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let start = Instant::now();
    let result = f();
    let us = start.elapsed().as_secs_f64() * 1e6;
    match &result {
        Ok(_) => writeln!(out, "  ok    {what:<12} {us:>10.1} us")?,
        Err(e) => writeln!(out, "  FAIL  {what:<12} {us:>10.1} us  {e:#}")?,
    }
    result
}

fn check(
    path: &Path,
    params: &str,
    canvas: &str,
    options: &Rounds,
    fitness: &FitnessInputs,
) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let lib = PluginLibrary::open(path)?;
    let i = lib.info().clone();
    writeln!(
        out,
        "{} plugin `{}` {} (ABI {}), {}",
        i.kind,
        i.name,
        i.version,
        i.abi,
        path.display()
    )?;
    match i.kind {
        PluginKind::Encoding => {
            let canvas = parse_canvas(canvas)?;
            let enc = timed(&mut out, "create", || {
                Ok(EncodingPlugin::create(lib, params, canvas)?)
            })?;
            let a = timed(&mut out, "random", || Ok(enc.random(1)?))?;
            let b = timed(&mut out, "random", || Ok(enc.random(2)?))?;
            let (ca, _) = timed(&mut out, "crossover", || Ok(enc.crossover(&a, &b, 3)?))?;
            let child = timed(&mut out, "mutate", || Ok(enc.mutate(&ca, 1, 4)?))?;
            let mut pixels = vec![0u8; enc.image_len()];
            timed(&mut out, "render", || Ok(enc.render(&child, &mut pixels)?))?;
            // Serialise -> deserialise: mutating with rate-free seeds is not guaranteed to be
            // the identity, so round-trip through `describe`, which decodes the bytes.
            timed(&mut out, "deserialise", || Ok(enc.describe(&child)?))?;
            let again = enc.random(1)?;
            if again != a {
                bail!(
                    "`random` with the same seed gave different genomes: the plugin is not deterministic"
                );
            }
            let mut twice = vec![0u8; enc.image_len()];
            enc.render(&child, &mut twice)?;
            if twice != pixels {
                bail!("rendering the same genome twice gave different images");
            }
            writeln!(
                out,
                "  genome {} bytes, image {}x{}x{}",
                child.len(),
                canvas.width,
                canvas.height,
                canvas.channels
            )?;
            // A second instance decodes what the first one wrote, as a resumed run does.
            let fresh = EncodingPlugin::create(enc.library().clone(), params, canvas)?;
            let report = rounds(&enc, &fresh, options)?;
            writeln!(out, "{report}")?;
            if !report.failures.is_empty() {
                bail!(
                    "{} of {} round trips failed (first: {}); a run would lose those children",
                    report.failed_rounds,
                    report.rounds,
                    report.failures[0]
                );
            }
        }
        PluginKind::Fitness => check_fitness(&mut out, lib, params, fitness)?,
    }
    writeln!(out, "plugin works")?;
    Ok(())
}

/// How long `plugins check` exercises an encoding.
pub struct Rounds {
    /// At most this many rounds...
    pub rounds: u64,
    /// ...and at most this many seconds.
    pub seconds: f64,
    /// Write the first images drawn here as PNG files.
    pub png: Option<PathBuf>,
}

/// What the rounds found.
struct RoundsReport {
    rounds: u64,
    failed_rounds: u64,
    failures: Vec<String>,
    seconds: f64,
    pngs: usize,
}

impl std::fmt::Display for RoundsReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "  {} seeded rounds of random, crossover, mutate, render and a second instance's decode in {:.2} s: {} failed",
            self.rounds, self.seconds, self.failed_rounds
        )?;
        for failure in self.failures.iter().take(5) {
            write!(f, "\n  FAIL  {failure}")?;
        }
        if self.pngs > 0 {
            write!(f, "\n  wrote {} images", self.pngs)?;
        }
        Ok(())
    }
}

/// Images `--png` writes at most.
const MAX_PNGS: usize = 32;

/// Round `i` (seeds from `i`): two random genomes, their crossover, a mutation of it; each
/// rendered twice into buffers prefilled with 0x00 and 0xFF (bytes the plugin leaves
/// unwritten show up as a difference: a canvas of 3 channels drawn as 1), and rendered again
/// by `fresh`, another instance, from a copy of the bytes (decode(encode(g)) draws the same
/// image). A panic inside the plugin is an error of that call, caught by the shim, so a
/// plugin that panics once in a few hundred calls is found.
fn rounds(enc: &EncodingPlugin, fresh: &EncodingPlugin, o: &Rounds) -> Result<RoundsReport> {
    let start = Instant::now();
    let canvas = enc.canvas();
    let mut report = RoundsReport {
        rounds: 0,
        failed_rounds: 0,
        failures: Vec::new(),
        seconds: 0.0,
        pngs: 0,
    };
    if let Some(dir) = &o.png {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let (mut zeros, mut ones, mut other) = (
        vec![0u8; enc.image_len()],
        vec![0u8; enc.image_len()],
        vec![0u8; enc.image_len()],
    );
    for i in 0..o.rounds {
        if i > 0 && start.elapsed().as_secs_f64() >= o.seconds {
            break;
        }
        report.rounds += 1;
        let seed = 1000 + 4 * i;
        let mut one = |what: &str, result: Result<(), String>| {
            if let Err(e) = result {
                report.failures.push(format!("round {i} {what}: {e}"));
            }
        };
        let mut genomes = Vec::new();
        for (what, g) in [
            ("random", enc.random(seed)),
            ("random", enc.random(seed + 1)),
        ] {
            match g {
                Ok(g) => genomes.push(g),
                Err(e) => one(what, Err(e.to_string())),
            }
        }
        if let [a, b] = &genomes[..] {
            match enc.crossover(a, b, seed + 2) {
                Ok((c, d)) => genomes.extend([c, d]),
                Err(e) => one("crossover", Err(e.to_string())),
            }
        }
        if let Some(parent) = genomes.last().cloned() {
            match enc.mutate(&parent, i + 1, seed + 3) {
                Ok(m) => genomes.push(m),
                Err(e) => one("mutate", Err(e.to_string())),
            }
        }
        for (k, g) in genomes.iter().enumerate() {
            let drawn = (|| -> Result<(), String> {
                zeros.fill(0);
                ones.fill(0xff);
                enc.render(g, &mut zeros).map_err(|e| e.to_string())?;
                enc.render(g, &mut ones).map_err(|e| e.to_string())?;
                let unwritten = zeros.iter().zip(&ones).filter(|(a, b)| a != b).count();
                if unwritten > 0 {
                    return Err(format!(
                        "render left {unwritten} of the {} bytes of a {}x{}x{} image unwritten (does it draw {} channel(s)?)",
                        zeros.len(),
                        canvas.width,
                        canvas.height,
                        canvas.channels,
                        canvas.channels
                    ));
                }
                let copy = g.clone();
                fresh
                    .render(&copy, &mut other)
                    .map_err(|e| format!("a second instance cannot decode the bytes: {e}"))?;
                if other != zeros {
                    return Err(
                        "a second instance draws another image from the same bytes: decode(encode(genome)) is not the genome".into(),
                    );
                }
                Ok(())
            })();
            let failed = drawn.is_err();
            one("render", drawn);
            if let Some(dir) = &o.png
                && !failed
                && report.pngs < MAX_PNGS
            {
                let path = dir.join(format!("round{i:04}-{k}.png"));
                let image = pareidolia_core::image_io::Image {
                    width: canvas.width,
                    height: canvas.height,
                    channels: canvas.channels,
                    pixels: zeros.clone(),
                };
                pareidolia_core::image_io::write_png(&path, &image)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                report.pngs += 1;
            }
        }
        let failures = report.failures.len();
        if failures > 0
            && report
                .failures
                .last()
                .is_some_and(|f| f.starts_with(&format!("round {i} ")))
        {
            report.failed_rounds += 1;
        }
    }
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}
