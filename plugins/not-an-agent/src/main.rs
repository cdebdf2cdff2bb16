//! A plain WASI command (`wasi:cli/command`), not an agent: it exports `wasi:cli/run`
//! instead of `corral:agent/handler`. The host's tests load it to check that a
//! valid component of the wrong world is refused.

fn main() {
    println!("hello from a component that is not an agent");
}
