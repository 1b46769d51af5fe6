//! `history.csv` in the run folder: one line per completed generation with the convergence
//! numbers (median, minimum and mean confidence, QD-score, classes above each threshold), so a
//! run's curve can be plotted without Prometheus. The archive actor appends a line after each
//! generation; lines are a hundred bytes into the page cache, not worth a thread hop.
//!
//! It stays exact across crashes and resumes:
//!
//! - On resume, lines after the checkpoint's generation (written before a crash, and about to
//!   be run again) are dropped. The kept lines go to a temporary file in the same folder,
//!   which is fsynced and renamed over `history.csv` (then the folder is fsynced): a kill at
//!   any moment leaves either the old file or the trimmed one, never a cut-short one.
//! - An append that fails (a full disk) keeps its line; the next append first cuts off what
//!   the failed write may have left of a line, then writes every line still missing, so once
//!   space returns the file is one line per generation again, without a gap. Lines waiting
//!   are held in memory, at most [`MAX_PENDING_LINES`] (the oldest beyond are dropped, with
//!   a warning).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use crate::run::outcome::Progress;

/// The CSV header.
pub const HEADER: &str = "generation,evaluations,elapsed_s,median,min,mean,qd_score,filled,at_least_0.5,at_least_0.9,at_least_0.99,at_least_0.9999,replacements,lost";

/// The columns a run with the gradient operator (`[search.gradient]`) adds after [`HEADER`]:
/// gradient steps taken so far, and the forward-pass equivalents spent (evaluations plus
/// three per gradient step: a forward and a backward pass, the backward counted as two).
pub const GRADIENT_COLUMNS: &str = "gradient_steps,forward_equivalents";

/// The file name in a run folder.
pub const FILE_NAME: &str = "history.csv";

/// Lines held while appends fail (about 100 bytes each: some 100 MB).
pub const MAX_PENDING_LINES: usize = 1_000_000;

/// The file a [`History`] appends to: a real file, or a test double that fails on demand.
pub trait HistoryFile: Write {
    /// Cuts the file back to `len` bytes (what a failed write may have left goes).
    fn truncate_to(&mut self, len: u64) -> std::io::Result<()>;
}

impl HistoryFile for File {
    fn truncate_to(&mut self, len: u64) -> std::io::Result<()> {
        // Opened for appending: the next write goes to the new end.
        self.set_len(len)
    }
}

/// An open history file.
pub struct History<F: HistoryFile = File> {
    path: PathBuf,
    file: F,
    /// Bytes of complete lines in the file.
    written: u64,
    /// A write failed part-way: the file may hold part of a line beyond `written`.
    dirty: bool,
    /// Lines not yet in the file, oldest first.
    pending: VecDeque<String>,
    /// Lines dropped because too many were pending.
    dropped: u64,
    /// The run has the gradient operator: lines carry [`GRADIENT_COLUMNS`].
    gradient: bool,
}

/// The prefix of temporary files of the trim (`.history.csv.tmp-<pid>`).
const TMP_PREFIX: &str = ".history.csv.tmp-";

impl History {
    /// Opens `dir/history.csv` for appending. With `resumed_from`, keeps the lines of that
    /// generation and earlier ones; without it, starts a new file. Either way the file is
    /// replaced atomically. `gradient`: the run has the gradient operator (its lines carry
    /// [`GRADIENT_COLUMNS`]).
    pub fn open(dir: &Path, resumed_from: Option<u64>, gradient: bool) -> std::io::Result<Self> {
        let path = dir.join(FILE_NAME);
        let header = header(gradient);
        let fields = header.split(',').count();
        let kept: Vec<String> = match resumed_from {
            Some(generation) if path.exists() => BufReader::new(File::open(&path)?)
                .lines()
                .skip(1)
                .map_while(Result::ok)
                // A line cut short by a crash has fewer fields; it is dropped too.
                .filter(|line| {
                    line.split(',').count() == fields
                        && line
                            .split(',')
                            .next()
                            .and_then(|g| g.parse::<u64>().ok())
                            .is_some_and(|g| g <= generation)
                })
                .collect(),
            _ => Vec::new(),
        };
        // Temporary files of trims that were killed.
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let tmp = dir.join(format!("{TMP_PREFIX}{}", std::process::id()));
        let replaced = (|| {
            let mut out = std::io::BufWriter::new(File::create(&tmp)?);
            writeln!(out, "{header}")?;
            for (i, line) in kept.iter().enumerate() {
                if i == kept.len() / 2 {
                    out.flush()?;
                    pareidolia_core::faults::history_halfway();
                }
                writeln!(out, "{line}")?;
            }
            out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            File::open(dir)?.sync_all()
        })();
        if let Err(e) = replaced {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        let file = OpenOptions::new().append(true).open(&path)?;
        let written = file.metadata()?.len();
        let mut history = Self::with_file(path, file, written);
        history.gradient = gradient;
        Ok(history)
    }
}

/// The header of a run's history (with the gradient columns or without).
pub fn header(gradient: bool) -> String {
    if gradient {
        format!("{HEADER},{GRADIENT_COLUMNS}")
    } else {
        HEADER.to_owned()
    }
}

impl<F: HistoryFile> History<F> {
    /// A history appending to `file` at `path`, which holds `written` bytes of whole lines.
    pub fn with_file(path: PathBuf, file: F, written: u64) -> Self {
        Self {
            path,
            file,
            written,
            dirty: false,
            pending: VecDeque::new(),
            dropped: 0,
            gradient: false,
        }
    }

    /// Appends a generation, after the lines earlier appends could not write. On error the
    /// lines are kept for the next append.
    pub fn append(&mut self, p: &Progress) -> std::io::Result<()> {
        let s = &p.stats;
        let gradient = if self.gradient {
            format!(
                ",{},{}",
                p.times.gradient_steps,
                p.times.forward_equivalents(p.evaluations)
            )
        } else {
            String::new()
        };
        self.pending.push_back(format!(
            "{},{},{:.3},{},{},{},{},{},{},{},{},{},{},{}{gradient}\n",
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
        ));
        if self.pending.len() > MAX_PENDING_LINES {
            self.pending.pop_front();
            self.dropped += 1;
            if self.dropped == 1 {
                tracing::warn!(path = %self.path.display(), "too many history lines wait for space: the oldest are dropped, the history will have a gap");
            }
        }
        self.flush()
    }

    /// Writes the lines waiting, if any.
    pub fn flush(&mut self) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        if self.dirty {
            self.file.truncate_to(self.written)?;
            self.dirty = false;
        }
        // One write for all the lines, so a crash leaves at most one partial line.
        let lines: String = self.pending.iter().map(String::as_str).collect();
        match self.file.write_all(lines.as_bytes()) {
            Ok(()) => {
                self.written += lines.len() as u64;
                self.pending.clear();
                Ok(())
            }
            Err(e) => {
                self.dirty = true;
                Err(e)
            }
        }
    }

    /// Lines not yet written (appends failed since the last one that succeeded).
    pub fn pending(&self) -> usize {
        self.pending.len()
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
    fn a_run_with_the_gradient_operator_counts_its_steps_and_forward_equivalents() {
        let dir = std::env::temp_dir().join(format!("pareidolia-history-g-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut h = History::open(&dir, None, true).unwrap();
        for g in 0..=3 {
            let mut p = progress(g);
            p.times.gradient_steps = 4 * g;
            h.append(&p).unwrap();
        }
        drop(h);
        // Resumed at generation 2: its lines have the extra columns and are kept.
        History::open(&dir, Some(2), true).unwrap();
        let text = std::fs::read_to_string(dir.join(FILE_NAME)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            format!("{HEADER},gradient_steps,forward_equivalents")
        );
        assert_eq!(lines.len(), 4, "{text}");
        // Generation 2: 30 evaluations and 8 steps, 30 + 3 * 8 forward-pass equivalents.
        assert!(lines[3].starts_with("2,30,"), "{}", lines[3]);
        assert!(lines[3].ends_with(",8,54"), "{}", lines[3]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn resuming_drops_the_generations_after_the_checkpoint() {
        let dir = std::env::temp_dir().join(format!("pareidolia-history-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut h = History::open(&dir, None, false).unwrap();
        for g in 0..=7 {
            h.append(&progress(g)).unwrap();
        }
        drop(h);
        assert_eq!(generations(&dir), (0..=7).collect::<Vec<_>>());
        // Crashed after generation 7, resumed from the checkpoint of generation 5.
        let mut h = History::open(&dir, Some(5), false).unwrap();
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
        History::open(&dir, None, false).unwrap();
        assert!(generations(&dir).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A file in memory whose writes fail while `failures` lasts, each after writing part of
    /// its bytes, as a full disk can.
    struct Flaky {
        bytes: Vec<u8>,
        failures: u32,
    }

    impl Write for Flaky {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.failures > 0 {
                self.failures -= 1;
                self.bytes.extend_from_slice(&buf[..buf.len() / 2]);
                return Err(std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    "no space left on device",
                ));
            }
            self.bytes.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl HistoryFile for Flaky {
        fn truncate_to(&mut self, len: u64) -> std::io::Result<()> {
            self.bytes.truncate(len as usize);
            Ok(())
        }
    }

    /// Issue 18, item 2: one failed append used to stop the history for good, leaving a gap
    /// after space returned. Failed lines are kept and written, whole, by the next append.
    #[test]
    fn appends_that_fail_are_written_once_the_disk_has_room_again() {
        let header = format!("{HEADER}\n");
        let file = Flaky {
            bytes: header.clone().into_bytes(),
            failures: 0,
        };
        let mut h = History::with_file(PathBuf::from("x"), file, header.len() as u64);
        for g in 0..=9 {
            if g == 3 {
                h.file.failures = 4; // generations 3, 4, 5 and 6 fail (each leaves half a line)
            }
            let result = h.append(&progress(g));
            assert_eq!(result.is_err(), (3..=6).contains(&g), "generation {g}");
            assert_eq!(
                h.pending(),
                if (3..=6).contains(&g) {
                    g as usize - 2
                } else {
                    0
                }
            );
        }
        let text = String::from_utf8(h.file.bytes.clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], HEADER);
        let generations: Vec<u64> = lines[1..]
            .iter()
            .map(|l| {
                assert_eq!(l.split(',').count(), HEADER.split(',').count(), "{l}");
                l.split(',').next().unwrap().parse().unwrap()
            })
            .collect();
        assert_eq!(generations, (0..=9).collect::<Vec<_>>(), "{text}");
    }

    /// The trim replaces the file in one rename: no temporary file is left, and a stale one
    /// from a killed trim is removed.
    #[test]
    fn the_trim_leaves_no_temporary_file() {
        let dir =
            std::env::temp_dir().join(format!("pareidolia-history-tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut h = History::open(&dir, None, false).unwrap();
        for g in 0..=4 {
            h.append(&progress(g)).unwrap();
        }
        drop(h);
        std::fs::write(dir.join(format!("{TMP_PREFIX}1")), "stale").unwrap();
        History::open(&dir, Some(2), false).unwrap();
        assert_eq!(generations(&dir), [0, 1, 2]);
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, [FILE_NAME]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
