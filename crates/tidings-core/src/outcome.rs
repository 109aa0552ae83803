//! What one HTTP attempt means for its delivery (SPEC section 3, outcome table).

use serde::{Deserialize, Serialize};

/// How an attempt ended before or instead of an HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The endpoint answered with a status that is not 2xx.
    HttpStatus,
    /// No complete response within the webhook's timeout.
    Timeout,
    /// The connection could not be made or broke.
    Connect,
    /// The host name did not resolve.
    Dns,
    /// The TLS handshake failed.
    Tls,
    /// The target resolves to an address webhooks may not reach.
    SsrfBlocked,
    /// The endpoint answered with a redirect, which is not followed.
    Redirect,
    /// Anything else that went wrong while sending.
    Other,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::HttpStatus => "http_status",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Connect => "connect",
            ErrorKind::Dns => "dns",
            ErrorKind::Tls => "tls",
            ErrorKind::SsrfBlocked => "ssrf_blocked",
            ErrorKind::Redirect => "redirect",
            ErrorKind::Other => "other",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            ErrorKind::HttpStatus,
            ErrorKind::Timeout,
            ErrorKind::Connect,
            ErrorKind::Dns,
            ErrorKind::Tls,
            ErrorKind::SsrfBlocked,
            ErrorKind::Redirect,
            ErrorKind::Other,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == text)
    }
}

/// What happened on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptResult {
    Responded {
        status: u16,
        retry_after_secs: Option<u64>,
    },
    Failed(ErrorKind),
}

/// What the dispatcher does next with the delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// Try again per schedule; `retry_after_secs` from the response, if any.
    Retry {
        retry_after_secs: Option<u64>,
    },
    /// Failed for good; no more attempts.
    Failed,
    /// Failed for good and the webhook is disabled (410 Gone).
    Gone,
}

impl AttemptResult {
    /// The error kind recorded for this attempt, if it did not succeed.
    pub fn error_kind(self) -> Option<ErrorKind> {
        match self {
            AttemptResult::Responded { status, .. } if (200..300).contains(&status) => None,
            AttemptResult::Responded { status, .. } if (300..400).contains(&status) => {
                Some(ErrorKind::Redirect)
            }
            AttemptResult::Responded { .. } => Some(ErrorKind::HttpStatus),
            AttemptResult::Failed(kind) => Some(kind),
        }
    }

    pub fn verdict(self) -> Verdict {
        match self {
            AttemptResult::Responded {
                status,
                retry_after_secs,
            } => match status {
                200..=299 => Verdict::Delivered,
                410 => Verdict::Gone,
                408 | 429 | 500..=599 | 300..=399 => Verdict::Retry { retry_after_secs },
                _ => Verdict::Failed,
            },
            AttemptResult::Failed(ErrorKind::SsrfBlocked) => Verdict::Failed,
            AttemptResult::Failed(_) => Verdict::Retry {
                retry_after_secs: None,
            },
        }
    }
}

/// Parses a `Retry-After` value: delay seconds or an HTTP date, relative to `now_secs`.
pub fn parse_retry_after(value: &str, now_secs: i64) -> Option<u64> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(seconds);
    }
    let moment =
        time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc2822).ok()?;
    Some(u64::try_from(moment.unix_timestamp() - now_secs).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(result: AttemptResult, verdict: Verdict, kind: Option<ErrorKind>) {
        assert_eq!(result.verdict(), verdict, "{result:?}");
        assert_eq!(result.error_kind(), kind, "{result:?}");
    }

    fn status(code: u16) -> AttemptResult {
        AttemptResult::Responded {
            status: code,
            retry_after_secs: None,
        }
    }

    #[test]
    fn outcome_table() {
        let retry = Verdict::Retry {
            retry_after_secs: None,
        };
        check(status(200), Verdict::Delivered, None);
        check(status(204), Verdict::Delivered, None);
        check(status(299), Verdict::Delivered, None);
        check(status(410), Verdict::Gone, Some(ErrorKind::HttpStatus));
        check(status(408), retry, Some(ErrorKind::HttpStatus));
        check(status(429), retry, Some(ErrorKind::HttpStatus));
        check(status(500), retry, Some(ErrorKind::HttpStatus));
        check(status(503), retry, Some(ErrorKind::HttpStatus));
        check(status(301), retry, Some(ErrorKind::Redirect));
        check(status(307), retry, Some(ErrorKind::Redirect));
        check(status(400), Verdict::Failed, Some(ErrorKind::HttpStatus));
        check(status(401), Verdict::Failed, Some(ErrorKind::HttpStatus));
        check(status(404), Verdict::Failed, Some(ErrorKind::HttpStatus));
        check(status(422), Verdict::Failed, Some(ErrorKind::HttpStatus));
        check(
            AttemptResult::Failed(ErrorKind::Timeout),
            retry,
            Some(ErrorKind::Timeout),
        );
        check(
            AttemptResult::Failed(ErrorKind::Connect),
            retry,
            Some(ErrorKind::Connect),
        );
        check(
            AttemptResult::Failed(ErrorKind::Dns),
            retry,
            Some(ErrorKind::Dns),
        );
        check(
            AttemptResult::Failed(ErrorKind::Tls),
            retry,
            Some(ErrorKind::Tls),
        );
        check(
            AttemptResult::Failed(ErrorKind::SsrfBlocked),
            Verdict::Failed,
            Some(ErrorKind::SsrfBlocked),
        );
        let limited = AttemptResult::Responded {
            status: 429,
            retry_after_secs: Some(30),
        };
        assert_eq!(
            limited.verdict(),
            Verdict::Retry {
                retry_after_secs: Some(30)
            }
        );
    }

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        assert_eq!(parse_retry_after("120", 0), Some(120));
        assert_eq!(parse_retry_after(" 5 ", 0), Some(5));
        // Sun, 06 Nov 1994 08:49:37 GMT is 784111777.
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 784_111_700),
            Some(77)
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 784_111_800),
            Some(0)
        );
        assert_eq!(parse_retry_after("soon", 0), None);
        assert_eq!(parse_retry_after("-3", 0), None);
    }

    #[test]
    fn error_kinds_round_trip_through_text() {
        for kind in [
            "http_status",
            "timeout",
            "connect",
            "dns",
            "tls",
            "ssrf_blocked",
            "redirect",
            "other",
        ] {
            assert_eq!(ErrorKind::parse(kind).map(ErrorKind::as_str), Some(kind));
        }
        assert_eq!(ErrorKind::parse("nope"), None);
    }
}
