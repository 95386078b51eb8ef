//! Min, median and max of repeated measurements, for the benches' tables.

/// Sorts `xs` and returns its minimum, median and maximum. `xs` must not be empty.
pub fn stats(xs: &mut [f64]) -> (f64, f64, f64) {
    xs.sort_by(f64::total_cmp);
    (xs[0], xs[xs.len() / 2], xs[xs.len() - 1])
}
