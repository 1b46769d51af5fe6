//! The command-line surface, as typed: parsing only, no side effects.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Evolve images that a trained classifier labels with near-certainty although a person
/// sees no object in them (Nguyen, Yosinski & Clune, CVPR 2015).
#[derive(Debug, Parser)]
#[command(name = "pareidolia", version, about)]
pub struct Cli {
    /// More log output (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run an experiment to its last generation and write its run folder.
    Run(RunArgs),
    /// Print the top classes a model gives image files.
    Classify(ClassifyArgs),
    /// Measure raw inference throughput of a model on a backend (random images).
    Bench(BenchArgs),
}

/// `pareidolia bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Model: a manifest.toml path or `builtin:NAME`.
    #[arg(long, default_value = "builtin:lenet-mnist")]
    pub model: String,
    /// Backend.
    #[arg(long, default_value = "tract")]
    pub backend: String,
    /// Batch sizes to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,32,100,256")]
    pub batch: Vec<usize>,
    /// Seconds to measure each batch size (after one warm-up batch).
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
}

/// `pareidolia run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Experiment config (TOML); without it, the built-in default (MNIST, direct encoding).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Seed of every random decision (overrides the config).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Generations after the initial population (overrides the config).
    #[arg(long)]
    pub generations: Option<u64>,
    /// Mutator actors, 0 = one per spare core (overrides the config).
    #[arg(long)]
    pub mutators: Option<u32>,
    /// Run folder to create; default `runs/<config name>-<unix time>`.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

/// `pareidolia classify`.
#[derive(Debug, Args)]
pub struct ClassifyArgs {
    /// PNG files.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
    /// Model: a manifest.toml path or `builtin:NAME`.
    #[arg(long, default_value = "builtin:lenet-mnist")]
    pub model: String,
    /// How many classes to print per image.
    #[arg(long, default_value_t = 3)]
    pub top: usize,
    /// Print JSON (one object per image, with all probabilities) instead of text.
    #[arg(long)]
    pub json: bool,
}
