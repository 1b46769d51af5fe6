//! Checkpoints: everything needed to continue a run exactly, in a versioned, checksummed file
//! that is written atomically, so that a crash, a kill or a full disk at any moment leaves the
//! previous checkpoint intact and never a half-written one that looks valid.
//!
//! File layout (integers little-endian):
//!
//! ```text
//! magic            b"PAREIDCK"                         8 bytes
//! format version   u32
//! header check     first 4 bytes of sha256(magic, version)
//! metadata length  u64, then the metadata as JSON (CheckpointMeta)
//! blob count       u32, then per blob: length u64 + bytes (genomes; scores as f32)
//! sha256           of every byte before it             32 bytes
//! ```
//!
//! The first 16 bytes keep this layout in every format version, so a file from a newer
//! Pareidolia is recognised as such (and refused) while a damaged version field is recognised
//! as damage (and skipped). Metadata is JSON so that people and tools can read it and new fields can be added with
//! defaults; bulky genomes and score vectors are raw blobs. A write goes to a temporary file in
//! the same folder, is fsynced, renamed over its final name, and the folder is fsynced; only
//! then are old checkpoints beyond the newest `keep` valid ones removed (damaged files are
//! moved aside to `checkpoints/damaged/`, never counted, never deleted).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::archive::{Archive, Champion};
use crate::ascent::Track;
use crate::config::RunConfig;
use crate::identity::{ModelIdentity, RunIdentity};
use crate::seeds::HostRng;
use crate::stop::StopReached;
use crate::summary::{PluginSummary, StageTimes};

/// First bytes of every checkpoint.
pub const MAGIC: &[u8; 8] = b"PAREIDCK";
/// The format this build writes; it reads this and older ones.
///
/// - 1: one model, recorded as `model` (name, sha256), plugins as `encoding` and `fitness`.
/// - 2: the run's [`RunIdentity`] as `identity` (every model with its classes, output kind
///   and the backend that ran it; the plugins; the labels). Format 1 is read by moving its
///   fields into an identity; what it did not record stays empty.
pub const FORMAT_VERSION: u32 = 2;
/// File name extension of checkpoints.
pub const EXTENSION: &str = "pdck";
/// Where rotation moves damaged checkpoints (inside `checkpoints/`), rather than deleting
/// them or counting them as kept.
pub const DAMAGED_DIR: &str = "damaged";

/// One champion's record; its genome and scores are blobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChampionMeta {
    /// Child id.
    pub id: u64,
    /// Generation it was made in.
    pub generation: u64,
    /// Blob index of its genome.
    pub genome_blob: u32,
    /// Blob index of its scores (f32 little-endian).
    pub scores_blob: u32,
    /// Blob index of the models' probabilities for it (f32 little-endian; see
    /// [`Champion::probabilities`]); absent where not recorded (older checkpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probabilities_blob: Option<u32>,
}

/// The checkpoint's metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Version of the program that wrote it.
    pub pareidolia_version: String,
    /// When it was written (seconds since the Unix epoch).
    pub created_unix_s: f64,
    /// Last completed generation.
    pub generation: u64,
    /// Children scored so far.
    pub evaluations: u64,
    /// Children lost so far.
    pub lost: u64,
    /// Champion replacements so far.
    pub replacements: u64,
    /// Evolution time so far, seconds (summed over resumed sessions).
    pub elapsed_s: f64,
    /// Stage times so far.
    pub stage_times: StageTimes,
    /// Parent-selection RNG state.
    pub rng: HostRng,
    /// The resolved config.
    pub config: RunConfig,
    /// The folder the config's relative paths are relative to.
    pub base_dir: PathBuf,
    /// The run's models, plugins and labels.
    pub identity: RunIdentity,
    /// Distinct champions.
    pub champions: Vec<ChampionMeta>,
    /// Per class: index into `champions`.
    pub cells: Vec<Option<u32>>,
    /// The stop condition that ended the run, if one did (absent in older checkpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reached: Option<StopReached>,
    /// A gradient-ascent run's images and records (absent for MAP-Elites). The champions
    /// above are its best images, as genomes of the run's encoding (its `genome_from_pixels`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ascent: Option<AscentMeta>,
    /// The generations after `generation` whose parents were drawn already (absent in older
    /// checkpoints, which planned the next generation on resume): with `lag` L, L + 1 of
    /// them. Their parents were drawn from older archives than this one, so they are
    /// recorded rather than drawn again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub planned: Vec<PlannedMeta>,
}

impl CheckpointMeta {
    /// The run's counters it records.
    pub fn counters(&self) -> RunCounters {
        RunCounters {
            generation: self.generation,
            evaluations: self.evaluations,
            lost: self.lost,
            elapsed_s: self.elapsed_s,
            stage_times: self.stage_times,
        }
    }
}

/// A planned generation in a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedMeta {
    /// Its number.
    pub generation: u64,
    /// Its children.
    pub size: u32,
    /// Per pair of children, the blob indices of the two parents' genomes (a champion's
    /// genome blob where the parent is still a champion); `None` = random genomes.
    pub parents: Vec<Option<(u32, u32)>>,
    /// Per pair, the classes the two parents were drawn for (runs whose gradient operator
    /// steers toward the parent's class; absent otherwise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parent_classes: Vec<Option<(u32, u32)>>,
}

/// The two parents of a pair of children, as genomes.
pub type ParentPair = (Arc<[u8]>, Arc<[u8]>);

/// A generation whose parents are drawn and whose children are not all inserted yet: its
/// number, its size and, per pair of children (`size.div_ceil(2)` of them), the two parents'
/// genomes, or `None` for random genomes (the initial population, or an empty archive).
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedGeneration {
    /// Its number.
    pub generation: u64,
    /// Its children.
    pub size: u32,
    /// The parents of each pair.
    pub parents: Vec<Option<ParentPair>>,
    /// Per pair, the classes whose cells the two parents were drawn from, recorded where the
    /// run's gradient operator steers children toward their parent's class; empty otherwise.
    pub parent_classes: Vec<Option<(u32, u32)>>,
}

/// A gradient-ascent run's state beyond its champions: the step, and per image the current
/// image and its records. Floating-point values that must come back exactly travel as their
/// IEEE-754 bits or in blobs (JSON would round them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AscentMeta {
    /// Steps taken.
    pub step: u64,
    /// One per image.
    pub tracks: Vec<TrackMeta>,
}

/// One gradient-ascent image in a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackMeta {
    /// The class pushed.
    pub class: usize,
    /// The objective at the last evaluation (`f64::to_bits`; absent before the first).
    pub objective_bits: Option<u64>,
    /// The best objective (`f64::to_bits`) and its step.
    pub best: Option<(u64, u64)>,
    /// The first step reaching each of [`crate::ascent::THRESHOLDS`].
    pub first_reaching: [Option<u64>; 4],
    /// The last gradient's squared norm and learning rate (`f64::to_bits`).
    pub last_bits: (u64, u64),
    /// Blob of the current image (mean-subtracted, f32).
    pub x_blob: u32,
    /// Blob of the best image (pixels, f32).
    pub best_pixels_blob: u32,
    /// Blob of the best image's probabilities (f32).
    pub best_probabilities_blob: u32,
}

/// A gradient-ascent run's state as a checkpoint restores it (the recipe, shape and mean
/// come from the run's config and model).
#[derive(Debug, Clone, PartialEq)]
pub struct AscentState {
    /// Steps taken.
    pub step: u64,
    /// The images and their records.
    pub tracks: Vec<Track>,
}

/// A checkpoint in memory: metadata and the archive's cells.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// Metadata.
    pub meta: CheckpointMeta,
    /// One entry per class.
    pub cells: Vec<Option<Champion>>,
    /// A gradient-ascent run's state.
    pub ascent: Option<AscentState>,
    /// The generations planned ahead, in order (see [`CheckpointMeta::planned`]).
    pub planned: Vec<PlannedGeneration>,
}

/// A run's counters at a generation boundary, as a checkpoint records them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RunCounters {
    /// Last completed generation.
    pub generation: u64,
    /// Children scored so far.
    pub evaluations: u64,
    /// Children lost so far.
    pub lost: u64,
    /// Evolution seconds so far (summed over resumed sessions).
    pub elapsed_s: f64,
    /// Stage times so far.
    pub stage_times: StageTimes,
}

impl Checkpoint {
    /// The one place a checkpoint is made from a run's state: the archive, its counters, the
    /// parent-selection RNG, the resolved config, the identity, the stop condition that
    /// ended the run, if one did, and the generations planned ahead. Returns the file's
    /// bytes. A planned parent that is still a champion (the same genome in memory) is
    /// recorded as a reference to the champion's genome; the others once each.
    #[allow(clippy::too_many_arguments)]
    pub fn capture(
        archive: &Archive,
        counters: RunCounters,
        rng: &HostRng,
        config: &RunConfig,
        identity: &RunIdentity,
        stop_reached: Option<&StopReached>,
        planned: &[PlannedGeneration],
        created_unix_s: f64,
    ) -> Vec<u8> {
        let (mut meta, distinct) = Self::meta_of(
            archive,
            counters,
            rng,
            config,
            identity,
            stop_reached,
            created_unix_s,
        );
        // Genomes by address: a champion's genome blob, or an extra blob after them.
        let mut blob_of: std::collections::HashMap<*const u8, u32> = distinct
            .iter()
            .enumerate()
            .map(|(i, c)| (c.genome.as_ptr(), 2 * i as u32))
            .collect();
        let mut extra: Vec<Vec<u8>> = Vec::new();
        let first_extra = 2 * distinct.len() as u32;
        let mut blob = |genome: &Arc<[u8]>| {
            *blob_of.entry(genome.as_ptr()).or_insert_with(|| {
                extra.push(genome.to_vec());
                first_extra + extra.len() as u32 - 1
            })
        };
        meta.planned = planned
            .iter()
            .map(|p| PlannedMeta {
                generation: p.generation,
                size: p.size,
                parents: p
                    .parents
                    .iter()
                    .map(|pair| pair.as_ref().map(|(a, b)| (blob(a), blob(b))))
                    .collect(),
                parent_classes: p.parent_classes.clone(),
            })
            .collect();
        encode_with(&meta, &distinct, &extra)
    }

    /// The metadata both kinds of checkpoint record (no gradient-ascent state), and the
    /// distinct champions in the order `encode` expects.
    fn meta_of(
        archive: &Archive,
        counters: RunCounters,
        rng: &HostRng,
        config: &RunConfig,
        identity: &RunIdentity,
        stop_reached: Option<&StopReached>,
        created_unix_s: f64,
    ) -> (CheckpointMeta, Vec<Champion>) {
        let (champions, cells, distinct) = index_champions(archive.cells());
        let meta = CheckpointMeta {
            pareidolia_version: env!("CARGO_PKG_VERSION").to_owned(),
            created_unix_s,
            generation: counters.generation,
            evaluations: counters.evaluations,
            lost: counters.lost,
            replacements: archive.replacements(),
            elapsed_s: counters.elapsed_s,
            stage_times: counters.stage_times,
            rng: rng.clone(),
            config: config.clone(),
            base_dir: config.base_dir.clone(),
            identity: identity.clone(),
            champions,
            cells,
            stop_reached: stop_reached.cloned(),
            ascent: None,
            planned: Vec::new(),
        };
        (meta, distinct)
    }

    /// [`Checkpoint::capture`] for a gradient-ascent run: its best images are the archive, its
    /// images and records go beside them.
    pub fn capture_ascent(
        archive: &Archive,
        ascent: &AscentState,
        counters: RunCounters,
        config: &RunConfig,
        identity: &RunIdentity,
        stop_reached: Option<&StopReached>,
        created_unix_s: f64,
    ) -> Vec<u8> {
        let (mut meta, distinct) = Self::meta_of(
            archive,
            counters,
            &crate::seeds::selection_rng(config.seed),
            config,
            identity,
            stop_reached,
            created_unix_s,
        );
        let first = 2 * distinct.len() as u32;
        let f32_bytes = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
        let mut extra = Vec::with_capacity(3 * ascent.tracks.len());
        let tracks = ascent
            .tracks
            .iter()
            .enumerate()
            .map(|(i, t)| {
                extra.push(f32_bytes(&t.x));
                extra.push(f32_bytes(&t.best_pixels));
                extra.push(f32_bytes(&t.best_probabilities));
                let base = first + 3 * i as u32;
                TrackMeta {
                    class: t.class,
                    objective_bits: (!t.objective.is_nan()).then(|| t.objective.to_bits()),
                    best: t.best.map(|(b, s)| (b.to_bits(), s)),
                    first_reaching: t.first_reaching,
                    last_bits: (t.last_grad_norm2.to_bits(), t.last_lr.to_bits()),
                    x_blob: base,
                    best_pixels_blob: base + 1,
                    best_probabilities_blob: base + 2,
                }
            })
            .collect();
        meta.ascent = Some(AscentMeta {
            step: ascent.step,
            tracks,
        });
        encode_with(&meta, &distinct, &extra)
    }

    /// The counters it records.
    pub fn counters(&self) -> RunCounters {
        self.meta.counters()
    }

    /// The archive it records, with the run's cells (checked by [`decode`]).
    pub fn archive(&self) -> Archive {
        let mut archive = Archive::restore(self.cells.clone(), self.meta.replacements);
        if let Some(cells) = &self.meta.identity.cells {
            archive
                .restrict(cells)
                .expect("decode checks that skipped classes hold no champion");
        }
        archive
    }

    /// Its config, with relative paths anchored where the run was started.
    pub fn config(&self) -> RunConfig {
        let mut config = self.meta.config.clone();
        config.base_dir = self.meta.base_dir.clone();
        config
    }
}

/// Format-1 metadata: format 2's, with one model as `model` and the plugins beside it
/// instead of an identity. (Parsed into its own type rather than edited as a JSON value:
/// the RNG state is a 128-bit integer, which `serde_json::Value` cannot hold.)
#[derive(Deserialize)]
struct MetaV1 {
    pareidolia_version: String,
    created_unix_s: f64,
    generation: u64,
    evaluations: u64,
    lost: u64,
    replacements: u64,
    elapsed_s: f64,
    stage_times: StageTimes,
    rng: HostRng,
    config: RunConfig,
    base_dir: PathBuf,
    model: V1Model,
    encoding: PluginSummary,
    fitness: PluginSummary,
    champions: Vec<ChampionMeta>,
    cells: Vec<Option<u32>>,
}

#[derive(Deserialize)]
struct V1Model {
    name: String,
    sha256: String,
}

impl MetaV1 {
    /// Format 2's metadata: the model and plugins become an identity with one model; the
    /// class count comes from the cells, the requested backend from the config; the output
    /// kind, the backend that ran the model, its device and the labels were not recorded.
    fn upgrade(self) -> CheckpointMeta {
        let identity = RunIdentity {
            models: vec![ModelIdentity {
                name: self.model.name,
                sha256: self.model.sha256,
                classes: self.cells.len(),
                output: None,
                requested_backend: self
                    .config
                    .primary_model()
                    .map(|m| m.backend)
                    .unwrap_or_default(),
                backend: None,
                device: None,
                backend_selection: None,
            }],
            encoding: self.encoding,
            fitness: self.fitness,
            labels: Vec::new(),
            run_id: None,
            cells: None,
        };
        CheckpointMeta {
            pareidolia_version: self.pareidolia_version,
            created_unix_s: self.created_unix_s,
            generation: self.generation,
            evaluations: self.evaluations,
            lost: self.lost,
            replacements: self.replacements,
            elapsed_s: self.elapsed_s,
            stage_times: self.stage_times,
            rng: self.rng,
            config: self.config,
            base_dir: self.base_dir,
            identity,
            champions: self.champions,
            cells: self.cells,
            stop_reached: None,
            ascent: None,
            planned: Vec::new(),
        }
    }
}

/// What can go wrong with checkpoints.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// Reading or writing failed (a full disk lands here, with its OS message).
    #[error("checkpoint {path}: {cause}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        cause: std::io::Error,
    },
    /// The file is not a checkpoint or was cut short.
    #[error("checkpoint {path} is damaged: {message}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Written by a newer Pareidolia.
    #[error(
        "checkpoint {path} has format version {found}, this pareidolia {ours} reads up to version {supported}: \
         run the newer pareidolia that wrote it"
    )]
    NewerVersion {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: u32,
        /// The newest this build reads.
        supported: u32,
        /// This build's version.
        ours: &'static str,
    },
    /// No checkpoint at all in a run folder (it holds `config.toml` or `checkpoints/`).
    #[error("no checkpoint in {0}: the run never reached its first checkpoint, start it again")]
    None(PathBuf),
    /// The folder is not a run folder: it does not exist, or holds neither `checkpoints/` nor
    /// `config.toml`.
    #[error(
        "{run_dir} is not a pareidolia run folder ({why}); give the --out folder of a `pareidolia daemon` or `pareidolia run`"
    )]
    NotARun {
        /// The folder.
        run_dir: PathBuf,
        /// What is missing.
        why: &'static str,
    },
    /// Checkpoints exist but none is usable.
    #[error("no usable checkpoint in {dir}: {reasons}")]
    NoneValid {
        /// The folder.
        dir: PathBuf,
        /// Why each was refused.
        reasons: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_owned(),
        cause: source,
    }
}

/// Serialises a checkpoint.
pub fn encode(meta: &CheckpointMeta, champions: &[Champion]) -> Vec<u8> {
    encode_with(meta, champions, &[])
}

/// Serialises a checkpoint whose metadata refers to `extra` blobs after the champions'.
pub fn encode_with(meta: &CheckpointMeta, champions: &[Champion], extra: &[Vec<u8>]) -> Vec<u8> {
    // The champions' probabilities go after every other blob, one per champion that has
    // them, and the metadata names each champion's.
    let mut meta = meta.clone();
    let mut next = (2 * champions.len() + extra.len()) as u32;
    let mut with_probabilities = Vec::new();
    for (c, m) in champions.iter().zip(meta.champions.iter_mut()) {
        m.probabilities_blob = None;
        if !c.probabilities.is_empty() {
            m.probabilities_blob = Some(next);
            next += 1;
            with_probabilities.push(&c.probabilities);
        }
    }
    let meta = &meta;
    let json = serde_json::to_vec(meta).expect("checkpoint metadata serialises");
    let mut out = Vec::with_capacity(
        64 + json.len()
            + champions
                .iter()
                .map(|c| c.genome.len() + 4 * c.scores.len() + 16)
                .sum::<usize>()
            + extra.iter().map(|b| b.len() + 8).sum::<usize>(),
    );
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    let check = header_check(&out);
    out.extend_from_slice(&check);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&next.to_le_bytes());
    for c in champions {
        out.extend_from_slice(&(c.genome.len() as u64).to_le_bytes());
        out.extend_from_slice(&c.genome);
        out.extend_from_slice(&((4 * c.scores.len()) as u64).to_le_bytes());
        for s in c.scores.iter() {
            out.extend_from_slice(&s.to_le_bytes());
        }
    }
    for b in extra {
        out.extend_from_slice(&(b.len() as u64).to_le_bytes());
        out.extend_from_slice(b);
    }
    for p in with_probabilities {
        out.extend_from_slice(&((4 * p.len()) as u64).to_le_bytes());
        for v in p.iter() {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    let digest = Sha256::digest(&out);
    out.extend_from_slice(&digest);
    out
}

/// Builds the metadata's champion table and cell map from the archive's cells; returns the
/// distinct champions in the order `encode` expects.
pub fn index_champions(
    cells: &[Option<Champion>],
) -> (Vec<ChampionMeta>, Vec<Option<u32>>, Vec<Champion>) {
    let mut distinct: Vec<Champion> = Vec::new();
    let mut map = Vec::with_capacity(cells.len());
    for cell in cells {
        map.push(
            cell.as_ref()
                .map(|c| match distinct.iter().position(|d| d.id == c.id) {
                    Some(i) => i as u32,
                    None => {
                        distinct.push(c.clone());
                        (distinct.len() - 1) as u32
                    }
                }),
        );
    }
    let metas = distinct
        .iter()
        .enumerate()
        .map(|(i, c)| ChampionMeta {
            id: c.id,
            generation: c.generation,
            genome_blob: 2 * i as u32,
            scores_blob: 2 * i as u32 + 1,
            probabilities_blob: None,
        })
        .collect();
    (metas, map, distinct)
}

fn header_check(magic_and_version: &[u8]) -> [u8; 4] {
    let d = Sha256::digest(magic_and_version);
    [d[0], d[1], d[2], d[3]]
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], CheckpointError> {
        if self.bytes.len() - self.pos < n {
            return Err(CheckpointError::Damaged {
                path: self.path.to_owned(),
                message: format!("truncated in {what}"),
            });
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u32(&mut self, what: &str) -> Result<u32, CheckpointError> {
        Ok(u32::from_le_bytes(
            self.take(4, what)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self, what: &str) -> Result<u64, CheckpointError> {
        Ok(u64::from_le_bytes(
            self.take(8, what)?.try_into().expect("8 bytes"),
        ))
    }
}

/// Parses and verifies a checkpoint.
pub fn decode(bytes: &[u8], path: &Path) -> Result<Checkpoint, CheckpointError> {
    let damaged = |message: String| CheckpointError::Damaged {
        path: path.to_owned(),
        message,
    };
    if bytes.len() < 16 || &bytes[..8] != MAGIC {
        return Err(damaged(
            "not a Pareidolia checkpoint (wrong magic bytes) or cut short".into(),
        ));
    }
    if bytes[12..16] != header_check(&bytes[..12]) {
        return Err(damaged("damaged header".into()));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version > FORMAT_VERSION {
        return Err(CheckpointError::NewerVersion {
            path: path.to_owned(),
            found: version,
            supported: FORMAT_VERSION,
            ours: env!("CARGO_PKG_VERSION"),
        });
    }
    if bytes.len() < 16 + 32 {
        return Err(damaged("truncated".into()));
    }
    let (body, digest) = bytes.split_at(bytes.len() - 32);
    if Sha256::digest(body).as_slice() != digest {
        return Err(damaged("checksum mismatch (truncated or corrupted)".into()));
    }
    let mut r = Reader {
        bytes: body,
        pos: 16,
        path,
    };
    let meta_len = r.u64("metadata length")? as usize;
    let json = r.take(meta_len, "metadata")?;
    let meta: CheckpointMeta = if version == 1 {
        serde_json::from_slice::<MetaV1>(json).map(MetaV1::upgrade)
    } else {
        serde_json::from_slice(json)
    }
    .map_err(|e| damaged(format!("metadata: {e}")))?;
    let count = r.u32("blob count")? as usize;
    let mut blobs = Vec::with_capacity(count.min(1 << 20));
    for i in 0..count {
        let len = r.u64("blob length")? as usize;
        blobs.push(r.take(len, &format!("blob {i}"))?);
    }
    let blob = |i: u32| {
        blobs
            .get(i as usize)
            .copied()
            .ok_or_else(|| damaged(format!("missing blob {i}")))
    };
    let champions = meta
        .champions
        .iter()
        .map(|c| {
            let floats = |index: u32, what: &str| {
                let bytes = blob(index)?;
                if bytes.len() % 4 != 0 {
                    return Err(damaged(format!(
                        "{what} blob {index} has {} bytes",
                        bytes.len()
                    )));
                }
                Ok(bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
                    .collect::<Arc<[f32]>>())
            };
            Ok(Champion {
                id: c.id,
                generation: c.generation,
                genome: Arc::from(blob(c.genome_blob)?),
                scores: floats(c.scores_blob, "score")?,
                probabilities: match c.probabilities_blob {
                    Some(i) => floats(i, "probability")?,
                    None => Arc::from(&[][..]),
                },
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let cells = meta
        .cells
        .iter()
        .map(|c| match c {
            None => Ok(None),
            Some(i) => champions
                .get(*i as usize)
                .cloned()
                .map(Some)
                .ok_or_else(|| damaged(format!("cell refers to champion {i}"))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    check_consistent(&meta, &champions).map_err(|m| {
        damaged(format!(
            "it passes its checksum but is inconsistent: {m}; it was not written by pareidolia as it is"
        ))
    })?;
    // A run whose cells are some of the classes never puts a champion in the others.
    if let Some(listed) = &meta.identity.cells {
        if let Some(c) = listed.iter().find(|&&c| c >= cells.len()) {
            return Err(damaged(format!(
                "its cells name class {c}, but the archive has {} classes",
                cells.len()
            )));
        }
        if let Some(c) = (0..cells.len()).find(|&c| !meta.identity.is_cell(c) && cells[c].is_some())
        {
            return Err(damaged(format!(
                "class {c} is not one of the run's cells {listed:?} but holds a champion"
            )));
        }
    }
    let ascent = match &meta.ascent {
        None => None,
        Some(a) => {
            let floats = |i: u32, what: &str| -> Result<Vec<f32>, CheckpointError> {
                let b = blob(i)?;
                if b.len() % 4 != 0 {
                    return Err(damaged(format!("{what} blob {i} has {} bytes", b.len())));
                }
                Ok(b.chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
                    .collect())
            };
            let tracks = a
                .tracks
                .iter()
                .map(|t| {
                    Ok(Track {
                        class: t.class,
                        x: floats(t.x_blob, "image")?,
                        objective: t.objective_bits.map_or(f64::NAN, f64::from_bits),
                        best: t.best.map(|(b, s)| (f64::from_bits(b), s)),
                        best_pixels: floats(t.best_pixels_blob, "best image")?,
                        best_probabilities: floats(t.best_probabilities_blob, "probabilities")?,
                        first_reaching: t.first_reaching,
                        last_grad_norm2: f64::from_bits(t.last_bits.0),
                        last_lr: f64::from_bits(t.last_bits.1),
                    })
                })
                .collect::<Result<Vec<_>, CheckpointError>>()?;
            Some(AscentState {
                step: a.step,
                tracks,
            })
        }
    };
    // Planned parents share the champions' genomes where they are one (as they did when the
    // checkpoint was written), so a later checkpoint records them as references again.
    let mut genomes: std::collections::HashMap<u32, Arc<[u8]>> = meta
        .champions
        .iter()
        .zip(&champions)
        .map(|(m, c)| (m.genome_blob, c.genome.clone()))
        .collect();
    let mut genome = |i: u32| -> Result<Arc<[u8]>, CheckpointError> {
        if let Some(g) = genomes.get(&i) {
            return Ok(g.clone());
        }
        let g: Arc<[u8]> = Arc::from(blob(i)?);
        genomes.insert(i, g.clone());
        Ok(g)
    };
    let planned = meta
        .planned
        .iter()
        .map(|p| {
            Ok(PlannedGeneration {
                generation: p.generation,
                size: p.size,
                parents: p
                    .parents
                    .iter()
                    .map(|pair| match pair {
                        None => Ok(None),
                        Some((a, b)) => Ok(Some((genome(*a)?, genome(*b)?))),
                    })
                    .collect::<Result<Vec<_>, CheckpointError>>()?,
                parent_classes: p.parent_classes.clone(),
            })
        })
        .collect::<Result<Vec<_>, CheckpointError>>()?;
    Ok(Checkpoint {
        meta,
        cells,
        ascent,
        planned,
    })
}

/// Every decoded field against the others, before anything uses them (issue 18, item 8): a
/// checkpoint whose checksum holds can still be inconsistent (edited, or written by a buggy
/// tool), and the archive, the gallery and a resume index scores by class. The run's models
/// must all score as many classes as the archive has cells; every champion must have one
/// finite score per class and come from a generation the run reached; the counters must fit
/// the config's population sizes; the labels, if recorded, must name every class.
fn check_consistent(meta: &CheckpointMeta, champions: &[Champion]) -> Result<(), String> {
    let classes = meta.cells.len();
    if classes == 0 {
        return Err("its archive has no cells".into());
    }
    let id = &meta.identity;
    if id.models.is_empty() {
        return Err("its identity names no model".into());
    }
    if let Some(m) = id.models.iter().find(|m| m.classes != classes) {
        return Err(format!(
            "model `{}` scores {} classes, but the archive has {classes} cells",
            m.name, m.classes
        ));
    }
    if !id.labels.is_empty() && id.labels.len() != classes {
        return Err(format!(
            "it records {} labels for {classes} classes",
            id.labels.len()
        ));
    }
    for c in champions {
        if c.scores.len() != classes {
            return Err(format!(
                "champion {:x} has {} scores for {classes} classes",
                c.id,
                c.scores.len()
            ));
        }
        if !c.probabilities.is_empty() && c.probabilities.len() != classes {
            return Err(format!(
                "champion {:x} has {} probabilities for {classes} classes",
                c.id,
                c.probabilities.len()
            ));
        }
        if let Some(class) = c.scores.iter().position(|s| !s.is_finite()) {
            return Err(format!(
                "champion {:x} scores {} in class {class}",
                c.id, c.scores[class]
            ));
        }
        if c.generation > meta.generation {
            return Err(format!(
                "champion {:x} is of generation {}, after the checkpoint's generation {}",
                c.id, c.generation, meta.generation
            ));
        }
    }
    let times = [meta.elapsed_s, meta.created_unix_s];
    if times.iter().any(|t| !t.is_finite() || *t < 0.0) {
        return Err(format!(
            "its times are not times (elapsed {} s, written at {} s)",
            meta.elapsed_s, meta.created_unix_s
        ));
    }
    if meta.ascent.is_some() && !meta.planned.is_empty() {
        return Err("a gradient-ascent run has no planned generations, but it records some".into());
    }
    let config = &meta.config;
    if meta.planned.len() > config.lag as usize + 1 {
        return Err(format!(
            "it records {} planned generations, but a run with lag {} plans at most {}",
            meta.planned.len(),
            config.lag,
            config.lag + 1
        ));
    }
    for (k, p) in meta.planned.iter().enumerate() {
        let expected = meta.generation.checked_add(1 + k as u64);
        if Some(p.generation) != expected {
            return Err(format!(
                "planned generation {} follows generation {} as planned generation {k}; they must be the generations after it, in order",
                p.generation, meta.generation
            ));
        }
        if p.size != config.offspring_per_generation
            || p.parents.len() != p.size.div_ceil(2) as usize
        {
            return Err(format!(
                "planned generation {} has {} children in {} pairs, but the run breeds {} children a generation",
                p.generation,
                p.size,
                p.parents.len(),
                config.offspring_per_generation
            ));
        }
        if !p.parent_classes.is_empty() && p.parent_classes.len() != p.parents.len() {
            return Err(format!(
                "planned generation {} records parent classes for {} pairs, but it has {} pairs",
                p.generation,
                p.parent_classes.len(),
                p.parents.len()
            ));
        }
    }
    if let Some(a) = &meta.ascent {
        // Gradient ascent evaluates every image once a step.
        let images = a.tracks.len() as u64;
        if a.step != meta.generation
            || meta.lost != 0
            || images.checked_mul(a.step) != Some(meta.evaluations)
        {
            return Err(format!(
                "gradient ascent at step {} (generation {}) with {images} images cannot have {} evaluations and {} lost",
                a.step, meta.generation, meta.evaluations, meta.lost
            ));
        }
        if let Some(t) = a.tracks.iter().find(|t| t.class >= classes) {
            return Err(format!(
                "a gradient-ascent image pushes class {}, but the archive has {classes} cells",
                t.class
            ));
        }
        return Ok(());
    }
    if config.offspring_per_generation == 0 || config.initial_population() == 0 {
        return Err("its config has an empty population".into());
    }
    // Every child of every generation is scored or lost, so the counters bound the
    // generation (2^63 with a thousand evaluations is not a run) and the reverse.
    let children = meta.evaluations.checked_add(meta.lost);
    let most = meta
        .generation
        .checked_mul(u64::from(config.offspring_per_generation))
        .and_then(|n| n.checked_add(u64::from(config.initial_population())));
    match (children, most) {
        (Some(children), Some(most)) if meta.generation <= children && children <= most => {}
        _ => {
            return Err(format!(
                "generation {} with {} children scored and {} lost does not fit {} children per generation \
                 and {} initial ones",
                meta.generation,
                meta.evaluations,
                meta.lost,
                config.offspring_per_generation,
                config.initial_population()
            ));
        }
    }
    Ok(())
}

/// What [`CheckpointStore::load_newest`] found: the checkpoint, its file, and the newer
/// files it skipped as damaged (with the reasons, for a warning).
pub type Loaded = (Checkpoint, PathBuf, Vec<(PathBuf, CheckpointError)>);

/// The checkpoints of one run folder (`<run>/checkpoints/`).
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    dir: PathBuf,
    keep: usize,
}

impl CheckpointStore {
    /// The store of a run folder, keeping the newest `keep` checkpoints (at least 1).
    pub fn new(run_dir: &Path, keep: usize) -> Self {
        Self {
            dir: run_dir.join("checkpoints"),
            keep: keep.max(1),
        }
    }

    /// The checkpoint folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn file_name(generation: u64) -> String {
        format!("ckpt-{generation:012}.{EXTENSION}")
    }

    /// Writes a checkpoint atomically and prunes old ones; on error the previous checkpoints
    /// are untouched and no partial file is left behind.
    pub fn write(&self, generation: u64, bytes: &[u8]) -> Result<PathBuf, CheckpointError> {
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let path = self.dir.join(Self::file_name(generation));
        let tmp = self.dir.join(format!(
            ".{}.tmp-{}",
            Self::file_name(generation),
            std::process::id()
        ));
        let result = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)
                .map_err(io(&tmp))?;
            let half = bytes.len() / 2;
            f.write_all(&bytes[..half]).map_err(io(&tmp))?;
            crate::faults::checkpoint_halfway();
            crate::faults::checkpoint_write(generation).map_err(io(&tmp))?;
            f.write_all(&bytes[half..]).map_err(io(&tmp))?;
            f.sync_all().map_err(io(&tmp))?;
            drop(f);
            std::fs::rename(&tmp, &path).map_err(io(&path))?;
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(io(&self.dir))
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        self.prune(&path);
        Ok(path)
    }

    /// Rotation after `written` was written: keeps `written` and the newest valid checkpoints
    /// up to `keep` in all, and removes older ones. Only checkpoints that verify take a slot: a
    /// damaged file (a stray `ckpt-999999999999`, a truncated copy) is never counted, never
    /// deleted and never makes rotation delete `written`; it is moved aside to
    /// [`DAMAGED_DIR`] with a warning, for a person to inspect. Files beyond the `keep` valid
    /// ones are older than all of those and are removed unread.
    fn prune(&self, written: &Path) {
        let mut valid = 1; // `written`
        for old in self.list() {
            if old == written {
                continue;
            }
            // Newer than the checkpoint just written, or among the newest: they are read,
            // since they would take a slot (or be what a resume picks).
            let newer = old.file_name() > written.file_name();
            if newer || valid < self.keep {
                match Self::read_checked(&old).map(|_| ()) {
                    Ok(()) if newer => {
                        // Verifies but is not of this run's line (a resume would have started
                        // from it): left in place, not counted.
                        tracing::warn!(path = %old.display(), written = %written.display(),
                            "a valid checkpoint newer than the one just written is left in place");
                    }
                    Ok(()) => valid += 1,
                    Err(CheckpointError::NewerVersion { .. }) => {
                        tracing::warn!(path = %old.display(),
                            "a checkpoint of a newer format is left in place");
                    }
                    Err(e) => self.move_aside(&old, &e),
                }
                continue;
            }
            if let Err(e) = std::fs::remove_file(&old) {
                tracing::warn!(path = %old.display(), error = %e, "cannot remove old checkpoint");
            }
        }
        // Temporary files of writers that died (a kill during a write).
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                if name.starts_with(".ckpt-")
                    && !name.ends_with(&format!("-{}", std::process::id()))
                {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }

    /// Moves a damaged checkpoint to `checkpoints/damaged/` (a free name there), warning
    /// where it went and why; if it cannot be moved it stays where it is.
    fn move_aside(&self, path: &Path, why: &CheckpointError) {
        let aside = self.dir.join(DAMAGED_DIR);
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let target = (0..)
            .map(|n| match n {
                0 => aside.join(&*name),
                n => aside.join(format!("{name}.{n}")),
            })
            .find(|t| !t.exists())
            .expect("a free name");
        match std::fs::create_dir_all(&aside).and_then(|()| std::fs::rename(path, &target)) {
            Ok(()) => {
                tracing::warn!(path = %path.display(), moved_to = %target.display(), reason = %why,
                "a damaged checkpoint does not count for rotation: moved aside for inspection")
            }
            Err(e) => tracing::warn!(path = %path.display(), reason = %why, error = %e,
                "a damaged checkpoint does not count for rotation; it cannot be moved aside and stays"),
        }
    }

    /// Checkpoint files, newest (highest generation) first.
    pub fn list(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        p.extension().is_some_and(|e| e == EXTENSION)
                            && p.file_name()
                                .is_some_and(|n| n.to_string_lossy().starts_with("ckpt-"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files.reverse();
        files
    }

    /// Whether there is any checkpoint file to load (valid or not), without reading one; if
    /// not, says whether the folder is a run that never reached its first checkpoint or not a
    /// run folder at all.
    pub fn check_any(&self) -> Result<(), CheckpointError> {
        if !self.list().is_empty() {
            return Ok(());
        }
        let run_dir = self.dir.parent().unwrap_or(Path::new(".")).to_owned();
        if !run_dir.is_dir() {
            return Err(CheckpointError::NotARun {
                run_dir,
                why: "there is no such folder",
            });
        }
        if !self.dir.is_dir() && !run_dir.join("config.toml").is_file() {
            return Err(CheckpointError::NotARun {
                run_dir,
                why: "it holds neither checkpoints/ nor config.toml",
            });
        }
        Err(CheckpointError::None(self.dir.clone()))
    }

    /// Reads and verifies one of the store's files. Its name must be the one the store gives
    /// its generation ([`CheckpointStore::write`]): the newest checkpoint is chosen, and old
    /// ones rotated, by name, so a copy renamed `ckpt-999999999999` that holds generation 5
    /// would otherwise be taken for the newest (and make rotation remove the real one). Such
    /// a file counts as damaged: skipped, and moved aside by rotation.
    fn read_checked(path: &Path) -> Result<Checkpoint, CheckpointError> {
        let checkpoint = std::fs::read(path)
            .map_err(io(path))
            .and_then(|b| decode(&b, path))?;
        let named = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let expected = Self::file_name(checkpoint.meta.generation);
        if named.as_deref() != Some(expected.as_str()) {
            return Err(CheckpointError::Damaged {
                path: path.to_owned(),
                message: format!(
                    "it holds generation {} but is named {}, not {expected}: a renamed or copied file, not one this run wrote",
                    checkpoint.meta.generation,
                    named.unwrap_or_default()
                ),
            });
        }
        Ok(checkpoint)
    }

    /// Loads the newest checkpoint that verifies. Damaged ones (and ones whose name is not
    /// their generation's) are skipped and returned with their reasons (for a warning); a
    /// checkpoint of a newer format stops the search, since falling back past it would
    /// silently lose that newer progress.
    pub fn load_newest(&self) -> Result<Loaded, CheckpointError> {
        self.check_any()?;
        let files = self.list();
        let mut skipped = Vec::new();
        for path in files {
            let loaded = Self::read_checked(&path);
            match loaded {
                Ok(c) => return Ok((c, path, skipped)),
                Err(e @ CheckpointError::NewerVersion { .. }) => return Err(e),
                Err(e) => skipped.push((path, e)),
            }
        }
        Err(CheckpointError::NoneValid {
            dir: self.dir.clone(),
            reasons: skipped
                .iter()
                .map(|(_, e)| e.to_string())
                .collect::<Vec<_>>()
                .join("; "),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn sample() -> (CheckpointMeta, Vec<Option<Champion>>) {
        let a = Champion {
            id: 7,
            generation: 3,
            genome: Arc::from(&[1u8, 2, 3][..]),
            scores: Arc::from(&[0.5f32, 0.25][..]),
            // A champion with the models' probabilities beside its scores, and one without (a
            // champion restored from an older checkpoint).
            probabilities: Arc::from(&[0.625f32, 0.375][..]),
        };
        let b = Champion {
            id: 9,
            generation: 4,
            genome: Arc::from(&[4u8][..]),
            scores: Arc::from(&[0.1f32, 0.75][..]),
            probabilities: Arc::from(&[][..]),
        };
        let cells = vec![Some(a), Some(b)];
        let (champions, map, _) = index_champions(&cells);
        let meta = CheckpointMeta {
            pareidolia_version: "test".into(),
            created_unix_s: 1.0,
            generation: 4,
            evaluations: 999,
            lost: 1,
            replacements: 12,
            elapsed_s: 2.5,
            stage_times: StageTimes::default(),
            rng: HostRng::seed_from_u64(3),
            config: RunConfig {
                base_dir: PathBuf::new(),
                ..RunConfig::builtin_default()
            },
            base_dir: PathBuf::from("/x"),
            identity: crate::identity::tests::sample(),
            champions,
            cells: map,
            stop_reached: None,
            ascent: None,
            planned: Vec::new(),
        };
        (meta, cells)
    }

    /// `meta` as of generation `g`: a full population per generation, no champion younger.
    fn at_generation(meta: &mut CheckpointMeta, g: u64) {
        meta.generation = g;
        meta.evaluations = 200 * (g + 1) - meta.lost;
        for c in &mut meta.champions {
            c.generation = c.generation.min(g);
        }
    }

    #[test]
    fn a_gradient_ascent_checkpoint_brings_back_every_image_and_record_exactly() {
        use crate::ascent::{Ascent, Recipe, Shape};
        let shape = Shape {
            width: 3,
            height: 2,
            channels: 1,
        };
        let mut a = Ascent::new(Recipe::default(), shape, vec![0.5; 6], &[1, 0], 9);
        a.step = 17;
        a.tracks[0].objective = 0.123_456_789_012_345_67;
        a.tracks[0].best = Some((0.987_654_321_987_654_3, 12));
        a.tracks[0].best_pixels = vec![1.0 / 3.0; 6];
        a.tracks[0].best_probabilities = vec![0.1, 0.9];
        a.tracks[0].first_reaching = [Some(3), Some(9), None, None];
        a.tracks[0].last_grad_norm2 = 1e-17;
        a.tracks[0].last_lr = 3e9;
        let state = AscentState {
            step: a.step,
            tracks: a.tracks.clone(),
        };
        let (meta, cells) = sample();
        let archive = Archive::restore(cells.clone(), 3);
        // Two images, 17 steps: 34 evaluations.
        let counters = RunCounters {
            generation: 17,
            evaluations: 34,
            ..Default::default()
        };
        let bytes = Checkpoint::capture_ascent(
            &archive,
            &state,
            counters,
            &meta.config,
            &meta.identity,
            None,
            5.0,
        );
        let back = decode(&bytes, Path::new("x")).unwrap();
        assert_eq!(back.cells, cells);
        let got = back.ascent.unwrap();
        assert_eq!(got.step, 17);
        // NaN != NaN: the unevaluated track is compared field by field.
        assert_eq!(got.tracks[0], state.tracks[0]);
        assert!(got.tracks[1].objective.is_nan());
        assert_eq!(got.tracks[1].x, state.tracks[1].x);
        assert_eq!(got.tracks[1].class, 0);
        // A checkpoint without ascent state stays one.
        let plain = encode(&meta, &index_champions(&cells).2);
        assert!(decode(&plain, Path::new("y")).unwrap().ascent.is_none());
    }

    #[test]
    fn a_champion_in_a_skipped_class_is_damage() {
        let (mut meta, mut cells) = sample();
        // Class 0 skipped: only class 1 may hold a champion.
        meta.identity.cells = Some(vec![1]);
        let (_, _, distinct) = index_champions(&cells);
        let e = decode(&encode(&meta, &distinct), Path::new("x")).unwrap_err();
        assert!(
            e.to_string()
                .contains("class 0 is not one of the run's cells [1] but holds a champion"),
            "{e}"
        );
        cells[0] = None;
        let (champions, map, distinct) = index_champions(&cells);
        (meta.champions, meta.cells) = (champions, map);
        let back = decode(&encode(&meta, &distinct), Path::new("x")).unwrap();
        let archive = back.archive();
        assert_eq!(
            (archive.cell_classes(), archive.stats().cells),
            (vec![1], 1)
        );
        meta.identity.cells = Some(vec![1, 2]);
        let e = decode(&encode(&meta, &distinct), Path::new("x")).unwrap_err();
        assert!(
            e.to_string()
                .contains("its cells name class 2, but the archive has 2 classes"),
            "{e}"
        );
    }

    #[test]
    fn round_trips_and_detects_every_truncation_and_flip() {
        let (meta, cells) = sample();
        let (_, _, distinct) = index_champions(&cells);
        let bytes = encode(&meta, &distinct);
        let back = decode(&bytes, Path::new("x")).unwrap();
        // The encoder names the blob of the one champion with probabilities (after the
        // genomes and scores).
        let mut expected = meta.clone();
        expected.champions[0].probabilities_blob = Some(4);
        assert_eq!(back.meta, expected);
        assert_eq!(back.cells, cells);
        for cut in [0, 5, 11, 12, 40, bytes.len() - 1] {
            assert!(
                matches!(
                    decode(&bytes[..cut], Path::new("x")),
                    Err(CheckpointError::Damaged { .. })
                ),
                "cut {cut}"
            );
        }
        for flip in [20, bytes.len() / 2, bytes.len() - 40] {
            let mut b = bytes.clone();
            b[flip] ^= 0x40;
            assert!(
                matches!(
                    decode(&b, Path::new("x")),
                    Err(CheckpointError::Damaged { .. })
                ),
                "flip {flip}"
            );
        }
        let mut newer = bytes.clone();
        newer[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        let check = header_check(&newer[..12]);
        newer[12..16].copy_from_slice(&check);
        assert!(matches!(
            decode(&newer, Path::new("x")),
            Err(CheckpointError::NewerVersion { .. })
        ));
        // A damaged version field is damage, not a newer format.
        let mut flipped = bytes.clone();
        flipped[9] ^= 0x01;
        assert!(matches!(
            decode(&flipped, Path::new("x")),
            Err(CheckpointError::Damaged { .. })
        ));
    }

    /// Found by `fuzz/` (checkpoint_decode): checkpoints whose checksum is right but whose
    /// fields the host indexes by disagree used to decode, and then panicked in the archive
    /// (`archive.rs` index out of bounds: scores shorter than the cells) or at
    /// `RunIdentity::primary` (no model). They are damaged, with a reason.
    #[test]
    fn inconsistent_fields_are_damage_not_a_panic() {
        let damaged = |meta: &CheckpointMeta, champions: &[Champion]| match decode(
            &encode(meta, champions),
            Path::new("x"),
        ) {
            Err(CheckpointError::Damaged { message, .. }) => message,
            other => panic!("{other:?}"),
        };
        let (meta, cells) = sample();
        let (_, _, distinct) = index_champions(&cells);
        // One score short in the second champion, and one too many.
        for scores in [&[0.5f32][..], &[0.1, 0.2, 0.3][..]] {
            let mut short = distinct.clone();
            short[1].scores = Arc::from(scores);
            let message = damaged(&meta, &short);
            assert!(
                message.contains(&format!(
                    "champion 9 has {} scores for 2 classes",
                    scores.len()
                )),
                "{message}"
            );
        }
        // Or more cells than the models have classes (and the champions scores) for; an
        // empty cell is a class too.
        for extra in [Some(0), None] {
            let mut more = meta.clone();
            more.cells.push(extra);
            let message = damaged(&more, &distinct);
            assert!(message.contains("the archive has 3 cells"), "{message}");
        }
        let mut none = meta.clone();
        none.identity.models.clear();
        let message = damaged(&none, &distinct);
        assert!(message.contains("names no model"), "{message}");
    }

    /// Found by the `checkpoint_decode` fuzz target: a checkpoint whose creation time was
    /// 1796161436.7278866 read back as 1796161436.7278867 (serde_json's default float parser
    /// is not correctly rounded), so the next checkpoint written from it differed. Every
    /// float in the metadata reads back bit for bit.
    #[test]
    fn metadata_floats_read_back_bit_for_bit() {
        let (mut meta, cells) = sample();
        let (_, _, distinct) = index_champions(&cells);
        for t in [
            1796161436.7278866,
            0.1 + 0.2,
            2.2250738585072014e-308,
            1e300,
        ] {
            meta.created_unix_s = t;
            meta.elapsed_s = t;
            let back = decode(&encode(&meta, &distinct), Path::new("x")).unwrap();
            assert_eq!(back.meta.created_unix_s.to_bits(), t.to_bits(), "{t}");
            assert_eq!(back.meta.elapsed_s.to_bits(), t.to_bits(), "{t}");
        }
    }

    /// A checkpoint written by Pareidolia 0.1.0 in format 1 (the default MNIST run, seed 1,
    /// after generation 3), committed as a fixture.
    fn v1_fixture() -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/checkpoint-v1/ckpt-000000000003.pdck");
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn a_format_1_checkpoint_reads_into_an_identity() {
        let bytes = v1_fixture();
        assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), 1);
        let c = decode(&bytes, Path::new("v1")).unwrap();
        let m = &c.meta;
        assert_eq!((m.generation, m.evaluations, m.lost), (3, 800, 0));
        let id = &m.identity;
        assert_eq!(id.models.len(), 1);
        let model = &id.models[0];
        assert_eq!(model.name, "lenet-mnist");
        assert_eq!(
            model.sha256,
            "6c4458e8e4ea1d79edf9e016f98320123c2332e732f9918840f837293fcfad13"
        );
        assert_eq!(model.classes, 10);
        assert_eq!(model.requested_backend, crate::BackendChoice::Tract);
        assert_eq!((model.output, model.backend.as_deref()), (None, None));
        assert_eq!(
            (id.encoding.name.as_str(), id.fitness.name.as_str()),
            ("direct", "confidence")
        );
        assert!(id.labels.is_empty());
        assert_eq!(c.cells.len(), 10);
        assert!(c.cells.iter().all(Option::is_some));
        // Written again, it is a format-2 checkpoint with the same content.
        let again = Checkpoint::capture(
            &c.archive(),
            c.counters(),
            &m.rng,
            &c.config(),
            id,
            None,
            &[],
            m.created_unix_s,
        );
        assert_eq!(
            u32::from_le_bytes(again[8..12].try_into().unwrap()),
            FORMAT_VERSION
        );
        let back = decode(&again, Path::new("v2")).unwrap();
        assert_eq!(back.meta, c.meta);
        assert_eq!(back.cells, c.cells);
    }

    #[test]
    fn planned_generations_come_back_sharing_the_champions_genomes() {
        let (mut meta, cells) = sample();
        meta.config.lag = 1;
        let archive = Archive::restore(cells.clone(), 12);
        let counters = meta.counters();
        let champion = |i: usize| cells[i].as_ref().unwrap().genome.clone();
        // A parent replaced in the archive since it was drawn.
        let stale: Arc<[u8]> = Arc::from(&[9u8, 9][..]);
        let generation = |number| PlannedGeneration {
            generation: number,
            size: 200,
            parents: (0..100)
                .map(|k| match k {
                    0 => Some((champion(0), champion(1))),
                    1 => Some((stale.clone(), champion(0))),
                    99 => None,
                    _ => Some((stale.clone(), stale.clone())),
                })
                .collect(),
            parent_classes: Vec::new(),
        };
        // A run that steers children toward their parents' classes records those classes.
        let steered = |number| PlannedGeneration {
            parent_classes: (0..100u32)
                .map(|k| (k != 99).then_some((k % 10, 3)))
                .collect(),
            ..generation(number)
        };
        let planned = [generation(5), steered(6)];
        let capture = |planned: &[PlannedGeneration]| {
            Checkpoint::capture(
                &archive,
                counters,
                &meta.rng,
                &meta.config,
                &meta.identity,
                None,
                planned,
                1.0,
            )
        };
        let bytes = capture(&planned);
        let c = decode(&bytes, Path::new("x")).unwrap();
        assert_eq!(c.planned, planned);
        // Two champions (genome and scores), the stale genome once, and the one champion's
        // probabilities last.
        let json_len = u64::from_le_bytes(bytes[16..24].try_into().unwrap()) as usize;
        let blobs = u32::from_le_bytes(bytes[24 + json_len..28 + json_len].try_into().unwrap());
        assert_eq!(blobs, 6);
        assert_eq!(c.meta.champions[0].probabilities_blob, Some(5));
        assert_eq!(c.meta.champions[1].probabilities_blob, None);
        assert_eq!(
            &*c.cells[0].as_ref().unwrap().probabilities,
            &[0.625, 0.375]
        );
        assert!(c.cells[1].as_ref().unwrap().probabilities.is_empty());
        assert_eq!(c.meta.planned[1].parents[1], Some((4, 0)));
        assert_eq!(c.meta.planned[1].parents[99], None);
        let first = c.planned[0].parents[0].as_ref().unwrap();
        assert!(Arc::ptr_eq(&first.0, &c.cells[0].as_ref().unwrap().genome));
        // Planned generations must follow the checkpoint's, in order, no more than lag + 1.
        for (bad, needle) in [
            (
                vec![generation(6)],
                "planned generation 6 follows generation 4",
            ),
            (
                vec![generation(5), generation(6), generation(7)],
                "3 planned generations, but a run with lag 1 plans at most 2",
            ),
            (
                vec![PlannedGeneration {
                    size: 7,
                    ..generation(5)
                }],
                "planned generation 5 has 7 children in 100 pairs",
            ),
            (
                vec![PlannedGeneration {
                    parent_classes: vec![None; 3],
                    ..generation(5)
                }],
                "planned generation 5 records parent classes for 3 pairs, but it has 100 pairs",
            ),
        ] {
            let e = decode(&capture(&bad), Path::new("x"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{needle}: {e}");
        }
    }

    #[test]
    fn capture_records_the_archive_and_counters_it_is_given() {
        let (meta, cells) = sample();
        let archive = Archive::restore(cells.clone(), 12);
        let counters = meta.counters();
        let bytes = Checkpoint::capture(
            &archive,
            counters,
            &meta.rng,
            &meta.config,
            &meta.identity,
            None,
            &[],
            1.0,
        );
        let c = decode(&bytes, Path::new("x")).unwrap();
        assert_eq!(c.counters(), counters);
        assert_eq!(c.cells, cells);
        assert_eq!(c.meta.replacements, 12);
        assert_eq!(c.meta.identity, meta.identity);
        assert_eq!(c.archive().cells(), archive.cells());
    }

    #[test]
    fn store_keeps_the_newest_and_falls_back_past_damaged_files() {
        let dir = std::env::temp_dir().join(format!("pareidolia-ckpt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = CheckpointStore::new(&dir, 2);
        let (mut meta, cells) = sample();
        let (_, _, distinct) = index_champions(&cells);
        for g in 1..=4 {
            at_generation(&mut meta, g);
            store.write(g, &encode(&meta, &distinct)).unwrap();
        }
        let files = store.list();
        assert_eq!(files.len(), 2, "{files:?}");
        assert!(files[0].ends_with("ckpt-000000000004.pdck"));
        std::fs::write(&files[0], b"PAREIDCK garbage").unwrap();
        let (c, path, skipped) = store.load_newest().unwrap();
        assert_eq!(c.meta.generation, 3);
        assert_eq!(path, files[1]);
        assert_eq!(skipped.len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Issue 18, item 4: a stray damaged checkpoint with a higher number used to keep a slot,
    /// so with `keep = 1` each new checkpoint was deleted right after it was written.
    #[test]
    fn rotation_counts_only_valid_checkpoints_and_moves_damaged_ones_aside() {
        let dir = std::env::temp_dir().join(format!("pareidolia-prune-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = CheckpointStore::new(&dir, 1);
        let (mut meta, cells) = sample();
        let (_, _, distinct) = index_champions(&cells);
        std::fs::create_dir_all(store.dir()).unwrap();
        let stray = store.dir().join("ckpt-999999999999.pdck");
        std::fs::write(&stray, b"PAREIDCK not really").unwrap();
        for g in 1..=3 {
            at_generation(&mut meta, g);
            let path = store.write(g, &encode(&meta, &distinct)).unwrap();
            assert!(path.is_file(), "the checkpoint just written is kept");
            let (c, newest, _) = store.load_newest().unwrap();
            assert_eq!((c.meta.generation, newest), (g, path));
        }
        assert_eq!(store.list().len(), 1, "{:?}", store.list());
        let aside = store.dir().join(DAMAGED_DIR).join("ckpt-999999999999.pdck");
        assert_eq!(std::fs::read(&aside).unwrap(), b"PAREIDCK not really");

        // keep = 2: a damaged older checkpoint does not take the second slot either.
        let store = CheckpointStore::new(&dir, 2);
        at_generation(&mut meta, 4);
        store.write(4, &encode(&meta, &distinct)).unwrap();
        let four = store.list()[0].clone();
        std::fs::write(&four, b"PAREIDCK cut").unwrap();
        at_generation(&mut meta, 5);
        store.write(5, &encode(&meta, &distinct)).unwrap();
        let names: Vec<_> = store
            .list()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["ckpt-000000000005.pdck", "ckpt-000000000003.pdck"]);
        assert!(
            store
                .dir()
                .join(DAMAGED_DIR)
                .join("ckpt-000000000004.pdck")
                .is_file()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Issue 18, item 8: checkpoints that pass the checksum but are inconsistent used to panic
    /// (`archive.rs` index out of bounds when classes and score lengths disagree) or be
    /// accepted (9 classes for a 10-class model, NaN scores, generation 2^63). Each is refused
    /// as damaged, saying what is inconsistent, and nothing panics using what decodes.
    #[test]
    fn inconsistent_checkpoints_are_refused_with_what_is_wrong() {
        let (meta, cells) = sample();
        let encoded = |meta: &CheckpointMeta, cells: &[Option<Champion>]| {
            let (_, _, distinct) = index_champions(cells);
            encode(meta, &distinct)
        };
        assert!(decode(&encoded(&meta, &cells), Path::new("x")).is_ok());
        fn champion(scores: &[f32], generation: u64) -> Champion {
            Champion {
                id: 11,
                generation,
                genome: Arc::from(&[5u8][..]),
                scores: Arc::from(scores),
                probabilities: Arc::from(&[][..]),
            }
        }
        type Case = (
            &'static str,
            Box<dyn Fn(&mut CheckpointMeta, &mut Vec<Option<Champion>>)>,
        );
        let cases: Vec<Case> = vec![
            (
                "has 3 scores for 2 classes",
                Box::new(|_, c| c[0] = Some(champion(&[0.1, 0.2, 0.3], 1))),
            ),
            (
                "has 1 scores for 2 classes",
                Box::new(|_, c| c[1] = Some(champion(&[0.1], 1))),
            ),
            (
                "has 3 probabilities for 2 classes",
                Box::new(|_, c| {
                    let mut bad = champion(&[0.1, 0.2], 1);
                    bad.probabilities = Arc::from(&[0.1f32, 0.2, 0.7][..]);
                    c[1] = Some(bad);
                }),
            ),
            (
                "scores NaN in class 1",
                Box::new(|_, c| c[1] = Some(champion(&[0.1, f32::NAN], 1))),
            ),
            (
                "scores inf in class 0",
                Box::new(|_, c| c[1] = Some(champion(&[f32::INFINITY, 0.0], 1))),
            ),
            (
                "of generation 9, after the checkpoint's generation 4",
                Box::new(|_, c| c[1] = Some(champion(&[0.1, 0.2], 9))),
            ),
            (
                "model `m` scores 10 classes, but the archive has 2 cells",
                Box::new(|m, _| m.identity.models[0].classes = 10),
            ),
            ("names no model", Box::new(|m, _| m.identity.models.clear())),
            (
                "records 3 labels for 2 classes",
                Box::new(|m, _| m.identity.labels.push("two".into())),
            ),
            ("has no cells", Box::new(|_, c| c.clear())),
            (
                "generation 9223372036854775808 with 999 children scored",
                Box::new(|m, _| m.generation = 1 << 63),
            ),
            (
                "does not fit 200 children per generation",
                Box::new(|m, _| m.evaluations = 5000),
            ),
            (
                "an empty population",
                Box::new(|m, _| m.config.offspring_per_generation = 0),
            ),
            (
                "are not times (elapsed -1 s",
                Box::new(|m, _| m.elapsed_s = -1.0),
            ),
        ];
        for (needle, edit) in cases {
            let (mut meta, mut cells) = sample();
            edit(&mut meta, &mut cells);
            let (champions, map, _) = index_champions(&cells);
            meta.champions = champions;
            meta.cells = map;
            match decode(&encoded(&meta, &cells), Path::new("x")) {
                Err(CheckpointError::Damaged { message, .. }) => assert!(
                    message.contains("inconsistent") && message.contains(needle),
                    "{needle}: {message}"
                ),
                other => panic!("{needle}: {other:?}"),
            }
        }
        // A cell table longer than the models' classes (cells and score lengths disagree).
        let (mut meta, cells) = sample();
        meta.cells.push(None);
        let e = decode(&encoded(&meta, &cells), Path::new("x")).unwrap_err();
        assert!(e.to_string().contains("the archive has 3 cells"), "{e}");
    }

    /// Issue 30, item 17: a valid checkpoint copied to a higher name (`ckpt-999999999999`
    /// holding generation 2) is not taken for the newest: resume picks the newest by the
    /// generation inside, and rotation moves the misnamed copy aside instead of keeping it
    /// in a slot.
    #[test]
    fn a_renamed_valid_checkpoint_is_not_the_newest() {
        let dir = std::env::temp_dir().join(format!("pareidolia-renamed-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = CheckpointStore::new(&dir, 2);
        let (mut meta, cells) = sample();
        let (_, _, distinct) = index_champions(&cells);
        let mut written = Vec::new();
        for g in 2..=3 {
            at_generation(&mut meta, g);
            written.push(store.write(g, &encode(&meta, &distinct)).unwrap());
        }
        let renamed = store.dir().join("ckpt-999999999999.pdck");
        std::fs::copy(&written[0], &renamed).unwrap();
        let (c, newest, skipped) = store.load_newest().unwrap();
        assert_eq!((c.meta.generation, &newest), (3, &written[1]));
        assert_eq!(skipped.len(), 1);
        let why = skipped[0].1.to_string();
        assert!(
            why.contains(
                "holds generation 2 but is named ckpt-999999999999.pdck, not ckpt-000000000002.pdck"
            ),
            "{why}"
        );
        at_generation(&mut meta, 4);
        let four = store.write(4, &encode(&meta, &distinct)).unwrap();
        assert_eq!(store.list(), vec![four, written[1].clone()]);
        assert!(
            store
                .dir()
                .join(DAMAGED_DIR)
                .join("ckpt-999999999999.pdck")
                .is_file()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
