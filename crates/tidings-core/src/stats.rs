//! Attempt latency histograms: fixed bucket bounds, so per-hour counts can be added up and a
//! percentile read back without keeping every sample.

/// Upper bounds (inclusive, in ms) of the latency buckets; the last bucket holds everything slower.
pub const BUCKET_BOUNDS_MS: [i64; 27] = [
    1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1_000, 1_500, 2_000,
    3_000, 5_000, 7_500, 10_000, 15_000, 20_000, 30_000,
];

/// The bucket a duration falls in.
pub fn bucket(duration_ms: i64) -> usize {
    BUCKET_BOUNDS_MS
        .iter()
        .position(|bound| duration_ms <= *bound)
        .unwrap_or(BUCKET_BOUNDS_MS.len())
}

/// The `quantile` (0..=1) of a histogram, interpolated linearly inside its bucket; `None` when empty.
pub fn percentile(counts: &[(usize, u64)], quantile: f64) -> Option<f64> {
    let mut per_bucket = vec![0u64; BUCKET_BOUNDS_MS.len() + 1];
    for (bucket, count) in counts {
        if let Some(slot) = per_bucket.get_mut(*bucket) {
            *slot += count;
        }
    }
    let total: u64 = per_bucket.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = (quantile.clamp(0.0, 1.0) * total as f64).max(1.0);
    let mut seen = 0u64;
    for (index, count) in per_bucket.iter().enumerate() {
        if *count == 0 {
            continue;
        }
        if (seen + count) as f64 >= rank {
            let low = if index == 0 {
                0
            } else {
                BUCKET_BOUNDS_MS[index - 1]
            } as f64;
            let high = BUCKET_BOUNDS_MS.get(index).copied().unwrap_or(60_000) as f64;
            let within = (rank - seen as f64) / *count as f64;
            return Some(low + (high - low) * within);
        }
        seen += count;
    }
    None
}

/// The hour (Unix ms, floored) a moment belongs to, the key of hourly rollups.
pub fn hour_of(millis: i64) -> i64 {
    millis - millis.rem_euclid(3_600_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_fall_in_their_buckets() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(1), 0);
        assert_eq!(bucket(2), 1);
        assert_eq!(bucket(11), 6);
        assert_eq!(bucket(30_000), 26);
        assert_eq!(bucket(45_000), 27);
    }

    #[test]
    fn percentiles_come_from_merged_buckets() {
        assert_eq!(percentile(&[], 0.5), None);
        // 90 fast attempts (bucket 10 ms) and 10 slow ones (bucket 1000 ms).
        let counts = [(bucket(9), 90), (bucket(900), 10)];
        let p50 = percentile(&counts, 0.5).expect("p50");
        assert!((7.0..=10.0).contains(&p50), "{p50}");
        let p95 = percentile(&counts, 0.95).expect("p95");
        assert!((750.0..=1000.0).contains(&p95), "{p95}");
        // Counts for the same bucket from different hours add up.
        assert_eq!(percentile(&[(3, 1), (3, 1)], 1.0), Some(5.0));
    }

    #[test]
    fn hours_are_floored() {
        assert_eq!(hour_of(3_600_000 * 5 + 59_999), 3_600_000 * 5);
        assert_eq!(hour_of(0), 0);
    }
}
