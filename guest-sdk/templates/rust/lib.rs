//! {{name}}: a Corral agent. Build it with `corral build`, run it with
//! `corral run dist/{{name}}.wasm --action greet --input '{"name":"Ada"}'`.

use corral_sdk::{Error, info};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Greet {
    name: String,
}

#[derive(Serialize)]
struct Greeting {
    greeting: String,
}

fn greet(input: Greet) -> Result<Greeting, Error> {
    if input.name.is_empty() {
        return Err(Error::invalid_input("name must not be empty"));
    }
    info!("greeting {}", input.name);
    Ok(Greeting {
        greeting: format!("Hello, {}!", input.name),
    })
}

corral_sdk::agent! {
    name: "{{name}}",
    description: "Greets people",
    actions: {
        greet: "Say hello to someone by name",
    }
}
