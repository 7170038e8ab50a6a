//! Field deserializers that accept what Apollo actually sends instead of failing the whole object.

use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// A string field that may arrive as a string, a number, a boolean or `null`; anything else is `None`.
pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(value_to_string(&Value::deserialize(d)?))
}

/// A list field: `null`, a missing field or a non-array becomes empty.
pub fn list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Value>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Array(items) => items,
        _ => Vec::new(),
    })
}

/// An optional integer that may be a number or a numeric string.
pub fn int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

/// A scalar JSON value as a non-empty string.
pub fn value_to_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The string at `key` of an object, leniently.
pub fn str_at(obj: &Value, key: &str) -> Option<String> {
    obj.get(key).and_then(value_to_string)
}
