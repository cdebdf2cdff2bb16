//! Names of tenants and API keys: free text for people, but one spelling per name.
//!
//! A name is NFKC-normalised (so `ﬁ` and `fi`, or a composed and a decomposed `é`, are
//! one name and conflict as such), trimmed, 1 to 128 characters, and may not contain
//! control characters or the invisible marks that reorder text (bidirectional
//! overrides and isolates), which could make one name look like another. Agent names
//! have a stricter grammar of their own ([`crate::policy::is_agent_name`]) because
//! they appear in paths.

use unicode_normalization::UnicodeNormalization;

/// Most characters in a name.
pub const MAX_CHARS: usize = 128;

/// The name as stored, or why it is refused.
pub fn display_name(raw: &str) -> Result<String, String> {
    let name: String = raw.nfkc().collect::<String>().trim().to_string();
    if name.is_empty() || name.chars().count() > MAX_CHARS {
        return Err(format!("a name is 1 to {MAX_CHARS} characters"));
    }
    if let Some(c) = name.chars().find(|&c| c.is_control() || is_reordering(c)) {
        return Err(format!(
            "a name may not contain control or text-direction characters (found U+{:04X})",
            c as u32
        ));
    }
    Ok(name)
}

/// Marks that change the display order of text without being seen.
fn is_reordering(c: char) -> bool {
    matches!(c, '\u{200E}' | '\u{200F}' | '\u{061C}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_spellings_of_one_name_are_one_name() {
        assert_eq!(
            display_name("Caf\u{65}\u{301}").unwrap(),
            display_name("Caf\u{e9}").unwrap()
        );
        assert_eq!(display_name("\u{fb01}ne").unwrap(), "fine");
        assert_eq!(display_name("  Acme  ").unwrap(), "Acme");
    }

    #[test]
    fn control_and_reordering_characters_and_bad_lengths_are_refused() {
        assert!(display_name("a\u{7}b").is_err());
        assert!(display_name("admin\u{202E}nimda").is_err());
        assert!(display_name("x\u{2066}y").is_err());
        assert!(display_name("   ").is_err());
        assert!(display_name(&"x".repeat(129)).is_err());
        assert!(display_name(&"é".repeat(128)).is_ok());
    }
}
