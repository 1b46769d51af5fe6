//! Test-only fault injection, in one place: the end-to-end tests set environment variables
//! on the real binary to make a write slow (so a kill lands inside it) or fail (as on a full
//! disk). They are read once per process; production code only calls the hooks below, which
//! do nothing when the variables are unset.
//!
//! - `PAREIDOLIA_FAULT_CHECKPOINT=slow:<ms>`: a checkpoint write pauses after its first half;
//! - `PAREIDOLIA_FAULT_CHECKPOINT=fail-from:<generation>`: checkpoint writes of that
//!   generation and later ones fail with "no space left on device";
//! - `PAREIDOLIA_FAULT_HISTORY=slow:<ms>`: the trim of `history.csv` on resume pauses after
//!   half of the kept lines.

use std::sync::OnceLock;
use std::time::Duration;

/// The faults asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Faults {
    checkpoint_pause: Option<Duration>,
    checkpoint_fail_from: Option<u64>,
    history_pause: Option<Duration>,
}

impl Faults {
    /// Parses the two variables' values.
    fn parse(checkpoint: Option<&str>, history: Option<&str>) -> Self {
        let slow = |v: Option<&str>| {
            v.and_then(|v| v.strip_prefix("slow:"))
                .and_then(|ms| ms.parse().ok())
                .map(Duration::from_millis)
        };
        Faults {
            checkpoint_pause: slow(checkpoint),
            checkpoint_fail_from: checkpoint
                .and_then(|v| v.strip_prefix("fail-from:"))
                .and_then(|g| g.parse().ok()),
            history_pause: slow(history),
        }
    }
}

fn faults() -> &'static Faults {
    static FAULTS: OnceLock<Faults> = OnceLock::new();
    FAULTS.get_or_init(|| {
        let var = |name| std::env::var(name).ok();
        Faults::parse(
            var("PAREIDOLIA_FAULT_CHECKPOINT").as_deref(),
            var("PAREIDOLIA_FAULT_HISTORY").as_deref(),
        )
    })
}

/// Halfway through a checkpoint write.
pub fn checkpoint_halfway() {
    if let Some(pause) = faults().checkpoint_pause {
        std::thread::sleep(pause);
    }
}

/// Before a checkpoint write of `generation` completes: fails it if asked to.
pub fn checkpoint_write(generation: u64) -> std::io::Result<()> {
    match faults().checkpoint_fail_from {
        Some(from) if generation >= from => Err(std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            "no space left on device (injected by PAREIDOLIA_FAULT_CHECKPOINT)",
        )),
        _ => Ok(()),
    }
}

/// Halfway through the trim of `history.csv`.
pub fn history_halfway() {
    if let Some(pause) = faults().history_pause {
        std::thread::sleep(pause);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variables_parse_into_faults_and_anything_else_is_none() {
        let f = Faults::parse(Some("slow:60"), Some("slow:5"));
        assert_eq!(f.checkpoint_pause, Some(Duration::from_millis(60)));
        assert_eq!(f.history_pause, Some(Duration::from_millis(5)));
        assert_eq!(f.checkpoint_fail_from, None);
        let f = Faults::parse(Some("fail-from:11"), None);
        assert_eq!(f.checkpoint_fail_from, Some(11));
        assert_eq!(f.checkpoint_pause, None);
        assert_eq!(
            Faults::parse(Some("nonsense"), Some("slow:x")),
            Faults::default()
        );
        assert_eq!(Faults::parse(None, None), Faults::default());
    }
}
