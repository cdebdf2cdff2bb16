//! Text as both databases can hold it.
//!
//! Postgres `text` and `jsonb` cannot hold the NUL character (U+0000): a value with
//! one fails the whole statement. Guests may emit anything, so what they emit is made
//! storable before it is written — each NUL replaced by U+FFFD (the replacement
//! character) and counted, so the record can say how many were replaced; a JSON key
//! that would then collide with another takes further replacement characters, so no
//! entry is lost. Both backends store the same text. Text the API receives is refused
//! instead (`400 invalid_text`): see `api::extract`.

use serde_json::Value;

/// The character that takes a NUL's place.
pub const REPLACEMENT: char = '\u{FFFD}';

/// Replaces every NUL in `text`; returns how many there were.
pub fn replace_nul(text: &mut String) -> u64 {
    let count = text.matches('\0').count() as u64;
    if count > 0 {
        *text = text.replace('\0', "\u{FFFD}");
    }
    count
}

/// [`replace_nul`] for an optional text.
pub fn replace_nul_opt(text: &mut Option<String>) -> u64 {
    text.as_mut().map_or(0, replace_nul)
}

/// Replaces every NUL in the strings and keys of `value`; returns how many there were.
pub fn replace_nul_json(value: &mut Value) -> u64 {
    match value {
        Value::String(s) => replace_nul(s),
        Value::Array(items) => items.iter_mut().map(replace_nul_json).sum(),
        Value::Object(map) => {
            let mut count = 0;
            if map.keys().any(|k| k.contains('\0')) {
                // Keys without NUL keep their place; a replaced key that would land on
                // one already there (`"a\0"` next to `"a\u{FFFD}"`) takes another
                // replacement character, so no entry is lost.
                let (dirty, clean): (Vec<_>, Vec<_>) = std::mem::take(map)
                    .into_iter()
                    .partition(|(k, _)| k.contains('\0'));
                map.extend(clean);
                for (mut key, value) in dirty {
                    count += replace_nul(&mut key);
                    while map.contains_key(&key) {
                        key.push(REPLACEMENT);
                    }
                    map.insert(key, value);
                }
            }
            count + map.values_mut().map(replace_nul_json).sum::<u64>()
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_nul_in_a_string_is_replaced_and_counted() {
        let mut text = "a\0b\0\0".to_string();
        assert_eq!(replace_nul(&mut text), 3);
        assert_eq!(text, "a\u{FFFD}b\u{FFFD}\u{FFFD}");
        let mut clean = "plain".to_string();
        assert_eq!(replace_nul(&mut clean), 0);
    }

    #[test]
    fn nuls_in_json_strings_and_keys_are_replaced_everywhere() {
        let mut value = json!({ "k\u{0}": ["x\u{0}", { "deep": "\u{0}" }], "n": 1 });
        assert_eq!(replace_nul_json(&mut value), 3);
        assert_eq!(
            value,
            json!({ "k\u{FFFD}": ["x\u{FFFD}", { "deep": "\u{FFFD}" }], "n": 1 })
        );
    }

    #[test]
    fn a_key_that_becomes_another_keys_spelling_keeps_its_entry() {
        let mut value = json!({ "a\u{0}": 1, "a\u{FFFD}": 2, "\u{0}": {}, "\u{FFFD}": {} });
        assert_eq!(replace_nul_json(&mut value), 2);
        assert_eq!(
            value,
            json!({ "a\u{FFFD}": 2, "a\u{FFFD}\u{FFFD}": 1, "\u{FFFD}": {}, "\u{FFFD}\u{FFFD}": {} })
        );
    }
}
