//! Repeated runs: single 2-second runs of one collector swing by ±25 % on a 2-core VM, which is
//! large next to the 2× and 3× targets, so the over-UDP figures are medians of [`REPEATS`] runs
//! (taken in turns with the run they are compared with) and show their spread.

/// Runs behind each median.
pub const REPEATS: usize = 3;

/// The median run by `key`, and the spread of `key` over all runs: (max − min) / median.
pub fn median<T>(mut runs: Vec<T>, key: impl Fn(&T) -> f64) -> Option<(T, f64)> {
    runs.sort_by(|a, b| key(a).total_cmp(&key(b)));
    let (lo, hi) = (key(runs.first()?), key(runs.last()?));
    let mid = runs.swap_remove(runs.len() / 2);
    let m = key(&mid);
    Some((mid, if m > 0.0 { (hi - lo) / m } else { 0.0 }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_run_and_spread() {
        let (m, spread) = median(vec![3.0, 1.0, 2.0], |v| *v).unwrap();
        assert_eq!((m, spread), (2.0, 1.0));
        let (m, spread) = median(vec![(4, 8.0)], |v| v.1).unwrap();
        assert_eq!((m, spread), ((4, 8.0), 0.0));
        assert!(median(Vec::<f64>::new(), |v| *v).is_none());
    }
}
