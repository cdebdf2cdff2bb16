//! `notes`: a small memory for other agents and people, kept in key-value state with
//! `corral_sdk::kv`. It is the example of the kv grant, and the fixture of the host's
//! kv tests. Without a kv grant every action fails with `kv_denied`.
//!
//! Each note is stored as JSON `{"id", "text"}` under the key `note/<id>`.
//!
//! # Actions
//!
//! - `add` `{ "text", "id"?, "ttl_ms"? }` stores a note and returns `{ "id" }`. The id
//!   defaults to the execution id (time-ordered, so notes list oldest first); an
//!   existing id is replaced. With `ttl_ms` the note is forgotten that many
//!   milliseconds later.
//! - `get` `{ "id" }` returns the note, or fails with `not_found`.
//! - `list` `{ "prefix"? }` returns `{ "notes": [note, …] }`: every note whose id starts
//!   with `prefix`, in id order.
//! - `delete` `{ "id" }` returns `{ "deleted": true|false }`.
//! - `count` `{ "prefix"? }` returns `{ "count" }`, without reading the notes.

use corral_sdk::{Error, context, info, kv};
use serde::{Deserialize, Serialize};

const PREFIX: &str = "note/";

fn key(id: &str) -> String {
    format!("{PREFIX}{id}")
}

#[derive(Serialize, Deserialize)]
struct Note {
    id: String,
    text: String,
}

#[derive(Deserialize)]
struct Add {
    text: String,
    id: Option<String>,
    ttl_ms: Option<u64>,
}

#[derive(Serialize)]
struct Added {
    id: String,
}

fn add(input: Add) -> Result<Added, Error> {
    let id = input.id.unwrap_or_else(|| context().execution_id);
    let note = Note {
        id: id.clone(),
        text: input.text,
    };
    match input.ttl_ms {
        Some(ms) => kv::set_json_with_ttl(&key(&id), &note, std::time::Duration::from_millis(ms))?,
        None => kv::set_json(&key(&id), &note)?,
    }
    info!("stored note {id}");
    Ok(Added { id })
}

#[derive(Deserialize)]
struct Id {
    id: String,
}

fn get(input: Id) -> Result<Note, Error> {
    kv::get_json(&key(&input.id))?
        .ok_or_else(|| Error::new("not_found", format!("there is no note {:?}", input.id)))
}

#[derive(Deserialize)]
struct Prefix {
    #[serde(default)]
    prefix: String,
}

#[derive(Serialize)]
struct Notes {
    notes: Vec<Note>,
}

fn list(input: Prefix) -> Result<Notes, Error> {
    let mut notes = Vec::new();
    for k in kv::list(&key(&input.prefix)) {
        // A note that expired between listing and reading is simply not there.
        if let Some(note) = kv::get_json(&k?)? {
            notes.push(note);
        }
    }
    Ok(Notes { notes })
}

#[derive(Serialize)]
struct Deleted {
    deleted: bool,
}

fn delete(input: Id) -> Result<Deleted, Error> {
    Ok(Deleted {
        deleted: kv::delete(&key(&input.id))?,
    })
}

#[derive(Serialize)]
struct Count {
    count: usize,
}

fn count(input: Prefix) -> Result<Count, Error> {
    let mut count = 0;
    for k in kv::list(&key(&input.prefix)) {
        k?;
        count += 1;
    }
    Ok(Count { count })
}

corral_sdk::agent! {
    description: "Remembers notes between invocations (needs a kv grant)",
    actions: {
        add: "Store a note, optionally forgotten after ttl_ms",
        get: "Read one note by id",
        list: "List the notes whose ids start with a prefix",
        delete: "Forget one note",
        count: "Count the notes whose ids start with a prefix",
    }
}
