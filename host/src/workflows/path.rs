//! Paths into a workflow's data, and input templates built from them.
//!
//! A path is a small subset of JSONPath: `$.input` or `$.steps.NAME.output` (the
//! workflow's input, or a step's output), then any number of `.key`, `["any key"]` or
//! `[index]` selectors, e.g. `$.steps.fetch.output.items[0].title`. `$.steps.NAME.state`
//! is the step's state (`succeeded`, `skipped`, …). Keys after a dot are letters,
//! digits, `_` and `-`; any other key goes in `["…"]` (with `\"` and `\\` escapes).
//!
//! A template is JSON in which every string that starts with `$.` is a path, replaced by
//! the value it selects (`null` if it selects nothing, e.g. the output of a skipped
//! step); everything else is kept as it is. A string that should start
//! with `$.` literally is written with one more `$`: `"$$.50"` is the string `"$.50"`
//! (any string starting with `$$` loses its first `$`).
//!
//! Paths are parsed when a workflow is submitted (so a bad one is refused before
//! anything is stored) and evaluated by walking JSON: nothing else is run.

use std::collections::BTreeSet;

use serde_json::Value;

/// One selector after the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// An object's member.
    Key(String),
    /// An array's element.
    Index(usize),
}

/// Where a path starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Root {
    /// `$.input`: the workflow's input.
    Input,
    /// `$.steps.NAME.output`: a step's output.
    Output(String),
    /// `$.steps.NAME.state`: a step's state.
    State(String),
}

/// A parsed path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    /// Where it starts.
    pub root: Root,
    /// What it selects from there.
    pub selectors: Vec<Selector>,
}

/// Why a path does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PathError(pub String);

/// What paths are evaluated against: the workflow's input and its steps' outputs and
/// states.
pub trait Data {
    /// The workflow's input.
    fn input(&self) -> &Value;
    /// A step's output, if it has one.
    fn output(&self, step: &str) -> Option<&Value>;
    /// A step's state, if the step exists.
    fn state(&self, step: &str) -> Option<&str>;
}

impl Path {
    /// Parses `text`, which must start with `$.`.
    pub fn parse(text: &str) -> Result<Path, PathError> {
        let (path, rest) = Path::parse_prefix(text)?;
        if !rest.is_empty() {
            return Err(PathError(format!(
                "path {text:?} has unexpected text at {rest:?}"
            )));
        }
        Ok(path)
    }

    /// Parses a path at the start of `text`; returns it and the text after it.
    pub fn parse_prefix(text: &str) -> Result<(Path, &str), PathError> {
        let bad = |why: &str| PathError(format!("path {text:?}: {why}"));
        let mut rest = text
            .strip_prefix('$')
            .ok_or_else(|| bad("a path starts with `$.`"))?;
        let mut selectors = Vec::new();
        loop {
            if let Some(after) = rest.strip_prefix('.') {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
                    .unwrap_or(after.len());
                if end == 0 {
                    return Err(bad("a `.` must be followed by a key"));
                }
                selectors.push(Selector::Key(after[..end].to_string()));
                rest = &after[end..];
            } else if let Some(after) = rest.strip_prefix('[') {
                if let Some(quoted) = after.strip_prefix('"') {
                    let mut key = String::new();
                    let mut chars = quoted.char_indices();
                    let close = loop {
                        match chars.next() {
                            None => return Err(bad("an unterminated `[\"`")),
                            Some((_, '\\')) => match chars.next() {
                                Some((_, c @ ('"' | '\\'))) => key.push(c),
                                _ => return Err(bad("only `\\\"` and `\\\\` escape in a key")),
                            },
                            Some((i, '"')) => break i,
                            Some((_, c)) => key.push(c),
                        }
                    };
                    rest = quoted[close + 1..]
                        .strip_prefix(']')
                        .ok_or_else(|| bad("a quoted key must be followed by `]`"))?;
                    selectors.push(Selector::Key(key));
                } else {
                    let end = after.find(']').ok_or_else(|| bad("an unterminated `[`"))?;
                    let index = after[..end]
                        .parse::<usize>()
                        .map_err(|_| bad("`[…]` holds an index (0, 1, …) or a quoted key"))?;
                    selectors.push(Selector::Index(index));
                    rest = &after[end + 1..];
                }
            } else {
                break;
            }
        }
        let mut selectors = selectors.into_iter();
        let root = match (selectors.next(), selectors.next(), selectors.next()) {
            (Some(Selector::Key(k)), next, third) if k == "input" => {
                let mut rebuilt: Vec<Selector> = next.into_iter().chain(third).collect();
                rebuilt.extend(selectors);
                return Ok((
                    Path {
                        root: Root::Input,
                        selectors: rebuilt,
                    },
                    rest,
                ));
            }
            (Some(Selector::Key(k)), Some(Selector::Key(step)), Some(Selector::Key(what)))
                if k == "steps" && what == "output" =>
            {
                Root::Output(step)
            }
            (Some(Selector::Key(k)), Some(Selector::Key(step)), Some(Selector::Key(what)))
                if k == "steps" && what == "state" =>
            {
                Root::State(step)
            }
            _ => {
                return Err(bad(
                    "a path starts with `$.input` or `$.steps.NAME.output` (or `.state`)",
                ));
            }
        };
        let selectors: Vec<Selector> = selectors.collect();
        if matches!(root, Root::State(_)) && !selectors.is_empty() {
            return Err(bad("a step's state has nothing to select"));
        }
        Ok((Path { root, selectors }, rest))
    }

    /// The step this path reads, if any.
    pub fn step(&self) -> Option<&str> {
        match &self.root {
            Root::Input => None,
            Root::Output(step) | Root::State(step) => Some(step),
        }
    }

    /// The value selected, or `None` when something on the way is missing.
    pub fn select(&self, data: &dyn Data) -> Option<Value> {
        let start = match &self.root {
            Root::Input => data.input(),
            Root::Output(step) => data.output(step)?,
            Root::State(step) => return data.state(step).map(|s| Value::String(s.into())),
        };
        let mut at = start;
        for selector in &self.selectors {
            at = match (selector, at) {
                (Selector::Key(key), Value::Object(map)) => map.get(key)?,
                (Selector::Index(i), Value::Array(items)) => items.get(*i)?,
                _ => return None,
            };
        }
        Some(at.clone())
    }
}

/// A string in a template: a path, a literal with its escape removed, or plain text.
enum Text<'a> {
    Path(&'a str),
    Literal(&'a str),
}

fn classify(text: &str) -> Text<'_> {
    if let Some(unescaped) = text.strip_prefix('$').filter(|t| t.starts_with('$')) {
        Text::Literal(unescaped)
    } else if text.starts_with("$.") {
        Text::Path(text)
    } else {
        Text::Literal(text)
    }
}

/// Checks every path in a template; returns the steps they read.
pub fn template_steps(template: &Value) -> Result<BTreeSet<String>, PathError> {
    let mut steps = BTreeSet::new();
    visit(template, &mut |text| {
        if let Text::Path(path) = classify(text) {
            let path = Path::parse(path)?;
            steps.extend(path.step().map(str::to_string));
        }
        Ok(())
    })?;
    Ok(steps)
}

fn visit(value: &Value, f: &mut dyn FnMut(&str) -> Result<(), PathError>) -> Result<(), PathError> {
    match value {
        Value::String(text) => f(text),
        Value::Array(items) => items.iter().try_for_each(|v| visit(v, f)),
        Value::Object(map) => map.values().try_for_each(|v| visit(v, f)),
        _ => Ok(()),
    }
}

/// Builds the value of a template; a path that selects nothing gives `null`.
pub fn resolve(template: &Value, data: &dyn Data) -> Result<Value, PathError> {
    Ok(match template {
        Value::String(text) => match classify(text) {
            // Nothing selected (a skipped step's output, an absent member) is null,
            // as in conditions.
            Text::Path(path) => Path::parse(path)?.select(data).unwrap_or(Value::Null),
            Text::Literal(literal) => Value::String(literal.to_string()),
        },
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| resolve(v, data))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), resolve(v, data)?)))
                .collect::<Result<_, PathError>>()?,
        ),
        other => other.clone(),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::HashMap;

    use serde_json::json;

    use super::*;

    pub(crate) struct Fixture {
        pub input: Value,
        pub outputs: HashMap<String, Value>,
    }

    impl Data for Fixture {
        fn input(&self) -> &Value {
            &self.input
        }
        fn output(&self, step: &str) -> Option<&Value> {
            self.outputs.get(step)
        }
        fn state(&self, step: &str) -> Option<&str> {
            self.outputs.contains_key(step).then_some("succeeded")
        }
    }

    pub(crate) fn fixture() -> Fixture {
        Fixture {
            input: json!({ "text": "hello", "n": 3 }),
            outputs: HashMap::from([(
                "fetch".to_string(),
                json!({ "items": [{ "title": "a" }, { "title": "b" }], "odd key": 1 }),
            )]),
        }
    }

    #[test]
    fn paths_select_from_the_input_and_step_outputs() {
        let data = fixture();
        let get = |p: &str| Path::parse(p).unwrap().select(&data);
        assert_eq!(get("$.input.text"), Some(json!("hello")));
        assert_eq!(get("$.input"), Some(data.input.clone()));
        assert_eq!(get("$.steps.fetch.output.items[1].title"), Some(json!("b")));
        assert_eq!(get("$.steps.fetch.output[\"odd key\"]"), Some(json!(1)));
        assert_eq!(get("$.steps.fetch.state"), Some(json!("succeeded")));
        assert_eq!(get("$.steps.fetch.output.items[5]"), None);
        assert_eq!(get("$.steps.other.output"), None);
    }

    #[test]
    fn malformed_paths_are_refused() {
        for bad in [
            "$",
            "$.",
            "$.nothing",
            "$.steps.fetch",
            "$.steps.fetch.input",
            "$.input[x]",
            "$.input[\"open",
            "$.steps.fetch.state.x",
            "$.input.a b",
        ] {
            assert!(Path::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn templates_replace_paths_and_keep_escaped_literals() {
        let data = fixture();
        let template = json!({
            "text": "$.input.text",
            "first": "$.steps.fetch.output.items[0]",
            "price": "$$.50",
            "plain": "cost: $.5",
            "list": ["$.input.n", 7],
        });
        assert_eq!(
            resolve(&template, &data).unwrap(),
            json!({
                "text": "hello",
                "first": { "title": "a" },
                "price": "$.50",
                "plain": "cost: $.5",
                "list": [3, 7],
            })
        );
        assert_eq!(
            template_steps(&template).unwrap(),
            BTreeSet::from(["fetch".to_string()])
        );
        assert_eq!(
            resolve(
                &json!({ "x": "$.input.nope", "y": "$.steps.skipped.output" }),
                &data
            )
            .unwrap(),
            json!({ "x": null, "y": null })
        );
    }
}
