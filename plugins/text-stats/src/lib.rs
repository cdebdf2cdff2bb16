//! `text-stats`: measures, ranks and classifies text.
//!
//! # Definitions
//!
//! - A **character** is a Unicode scalar value (`str::chars`); **bytes** are UTF-8 bytes.
//! - A **word** is a maximal run of alphanumeric characters (`char::is_alphanumeric`,
//!   so digits count and "2024" is a word). An apostrophe (`'` or `’`) or a hyphen
//!   directly between two alphanumeric characters joins them: "don't" and
//!   "state-of-the-art" are one word each. A `.` or `,` directly between two ASCII
//!   digits joins them too, so "3.14" and "1,000" are one word each. Everything else
//!   separates words.
//! - A **line** is what `str::lines` yields: an empty text has 0 lines, and a final
//!   line ending does not start another line.
//! - A **sentence** is a stretch of text that contains at least one word and ends at a
//!   run of terminators (`.`, `!`, `?`, `…`) or at the end of the text. A `.` directly
//!   between two digits ("3.14") is not a terminator. Abbreviations are not special:
//!   "e.g. this" counts as two sentences.
//! - The **average word length** is the mean number of characters per word, rounded
//!   to 2 decimals; 0 when there are no words.
//!
//! # Actions
//!
//! - `stats` `{ "text" }` → `{ "chars", "bytes", "words", "lines", "sentences",
//!   "average_word_length" }`.
//! - `top_words` `{ "text", "limit"?: 10, "ignore_stopwords"?: true }` →
//!   `{ "words": [{ "word", "count" }] }`: words lowercased, at most `limit` of them,
//!   sorted by count (highest first), then by word. With `ignore_stopwords`, common
//!   English function words ([`STOPWORDS`]) are not counted.
//! - `classify` `{ "text" }` → `{ "label", "score", "matched" }`: a rule-based
//!   sentiment. Each word in [`POSITIVE`] adds 1 to `score` and each word in
//!   [`NEGATIVE`] subtracts 1, unless one of the two words before it is a negation
//!   ([`NEGATIONS`], e.g. "not good", "never really bad"), which flips its sign. A negation never reaches past the end of its sentence.
//!   `matched` lists each counted word in text order, prefixed by its negation and a
//!   space when negated ("not good"). `label` is `positive` when the score is above 0,
//!   `negative` when below, and `neutral` otherwise.

// A BTreeMap, not a HashMap: no random seed, so a call costs the same fuel every time.
use std::collections::BTreeMap;

use corral_sdk::Error;
use serde::{Deserialize, Serialize};

/// Words that carry little meaning on their own; `top_words` skips them by default.
pub const STOPWORDS: &[&str] = &[
    "a", "about", "after", "all", "also", "am", "an", "and", "any", "are", "as", "at", "be",
    "because", "been", "before", "being", "but", "by", "can", "could", "did", "do", "does", "for",
    "from", "had", "has", "have", "he", "her", "here", "him", "his", "how", "i", "if", "in",
    "into", "is", "it", "its", "it's", "just", "me", "more", "my", "no", "not", "of", "on", "or",
    "our", "out", "over", "she", "so", "some", "than", "that", "the", "their", "them", "then",
    "there", "these", "they", "this", "those", "to", "too", "up", "us", "very", "was", "we",
    "were", "what", "when", "where", "which", "while", "who", "why", "will", "with", "would",
    "you", "your",
];

/// Words that count +1 towards a positive sentiment.
pub const POSITIVE: &[&str] = &[
    "amazing",
    "awesome",
    "beautiful",
    "best",
    "better",
    "brilliant",
    "delightful",
    "easy",
    "excellent",
    "fantastic",
    "fast",
    "fine",
    "glad",
    "good",
    "great",
    "happy",
    "helpful",
    "impressive",
    "love",
    "loved",
    "lovely",
    "nice",
    "perfect",
    "pleasant",
    "reliable",
    "recommend",
    "satisfied",
    "smooth",
    "superb",
    "thanks",
    "wonderful",
    "works",
];

/// Words that count −1 towards a negative sentiment.
pub const NEGATIVE: &[&str] = &[
    "angry",
    "annoying",
    "awful",
    "bad",
    "broken",
    "buggy",
    "crash",
    "crashed",
    "crashes",
    "disappointed",
    "disappointing",
    "fail",
    "failed",
    "fails",
    "hate",
    "hated",
    "horrible",
    "poor",
    "problem",
    "slow",
    "terrible",
    "ugly",
    "unhappy",
    "unreliable",
    "useless",
    "worse",
    "worst",
    "wrong",
];

/// Words that flip the sentiment of a sentiment word up to two words after them.
pub const NEGATIONS: &[&str] = &[
    "not",
    "no",
    "never",
    "neither",
    "nor",
    "hardly",
    "isn't",
    "wasn't",
    "aren't",
    "weren't",
    "don't",
    "doesn't",
    "didn't",
    "can't",
    "cannot",
    "couldn't",
    "won't",
    "wouldn't",
    "shouldn't",
    "dont",
    "doesnt",
    "didnt",
    "isnt",
    "wasnt",
    "cant",
    "wont",
];

const TEXT_SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "properties": { "text": { "type": "string" } },
  "required": ["text"],
  "additionalProperties": false
}"#;

const TOP_WORDS_SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "properties": {
    "text": { "type": "string" },
    "limit": { "type": "integer", "minimum": 0, "default": 10 },
    "ignore_stopwords": { "type": "boolean", "default": true }
  },
  "required": ["text"],
  "additionalProperties": false
}"#;

/// Splits `text` into words, as the crate docs define them.
fn words(text: &str) -> Vec<&str> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut words = Vec::new();
    let mut start = None;
    for (i, &(at, c)) in chars.iter().enumerate() {
        let next = chars.get(i + 1).map(|&(_, next)| next);
        let joins = start.is_some()
            && match c {
                '\'' | '’' | '-' => next.is_some_and(char::is_alphanumeric),
                '.' | ',' => {
                    chars[i - 1].1.is_ascii_digit() && next.is_some_and(|n| n.is_ascii_digit())
                }
                _ => false,
            };
        if c.is_alphanumeric() || joins {
            start.get_or_insert(at);
        } else if let Some(s) = start.take() {
            words.push(&text[s..at]);
        }
    }
    if let Some(s) = start {
        words.push(&text[s..]);
    }
    words
}

fn is_terminator(chars: &[char], i: usize) -> bool {
    match chars[i] {
        '!' | '?' | '…' => true,
        '.' => {
            let digit_before = i > 0 && chars[i - 1].is_ascii_digit();
            let digit_after = chars.get(i + 1).is_some_and(char::is_ascii_digit);
            !(digit_before && digit_after)
        }
        _ => false,
    }
}

fn sentences(text: &str) -> u64 {
    let chars: Vec<char> = text.chars().collect();
    let (mut count, mut has_word) = (0, false);
    for i in 0..chars.len() {
        if is_terminator(&chars, i) {
            if has_word {
                count += 1;
            }
            has_word = false;
        } else if chars[i].is_alphanumeric() {
            has_word = true;
        }
    }
    count + u64::from(has_word)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Text {
    text: String,
}

#[derive(Serialize)]
struct Stats {
    chars: u64,
    bytes: u64,
    words: u64,
    lines: u64,
    sentences: u64,
    average_word_length: f64,
}

fn stats(input: Text) -> Result<Stats, Error> {
    let text = input.text;
    let words = words(&text);
    let letters: usize = words.iter().map(|w| w.chars().count()).sum();
    let average = if words.is_empty() {
        0.0
    } else {
        (letters as f64 / words.len() as f64 * 100.0).round() / 100.0
    };
    Ok(Stats {
        chars: text.chars().count() as u64,
        bytes: text.len() as u64,
        words: words.len() as u64,
        lines: text.lines().count() as u64,
        sentences: sentences(&text),
        average_word_length: average,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TopWords {
    text: String,
    #[serde(default = "ten")]
    limit: usize,
    #[serde(default = "yes")]
    ignore_stopwords: bool,
}

fn ten() -> usize {
    10
}

fn yes() -> bool {
    true
}

#[derive(Serialize)]
struct WordCount {
    word: String,
    count: u64,
}

#[derive(Serialize)]
struct Ranking {
    words: Vec<WordCount>,
}

fn top_words(input: TopWords) -> Result<Ranking, Error> {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for word in words(&input.text) {
        let word = normalize(word);
        if input.ignore_stopwords && STOPWORDS.contains(&word.as_str()) {
            continue;
        }
        *counts.entry(word).or_default() += 1;
    }
    let mut words: Vec<WordCount> = counts
        .into_iter()
        .map(|(word, count)| WordCount { word, count })
        .collect();
    words.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.word.cmp(&b.word)));
    words.truncate(input.limit);
    Ok(Ranking { words })
}

/// Lowercases a word and spells its apostrophes `'`, so "Don’t" matches "don't".
fn normalize(word: &str) -> String {
    word.to_lowercase().replace('’', "'")
}

#[derive(Serialize)]
struct Sentiment {
    label: &'static str,
    score: i64,
    matched: Vec<String>,
}

fn classify(input: Text) -> Result<Sentiment, Error> {
    let (mut score, mut matched) = (0i64, Vec::new());
    // A negation only reaches words in its own sentence: "Not good. Terrible." is -2.
    for sentence in input.text.split(['.', '!', '?', '…']) {
        let words: Vec<String> = words(sentence).into_iter().map(normalize).collect();
        for (i, word) in words.iter().enumerate() {
            let value = if POSITIVE.contains(&word.as_str()) {
                1
            } else if NEGATIVE.contains(&word.as_str()) {
                -1
            } else {
                continue;
            };
            let negation = words[i.saturating_sub(2)..i]
                .iter()
                .rev()
                .find(|w| NEGATIONS.contains(&w.as_str()));
            match negation {
                Some(negation) => {
                    score -= value;
                    matched.push(format!("{negation} {word}"));
                }
                None => {
                    score += value;
                    matched.push(word.clone());
                }
            }
        }
    }
    let label = match score {
        s if s > 0 => "positive",
        s if s < 0 => "negative",
        _ => "neutral",
    };
    Ok(Sentiment {
        label,
        score,
        matched,
    })
}

corral_sdk::agent! {
    description: "Measures, ranks and classifies text: counts, top words and a rule-based sentiment",
    actions: {
        stats: "Count characters, bytes, words, lines and sentences" (schema = TEXT_SCHEMA),
        top_words: "List the most frequent words" (schema = TOP_WORDS_SCHEMA),
        classify: "Classify sentiment as positive, negative or neutral" (schema = TEXT_SCHEMA),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apostrophes_and_hyphens_inside_a_word_join_it() {
        assert_eq!(
            words("Don't stop -- state-of-the-art 'quoted' 1,000.5 x.5"),
            [
                "Don't",
                "stop",
                "state-of-the-art",
                "quoted",
                "1,000.5",
                "x",
                "5"
            ]
        );
    }

    #[test]
    fn a_decimal_point_does_not_end_a_sentence() {
        assert_eq!(sentences("Pi is 3.14. Really?! Yes"), 3);
        assert_eq!(sentences("..."), 0);
    }

    fn text(s: &str) -> Text {
        Text { text: s.into() }
    }

    #[test]
    fn stats_count_everything() {
        let s = stats(text("Hello, world! It's 3.5 degrees.\nBye")).unwrap();
        assert_eq!(
            (s.chars, s.bytes, s.words, s.lines, s.sentences),
            (35, 35, 6, 2, 3)
        );
        assert_eq!(s.average_word_length, 4.5);
    }

    #[test]
    fn top_words_sort_by_count_then_word_and_skip_stopwords() {
        let input = TopWords {
            text: "b x b the c x b".into(),
            limit: 2,
            ignore_stopwords: true,
        };
        let words = top_words(input).unwrap().words;
        let got: Vec<(&str, u64)> = words.iter().map(|w| (w.word.as_str(), w.count)).collect();
        assert_eq!(got, [("b", 3), ("x", 2)]);
    }

    #[test]
    fn a_negation_flips_the_word_after_it() {
        let s = classify(text(
            "The docs are not good, and the API is really terrible.",
        ))
        .unwrap();
        assert_eq!((s.label, s.score), ("negative", -2));
        assert_eq!(s.matched, ["not good", "terrible"]);
        assert_eq!(
            classify(text("Great, it works!")).unwrap().label,
            "positive"
        );
        assert_eq!(classify(text("It is a table.")).unwrap().label, "neutral");
    }
}
