//! Conditions on a workflow's data (a step's `when`): a small expression language,
//! parsed when the workflow is submitted and evaluated by walking the parsed tree.
//! Nothing in it can loop, call out, or run code.
//!
//! ```text
//! expr    := and ( "||" and )*
//! and     := unary ( "&&" unary )*
//! unary   := "!" unary | compare
//! compare := operand ( ( "==" | "!=" | "<" | "<=" | ">" | ">=" ) operand )?
//! operand := path | "exists(" path ")" | number | string | "true" | "false" | "null"
//!          | "(" expr ")"
//! ```
//!
//! Paths are those of [`super::path`]. Strings are in single or double quotes, with `\`
//! escaping the quote or a backslash. A path that selects nothing is `null` (and
//! `exists(path)` is `false`). `==` and `!=` compare any two JSON values (numbers by
//! value); `<`, `<=`, `>`, `>=` compare two numbers or two strings and are `false`
//! otherwise. `!`, `&&` and `||` take booleans: any other value counts as `false`. A
//! condition holds only when it evaluates to `true`.

use serde_json::Value;

use super::path::{Data, Path};

/// Longest condition, in bytes.
pub const MAX_LENGTH: usize = 2000;
/// Deepest nesting of parentheses and `!`.
const MAX_DEPTH: usize = 32;

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

/// A parsed condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A JSON literal.
    Literal(Value),
    /// The value a path selects (`null` if none).
    Path(Path),
    /// Whether a path selects anything.
    Exists(Path),
    /// `!e`
    Not(Box<Expr>),
    /// `a && b`
    And(Box<Expr>, Box<Expr>),
    /// `a || b`
    Or(Box<Expr>, Box<Expr>),
    /// `a op b`
    Compare(Op, Box<Expr>, Box<Expr>),
}

/// Why a condition does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ExprError(pub String);

struct Parser<'a> {
    text: &'a str,
    rest: &'a str,
    depth: usize,
}

impl<'a> Parser<'a> {
    fn error(&self, why: &str) -> ExprError {
        let at = self.text.len() - self.rest.len();
        ExprError(format!("{why} at offset {at} of {:?}", self.text))
    }

    fn skip_space(&mut self) {
        self.rest = self.rest.trim_start();
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_space();
        match self.rest.strip_prefix(token) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    fn deeper(&mut self) -> Result<(), ExprError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error("the condition nests too deeply"));
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.and()?;
        while self.eat("||") {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.unary()?;
        while self.eat("&&") {
            left = Expr::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, ExprError> {
        self.skip_space();
        if self.rest.starts_with('!') && !self.rest.starts_with("!=") {
            self.rest = &self.rest[1..];
            self.deeper()?;
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner)));
        }
        self.compare()
    }

    fn compare(&mut self) -> Result<Expr, ExprError> {
        let left = self.operand()?;
        // Longest operators first.
        for (token, op) in [
            ("==", Op::Eq),
            ("!=", Op::Ne),
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("<", Op::Lt),
            (">", Op::Gt),
        ] {
            if self.eat(token) {
                let right = self.operand()?;
                return Ok(Expr::Compare(op, Box::new(left), Box::new(right)));
            }
        }
        Ok(left)
    }

    fn path(&mut self) -> Result<Path, ExprError> {
        self.skip_space();
        let (path, rest) = Path::parse_prefix(self.rest).map_err(|e| ExprError(e.0))?;
        self.rest = rest;
        Ok(path)
    }

    fn operand(&mut self) -> Result<Expr, ExprError> {
        self.skip_space();
        if self.rest.starts_with('$') {
            return Ok(Expr::Path(self.path()?));
        }
        if self.eat("(") {
            self.deeper()?;
            let inner = self.or()?;
            self.depth -= 1;
            if !self.eat(")") {
                return Err(self.error("expected `)`"));
            }
            return Ok(inner);
        }
        if self.eat("exists(") {
            let path = self.path()?;
            if !self.eat(")") {
                return Err(self.error("expected `)` after the path of exists("));
            }
            return Ok(Expr::Exists(path));
        }
        if let Some(quote) = self.rest.chars().next().filter(|c| *c == '"' || *c == '\'') {
            let mut text = String::new();
            let mut chars = self.rest[1..].char_indices();
            loop {
                match chars.next() {
                    None => return Err(self.error("an unterminated string")),
                    Some((_, '\\')) => match chars.next() {
                        Some((_, c)) if c == quote || c == '\\' => text.push(c),
                        _ => return Err(self.error("only the quote and `\\` may be escaped")),
                    },
                    Some((i, c)) if c == quote => {
                        self.rest = &self.rest[1 + i + 1..];
                        return Ok(Expr::Literal(Value::String(text)));
                    }
                    Some((_, c)) => text.push(c),
                }
            }
        }
        let word_end = self
            .rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+' | '_')))
            .unwrap_or(self.rest.len());
        let word = &self.rest[..word_end];
        let literal = match word {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            "null" => Value::Null,
            "" => return Err(self.error("expected a path, a literal or `(`")),
            number => match serde_json::from_str::<serde_json::Number>(number) {
                Ok(n) => Value::Number(n),
                Err(_) => return Err(self.error(&format!("{number:?} is not a literal"))),
            },
        };
        self.rest = &self.rest[word_end..];
        Ok(Expr::Literal(literal))
    }
}

impl Expr {
    /// Parses a condition.
    pub fn parse(text: &str) -> Result<Expr, ExprError> {
        if text.len() > MAX_LENGTH {
            return Err(ExprError(format!(
                "a condition has at most {MAX_LENGTH} bytes"
            )));
        }
        let mut parser = Parser {
            text,
            rest: text,
            depth: 0,
        };
        let expr = parser.or()?;
        parser.skip_space();
        if !parser.rest.is_empty() {
            return Err(parser.error("unexpected text"));
        }
        Ok(expr)
    }

    /// Every path it reads.
    pub fn paths(&self) -> Vec<&Path> {
        match self {
            Expr::Literal(_) => vec![],
            Expr::Path(p) | Expr::Exists(p) => vec![p],
            Expr::Not(e) => e.paths(),
            Expr::And(a, b) | Expr::Or(a, b) | Expr::Compare(_, a, b) => {
                let mut paths = a.paths();
                paths.extend(b.paths());
                paths
            }
        }
    }

    /// Its value over `data`.
    pub fn eval(&self, data: &dyn Data) -> Value {
        match self {
            Expr::Literal(v) => v.clone(),
            Expr::Path(p) => p.select(data).unwrap_or(Value::Null),
            Expr::Exists(p) => Value::Bool(p.select(data).is_some()),
            Expr::Not(e) => Value::Bool(!e.holds(data)),
            Expr::And(a, b) => Value::Bool(a.holds(data) && b.holds(data)),
            Expr::Or(a, b) => Value::Bool(a.holds(data) || b.holds(data)),
            Expr::Compare(op, a, b) => Value::Bool(compare(*op, &a.eval(data), &b.eval(data))),
        }
    }

    /// Whether it evaluates to `true`.
    pub fn holds(&self, data: &dyn Data) -> bool {
        self.eval(data) == Value::Bool(true)
    }
}

fn compare(op: Op, a: &Value, b: &Value) -> bool {
    use std::cmp::Ordering;
    let order = match (a, b) {
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .zip(y.as_f64())
            .and_then(|(x, y)| x.partial_cmp(&y)),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    };
    match op {
        Op::Eq => order.map_or(a == b, |o| o == Ordering::Equal),
        Op::Ne => order.map_or(a != b, |o| o != Ordering::Equal),
        Op::Lt => order == Some(Ordering::Less),
        Op::Le => matches!(order, Some(Ordering::Less | Ordering::Equal)),
        Op::Gt => order == Some(Ordering::Greater),
        Op::Ge => matches!(order, Some(Ordering::Greater | Ordering::Equal)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflows::path::tests::fixture;

    fn holds(text: &str) -> bool {
        Expr::parse(text)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .holds(&fixture())
    }

    #[test]
    fn comparisons_paths_and_logic_evaluate() {
        assert!(holds("$.input.n == 3"));
        assert!(holds("$.input.n == 3.0"));
        assert!(holds("$.input.n >= 3 && $.input.n < 4"));
        assert!(holds("$.input.text == 'hello'"));
        assert!(holds("$.input.text != \"bye\""));
        assert!(holds("$.steps.fetch.output.items[0].title < 'b'"));
        assert!(holds("!($.input.n > 5) || false"));
        assert!(holds("exists($.steps.fetch.output.items[1])"));
        assert!(!holds("exists($.steps.fetch.output.items[2])"));
        assert!(holds("$.input.missing == null"));
        assert!(holds("$.steps.fetch.state == 'succeeded'"));
        assert!(!holds("$.input.text"), "only true holds");
        assert!(
            !holds("$.input.text > 2"),
            "a string and a number do not order"
        );
        assert!(holds("true && (false || !false)"));
    }

    #[test]
    fn malformed_conditions_are_refused_with_where() {
        for bad in [
            "",
            "$.input.n ==",
            "$.input.n = 3",
            "($.input.n == 3",
            "exists(3)",
            "'open",
            "$.input.n == 3 junk",
            "system('rm -rf /')",
            "$.nowhere == 1",
        ] {
            assert!(Expr::parse(bad).is_err(), "{bad:?} parsed");
        }
        let deep = format!("{}true{}", "(".repeat(40), ")".repeat(40));
        assert!(
            Expr::parse(&deep)
                .unwrap_err()
                .0
                .contains("nests too deeply")
        );
    }
}
