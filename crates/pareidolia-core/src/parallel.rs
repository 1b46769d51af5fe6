//! Data parallelism for the few bulk jobs outside the actors (the gallery's renders and PNG
//! encodes at the end of a run): [`map`] runs a function over a slice on every core with
//! std's scoped threads, results in input order. A dependency such as rayon would add a
//! global pool and compile time for two call sites; the actors have their own parallelism.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Threads [`map`] uses: one per available core.
pub fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `f` applied to every item, on up to `threads` threads (items handed out one at a time,
/// so uneven items balance), results in the order of `items`. A panic in `f` is re-raised
/// here after the other threads finish.
pub fn map<T: Sync, R: Send>(items: &[T], threads: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = threads.clamp(1, items.len().max(1));
    if threads == 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let mut done: Vec<(usize, R)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break out };
                        out.push((i, f(item)));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    done.sort_unstable_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_keep_the_input_order_on_any_thread_count() {
        let items: Vec<u64> = (0..1000).collect();
        let expected: Vec<u64> = items.iter().map(|x| x * x).collect();
        for threads in [0, 1, 2, 7, 5000] {
            assert_eq!(map(&items, threads, |x| x * x), expected, "{threads}");
        }
        assert!(map(&[] as &[u8], 4, |x| *x).is_empty());
    }

    #[test]
    fn a_panic_in_the_function_reaches_the_caller() {
        let r = std::panic::catch_unwind(|| {
            map(&[1, 2, 3, 4], 2, |&x| {
                assert!(x != 3, "three");
                x
            })
        });
        assert!(r.is_err());
    }
}
