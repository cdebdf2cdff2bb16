//! Guests that create many core instances, tables and memories, and grow them until
//! refused. Up to each bound a guest runs; past it the component is refused at load with
//! an error naming the limit, or the run ends with a precise outcome — never a host
//! failure — and a neighbour agent runs afterwards.
//!
//! The guests are agents written by hand in the component text format (no toolchain
//! emits these shapes on purpose): [`agent`] wraps a core module that implements
//! `corral:agent/handler@0.1.0` around a `$work` function whose `i32` result is the
//! output, next to whatever extra core modules and instances a test asks for.

use std::sync::Arc;
use std::time::Duration;

use corral_host::limits::{Limits, StoreBounds};
use corral_host::runtime::{
    EngineSettings, Execution, LoadError, LoadedAgent, Outcome, Runtime, RuntimeConfig,
    StructureLimits,
};
use corral_tests::harness::{invoke, load, runtime, tight_limits};
use corral_tests::plugins::ECHO;

const PAGE: u64 = 64 << 10;

/// Four little-endian bytes per word, as a WAT data string.
fn words(values: &[u32]) -> String {
    values
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .map(|b| format!("\\{b:02x}"))
        .collect()
}

/// An agent component. `imports` and `fields` go into the agent's core module (which
/// owns memory 0, `realloc`, `describe` and `call`, and must define `$work: [] ->
/// [i32]`); `before` holds extra core modules and instances, and `with` the arguments
/// of the agent module's instantiation.
fn agent(before: &str, imports: &str, with: &str, fields: &str) -> Vec<u8> {
    // describe(): agent-info at 1024, its one action-info at 1100, strings from 1200.
    let info = words(&[1200, 4, 1210, 5, 1220, 6, 1100, 1]);
    let action = words(&[1230, 3, 1240, 4, 0, 0, 0]);
    let wat = format!(
        r#"(component
  {before}
  (core module $agent
    {imports}
    (memory (export "memory") 1)
    (global $heap (mut i32) (i32.const 8192))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $p i32)
      (local.set $p (i32.and (i32.add (global.get $heap) (i32.sub (local.get 2) (i32.const 1)))
                             (i32.sub (i32.const 0) (local.get 2))))
      (global.set $heap (i32.add (local.get $p) (local.get 3)))
      (if (i32.gt_u (global.get $heap) (i32.const 65536)) (then unreachable))
      (local.get $p))
    (data (i32.const 1024) "{info}")
    (data (i32.const 1100) "{action}")
    (data (i32.const 1200) "many")
    (data (i32.const 1210) "1.0.0")
    (data (i32.const 1220) "counts")
    (data (i32.const 1230) "run")
    (data (i32.const 1240) "runs")
    (func (export "describe") (result i32) (i32.const 1024))
    ;; Writes $n in decimal at 3000; returns its length.
    (func $itoa (param $n i32) (result i32)
      (local $len i32) (local $t i32) (local $i i32)
      (local.set $t (local.get $n))
      (local.set $len (i32.const 1))
      (block $done (loop $count
        (br_if $done (i32.lt_u (local.get $t) (i32.const 10)))
        (local.set $t (i32.div_u (local.get $t) (i32.const 10)))
        (local.set $len (i32.add (local.get $len) (i32.const 1)))
        (br $count)))
      (local.set $i (local.get $len))
      (loop $write
        (local.set $i (i32.sub (local.get $i) (i32.const 1)))
        (i32.store8 (i32.add (i32.const 3000) (local.get $i))
                    (i32.add (i32.const 48) (i32.rem_u (local.get $n) (i32.const 10))))
        (local.set $n (i32.div_u (local.get $n) (i32.const 10)))
        (br_if $write (local.get $i)))
      (local.get $len))
    ;; call(invocation) -> result<string, agent-error>: ok(the decimal of $work()).
    (func (export "call")
      (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
      (local $len i32)
      (local.set $len (call $itoa (call $work)))
      (i32.store8 (i32.const 2048) (i32.const 0))
      (i32.store (i32.const 2052) (i32.const 3000))
      (i32.store (i32.const 2056) (local.get $len))
      (i32.const 2048))
    {fields}
  )
  (core instance $agent (instantiate $agent {with}))

  (type $context' (record (field "execution-id" string) (field "agent-name" string)
    (field "agent-version" string) (field "correlation-id" (option string))))
  (export $context "context" (type $context'))
  (type $invocation' (record (field "action" string) (field "input" string)
    (field "context" $context)))
  (export $invocation "invocation" (type $invocation'))
  (type $agent-error' (record (field "code" string) (field "message" string)
    (field "retryable" bool)))
  (export $agent-error "agent-error" (type $agent-error'))
  (type $action-info' (record (field "name" string) (field "description" string)
    (field "input-schema" (option string))))
  (export $action-info "action-info" (type $action-info'))
  (type $agent-info' (record (field "name" string) (field "version" string)
    (field "description" string) (field "actions" (list $action-info))))
  (export $agent-info "agent-info" (type $agent-info'))

  (func $call (param "invocation" $invocation) (result (result string (error $agent-error)))
    (canon lift (core func $agent "call") (memory (core memory $agent "memory"))
      (realloc (core func $agent "realloc"))))
  (func $describe (result $agent-info)
    (canon lift (core func $agent "describe") (memory (core memory $agent "memory"))
      (realloc (core func $agent "realloc"))))
  (instance $handler
    (export "context" (type $context))
    (export "invocation" (type $invocation))
    (export "agent-error" (type $agent-error))
    (export "action-info" (type $action-info))
    (export "agent-info" (type $agent-info))
    (export "call" (func $call))
    (export "describe" (func $describe)))
  (export "corral:agent/handler@0.1.0" (instance $handler))
)"#
    );
    wat::parse_str(&wat).unwrap_or_else(|e| panic!("{e}\n{wat}"))
}

/// An agent whose `$work` returns `result` (an `i32` expression) and does nothing else.
fn idle_agent(before: &str, result: &str) -> Vec<u8> {
    agent(
        before,
        "",
        "",
        &format!("(func $work (result i32) {result})"),
    )
}

/// `count` instances of a core module defining `fields` (a table, or nothing).
fn instances(name: &str, fields: &str, count: usize) -> String {
    let mut wat = format!("(core module ${name} {fields})\n");
    for i in 0..count {
        wat.push_str(&format!(
            "(core instance ${name}{i} (instantiate ${name}))\n"
        ));
    }
    wat
}

/// Runs `agent`'s action once under `limits`.
async fn run(runtime: &Runtime, agent: &LoadedAgent, limits: Limits) -> Execution {
    invoke(runtime, agent, "run", "{}", limits).await
}

/// A neighbour still loads and runs on the same runtime.
async fn assert_neighbour_runs(runtime: &Runtime) {
    let echo = load(runtime, ECHO).await;
    let execution = invoke(
        runtime,
        &echo,
        "echo",
        r#"{"still":"here"}"#,
        Limits::default(),
    )
    .await;
    assert_eq!(execution.outcome, Outcome::Succeeded, "{execution:#?}");
}

#[tokio::test]
async fn a_hand_written_agent_loads_and_runs() {
    let runtime = runtime();
    let agent = runtime
        .load(idle_agent("", "(i32.const 42)"))
        .await
        .unwrap();
    assert_eq!(agent.metadata.name, "many");
    let execution = run(&runtime, &agent, tight_limits()).await;
    assert_eq!(execution.outcome, Outcome::Succeeded, "{execution:#?}");
    assert_eq!(execution.output.as_deref(), Some("42"));
}

/// Loads `at_bound` and runs it; then `over` (one more of something) is refused as
/// too complex, with the count and the limit named; then a neighbour runs.
async fn assert_bound_holds(at_bound: Vec<u8>, over: Vec<u8>, count: usize, limit: usize) {
    let runtime = runtime();
    let agent = runtime.load(at_bound).await.expect("at the bound it loads");
    let execution = run(&runtime, &agent, tight_limits()).await;
    assert_eq!(execution.outcome, Outcome::Succeeded, "{execution:#?}");

    let err = runtime.load(over).await.expect_err("one more is refused");
    assert!(matches!(err, LoadError::TooComplex(_)), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains(&format!(" {count} ")) && message.contains(&format!(" {limit}")),
        "the error names the count ({count}) and the limit ({limit}): {message}"
    );
    assert_neighbour_runs(&runtime).await;
}

#[tokio::test]
async fn core_instances_up_to_the_bound_run_and_one_more_is_refused_by_name() {
    let bound = EngineSettings::default().max_core_instances_per_component as usize;
    assert!(bound <= StoreBounds::default().instances);
    // The agent's own module is one instance.
    assert_bound_holds(
        idle_agent(&instances("tiny", "", bound - 1), "(i32.const 7)"),
        idle_agent(&instances("tiny", "", bound), "(i32.const 7)"),
        bound + 1,
        bound,
    )
    .await;
}

#[tokio::test]
async fn tables_up_to_the_bound_run_and_one_more_is_refused_by_name() {
    // One table per core module (the pool's bound), in as many instances as allowed.
    let bound = EngineSettings::default().max_tables_per_component as usize;
    let table = "(table 1 funcref)";
    assert_bound_holds(
        idle_agent(&instances("tab", table, bound), "(i32.const 7)"),
        idle_agent(&instances("tab", table, bound + 1), "(i32.const 7)"),
        bound + 1,
        bound,
    )
    .await;
}

#[tokio::test]
async fn many_instances_of_one_module_with_a_memory_are_counted_per_instance() {
    // One core module with a memory, instantiated more often than the pool allows
    // memories per component: the shape check sees one memory section, the pool five
    // memories. Refused as too complex, naming the limit — not an internal error.
    let runtime = runtime();
    let limit = EngineSettings::default().max_memories_per_component;
    let before = instances("mem", "(memory 1)", limit as usize);
    let err = runtime
        .load(idle_agent(&before, "(i32.const 0)"))
        .await
        .expect_err("more memories than the pool holds");
    assert!(matches!(err, LoadError::TooComplex(_)), "{err:?}");
    assert!(
        err.to_string().contains(&format!("{}", limit + 1))
            && err.to_string().contains(&format!("{limit}")),
        "{err}"
    );
    assert_neighbour_runs(&runtime).await;
}

/// A core module with a one-page memory and a `grow` export that grows it by one page,
/// returning what `memory.grow` returned.
const GROWER: &str = r#"(core module $grower
  (memory 1)
  (func (export "grow") (result i32) (memory.grow (i32.const 1))))"#;

#[tokio::test]
async fn memories_grown_together_stop_at_the_summed_limit_with_memory_limit_exceeded() {
    let runtime = runtime();
    let memories = EngineSettings::default().max_memories_per_component;
    // The agent's memory plus `memories - 1` others; each round grows every one by a
    // page, and the first refusal traps.
    let others = memories - 1;
    let mut before = format!("{GROWER}\n");
    let mut imports = String::new();
    let mut with = String::new();
    let mut grow_all = String::new();
    for i in 0..others {
        before.push_str(&format!("(core instance $g{i} (instantiate $grower))\n"));
        imports.push_str(&format!(
            "(import \"g{i}\" \"grow\" (func $grow{i} (result i32)))\n"
        ));
        with.push_str(&format!("(with \"g{i}\" (instance $g{i}))"));
        grow_all.push_str(&format!(
            "(if (i32.eq (call $grow{i}) (i32.const -1)) (then unreachable))\n"
        ));
    }
    let fields = format!(
        r#"(func $work (result i32)
             (local $rounds i32)
             (loop $again
               (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1)) (then unreachable))
               {grow_all}
               (local.set $rounds (i32.add (local.get $rounds) (i32.const 1)))
               (br $again))
             (local.get $rounds))"#
    );
    let agent = runtime
        .load(agent(&before, &imports, &with, &fields))
        .await
        .expect("as many memories as the pool holds per component load");

    let limits = Limits {
        memory_bytes: 4 << 20,
        ..tight_limits()
    };
    let execution = run(&runtime, &agent, limits).await;
    assert_eq!(
        execution.outcome,
        Outcome::MemoryLimitExceeded,
        "{execution:#?}"
    );
    // Every memory counts: the peak is the limit exactly, never more, although no one
    // memory came near it.
    assert_eq!(execution.usage.peak_memory_bytes, limits.memory_bytes);
    assert_eq!(limits.memory_bytes % (u64::from(memories) * PAGE), 0);
    assert_eq!(
        execution.error.as_ref().map(|e| e.code.as_str()),
        Some("memory_limit_exceeded")
    );
    assert_neighbour_runs(&runtime).await;
}

#[tokio::test]
async fn a_table_grows_to_the_bound_and_no_further() {
    let runtime = runtime();
    // The pool's slot for a table (StoreBounds' own bound is looser).
    let bound = StructureLimits::default().max_table_elements;
    // Grow by 1,000 until refused, then by one until refused: the size reached.
    let fields = r#"(table $t 0 funcref)
        (func $work (result i32)
          (block $big (loop $l
            (br_if $big (i32.eq (table.grow $t (ref.null func) (i32.const 1000)) (i32.const -1)))
            (br $l)))
          (block $small (loop $l
            (br_if $small (i32.eq (table.grow $t (ref.null func) (i32.const 1)) (i32.const -1)))
            (br $l)))
          (table.size $t))"#;
    let agent = runtime
        .load(agent("", "", "", fields))
        .await
        .expect("loads");
    let execution = run(&runtime, &agent, tight_limits()).await;
    assert_eq!(execution.outcome, Outcome::Succeeded, "{execution:#?}");
    assert_eq!(
        execution.output.as_deref(),
        Some(bound.to_string().as_str()),
        "the table stops exactly at the bound"
    );
    assert_neighbour_runs(&runtime).await;
}

#[tokio::test]
async fn a_table_or_memory_that_starts_over_the_bound_is_refused_before_compiling() {
    let runtime = runtime();
    let limits = StructureLimits::default();
    let big_table = agent(
        "",
        "",
        "",
        &format!(
            "(table {} funcref) (func $work (result i32) (i32.const 0))",
            limits.max_table_elements + 1
        ),
    );
    let err = runtime.load(big_table).await.expect_err("refused");
    assert!(
        matches!(&err, LoadError::TooComplex(m) if m.contains(&limits.max_table_elements.to_string())),
        "{err:?}"
    );
    let five = (0..5)
        .map(|i| format!("(core module $m{i} (memory 1))"))
        .collect::<String>();
    let err = runtime
        .load(idle_agent(&five, "(i32.const 0)"))
        .await
        .expect_err("refused");
    assert!(
        matches!(&err, LoadError::TooComplex(m) if m.contains("memories in the component")),
        "{err:?}"
    );
    assert_eq!(runtime.cache_stats().compiles, 0, "nothing was compiled");
    assert_neighbour_runs(&runtime).await;
}

#[tokio::test]
async fn agents_at_every_bound_running_at_once_leave_pool_slots_for_a_neighbour() {
    // A small pool, every slot but one taken by a live instance of an agent with as many
    // core instances as it may have: the neighbour still gets the last slot, rather
    // than `host_failure` because the others took the pool's core instances. (When the
    // pool held 16 core instances per slot, the second of these hogs already failed.)
    let mut config = RuntimeConfig::in_memory();
    config.engine.max_instances = 4;
    config.compile =
        corral_host::runtime::CompileSettings::worker(corral_tests::harness::corral_bin());
    let runtime = Arc::new(Runtime::new(config).unwrap());
    let bound = StoreBounds::default().instances;
    // Spins until it runs out of fuel, holding its slot meanwhile.
    let hog = idle_agent(
        &instances("tiny", "", bound - 1),
        "(loop $spin (br $spin)) (i32.const 0)",
    );
    let hog = runtime.load(hog).await.expect("at the bound it loads");
    let limits = Limits {
        fuel: 1_000_000_000_000,
        timeout: Duration::from_millis(1500),
        ..tight_limits()
    };
    let hogs: Vec<_> = (0..3)
        .map(|_| {
            let (runtime, hog) = (runtime.clone(), hog.clone());
            tokio::spawn(async move { run(&runtime, &hog, limits).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let echo = load(&runtime, ECHO).await;
    let execution = invoke(&runtime, &echo, "echo", "{}", Limits::default()).await;
    assert_eq!(execution.outcome, Outcome::Succeeded, "{execution:#?}");
    for hog in hogs {
        let execution = hog.await.unwrap();
        assert_eq!(execution.outcome, Outcome::TimedOut, "{execution:#?}");
    }
}
