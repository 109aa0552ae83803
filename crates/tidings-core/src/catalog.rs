//! The event catalog: built-in event types with their JSON Schemas and examples, and the rules that
//! custom types follow.

use std::sync::LazyLock;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::data::{self, Borrowed, Data, DataNode};

/// One event type: its name, what it means, the channel it belongs to, and the shape of its `data`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventTypeDef {
    pub name: String,
    pub description: String,
    pub group: String,
    pub schema: Option<Value>,
    pub example: Option<Value>,
}

macro_rules! builtin_files {
    ($($name:literal),* $(,)?) => {
        &[$(include_str!(concat!("../catalog/", $name, ".json"))),*]
    };
}

const BUILTIN_FILES: &[&str] = builtin_files![
    "email.sent.v1",
    "email.first_sent.v1",
    "email.opened.v1",
    "email.link_clicked.v1",
    "email.replied.v1",
    "email.reply_untracked.v1",
    "email.bounced.v1",
    "reply.positive.v1",
    "reply.negative.v1",
    "lead.unsubscribed.v1",
    "lead.category_updated.v1",
    "lead.interest_updated.v1",
    "lead.appointment_booked.v1",
    "campaign.status_changed.v1",
    "sequence.manual_step_reached.v1",
    "linkedin.invitation_sent.v1",
    "linkedin.connection_accepted.v1",
    "linkedin.message_received.v1",
    "thread.tags_updated.v1",
    "meeting.status_changed.v1",
    "meeting.note_changed.v1",
    "signal.commercial_detected.v1",
];

static BUILTIN: LazyLock<Vec<EventTypeDef>> = LazyLock::new(|| {
    BUILTIN_FILES
        .iter()
        // The files are compiled in and checked by this crate's tests, so a parse failure is a build defect.
        .map(|text| serde_json::from_str(text).expect("built-in catalog entry is valid JSON"))
        .collect()
});

/// The built-in event types, in catalog order.
pub fn builtin() -> &'static [EventTypeDef] {
    &BUILTIN
}

/// Looks up a built-in event type by name.
pub fn builtin_type(name: &str) -> Option<&'static EventTypeDef> {
    BUILTIN.iter().find(|def| def.name == name)
}

/// Why an event type name or definition was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    #[error("Event type names are lowercase dotted words ending in a version, like `deal.won.v1`")]
    BadName,
    #[error("`{0}` is a built-in event type and cannot be redefined")]
    Builtin(String),
    #[error("The schema is not a valid JSON Schema: {0}")]
    BadSchema(String),
    #[error("The example does not match the schema at `{path}`: {message}")]
    BadExample { path: String, message: String },
    #[error("The group must be 1 to 64 lowercase letters, digits, `_` or `-`")]
    BadGroup,
}

/// Checks the shape of an event type name: `word(.word)+.vN`, lowercase, at most 128 bytes.
pub fn validate_name(name: &str) -> Result<(), CatalogError> {
    let segments: Vec<&str> = name.split('.').collect();
    let word_ok = |word: &str| {
        !word.is_empty()
            && word
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && word.as_bytes()[0].is_ascii_lowercase()
    };
    let version_ok = |word: &str| {
        word.strip_prefix('v')
            .is_some_and(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
    };
    match segments.split_last() {
        Some((version, words))
            if name.len() <= 128
                && words.len() >= 2
                && version_ok(version)
                && words.iter().all(|w| word_ok(w)) =>
        {
            Ok(())
        }
        _ => Err(CatalogError::BadName),
    }
}

/// Checks a group name for a custom type.
pub fn validate_group(group: &str) -> Result<(), CatalogError> {
    let ok = (1..=64).contains(&group.len())
        && group
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(CatalogError::BadGroup)
    }
}

/// Validates a custom definition: a new name, a compilable schema, an example that fits it.
pub fn validate_custom(def: &EventTypeDef) -> Result<(), CatalogError> {
    validate_name(&def.name)?;
    validate_group(&def.group)?;
    if builtin_type(&def.name).is_some() {
        return Err(CatalogError::Builtin(def.name.clone()));
    }
    if let Some(schema) = &def.schema {
        let compiled = DataSchema::compile(schema).map_err(CatalogError::BadSchema)?;
        if let Some(example) = &def.example {
            compiled
                .check(example)
                .map_err(|v| CatalogError::BadExample {
                    path: v.path,
                    message: v.message,
                })?;
        }
    }
    Ok(())
}

/// Where and why `data` failed its event type's schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaViolation {
    /// JSON Pointer into `data`, `/` for the root.
    pub path: String,
    pub message: String,
}

/// A compiled JSON Schema for an event type's `data`, checking data as the publish path parses it
/// (`crate::data`).
pub struct DataSchema {
    validator: jsonschema::Validator<Borrowed>,
}

impl std::fmt::Debug for DataSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataSchema")
    }
}

impl DataSchema {
    /// Compiles a schema. Remote `$ref`s cannot be resolved (no network in this crate).
    pub fn compile(schema: &Value) -> Result<Self, String> {
        jsonschema::options_for::<Borrowed>()
            .should_validate_formats(true)
            .with_format("email", crate::email::is_email)
            .build(schema)
            .map(|validator| Self { validator })
            .map_err(|error| error.to_string())
    }

    /// Checks a `serde_json::Value` (a type's example when it is defined: not the publish path) by
    /// writing it out and reading it back as borrowed data.
    pub fn check(&self, data: &Value) -> Result<(), SchemaViolation> {
        let text = serde_json::to_string(data).map_err(|e| SchemaViolation {
            path: "/".to_owned(),
            message: e.to_string(),
        })?;
        let parsed = data::parse(&text).map_err(|e| SchemaViolation {
            path: "/".to_owned(),
            message: e.to_string(),
        })?;
        self.check_data(&parsed)
    }

    /// Checks `data`, returning the first violation with its path.
    pub fn check_data(&self, data: &Data<'_>) -> Result<(), SchemaViolation> {
        let node = DataNode::new(data);
        // Valid data is the rule: asking only whether it is valid skips building errors.
        if self.validator.is_valid(node) {
            return Ok(());
        }
        match self.validator.iter_errors(node).next() {
            None => Ok(()),
            Some(error) => {
                let pointer = error.instance_path().to_string();
                Err(SchemaViolation {
                    path: if pointer.is_empty() {
                        "/".to_owned()
                    } else {
                        pointer
                    },
                    message: error.to_string(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_example_validates_against_its_schema() {
        assert_eq!(builtin().len(), BUILTIN_FILES.len());
        for def in builtin() {
            validate_name(&def.name).unwrap_or_else(|_| panic!("bad name {}", def.name));
            assert!(
                !def.description.is_empty(),
                "{} has no description",
                def.name
            );
            assert_eq!(
                def.name.split('.').next(),
                Some(def.group.as_str()),
                "{}",
                def.name
            );
            let schema = def.schema.as_ref().expect("built-in types have a schema");
            let example = def
                .example
                .as_ref()
                .expect("built-in types have an example");
            let compiled = DataSchema::compile(schema).expect("schema compiles");
            compiled
                .check(example)
                .unwrap_or_else(|v| panic!("{}: {v:?}", def.name));
        }
    }

    #[test]
    fn builtin_schemas_reject_an_example_missing_a_required_field() {
        for def in builtin() {
            let schema = def.schema.as_ref().expect("schema");
            let required = schema["required"].as_array().expect("required list");
            let compiled = DataSchema::compile(schema).expect("schema compiles");
            let field = required[0].as_str().expect("field name");
            let mut example = def.example.clone().expect("example");
            example.as_object_mut().expect("object").remove(field);
            let violation = compiled.check(&example).expect_err("must fail");
            assert_eq!(violation.path, "/", "{}", def.name);
            assert!(
                violation.message.contains(field),
                "{}: {}",
                def.name,
                violation.message
            );
        }
    }

    #[test]
    fn violation_names_the_failing_path() {
        let schema = serde_json::json!({
            "type": "object",
            "properties": {"lead": {"type": "object", "properties": {"email": {"type": "string"}}}}
        });
        let compiled = DataSchema::compile(&schema).expect("compiles");
        let violation = compiled
            .check(&serde_json::json!({"lead": {"email": 7}}))
            .expect_err("wrong type");
        assert_eq!(violation.path, "/lead/email");
    }

    #[test]
    fn custom_type_names_follow_the_catalog_shape() {
        for good in ["deal.won.v1", "crm.contact_synced.v12"] {
            assert_eq!(validate_name(good), Ok(()), "{good}");
        }
        for bad in [
            "deal",
            "deal.won",
            "Deal.won.v1",
            "deal..v1",
            "deal.won.v",
            "deal.won.1",
            ".won.v1",
            "1deal.won.v1",
        ] {
            assert_eq!(validate_name(bad), Err(CatalogError::BadName), "{bad}");
        }
    }

    #[test]
    fn custom_types_cannot_shadow_builtins_or_carry_bad_examples() {
        let mut def = EventTypeDef {
            name: "email.sent.v1".into(),
            description: "x".into(),
            group: "email".into(),
            schema: None,
            example: None,
        };
        assert!(matches!(
            validate_custom(&def),
            Err(CatalogError::Builtin(_))
        ));
        def.name = "deal.won.v1".into();
        def.schema = Some(serde_json::json!({"type": "object", "required": ["amount"]}));
        def.example = Some(serde_json::json!({}));
        assert!(matches!(
            validate_custom(&def),
            Err(CatalogError::BadExample { .. })
        ));
        def.example = Some(serde_json::json!({"amount": 3}));
        assert_eq!(validate_custom(&def), Ok(()));
        def.schema = Some(serde_json::json!({"type": 12}));
        assert!(matches!(
            validate_custom(&def),
            Err(CatalogError::BadSchema(_))
        ));
    }
}
