//! The `email` format of event schemas.
//!
//! The schema library's own check parses every address in full (display names, quoted local parts,
//! domain literals, internationalised labels): about 5 thousand instructions an address, 4.7 % of
//! all of an end-to-end delivery's when an event carries four addresses. Almost every address is a
//! plain `local@domain` of ASCII letters, digits and a few symbols; those are recognised here in one
//! pass, and every other string is still judged by the library's check, so the format accepts
//! exactly what it accepted before (the tests compare the two on generated strings).

use std::sync::LazyLock;

use serde_json::Value;

/// The library's own `email` check, for what `plain` does not accept.
static FULL: LazyLock<Option<jsonschema::Validator>> = LazyLock::new(|| {
    jsonschema::options()
        .should_validate_formats(true)
        .build(&serde_json::json!({"format": "email"}))
        .ok()
});

/// Whether `text` is a valid `email`: the format check registered with every compiled schema.
pub(crate) fn is_email(text: &str) -> bool {
    plain(text) || full(text)
}

fn full(text: &str) -> bool {
    FULL.as_ref()
        .is_some_and(|validator| validator.is_valid(&Value::String(text.to_owned())))
}

/// A dot-atom local part of ASCII `atext` (at most 64 bytes) and a domain of letter-digit-hyphen
/// labels (at most 63 bytes each, 253 in all) that start and end with a letter or digit and hold
/// no `--` at their third byte (the library's test for punycode labels, which it decodes): a subset
/// of what both RFC 5321 and the library accept.
fn plain(text: &str) -> bool {
    let Some((local, domain)) = text.split_once('@') else {
        return false;
    };
    (1..=64).contains(&local.len())
        && local.split('.').all(|atom| {
            !atom.is_empty()
                && atom
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b))
        })
        && (1..=253).contains(&domain.len())
        && domain.split('.').all(|label| {
            let bytes = label.as_bytes();
            (1..=63).contains(&bytes.len())
                && bytes[0].is_ascii_alphanumeric()
                && bytes[bytes.len() - 1].is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
                && bytes.get(2..4) != Some(b"--")
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_addresses_are_recognised_without_the_full_check() {
        for address in [
            "ada@example.com",
            "first.last+tag@mail.example.co.uk",
            "x@localhost",
            "o'brien@a-b.example",
            "1@2.3",
        ] {
            assert!(plain(address), "{address}");
            assert!(full(address), "{address}");
        }
    }

    #[test]
    fn other_addresses_are_left_to_the_full_check() {
        // Valid, but not plain: the full check still decides.
        for address in [
            "\"quoted local\"@example.com",
            "ada@[127.0.0.1]",
            "ada@xn--bcher-kva.example",
        ] {
            assert!(!plain(address), "{address}");
            assert!(is_email(address), "{address}");
        }
        for address in [
            "",
            "ada",
            "@example.com",
            "ada@",
            "ada..b@example.com",
            ".ada@example.com",
            "ada@-example.com",
            "ada@example-.com",
            "ada@example..com",
            "ada@example.com.",
            "ada@ab--cd.example",
            "a@b@example.com",
            "ada lovelace@example.com",
        ] {
            assert!(!plain(address), "{address}");
            assert!(!is_email(address), "{address}");
        }
        let long_local = format!("{}@example.com", "a".repeat(65));
        let long_label = format!("ada@{}.com", "a".repeat(64));
        let long_domain = format!("ada@{}", vec!["a".repeat(63); 4].join("."));
        for address in [long_local, long_label, long_domain] {
            assert!(!plain(&address), "{address}");
            assert!(!is_email(&address), "{address}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// Addresses built from the plain grammar, up to and past its length limits: whatever the
        /// fast path accepts, the library accepts too.
        #[test]
        fn what_plain_accepts_the_library_accepts(
            local in "[a-zA-Z0-9!#$%&'*+/=?^_`{|}~.-]{1,70}",
            domain in "[a-zA-Z0-9.-]{1,80}",
            labels in 0usize..5,
        ) {
            let domain = std::iter::repeat_n(domain.as_str(), labels + 1).collect::<Vec<_>>().join(".");
            let address = format!("{local}@{domain}");
            if plain(&address) {
                prop_assert!(full(&address), "{}", address);
            }
        }

        /// Any short string over an alphabet of the characters that matter to either check: the
        /// format answers as the library's check alone does.
        #[test]
        fn the_format_answers_as_the_library_does(text in "[a-z0-9.@\"\\[\\]<> ()é:-]{0,24}") {
            prop_assert_eq!(is_email(&text), full(&text), "{}", text);
        }
    }
}
