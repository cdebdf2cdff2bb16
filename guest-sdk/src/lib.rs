//! Write [Corral](https://example.invalid/corral) agents in plain Rust.
//!
//! An agent is a WebAssembly component with a few *actions*. Each action is an
//! ordinary function from a typed input to a typed output; the SDK turns JSON into
//! your types and back, reports bad input as `invalid_input`, and exports the
//! component interface (the `corral:agent@0.1.0` world) for you.
//!
//! # Examples
//!
//! A complete agent with two actions:
//!
//! ```no_run
//! use corral_sdk::{Error, info};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Deserialize)]
//! struct Greet { name: String }
//!
//! #[derive(Serialize)]
//! struct Greeting { message: String }
//!
//! fn greet(input: Greet) -> Result<Greeting, Error> {
//!     info!("greeting {}", input.name);
//!     Ok(Greeting { message: format!("Hello, {}!", input.name) })
//! }
//!
//! fn shout(input: Greet) -> Result<Greeting, Error> {
//!     if input.name.is_empty() {
//!         return Err(Error::invalid_input("name must not be empty"));
//!     }
//!     Ok(Greeting { message: input.name.to_uppercase() })
//! }
//!
//! corral_sdk::agent! {
//!     description: "Greets people",
//!     actions: {
//!         greet: "Say hello",
//!         shout: "Say the name loudly",
//!     }
//! }
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` (the crate must be a
//! `[lib] crate-type = ["cdylib"]`); the component is
//! `target/wasm32-wasip2/release/<crate_name>.wasm`. See `plugins/` for more agents.
//!
//! # The `agent!` macro
//!
//! ```text
//! corral_sdk::agent! {
//!     name: "greeter",            // optional, defaults to CARGO_PKG_NAME
//!     version: "1.0.0",           // optional, defaults to CARGO_PKG_VERSION (semver)
//!     description: "Greets people",
//!     actions: {
//!         greet: "Say hello" (schema = GREET_SCHEMA),   // schema: optional JSON Schema text
//!         shout: "Say the name loudly",
//!     }
//! }
//! ```
//!
//! Each action names a function in scope of type `fn(I) -> Result<O, E>` where
//! `I: DeserializeOwned`, `O: Serialize` and `E: Into<Error>`. The action's name is
//! the function's name. `name` and `version`, when given, come before `description`;
//! they default to the plugin crate's `CARGO_PKG_NAME` and `CARGO_PKG_VERSION`. The
//! macro may be used once per crate, at module level.
//!
//! # What a call does
//!
//! - The invocation's [`Context`] becomes available through [`context()`].
//! - An action name the macro does not list fails with code `unknown_action`.
//! - Input that does not deserialize into `I` fails with code `invalid_input` and
//!   serde's message.
//! - An `Err(e)` becomes the execution's error via `Into<Error>`; an `Ok(o)` is
//!   serialized with `serde_json` and becomes the output.
//! - A panic is not an error: it traps, and the host records a crash.
//!
//! # Logging
//!
//! [`log`] and the macros [`trace!`], [`debug!`], [`info!`], [`warn!`] and [`error!`]
//! send lines to the host, which stores them with the execution.
//!
//! # Outbound HTTP
//!
//! [`http::get`] and [`http::Request`] call other services through the standard
//! `wasi:http/outgoing-handler`. The host denies every request unless the agent's
//! policy grants HTTP to that scheme, host and port; see [`http`].
//!
//! # Key-value state
//!
//! [`kv::get`], [`kv::set`], [`kv::list`] and their JSON and TTL variants keep state
//! between invocations, per agent. Every call fails with `kv_denied` unless the agent's
//! policy grants `kv`; see [`kv`].
//!
//! # Config and secrets
//!
//! [`config::get`] and [`config::get_or`] read the config values the operator set on
//! the agent; [`config::secret`] reads a secret, which the host refuses unless the
//! agent's policy grants it by name. See [`config`].
//!
//! # Calling other agents
//!
//! [`agents::call`] runs another agent of the same tenant, if the agent's policy
//! grants it; see [`agents`].

#![deny(missing_docs)]

pub mod agents;
pub mod config;
mod context;
mod error;
pub mod http;
pub mod kv;
pub mod llm;
mod log;

pub use context::{Context, context};
pub use error::Error;
pub use log::{Level, log};

#[doc(hidden)]
pub mod __private;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "corral:agent/agent",
        pub_export_macro: true,
        export_macro_name: "__export_agent",
        default_bindings_module: "corral_sdk::bindings",
    });
}

/// Declares the agent: its description and actions. See the [crate docs](crate).
#[macro_export]
macro_rules! agent {
    (
        $(name: $name:expr,)?
        $(version: $version:expr,)?
        description: $description:expr,
        actions: {
            $( $action:ident : $about:literal $( (schema = $schema:expr) )? ),* $(,)?
        } $(,)?
    ) => {
        #[doc(hidden)]
        pub struct __CorralAgent;

        impl $crate::__private::Guest for __CorralAgent {
            fn call(
                invocation: $crate::__private::Invocation,
            ) -> ::core::result::Result<::std::string::String, $crate::__private::AgentError> {
                $crate::__private::dispatch(invocation, |action, input| match action {
                    $( ::core::stringify!($action) => ::core::option::Option::Some($crate::__private::run($action, input)), )*
                    _ => ::core::option::Option::None,
                })
            }

            fn describe() -> $crate::__private::AgentInfo {
                $crate::__private::AgentInfo {
                    name: $crate::__first!($($name,)? ::core::env!("CARGO_PKG_NAME")).into(),
                    version: $crate::__first!($($version,)? ::core::env!("CARGO_PKG_VERSION")).into(),
                    description: ($description).into(),
                    actions: ::std::vec![
                        $( $crate::__private::ActionInfo {
                            name: ::core::stringify!($action).into(),
                            description: ($about).into(),
                            input_schema: $crate::__optional!($($schema)?),
                        }, )*
                    ],
                }
            }
        }

        $crate::bindings::__export_agent!(__CorralAgent with_types_in $crate::bindings);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __first {
    ($first:expr $(, $rest:expr)*) => {
        $first
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __optional {
    () => {
        ::core::option::Option::None
    };
    ($value:expr) => {
        ::core::option::Option::Some(::std::string::String::from($value))
    };
}
