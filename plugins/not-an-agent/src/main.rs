//! A valid WebAssembly component of the wrong world: a plain WASI command. The host
//! must refuse it as an agent, naming the missing `corral:agent/handler` export.

fn main() {
    println!("hello from a command, not an agent");
}
