//! Tidings' domain: ids, the event catalog, webhook rules, matching, signing and retry maths.
//!
//! Everything here is pure: no I/O, no async runtime, no storage. The other crates call into it.

pub mod catalog;
pub mod data;
mod email;
pub mod ids;
pub mod matching;
pub mod net;
pub mod outcome;
pub mod retry;
pub mod signing;
pub mod stats;
pub mod webhook;

/// Milliseconds since the Unix epoch; the one time unit stored and compared everywhere.
pub type UnixMillis = i64;

/// The current time in Unix milliseconds.
pub fn now_millis() -> UnixMillis {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Formats Unix milliseconds as an RFC 3339 UTC timestamp with millisecond precision.
pub fn format_rfc3339(millis: UnixMillis) -> String {
    let nanos = i128::from(millis) * 1_000_000;
    let moment = time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    moment.format(&format).unwrap_or_default()
}

/// Parses an RFC 3339 timestamp into Unix milliseconds.
pub fn parse_rfc3339(text: &str) -> Option<UnixMillis> {
    let moment =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    Some((moment.unix_timestamp_nanos() / 1_000_000) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_milliseconds() {
        let millis = 1_763_800_000_123;
        let text = format_rfc3339(millis);
        assert_eq!(text, "2025-11-22T08:26:40.123Z");
        assert_eq!(parse_rfc3339(&text), Some(millis));
        assert_eq!(parse_rfc3339("2025-11-22T09:26:40.123+01:00"), Some(millis));
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
