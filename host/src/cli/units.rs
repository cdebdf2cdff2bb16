//! Human-readable sizes and durations for flags and summaries.

use std::time::Duration;

/// Parses a size such as `64MiB`, `512KiB`, `1GB` or `1048576`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if let Ok(bytes) = text.parse::<u64>() {
        return Ok(bytes);
    }
    text.parse::<bytesize::ByteSize>()
        .map(|size| size.as_u64())
        .map_err(|_| format!("{text:?} is not a size; write e.g. 64MiB, 512KiB or 1048576"))
}

/// Parses a duration such as `2s`, `500ms` or `1m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|_| format!("{text:?} is not a duration; write e.g. 2s, 500ms or 1m"))
}

/// Parses a count such as `1000000`, `1_000_000` or `1e9`.
pub fn parse_count(text: &str) -> Result<u64, String> {
    let cleaned: String = text
        .trim()
        .chars()
        .filter(|c| *c != '_' && *c != ',')
        .collect();
    if let Ok(n) = cleaned.parse::<u64>() {
        return Ok(n);
    }
    match cleaned.parse::<f64>() {
        Ok(f) if f.is_finite() && f >= 0.0 && f.fract() == 0.0 && f <= u64::MAX as f64 => {
            Ok(f as u64)
        }
        _ => Err(format!(
            "{text:?} is not a whole number; write e.g. 1000000 or 1e9"
        )),
    }
}

/// `1.5 MiB`, `640 B`.
pub fn format_size(bytes: u64) -> String {
    bytesize::ByteSize::b(bytes).display().iec().to_string()
}

/// `12.3 ms`, `1.20 s`, `250 µs`.
pub fn format_duration(d: Duration) -> String {
    let micros = d.as_micros();
    if micros < 1_000 {
        format!("{micros} µs")
    } else if micros < 1_000_000 {
        format!("{:.1} ms", micros as f64 / 1e3)
    } else {
        format!("{:.2} s", micros as f64 / 1e6)
    }
}

/// `1,234,567`.
pub fn format_count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_accept_binary_and_decimal_units() {
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("1 KB").unwrap(), 1000);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn counts_accept_separators_and_exponents() {
        assert_eq!(parse_count("1_000_000").unwrap(), 1_000_000);
        assert_eq!(parse_count("1e9").unwrap(), 1_000_000_000);
        assert!(parse_count("-5").is_err());
        assert!(parse_count("1.5").is_err());
    }

    #[test]
    fn durations_and_counts_format_for_people() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(format_duration(Duration::from_micros(1500)), "1.5 ms");
        assert_eq!(format_count(1234567), "1,234,567");
        assert_eq!(format_size(1536), "1.5 KiB");
    }
}
