//! `text-stats`: small, dependable text analytics.
//!
//! Definitions used throughout:
//! - a **word** is a maximal run of alphanumeric characters, apostrophes or hyphens
//!   that contains at least one alphanumeric character; words are compared lowercase;
//! - a **line** is a `\n`-separated piece of the text (a trailing newline does not
//!   start a new line; empty text has 0 lines);
//! - a **sentence** ends at one or more of `.`, `!`, `?`, or at the end of the text
//!   if words follow the last terminator.
//!
//! Actions: `stats`, `top_words`, `classify` (rule-based sentiment with negation).

use std::collections::HashMap;

use corral_sdk::{Error, debug};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Text {
    text: String,
}

const TEXT_SCHEMA: &str = r#"{"type":"object","required":["text"],"additionalProperties":false,"properties":{"text":{"type":"string"}}}"#;

fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '-'))
        .filter(|w| w.chars().any(char::is_alphanumeric))
        .map(|w| w.trim_matches(|c| c == '\'' || c == '-').to_lowercase())
}

#[derive(Serialize)]
struct Stats {
    chars: usize,
    bytes: usize,
    words: usize,
    lines: usize,
    sentences: usize,
    average_word_length: f64,
}

fn stats(input: Text) -> Result<Stats, Error> {
    let text = &input.text;
    let all: Vec<String> = words(text).collect();
    let letters: usize = all.iter().map(|w| w.chars().count()).sum();
    let lines = if text.is_empty() { 0 } else { text.trim_end_matches('\n').split('\n').count() };
    let average = if all.is_empty() { 0.0 } else { letters as f64 / all.len() as f64 };
    debug!("{} words in {} lines", all.len(), lines);
    Ok(Stats {
        chars: text.chars().count(),
        bytes: text.len(),
        words: all.len(),
        lines,
        sentences: sentences(text),
        average_word_length: (average * 100.0).round() / 100.0,
    })
}

fn sentences(text: &str) -> usize {
    let mut count = 0;
    let mut words_since_end = false;
    let mut in_word = false;
    for c in text.chars() {
        if matches!(c, '.' | '!' | '?') {
            if words_since_end {
                count += 1;
            }
            words_since_end = false;
            in_word = false;
        } else if c.is_alphanumeric() {
            if !in_word {
                words_since_end = true;
            }
            in_word = true;
        } else {
            in_word = false;
        }
    }
    count + usize::from(words_since_end)
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

const TOP_WORDS_SCHEMA: &str = r#"{"type":"object","required":["text"],"additionalProperties":false,"properties":{"text":{"type":"string"},"limit":{"type":"integer","minimum":0},"ignore_stopwords":{"type":"boolean"}}}"#;

const STOPWORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it", "no",
    "not", "of", "on", "or", "so", "such", "that", "the", "their", "then", "there", "these", "they",
    "this", "to", "was", "will", "with", "i", "you", "he", "she", "we", "my", "your",
];

#[derive(Serialize)]
struct WordCount {
    word: String,
    count: usize,
}

#[derive(Serialize)]
struct TopWordsOutput {
    words: Vec<WordCount>,
}

fn top_words(input: TopWords) -> Result<TopWordsOutput, Error> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for word in words(&input.text) {
        if input.ignore_stopwords && STOPWORDS.contains(&word.as_str()) {
            continue;
        }
        *counts.entry(word).or_default() += 1;
    }
    let mut ranked: Vec<WordCount> = counts.into_iter().map(|(word, count)| WordCount { word, count }).collect();
    ranked.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.word.cmp(&b.word)));
    ranked.truncate(input.limit);
    Ok(TopWordsOutput { words: ranked })
}

const POSITIVE: &[&str] = &[
    "good", "great", "excellent", "love", "like", "happy", "nice", "wonderful", "fast", "helpful",
    "amazing", "best", "fine", "pleased", "reliable",
];
const NEGATIVE: &[&str] = &[
    "bad", "terrible", "awful", "hate", "slow", "broken", "poor", "worst", "sad", "angry", "bug",
    "crash", "fail", "failed", "useless",
];
const NEGATORS: &[&str] = &["not", "no", "never", "isn't", "wasn't", "don't", "doesn't", "didn't", "can't"];

#[derive(Serialize)]
struct Classification {
    label: &'static str,
    score: i64,
    matched: Vec<String>,
}

/// Sums +1 per positive and -1 per negative word; a negator within the two words
/// before a sentiment word flips it (and is shown as `not good`).
fn classify(input: Text) -> Result<Classification, Error> {
    let all: Vec<String> = words(&input.text).collect();
    let mut score = 0i64;
    let mut matched = Vec::new();
    for (i, word) in all.iter().enumerate() {
        let polarity = if POSITIVE.contains(&word.as_str()) {
            1
        } else if NEGATIVE.contains(&word.as_str()) {
            -1
        } else {
            continue;
        };
        let negated = all[i.saturating_sub(2)..i].iter().any(|w| NEGATORS.contains(&w.as_str()));
        score += if negated { -polarity } else { polarity };
        matched.push(if negated { format!("not {word}") } else { word.clone() });
    }
    let label = match score {
        s if s > 0 => "positive",
        s if s < 0 => "negative",
        _ => "neutral",
    };
    Ok(Classification { label, score, matched })
}

corral_sdk::agent! {
    description: "Text statistics, word frequencies and rule-based sentiment",
    actions: {
        stats: "Count characters, bytes, words, lines and sentences" (schema = TEXT_SCHEMA),
        top_words: "The most frequent words, most frequent first" (schema = TOP_WORDS_SCHEMA),
        classify: "Positive, negative or neutral, from word lists with negation" (schema = TEXT_SCHEMA),
    }
}
