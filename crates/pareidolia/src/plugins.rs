//! `pareidolia plugins list` and `pareidolia plugins check PATH`: what is installed, and
//! whether a plugin a user just built works, before a run depends on it.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use pareidolia_core::plugin_host::{PluginLibrary, search_path, shared_libraries_in};
use pareidolia_core::{EncodingPlugin, FitnessPlugin, PluginKind};
use pareidolia_plugin::abi::CanvasSpec;

use crate::cli::PluginsCommand;

/// Runs the command.
pub fn plugins(cmd: PluginsCommand) -> Result<()> {
    match cmd {
        PluginsCommand::List { dir, all } => list(&dir, all),
        PluginsCommand::Check {
            path,
            params,
            canvas,
        } => check(&path, &params, &canvas),
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

fn check(path: &Path, params: &str, canvas: &str) -> Result<()> {
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
        }
        PluginKind::Fitness => {
            let classes = 10;
            let fit = timed(&mut out, "create", || {
                Ok(FitnessPlugin::create(lib, params, classes, &[true])?)
            })?;
            let outputs: Vec<f32> = (0..4 * classes).map(|k| (k % 7) as f32 - 3.0).collect();
            let scores = timed(&mut out, "score", || Ok(fit.score(&outputs, 4)?))?;
            if let Some(bad) = scores.iter().find(|s| !s.is_finite()) {
                bail!(
                    "scores include a non-finite value ({bad}); the host would reject those children"
                );
            }
        }
    }
    writeln!(out, "plugin works")?;
    Ok(())
}
