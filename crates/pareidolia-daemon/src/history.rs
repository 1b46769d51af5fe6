//! `history.csv` in the run folder: one line per completed generation with the convergence
//! numbers (median, minimum and mean confidence, QD-score, classes above each threshold), so a
//! run's curve can be plotted without Prometheus. The archive actor appends a line after each
//! generation; lines are a hundred bytes into the page cache, not worth a thread hop. On
//! resume, lines after the checkpoint's generation (written before a crash, and about to be
//! run again) are dropped first, so the file stays one line per generation.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use crate::outcome::Progress;

/// The CSV header.
pub const HEADER: &str = "generation,evaluations,elapsed_s,median,min,mean,qd_score,filled,at_least_0.5,at_least_0.9,at_least_0.99,at_least_0.9999,replacements,lost";

/// The file name in a run folder.
pub const FILE_NAME: &str = "history.csv";

/// An open history file.
pub struct History {
    path: PathBuf,
    file: File,
}

impl History {
    /// Opens `dir/history.csv` for appending. With `resumed_from`, drops the lines of later
    /// generations; without it, starts a new file.
    pub fn open(dir: &Path, resumed_from: Option<u64>) -> std::io::Result<Self> {
        let path = dir.join(FILE_NAME);
        let kept: Vec<String> = match resumed_from {
            Some(generation) if path.exists() => BufReader::new(File::open(&path)?)
                .lines()
                .skip(1)
                .map_while(Result::ok)
                // A line cut short by a crash has fewer fields; it is dropped too.
                .filter(|line| {
                    line.split(',').count() == HEADER.split(',').count()
                        && line
                            .split(',')
                            .next()
                            .and_then(|g| g.parse::<u64>().ok())
                            .is_some_and(|g| g <= generation)
                })
                .collect(),
            _ => Vec::new(),
        };
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)?;
        writeln!(file, "{HEADER}")?;
        for line in kept {
            writeln!(file, "{line}")?;
        }
        Ok(Self { path, file })
    }

    /// Appends a generation.
    pub fn append(&mut self, p: &Progress) -> std::io::Result<()> {
        let s = &p.stats;
        // One write per line, so a crash leaves at most one partial line.
        let line = format!(
            "{},{},{:.3},{},{},{},{},{},{},{},{},{},{},{}\n",
            p.generation,
            p.evaluations,
            p.elapsed_s,
            s.median,
            s.min,
            s.mean,
            s.qd_score,
            s.filled,
            s.at_least[0],
            s.at_least[1],
            s.at_least[2],
            s.at_least[3],
            p.replacements,
            p.lost
        );
        self.file.write_all(line.as_bytes())
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(generation: u64) -> Progress {
        let mut p = Progress {
            generation,
            evaluations: 10 * (generation + 1),
            ..Progress::default()
        };
        p.stats.median = generation as f32 / 10.0;
        p
    }

    fn generations(dir: &Path) -> Vec<u64> {
        std::fs::read_to_string(dir.join(FILE_NAME))
            .unwrap()
            .lines()
            .skip(1)
            .map(|l| l.split(',').next().unwrap().parse().unwrap())
            .collect()
    }

    #[test]
    fn resuming_drops_the_generations_after_the_checkpoint() {
        let dir = std::env::temp_dir().join(format!("pareidolia-history-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut h = History::open(&dir, None).unwrap();
        for g in 0..=7 {
            h.append(&progress(g)).unwrap();
        }
        drop(h);
        assert_eq!(generations(&dir), (0..=7).collect::<Vec<_>>());
        // Crashed after generation 7, resumed from the checkpoint of generation 5.
        let mut h = History::open(&dir, Some(5)).unwrap();
        for g in 6..=9 {
            h.append(&progress(g)).unwrap();
        }
        drop(h);
        assert_eq!(generations(&dir), (0..=9).collect::<Vec<_>>());
        let text = std::fs::read_to_string(dir.join(FILE_NAME)).unwrap();
        assert!(text.starts_with(HEADER));
        assert!(
            text.lines().nth(8).unwrap().starts_with("7,80,0.000,0.7,"),
            "{text}"
        );
        // A new run starts over.
        History::open(&dir, None).unwrap();
        assert!(generations(&dir).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
