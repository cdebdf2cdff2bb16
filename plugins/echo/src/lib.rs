//! `echo`: the smallest useful agent, and a fixture for the host's tests.
//!
//! # Actions
//!
//! - `echo`: returns the input JSON value unchanged, re-serialized compactly (no
//!   whitespace, object keys in sorted order), and logs one info line,
//!   `echo: {n} bytes`, where `n` is the byte length of that output.
//! - `transform`: takes `{ "data": {..}, "pick"?: [..], "rename"?: {..}, "uppercase"?: bool }`
//!   and returns `data` with, in this order:
//!   1. only the keys listed in `pick` kept, if `pick` is given (unknown keys are ignored);
//!   2. keys renamed as `rename` says (`{"old": "new"}`; missing keys are ignored, and a
//!      renamed value replaces a key of the same name already present);
//!   3. if `uppercase` is true, every string value uppercased, recursively through
//!      nested arrays and objects (keys are left alone).
//!
//!   Keys come back sorted. `data` that is not an object, or an unknown field, is
//!   `invalid_input`.

use corral_sdk::{Error, info};
use serde::Deserialize;
use serde_json::{Map, Value};

/// The input schema `transform` publishes.
const TRANSFORM_SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "properties": {
    "data": { "type": "object", "description": "The object to transform." },
    "pick": { "type": "array", "items": { "type": "string" }, "description": "Keep only these keys." },
    "rename": { "type": "object", "additionalProperties": { "type": "string" }, "description": "Map of old key to new key." },
    "uppercase": { "type": "boolean", "default": false, "description": "Uppercase every string value, recursively." }
  },
  "required": ["data"],
  "additionalProperties": false
}"#;

fn echo(input: Value) -> Result<Value, Error> {
    info!("echo: {} bytes", serde_json::to_string(&input)?.len());
    Ok(input)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Transform {
    data: Value,
    pick: Option<Vec<String>>,
    rename: Option<Map<String, Value>>,
    #[serde(default)]
    uppercase: bool,
}

fn transform(input: Transform) -> Result<Value, Error> {
    let Value::Object(mut data) = input.data else {
        return Err(Error::invalid_input("`data` must be a JSON object"));
    };
    if let Some(pick) = input.pick {
        data.retain(|key, _| pick.contains(key));
    }
    if let Some(rename) = input.rename {
        let mut renamed = Vec::new();
        for (old, new) in rename {
            let Value::String(new) = new else {
                return Err(Error::invalid_input(format!(
                    "`rename.{old}` must be a string"
                )));
            };
            if let Some(value) = data.remove(&old) {
                renamed.push((new, value));
            }
        }
        data.extend(renamed);
    }
    let mut data = Value::Object(data);
    if input.uppercase {
        uppercase(&mut data);
    }
    Ok(data)
}

fn uppercase(value: &mut Value) {
    match value {
        Value::String(s) => *s = s.to_uppercase(),
        Value::Array(items) => items.iter_mut().for_each(uppercase),
        Value::Object(map) => map.values_mut().for_each(uppercase),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

corral_sdk::agent! {
    description: "Echo and transform JSON",
    actions: {
        echo: "Return the input unchanged",
        transform: "Pick, rename and uppercase fields" (schema = TRANSFORM_SCHEMA),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(input: Value) -> Result<Value, Error> {
        transform(serde_json::from_value(input).unwrap())
    }

    #[test]
    fn transform_picks_then_renames_then_uppercases_nested_strings() {
        let out = run(json!({
            "data": { "a": "x", "b": { "c": ["y", 1] }, "d": "dropped" },
            "pick": ["a", "b"],
            "rename": { "a": "alpha", "d": "delta" },
            "uppercase": true,
        }))
        .unwrap();
        assert_eq!(out, json!({ "b": { "c": ["Y", 1] }, "alpha": "X" }));
    }

    #[test]
    fn data_that_is_not_an_object_is_invalid_input() {
        assert_eq!(
            run(json!({ "data": [1] })).unwrap_err().code(),
            "invalid_input"
        );
    }
}
