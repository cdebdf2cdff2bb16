//! `greeter`: greets people with a template its operator sets, and signs greetings
//! with a key its operator keeps secret. The example of `corral_sdk::config`.
//!
//! # Config
//!
//! - `greeting` (config value): the template, with `{name}` where the name goes.
//!   Default: `Hello, {name}!`.
//! - `SIGNING_KEY` (secret, granted by `"grants": {"secrets": ["SIGNING_KEY"]}`): the
//!   HMAC key `sign` uses.
//!
//! # Actions
//!
//! - `greet` `{ "name" }` returns `{ "message" }`: the template with the name filled in.
//! - `sign` `{ "name" }` returns `{ "message", "signature" }`: the same message and its
//!   HMAC-SHA256 under `SIGNING_KEY`, as 64 lowercase hex digits. Whoever holds the key
//!   can check the message came from this agent; the key itself is never shown. Fails
//!   with `missing_secret` when the key is not set, and `config_denied` when it is not
//!   granted.

use corral_sdk::{Error, config, info};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The template when the operator sets none.
const DEFAULT_GREETING: &str = "Hello, {name}!";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Person {
    name: String,
}

#[derive(Serialize)]
struct Greeting {
    message: String,
}

#[derive(Serialize)]
struct Signed {
    message: String,
    signature: String,
}

fn message(name: &str) -> Result<String, Error> {
    if name.trim().is_empty() {
        return Err(Error::invalid_input("name must not be empty"));
    }
    let template = config::get_or("greeting", DEFAULT_GREETING)?;
    Ok(template.replace("{name}", name))
}

fn greet(input: Person) -> Result<Greeting, Error> {
    let message = message(&input.name)?;
    info!("greeted {}", input.name);
    Ok(Greeting { message })
}

fn sign(input: Person) -> Result<Signed, Error> {
    let message = message(&input.name)?;
    let key = config::secret("SIGNING_KEY")?.ok_or_else(|| {
        Error::new(
            "missing_secret",
            "the operator has not set the secret SIGNING_KEY",
        )
    })?;
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes())
        .map_err(|e| Error::new("internal", e.to_string()))?;
    mac.update(message.as_bytes());
    let signature = hex::encode(mac.finalize().into_bytes());
    info!("signed a greeting for {}", input.name);
    Ok(Signed { message, signature })
}

corral_sdk::agent! {
    description: "Greets people with a configurable template, optionally signed with a secret key",
    actions: {
        greet: "Greet someone with the configured template",
        sign: "Greet someone and sign the greeting with HMAC-SHA256 under the SIGNING_KEY secret",
    }
}
