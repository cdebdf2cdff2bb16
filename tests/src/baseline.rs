//! The baseline of the invocation benchmarks: what a careful embedder writes by hand
//! with raw wasmtime for the `corral:agent` world — WASI and `wasi:http` linked, every
//! Corral capability refusing, logs dropped — so `cargo bench` can compare Corral's
//! `Runtime::invoke` against it on the same engine and component.

use corral_host::runtime::bindings::{Agent, AgentPre, Level};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// The store state of a raw call: nothing granted.
pub struct RawState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
}

impl RawState {
    pub fn new() -> RawState {
        RawState {
            wasi: WasiCtx::builder().build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
        }
    }
}

impl Default for RawState {
    fn default() -> Self {
        RawState::new()
    }
}

/// An `InstancePre` of `component` with WASI, `wasi:http` and the world linked.
pub fn raw_pre(engine: &wasmtime::Engine, component: &Component) -> AgentPre<RawState> {
    let mut linker = Linker::<RawState>::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).unwrap();
    Agent::add_to_linker::<_, HasSelf<RawState>>(&mut linker, |s| s).unwrap();
    AgentPre::new(linker.instantiate_pre(component).unwrap()).unwrap()
}

impl WasiView for RawState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for RawState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: wasmtime_wasi_http::default_hooks(),
        }
    }
}

impl corral_host::runtime::bindings::corral::agent::logging::Host for RawState {
    fn log(&mut self, _level: Level, _message: String) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl corral_host::runtime::bindings::corral::agent::types::Host for RawState {}

// Nothing is granted: every capability refuses.
mod refused {
    use corral_host::runtime::bindings::corral::agent::agents::{self, CallError};
    use corral_host::runtime::bindings::corral::agent::config::{self, ConfigError};
    use corral_host::runtime::bindings::corral::agent::kv::{self, KvError};
    use corral_host::runtime::bindings::corral::agent::llm::{
        self, ChatRequest, ChatResponse, LlmError,
    };

    use super::RawState;

    type Answer<T, E> = wasmtime::Result<Result<T, E>>;

    impl kv::Host for RawState {
        async fn get(&mut self, _: String) -> Answer<Option<Vec<u8>>, KvError> {
            Ok(Err(KvError::Denied(String::new())))
        }
        async fn set(&mut self, _: String, _: Vec<u8>, _: Option<u64>) -> Answer<(), KvError> {
            Ok(Err(KvError::Denied(String::new())))
        }
        async fn delete(&mut self, _: String) -> Answer<bool, KvError> {
            Ok(Err(KvError::Denied(String::new())))
        }
        async fn list_keys(
            &mut self,
            _: String,
            _: Option<String>,
            _: u32,
        ) -> Answer<Vec<String>, KvError> {
            Ok(Err(KvError::Denied(String::new())))
        }
    }

    impl config::Host for RawState {
        async fn get(&mut self, _: String) -> Answer<Option<String>, ConfigError> {
            Ok(Ok(None))
        }
        async fn get_secret(&mut self, _: String) -> Answer<Option<String>, ConfigError> {
            Ok(Err(ConfigError::Denied(String::new())))
        }
    }

    impl llm::Host for RawState {
        async fn chat(&mut self, _: ChatRequest) -> Answer<ChatResponse, LlmError> {
            Ok(Err(LlmError::Denied(String::new())))
        }
    }

    impl agents::Host for RawState {
        async fn call(&mut self, _: String, _: String, _: String) -> Answer<String, CallError> {
            Ok(Err(CallError::Denied(String::new())))
        }
        async fn submit_task(
            &mut self,
            _: String,
            _: String,
            _: String,
        ) -> Answer<String, CallError> {
            Ok(Err(CallError::Denied(String::new())))
        }
        async fn wait_task(&mut self, _: String, _: u32) -> Answer<Option<String>, CallError> {
            Ok(Err(CallError::Denied(String::new())))
        }
    }
}
