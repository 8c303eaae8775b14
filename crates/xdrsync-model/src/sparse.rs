//! Reading only the fields a normalizer looks at.
//!
//! An incident page is mostly alert entities and evidence that the normalized schema reduces
//! to a count, yet a full [`serde_json::Value`] of it allocates a string and a map entry for
//! every key and value (a third of the sync's CPU was spent so). [`parse`] reads the same text
//! into a `Value` that holds only the fields a [`Fields`] list names, skipping the rest
//! without allocating, so normalizing it gives exactly what normalizing the full `Value` gives
//! (a test per normalizer holds them equal). The raw JSON is stored separately, untouched:
//! these values are normalizer input only.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// What to keep of one field.
#[derive(Debug, Clone, Copy)]
pub enum Keep {
    /// The whole value.
    Value,
    /// An array of objects, each kept as the nested list says (anything else whole).
    Each(&'static Fields),
    /// An array of which only the length matters: kept as that many `null`s.
    Count,
}

/// The fields of an object to keep; every other field is skipped.
#[derive(Debug)]
pub struct Fields(pub &'static [(&'static str, Keep)]);

impl Fields {
    fn find(&self, key: &str) -> Option<(&'static str, Keep)> {
        self.0.iter().find(|(k, _)| *k == key).copied()
    }
}

/// Parses `text` keeping, of its top-level object, only `fields`. A value that is not an
/// object is returned whole (the normalizer names its type in the error).
pub fn parse(text: &str, fields: &'static Fields) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let v = Shape::Object(fields).deserialize(&mut de)?;
    de.end()?;
    Ok(v)
}

/// How a value is read.
#[derive(Clone, Copy)]
enum Shape {
    /// Whole.
    Full,
    /// An object: only these fields.
    Object(&'static Fields),
    /// An array of objects with these fields.
    Each(&'static Fields),
    /// An array: only its length.
    Count,
}

impl<'de> DeserializeSeed<'de> for Shape {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Shape {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        match self {
            Shape::Count => {
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    out.push(Value::Null);
                }
            }
            Shape::Each(fields) => {
                while let Some(v) = seq.next_element_seed(Shape::Object(fields))? {
                    out.push(v);
                }
            }
            Shape::Full | Shape::Object(_) => {
                while let Some(v) = seq.next_element::<Value>()? {
                    out.push(v);
                }
            }
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        match self {
            Shape::Object(fields) => {
                while let Some(key) = map.next_key_seed(KeyOf(fields))? {
                    match key {
                        None => {
                            map.next_value::<IgnoredAny>()?;
                        }
                        Some((name, keep)) => {
                            let shape = match keep {
                                Keep::Value => Shape::Full,
                                Keep::Each(f) => Shape::Each(f),
                                Keep::Count => Shape::Count,
                            };
                            out.insert(name.to_owned(), map.next_value_seed(shape)?);
                        }
                    }
                }
            }
            Shape::Full | Shape::Each(_) | Shape::Count => {
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    out.insert(k, v);
                }
            }
        }
        Ok(Value::Object(out))
    }
}

/// A key, matched against the kept fields without allocating: `Some` when kept.
struct KeyOf(&'static Fields);

impl<'de> DeserializeSeed<'de> for KeyOf {
    type Value = Option<(&'static str, Keep)>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyOf {
    type Value = Option<(&'static str, Keep)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(self.0.find(v))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    static INNER: Fields = Fields(&[("a", Keep::Value), ("n", Keep::Count)]);
    static OUTER: Fields = Fields(&[
        ("id", Keep::Value),
        ("items", Keep::Each(&INNER)),
        ("tags", Keep::Value),
    ]);

    #[test]
    fn keeps_only_the_named_fields_at_every_level() {
        let text = r#"{"id": 7, "skip": {"deep": [1, 2, {"x": "y"}]}, "tags": ["t"],
            "items": [{"a": "b", "n": [{"big": 1}, 2, "3"], "c": 1}, 5]}"#;
        assert_eq!(
            parse(text, &OUTER).unwrap(),
            json!({"id": 7, "tags": ["t"], "items": [{"a": "b", "n": [null, null, null]}, 5]})
        );
        assert!(OUTER.find("id").is_some() && OUTER.find("skip").is_none());
    }

    #[test]
    fn other_shapes_come_back_whole_and_bad_json_is_an_error() {
        assert_eq!(
            parse("[1, {\"a\": 2}]", &OUTER).unwrap(),
            json!([1, {"a": 2}])
        );
        assert_eq!(parse("\"s\"", &OUTER).unwrap(), json!("s"));
        assert_eq!(
            parse(r#"{"items": {"a": 1, "z": 2}}"#, &OUTER).unwrap(),
            json!({"items": {"a": 1, "z": 2}})
        );
        assert!(parse(r#"{"id": 1"#, &OUTER).is_err());
        assert!(parse(r#"{"id": 1} x"#, &OUTER).is_err());
        // Escaped keys still match.
        assert_eq!(
            parse(r#"{"\u0069d": 1}"#, &OUTER).unwrap(),
            json!({"id": 1})
        );
    }
}
