//! Names, ids and the text the databases store.
//!
//! `names`: tenant and key names (`host/src/names.rs`, NFKC), config and secret names,
//! agent names, and resource ids in paths (`ApiId` behind `refuse_nul_in_uri`, through
//! a real router). A name accepted once is accepted again unchanged and is the same
//! name however it was composed; an accepted agent name is a path segment as it is; a
//! path id is answered `200` exactly when it is a UUID, and otherwise refused with the
//! code for what is wrong with it and a bounded echo.
//!
//! `stored_text`: JSON bodies (`ApiJson`, which refuses NUL) and guest output made
//! storable (`host/src/db/text.rs`): a body is refused for a NUL exactly when its
//! value holds one, and otherwise accepted as parsed; after replacement no NUL is left,
//! each was counted, and no object entry is lost.

use std::sync::OnceLock;

use axum::body::Body;
use axum::extract::FromRequest;
use axum::http::{Request, StatusCode};
use corral_host::api::ErrorCode;
use corral_host::api::extract::{ApiId, ApiJson, refuse_nul_in_uri, truncated};
use corral_host::db::text::{REPLACEMENT, replace_nul, replace_nul_json};
use corral_host::names::{MAX_CHARS, display_name};
use corral_host::policy::{check_config_name, is_agent_name};
use proptest::prelude::*;
use proptest::strategy::BoxedStrategy;
use serde_json::Value;
use tower::ServiceExt;
use unicode_normalization::UnicodeNormalization;

use super::json::{document, has_nul, object};
use super::{Target, Verdict, mutate};

pub const NAMES: Target = Target {
    name: "names",
    inputs: name_inputs,
    check: check_names,
};

pub const TEXT: Target = Target {
    name: "stored_text",
    inputs: text_inputs,
    check: check_text,
};

fn tokio() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}

fn name_inputs() -> BoxedStrategy<Vec<u8>> {
    let seeds: Vec<Vec<u8>> = super::corpus("names").into_iter().map(|(_, b)| b).collect();
    let tricky = prop::sample::select(
        &[
            "Caf\u{65}\u{301}",
            "\u{fb01}ne",
            "  Acme  ",
            "admin\u{202E}nimda",
            "x\u{2066}y",
            "\u{B4}",
            " \u{301}",
            "\u{3000}a\u{3000}",
            "\u{0}",
            "A_B",
            "9LIVES",
            "echo",
            "text-stats",
            "Echo",
            "a-",
            "018f2f5e-7b4c-7cc0-8000-000000000000",
            "018F2F5E-7B4C-7CC0-8000-000000000000",
            "{018f2f5e-7b4c-7cc0-8000-000000000000}",
            "urn:uuid:018f2f5e-7b4c-7cc0-8000-000000000000",
            "018f2f5e7b4c7cc08000000000000000",
            "..",
            "%2e%2e",
            "a/b",
            "\u{1F600}",
            "\u{FFFD}",
        ][..],
    );
    prop_oneof![
        3 => tricky.prop_map(|s| s.as_bytes().to_vec()),
        3 => ".{0,40}".prop_map(String::into_bytes),
        2 => "[a-z][a-z0-9_-]{0,70}".prop_map(String::into_bytes),
        2 => "[A-Za-z0-9_]{0,70}".prop_map(String::into_bytes),
        2 => any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).to_string().into_bytes()),
        1 => "\\PC{120,140}".prop_map(String::into_bytes),
        2 => mutate::mutated(seeds),
        1 => prop::collection::vec(any::<u8>(), 0..300),
    ]
    .boxed()
}

fn check_names(bytes: &[u8]) -> Verdict {
    let text = String::from_utf8_lossy(bytes);
    check_display_name(&text)?;
    check_identifiers(&text)?;
    for max in [0, 1, 3, 64, 256] {
        let cut = truncated(&text, max);
        prop_assert!(text.starts_with(cut) && cut.len() <= max);
        prop_assert!(
            cut.len() == text.len() || cut.len() + 4 > max,
            "{:?} cut at {}",
            cut,
            max
        );
    }
    check_path_id(bytes)
}

fn check_display_name(raw: &str) -> Verdict {
    let Ok(name) = display_name(raw) else {
        return Ok(());
    };
    prop_assert_eq!(
        display_name(&name),
        Ok(name.clone()),
        "not stable: {:?}",
        raw
    );
    let count = name.chars().count();
    prop_assert!((1..=MAX_CHARS).contains(&count), "{} characters", count);
    prop_assert_eq!(name.trim(), name.as_str());
    prop_assert!(!name.chars().any(char::is_control));
    // However the raw name was composed, it is one name.
    let decomposed: String = raw.nfd().collect();
    let composed: String = raw.nfc().collect();
    prop_assert_eq!(display_name(&decomposed), Ok(name.clone()));
    prop_assert_eq!(display_name(&composed), Ok(name.clone()));
    Ok(())
}

fn check_identifiers(text: &str) -> Verdict {
    if check_config_name(text).is_ok() {
        let mut chars = text.chars();
        let first = chars.next().expect("not empty");
        prop_assert!(first.is_ascii_alphabetic() || first == '_', "{:?}", text);
        prop_assert!(text.len() <= 64 && chars.all(|c| c.is_ascii_alphanumeric() || c == '_'));
    } else {
        let message = check_config_name(text).unwrap_err();
        prop_assert!(
            message.len() < 1024,
            "the refusal echoes {} bytes",
            message.len()
        );
    }
    if is_agent_name(text) {
        let mut chars = text.chars();
        prop_assert!(
            chars.next().is_some_and(|c| c.is_ascii_lowercase()),
            "{:?}",
            text
        );
        prop_assert!(text.len() <= 64);
        prop_assert!(
            chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        );
        let uri: http::Uri = format!("/v1/agents/{text}/invoke")
            .parse()
            .map_err(|e| TestCaseError::fail(format!("{text:?} is no path segment: {e}")))?;
        prop_assert_eq!(uri.path(), format!("/v1/agents/{text}/invoke"));
    }
    Ok(())
}

fn percent_encoded(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `GET /things/{id}` through `refuse_nul_in_uri` and `ApiId`, as the server routes it.
fn check_path_id(bytes: &[u8]) -> Verdict {
    let router = axum::Router::new()
        .route(
            "/things/{id}",
            axum::routing::get(|ApiId(id): ApiId| async move { id }),
        )
        .layer(axum::middleware::from_fn(refuse_nul_in_uri));
    let segment = percent_encoded(bytes);
    // `.` and `..` are not ids, but a client would normalise them away first.
    if segment.is_empty() || segment == "." || segment == ".." {
        return Ok(());
    }
    let request = Request::get(format!("/things/{segment}"))
        .body(Body::empty())
        .expect("a request");
    let (status, body) = tokio().block_on(async {
        let response = router.oneshot(request).await.expect("infallible");
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("a body");
        (status, body)
    });
    let text = std::str::from_utf8(bytes);
    if let Ok(id) = text
        && !id.contains('\0')
        && uuid::Uuid::try_parse(id).is_ok()
    {
        prop_assert_eq!(status, StatusCode::OK);
        prop_assert_eq!(&body[..], bytes);
        return Ok(());
    }
    prop_assert_eq!(status, StatusCode::BAD_REQUEST, "for {:?}", segment);
    let error: Value = serde_json::from_slice(&body).expect("an error body");
    let code = error["error"]["code"].as_str().unwrap_or_default();
    let expected = if bytes.contains(&0) {
        "invalid_text"
    } else if text.is_err() {
        "invalid_path"
    } else {
        "invalid_id"
    };
    prop_assert_eq!(code, expected, "for {:?}: {}", segment, error);
    prop_assert!(body.len() < 1024, "the refusal echoes {} bytes", body.len());
    Ok(())
}

fn text_inputs() -> BoxedStrategy<Vec<u8>> {
    let seeds: Vec<Vec<u8>> = super::corpus("stored_text")
        .into_iter()
        .map(|(_, b)| b)
        .collect();
    // Keys that collide once NUL is replaced.
    let key = prop::sample::select(
        &[
            "a",
            "a\u{0}",
            "a\u{FFFD}",
            "\u{0}",
            "\u{FFFD}",
            "\u{0}\u{FFFD}",
            "\u{FFFD}\u{0}",
            "\u{0}\u{0}",
            "\u{FFFD}\u{FFFD}",
        ][..],
    )
    .prop_map(|k| serde_json::to_string(k).expect("a key"));
    let value = prop_oneof![
        document(),
        prop::sample::select(&["\"\\u0000\"", "\"\\\\u0000\"", "1", "null"][..])
            .prop_map(str::to_string),
    ];
    let colliding = prop::collection::vec((key, value), 0..6).prop_map(|fields| object(&fields));
    prop_oneof![
        3 => document().prop_map(String::into_bytes),
        3 => colliding.prop_map(String::into_bytes),
        2 => mutate::mutated(seeds),
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ]
    .boxed()
}

/// Whether any string or key of a JSON text holds NUL, duplicate keys' values included
/// (which a `Value` drops).
struct NulSeen(bool);

impl<'de> serde::Deserialize<'de> for NulSeen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = NulSeen;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_str<E>(self, s: &str) -> Result<NulSeen, E> {
                Ok(NulSeen(s.contains('\0')))
            }
            fn visit_bool<E>(self, _: bool) -> Result<NulSeen, E> {
                Ok(NulSeen(false))
            }
            fn visit_i64<E>(self, _: i64) -> Result<NulSeen, E> {
                Ok(NulSeen(false))
            }
            fn visit_u64<E>(self, _: u64) -> Result<NulSeen, E> {
                Ok(NulSeen(false))
            }
            fn visit_f64<E>(self, _: f64) -> Result<NulSeen, E> {
                Ok(NulSeen(false))
            }
            fn visit_unit<E>(self) -> Result<NulSeen, E> {
                Ok(NulSeen(false))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<NulSeen, A::Error> {
                let mut seen = false;
                while let Some(NulSeen(s)) = seq.next_element()? {
                    seen |= s;
                }
                Ok(NulSeen(seen))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<NulSeen, A::Error> {
                let mut seen = false;
                while let Some((NulSeen(k), NulSeen(v))) = map.next_entry()? {
                    seen |= k || v;
                }
                Ok(NulSeen(seen))
            }
        }
        d.deserialize_any(Visitor)
    }
}

fn count_nul(value: &Value) -> u64 {
    match value {
        Value::String(s) => s.matches('\0').count() as u64,
        Value::Array(items) => items.iter().map(count_nul).sum(),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| k.matches('\0').count() as u64 + count_nul(v))
            .sum(),
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
    }
}

/// Strings, keys and object entries, in all.
fn size(value: &Value) -> (usize, usize) {
    match value {
        Value::String(_) => (1, 0),
        Value::Array(items) => items
            .iter()
            .map(size)
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1)),
        Value::Object(map) => map
            .values()
            .map(size)
            .fold((0, map.len()), |a, b| (a.0 + b.0, a.1 + b.1)),
        Value::Null | Value::Bool(_) | Value::Number(_) => (0, 0),
    }
}

fn check_text(bytes: &[u8]) -> Verdict {
    let request = Request::post("/")
        .header("content-type", "application/json")
        .body(Body::from(bytes.to_vec()))
        .expect("a request");
    let extracted = tokio().block_on(ApiJson::<Value>::from_request(request, &()));
    let parsed = serde_json::from_slice::<Value>(bytes);
    match (&parsed, extracted) {
        (Ok(value), Ok(ApiJson(got))) => {
            prop_assert!(!has_nul(value), "a NUL got in: {:?}", value);
            prop_assert_eq!(&got, value);
        }
        (Ok(_), Err(error)) => {
            // The body's text holds a NUL: in the value, or in an entry a later
            // duplicate key replaced.
            let seen = serde_json::from_slice::<NulSeen>(bytes).is_ok_and(|s| s.0);
            prop_assert!(seen, "text without NUL refused: {:?}", error);
            prop_assert_eq!(error.code, ErrorCode::InvalidText);
        }
        (Err(_), Ok(ApiJson(got))) => {
            return Err(TestCaseError::fail(format!(
                "invalid JSON accepted as {got}"
            )));
        }
        (Err(_), Err(error)) => {
            prop_assert!(
                [ErrorCode::InvalidJson, ErrorCode::InvalidText].contains(&error.code),
                "{:?}",
                error
            );
            prop_assert_eq!(error.status, StatusCode::BAD_REQUEST);
        }
    }

    if let Ok(mut value) = parsed {
        let before = value.clone();
        let count = replace_nul_json(&mut value);
        prop_assert_eq!(count, count_nul(&before), "NULs miscounted in {:?}", before);
        prop_assert!(!has_nul(&value), "a NUL is left in {:?}", value);
        prop_assert_eq!(
            size(&value),
            size(&before),
            "{:?} became {:?}",
            before,
            value
        );
        if count == 0 {
            prop_assert_eq!(value, before);
        }
    }

    let mut text = String::from_utf8_lossy(bytes).into_owned();
    let nuls = text.matches('\0').count() as u64;
    let len = text.len();
    prop_assert_eq!(replace_nul(&mut text), nuls);
    prop_assert!(!text.contains('\0'));
    prop_assert_eq!(
        text.len() as u64,
        len as u64 + nuls * (REPLACEMENT.len_utf8() as u64 - 1)
    );
    Ok(())
}
