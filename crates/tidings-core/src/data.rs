//! Event data as the publish path reads it: a tree that borrows its strings from the text it was
//! parsed from (`serde_json_borrow`: objects are vectors of members, no map per object, no string
//! copied unless it holds an escape), checked by the compiled JSON Schema through `jsonschema`'s
//! representation traits. Building a `serde_json::Value` for every published event, and writing it
//! out again to store it, was most of what publishing cost the API.
//!
//! Objects keep every member as written. Where a name repeats, lookups see the last one, as a
//! `serde_json::Value` (and most receivers' parsers) would.

use std::borrow::Cow;

use jsonschema::json::{Array, Json, JsonNumber, Node, NodeIdentity, Object, cmp};
use jsonschema::types::JsonType;
use serde_json::Value;
use serde_json_borrow::{Number, ObjectAsVec, Value as Parsed};

/// Parsed event data, borrowing from its text.
pub type Data<'a> = Parsed<'a>;

/// Parses `text` (already known to be JSON, e.g. a `RawValue`) into borrowed data.
pub fn parse(text: &str) -> Result<Data<'_>, serde_json::Error> {
    serde_json::from_str(text)
}

/// The member `name` of an object (the last one where the name repeats).
pub fn member<'a>(data: &'a Data<'a>, name: &str) -> Option<&'a Data<'a>> {
    match data {
        Parsed::Object(object) => last_member(object, name),
        _ => None,
    }
}

fn last_member<'a>(object: &'a ObjectAsVec<'a>, name: &str) -> Option<&'a Data<'a>> {
    object
        .as_vec()
        .iter()
        .rev()
        .find_map(|(key, value)| (&**key == name).then_some(value))
}

/// A number as `serde_json` writes it.
pub fn number_text(number: &Number) -> String {
    serde_json::Number::from(*number).to_string()
}

/// `jsonschema`'s representation of borrowed data.
pub struct Borrowed;

impl Json for Borrowed {
    type Node<'a> = DataNode<'a>;
    type PreparedKey = String;
    type StringBuffer = ();

    // An object lookup walks its members, so one pass over them beats a lookup per property.
    const KEYS_PER_LOOKUP: usize = 8;

    fn prepare_key(key: &str) -> String {
        key.to_owned()
    }

    fn with_string_node<T>((): &mut (), string: &str, f: impl FnOnce(DataNode<'_>) -> T) -> T {
        let node = Parsed::Str(Cow::Borrowed(string));
        f(DataNode(&node))
    }
}

/// One value of borrowed data.
#[derive(Clone, Copy)]
pub struct DataNode<'a>(&'a Data<'a>);

impl<'a> DataNode<'a> {
    pub fn new(data: &'a Data<'a>) -> Self {
        Self(data)
    }
}

#[derive(Clone, Copy)]
pub struct DataObject<'a>(&'a ObjectAsVec<'a>);

#[derive(Clone, Copy)]
pub struct DataArray<'a>(&'a [Data<'a>]);

#[derive(Clone, Copy)]
pub struct DataNumber(Number);

impl JsonNumber for DataNumber {
    fn as_u64(&self) -> Option<u64> {
        self.0.as_u64()
    }

    fn as_i64(&self) -> Option<i64> {
        self.0.as_i64()
    }

    fn as_f64(&self) -> Option<f64> {
        self.0.as_f64()
    }

    fn as_str(&self) -> Cow<'_, str> {
        Cow::Owned(number_text(&self.0))
    }

    fn to_number(&self) -> Cow<'_, serde_json::Number> {
        Cow::Owned(serde_json::Number::from(self.0))
    }

    // Native numbers keep no literal: a float was written with a fraction or an exponent.
    fn is_written_as_integer(&self) -> bool {
        !self.0.is_f64()
    }
}

impl<'a> Node<'a, Borrowed> for DataNode<'a> {
    type Object = DataObject<'a>;
    type Array = DataArray<'a>;
    type Number = DataNumber;

    fn as_object(&self) -> Option<DataObject<'a>> {
        match self.0 {
            Parsed::Object(object) => Some(DataObject(object)),
            _ => None,
        }
    }

    fn as_array(&self) -> Option<DataArray<'a>> {
        match self.0 {
            Parsed::Array(items) => Some(DataArray(items)),
            _ => None,
        }
    }

    fn as_string(&self) -> Option<Cow<'a, str>> {
        match self.0 {
            Parsed::Str(text) => Some(Cow::Borrowed(text.as_ref())),
            _ => None,
        }
    }

    fn as_number(&self) -> Option<DataNumber> {
        match self.0 {
            Parsed::Number(number) => Some(DataNumber(*number)),
            _ => None,
        }
    }

    fn as_boolean(&self) -> Option<bool> {
        match self.0 {
            Parsed::Bool(value) => Some(*value),
            _ => None,
        }
    }

    fn is_null(&self) -> bool {
        matches!(self.0, Parsed::Null)
    }

    fn json_type(&self) -> JsonType {
        match self.0 {
            Parsed::Null => JsonType::Null,
            Parsed::Bool(_) => JsonType::Boolean,
            Parsed::Number(_) => JsonType::Number,
            Parsed::Str(_) => JsonType::String,
            Parsed::Array(_) => JsonType::Array,
            Parsed::Object(_) => JsonType::Object,
        }
    }

    // `enum` and `const` compare strings on every check; only numbers and containers need the
    // general (allocating) comparison.
    fn equals_value(&self, expected: &Value) -> bool {
        match (self.0, expected) {
            (Parsed::Str(text), Value::String(other)) => text.as_ref() == other,
            (Parsed::Str(_), _) => false,
            (Parsed::Bool(value), other) => other.as_bool() == Some(*value),
            (Parsed::Null, other) => other.is_null(),
            _ => cmp::equal(&self.to_value(), expected),
        }
    }

    fn to_value(&self) -> Cow<'a, Value> {
        Cow::Owned(Value::from(self.0))
    }

    fn identity(&self) -> Option<NodeIdentity> {
        Some(NodeIdentity::new(
            std::ptr::from_ref::<Data<'a>>(self.0) as usize
        ))
    }
}

impl<'a> Object<'a, Borrowed> for DataObject<'a> {
    type Node = DataNode<'a>;
    type MemberName = &'a str;
    type MembersIter = Members<'a>;

    fn len(&self) -> usize {
        self.0.len()
    }

    fn get(&self, key: &String) -> Option<DataNode<'a>> {
        last_member(self.0, key).map(DataNode)
    }

    fn members(&self) -> Members<'a> {
        Members(self.0.as_vec().iter())
    }
}

pub struct Members<'a>(std::slice::Iter<'a, (serde_json_borrow::KeyStrType<'a>, Data<'a>)>);

impl<'a> Iterator for Members<'a> {
    type Item = (&'a str, DataNode<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(|(key, value)| (&**key, DataNode(value)))
    }
}

impl<'a> Array<'a, Borrowed> for DataArray<'a> {
    type Node = DataNode<'a>;
    type ElementsIter =
        std::iter::Map<std::slice::Iter<'a, Data<'a>>, fn(&'a Data<'a>) -> DataNode<'a>>;

    fn len(&self) -> usize {
        self.0.len()
    }

    fn elements(&self) -> Self::ElementsIter {
        self.0.iter().map(DataNode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_without_escapes_borrow_from_the_text() {
        let text = r#"{"plain": "abc", "escaped": "a\"b"}"#;
        let data = parse(text).expect("json");
        assert!(matches!(
            member(&data, "plain"),
            Some(Parsed::Str(Cow::Borrowed("abc")))
        ));
        assert!(
            matches!(member(&data, "escaped"), Some(Parsed::Str(Cow::Owned(s))) if s == "a\"b")
        );
    }

    #[test]
    fn a_repeated_name_reads_as_its_last_member() {
        let data = parse(r#"{"a": 1, "a": "two"}"#).expect("json");
        assert!(matches!(member(&data, "a"), Some(Parsed::Str(s)) if s == "two"));
        let node = DataNode::new(&data);
        let object = node.as_object().expect("object");
        assert_eq!(
            object
                .get(&"a".to_owned())
                .and_then(|n| n.as_string())
                .as_deref(),
            Some("two")
        );
        assert_eq!(object.members().count(), 2);
    }

    #[test]
    fn escaped_names_are_read() {
        let data = parse(r#"{"a\"b": true}"#).expect("json");
        assert!(matches!(member(&data, "a\"b"), Some(Parsed::Bool(true))));
    }

    #[test]
    fn numbers_keep_their_kind() {
        let data = parse(r#"[1, -2, 1.0, 1e2, 18446744073709551616]"#).expect("json");
        let node = DataNode::new(&data);
        let numbers: Vec<DataNumber> = node
            .as_array()
            .expect("array")
            .elements()
            .map(|n| n.as_number().expect("number"))
            .collect();
        assert_eq!(numbers[0].as_u64(), Some(1));
        assert_eq!(numbers[1].as_i64(), Some(-2));
        assert!(numbers[0].is_written_as_integer());
        assert!(numbers[1].is_written_as_integer());
        assert!(!numbers[2].is_written_as_integer());
        assert!(!numbers[3].is_written_as_integer());
        assert!(
            numbers[2].is_integer(),
            "1.0 is an integer value in later drafts"
        );
        assert_eq!(numbers[4].as_u64(), None);
        assert_eq!(number_text(&numbers[1].0), "-2");
    }

    #[test]
    fn equality_with_schema_values_follows_json() {
        let data = parse(r#"["x", true, null, 2, {"k": [1]}]"#).expect("json");
        let node = DataNode::new(&data);
        let items: Vec<DataNode> = node.as_array().expect("array").elements().collect();
        assert!(items[0].equals_value(&Value::from("x")));
        assert!(!items[0].equals_value(&Value::from("y")));
        assert!(!items[0].equals_value(&Value::from(1)));
        assert!(items[1].equals_value(&Value::Bool(true)));
        assert!(items[2].equals_value(&Value::Null));
        assert!(items[3].equals_value(&serde_json::json!(2.0)));
        assert!(items[4].equals_value(&serde_json::json!({"k": [1]})));
        assert!(!items[4].equals_value(&serde_json::json!({"k": [2]})));
    }
}
