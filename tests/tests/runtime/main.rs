//! Integration tests of the sandboxed runtime: real wasmtime running the real
//! components built from `plugins/`, and the real `corral` binary.

mod cache;
mod calls;
mod cli;
mod concurrency;
mod config;
mod counts;
mod egress;
mod kv;
mod llm;
mod loading;
mod outcomes;
