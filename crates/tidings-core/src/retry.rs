//! When the next attempt of a delivery is due.

use crate::UnixMillis;

/// The default schedule after the first attempt: 1 min, 5 min, 30 min, then the delivery fails.
pub const DEFAULT_SCHEDULE_SECS: [u32; 3] = [60, 300, 1800];

/// How far a `Retry-After` may push an attempt back.
pub const MAX_RETRY_AFTER_SECS: u64 = 3600;

/// Jitter applied to each scheduled delay, as a fraction (±10 %).
pub const JITTER: f64 = 0.10;

/// Most retries a schedule may hold, and the longest single delay (one week).
pub const MAX_SCHEDULE_LEN: usize = 20;
pub const MAX_DELAY_SECS: u32 = 7 * 24 * 3600;

/// Checks an operator- or webhook-supplied retry schedule.
pub fn validate_schedule(schedule: &[u32]) -> Result<(), String> {
    if schedule.len() > MAX_SCHEDULE_LEN {
        return Err(format!(
            "a retry schedule holds at most {MAX_SCHEDULE_LEN} delays"
        ));
    }
    if let Some(bad) = schedule.iter().find(|d| **d == 0 || **d > MAX_DELAY_SECS) {
        return Err(format!(
            "retry delay {bad} s is outside 1..{MAX_DELAY_SECS} seconds"
        ));
    }
    Ok(())
}

/// The time of the next attempt after `attempts_made` failed attempts, or `None` when the schedule is
/// exhausted. `jitter_unit` is a number in [-1, 1] (random in production, fixed in tests).
/// A `Retry-After` postpones the attempt (up to an hour) but never brings it forward: the schedule is
/// the floor that keeps a failing endpoint from being hammered.
pub fn next_attempt_at(
    schedule: &[u32],
    attempts_made: u32,
    retry_after_secs: Option<u64>,
    now: UnixMillis,
    jitter_unit: f64,
) -> Option<UnixMillis> {
    let index = usize::try_from(attempts_made.checked_sub(1)?).ok()?;
    let base_ms = f64::from(*schedule.get(index)?) * 1000.0;
    let jittered = (base_ms * (1.0 + JITTER * jitter_unit.clamp(-1.0, 1.0))).max(0.0) as i64;
    let requested = retry_after_secs
        .map(|secs| (secs.min(MAX_RETRY_AFTER_SECS) * 1000) as i64)
        .unwrap_or(0);
    Some(now + jittered.max(requested))
}

/// A uniformly random jitter unit in [-1, 1].
pub fn random_jitter() -> f64 {
    rand::random_range(-1.0..=1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: UnixMillis = 1_000_000;

    fn check(attempts: u32, retry_after: Option<u64>, jitter: f64, expected: Option<UnixMillis>) {
        assert_eq!(
            next_attempt_at(&DEFAULT_SCHEDULE_SECS, attempts, retry_after, NOW, jitter),
            expected,
            "attempts={attempts} retry_after={retry_after:?} jitter={jitter}"
        );
    }

    #[test]
    fn default_schedule_is_one_five_thirty_minutes_then_gives_up() {
        check(1, None, 0.0, Some(NOW + 60_000));
        check(2, None, 0.0, Some(NOW + 300_000));
        check(3, None, 0.0, Some(NOW + 1_800_000));
        check(4, None, 0.0, None);
        check(0, None, 0.0, None);
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        check(1, None, 1.0, Some(NOW + 66_000));
        check(1, None, -1.0, Some(NOW + 54_000));
        check(1, None, 7.0, Some(NOW + 66_000));
        for _ in 0..1000 {
            let at = next_attempt_at(&DEFAULT_SCHEDULE_SECS, 2, None, NOW, random_jitter())
                .expect("due");
            assert!((NOW + 270_000..=NOW + 330_000).contains(&at));
        }
    }

    #[test]
    fn retry_after_postpones_but_never_hastens_and_is_clamped() {
        check(1, Some(10), 0.0, Some(NOW + 60_000));
        check(1, Some(120), 0.0, Some(NOW + 120_000));
        check(1, Some(999_999), 0.0, Some(NOW + 3_600_000));
        check(4, Some(5), 0.0, None);
    }

    #[test]
    fn custom_schedules_are_validated() {
        assert!(validate_schedule(&[5, 300, 1800, 7200, 18000, 36000]).is_ok());
        assert!(validate_schedule(&[]).is_ok());
        assert!(validate_schedule(&[0]).is_err());
        assert!(validate_schedule(&[MAX_DELAY_SECS + 1]).is_err());
        assert!(validate_schedule(&[1; 21]).is_err());
    }
}
