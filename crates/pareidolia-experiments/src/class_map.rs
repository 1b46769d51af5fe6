//! Which of a target model's classes answer for each of a run's classes, when the two do not
//! share one labels file (issue 30, item 5): a transfer to a model trained on another label
//! space (ImageNet champions shown to a CIFAR model, digits to a model with labels `zero` ..
//! `nine`) is scored through a class map, or, when the user says the classes are the same by
//! position, by class index.
//!
//! A class map file has one pair per line, `RUN CLASS,TARGET CLASS` (a comma or a tab
//! between), `#` starting a comment. Each side is a label of that model, or, when it is not
//! one, a class index. A run class may be listed with several target classes: the champion's
//! confidence on the target is then the sum of their probabilities (a "dog" champion against
//! a model with 120 dog breeds); several run classes may share a target class. Run classes the
//! file does not list are not scored on that target.

use std::path::Path;

/// How a target's classes are matched with the run's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum LabelMatch {
    /// The target must have the run's labels, class for class (the default).
    #[default]
    Same,
    /// Class `k` of the run is class `k` of the target, whatever the labels say (the same
    /// number of classes is required).
    ByIndex,
    /// A class map file (format in the module docs).
    Map(std::path::PathBuf),
}

/// Per run class, the target classes whose probabilities make its confidence (empty: not
/// scored on that target).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassMap {
    /// Indexed by run class.
    pub to: Vec<Vec<usize>>,
}

impl ClassMap {
    /// Class `k` to class `k`, for `classes` classes.
    pub fn identity(classes: usize) -> Self {
        Self {
            to: (0..classes).map(|k| vec![k]).collect(),
        }
    }

    /// Run classes that are scored.
    pub fn mapped(&self) -> usize {
        self.to.iter().filter(|t| !t.is_empty()).count()
    }

    /// Whether this is class `k` to class `k` for every class.
    pub fn is_identity(&self) -> bool {
        self.to
            .iter()
            .enumerate()
            .all(|(k, t)| t.len() == 1 && t[0] == k)
    }

    /// Reads a class map file for a run with `run_labels` and a target with `target_labels`.
    pub fn read(
        path: &Path,
        run_labels: &[String],
        target_labels: &[String],
    ) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read class map {}: {e}", path.display()))?;
        Self::parse(
            &text,
            &path.display().to_string(),
            run_labels,
            target_labels,
        )
    }

    /// Parses a class map (`origin` names it in errors).
    pub fn parse(
        text: &str,
        origin: &str,
        run_labels: &[String],
        target_labels: &[String],
    ) -> Result<Self, String> {
        let mut to = vec![Vec::new(); run_labels.len()];
        let mut pairs = 0;
        for (n, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let at = || format!("{origin}, line {}", n + 1);
            let Some((a, b)) = line.split_once([',', '\t']) else {
                return Err(format!(
                    "{}: `{line}` is not a pair; write `RUN CLASS,TARGET CLASS` (a label or a class index on each side)",
                    at()
                ));
            };
            let run = class(a.trim(), run_labels).ok_or_else(|| {
                format!(
                    "{}: `{}` is neither a label of the run's model nor a class index below {}",
                    at(),
                    a.trim(),
                    run_labels.len()
                )
            })?;
            let target = class(b.trim(), target_labels).ok_or_else(|| {
                format!(
                    "{}: `{}` is neither a label of the target model nor a class index below {}",
                    at(),
                    b.trim(),
                    target_labels.len()
                )
            })?;
            if !to[run].contains(&target) {
                to[run].push(target);
            }
            pairs += 1;
        }
        if pairs == 0 {
            return Err(format!(
                "class map {origin} maps no class; write one `RUN CLASS,TARGET CLASS` pair per line"
            ));
        }
        Ok(Self { to })
    }
}

/// A class named by its label, else by its index.
fn class(name: &str, labels: &[String]) -> Option<usize> {
    labels
        .iter()
        .position(|l| l == name)
        .or_else(|| name.parse::<usize>().ok().filter(|&k| k < labels.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(names: &[&str]) -> Vec<String> {
        names.iter().map(|&n| n.to_owned()).collect()
    }

    #[test]
    fn labels_indices_several_targets_and_comments() {
        let run = labels(&["cat", "dog", "car"]);
        let target = labels(&["tabby", "beagle", "husky", "truck"]);
        let text = "# run,target\ncat,tabby\ndog\tbeagle\ndog,2   # husky by index\n\ndog,husky\n";
        let map = ClassMap::parse(text, "m.csv", &run, &target).unwrap();
        assert_eq!(map.to, vec![vec![0], vec![1, 2], vec![]]);
        assert_eq!(map.mapped(), 2);
        assert!(!map.is_identity());
        assert!(ClassMap::identity(3).is_identity());
    }

    #[test]
    fn a_label_wins_over_an_index() {
        // Labels that are numbers: `1` is the label `1` (index 2), not index 1.
        let run = labels(&["0", "x", "1"]);
        let map = ClassMap::parse("1,0", "m", &run, &run).unwrap();
        assert_eq!(map.to, vec![vec![], vec![], vec![0]]);
    }

    #[test]
    fn bad_lines_are_refused_naming_file_line_and_value() {
        let run = labels(&["cat", "dog"]);
        let target = labels(&["a", "b", "c"]);
        let e = ClassMap::parse("cat,a\nhorse,b\n", "m.csv", &run, &target).unwrap_err();
        assert!(
            e.contains("m.csv, line 2") && e.contains("`horse`") && e.contains("below 2"),
            "{e}"
        );
        let e = ClassMap::parse("cat,7", "m.csv", &run, &target).unwrap_err();
        assert!(e.contains("`7`") && e.contains("target model"), "{e}");
        let e = ClassMap::parse("cat", "m.csv", &run, &target).unwrap_err();
        assert!(e.contains("line 1") && e.contains("not a pair"), "{e}");
        let e = ClassMap::parse("# nothing\n\n", "m.csv", &run, &target).unwrap_err();
        assert!(e.contains("maps no class"), "{e}");
        let e = ClassMap::read(Path::new("/nonexistent/map.csv"), &run, &target).unwrap_err();
        assert!(
            e.contains("cannot read class map /nonexistent/map.csv"),
            "{e}"
        );
    }
}
