//! `echo`: returns JSON unchanged, or reshaped.
//!
//! - `echo`: returns the input as is, and logs `echo: <n> bytes` (n = the size of
//!   the input as re-serialized compactly).
//! - `transform`: `{ "data": {..}, "pick"?: [keys], "rename"?: {old: new},
//!   "uppercase"?: bool }` keeps only the picked keys (if given), then renames keys,
//!   then uppercases every string value, however deep.

use std::collections::BTreeMap;

use corral_sdk::{Error, info};
use serde::Deserialize;
use serde_json::{Map, Value};

fn echo(input: Value) -> Result<Value, Error> {
    info!("echo: {} bytes", serde_json::to_string(&input)?.len());
    Ok(input)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Transform {
    data: Value,
    pick: Option<Vec<String>>,
    #[serde(default)]
    rename: BTreeMap<String, String>,
    #[serde(default)]
    uppercase: bool,
}

const TRANSFORM_SCHEMA: &str = r#"{
  "type": "object",
  "required": ["data"],
  "additionalProperties": false,
  "properties": {
    "data": {"type": "object"},
    "pick": {"type": "array", "items": {"type": "string"}},
    "rename": {"type": "object", "additionalProperties": {"type": "string"}},
    "uppercase": {"type": "boolean"}
  }
}"#;

fn transform(input: Transform) -> Result<Value, Error> {
    let Value::Object(data) = input.data else {
        return Err(Error::invalid_input("`data` must be a JSON object"));
    };
    let picked: Map<String, Value> = match &input.pick {
        Some(keys) => data.into_iter().filter(|(k, _)| keys.contains(k)).collect(),
        None => data,
    };
    let mut out = Map::new();
    for (key, value) in picked {
        let key = input.rename.get(&key).cloned().unwrap_or(key);
        out.insert(key, if input.uppercase { uppercase(value) } else { value });
    }
    Ok(Value::Object(out))
}

fn uppercase(value: Value) -> Value {
    match value {
        Value::String(s) => Value::String(s.to_uppercase()),
        Value::Array(items) => Value::Array(items.into_iter().map(uppercase).collect()),
        Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (k, uppercase(v))).collect()),
        other => other,
    }
}

corral_sdk::agent! {
    description: "Returns JSON unchanged, or picks, renames and uppercases its fields",
    actions: {
        echo: "Return the input unchanged",
        transform: "Pick, rename and uppercase the fields of an object" (schema = TRANSFORM_SCHEMA),
    }
}
