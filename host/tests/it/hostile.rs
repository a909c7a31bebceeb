//! The sandbox against plugins that misbehave on purpose
//! (`plugins/fixtures/hostile`, `plugins/fixtures/wrong-version`).

use std::net::TcpListener;
use std::sync::Arc;

use arrow::array::AsArray;
use arrow::record_batch::RecordBatch;
use weir::decode::JsonDecoder;
use weir::pipeline::DeclaredSchema;
use weir::plugin::{Limits, PluginError, PluginRunner, Verdict};

use crate::support::{engine, wasm};

/// `n` valid events; those whose index is in `poison` get a poison id.
fn events(n: usize, poison: &[usize]) -> RecordBatch {
    let mut decoder = JsonDecoder::new(&DeclaredSchema::web_vitals(), n);
    for i in 0..n {
        let id = if poison.contains(&i) {
            format!("poison-{i}")
        } else {
            format!("e{i}")
        };
        let line = format!(
            r#"{{"event_id":"{id}","timestamp":1764000000000,"page_url":"https://x.org/{i}","tti_ms":100}}"#
        );
        decoder.push(line.as_bytes()).unwrap();
    }
    decoder.flush()
}

fn hostile(mode: &str, limits: Limits, extra: &[(&str, &str)]) -> PluginRunner {
    let engine = engine(limits);
    let plugin = engine.load_file(&wasm("weir_fixture_hostile")).unwrap();
    let mut config = vec![("mode".to_string(), mode.to_string())];
    config.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    PluginRunner::new(
        Arc::clone(&engine),
        plugin,
        &DeclaredSchema::web_vitals(),
        &config,
    )
    .unwrap()
}

fn ids(batch: &RecordBatch) -> Vec<String> {
    batch
        .column(0)
        .as_string::<i32>()
        .iter()
        .map(|s| s.unwrap().to_string())
        .collect()
}

/// Exactly the poison rows are rejected with a reason containing `needle`,
/// every other event is kept in order.
fn assert_isolated(runner: &mut PluginRunner, n: usize, poison: &[usize], needle: &str) {
    let out = runner.process(&events(n, poison));
    let rejected: Vec<usize> = out.excluded.iter().map(|e| e.row).collect();
    assert_eq!(rejected, poison, "{:?}", out.excluded);
    for e in &out.excluded {
        assert_eq!(e.verdict, Verdict::Reject);
        assert!(
            e.reason.contains(needle),
            "reason `{}` lacks `{needle}`",
            e.reason
        );
        assert!(
            e.reason.contains("weir_fixture_hostile.wasm (sha256 "),
            "reason names the plugin: {}",
            e.reason
        );
    }
    let expected: Vec<String> = (0..n)
        .filter(|i| !poison.contains(i))
        .map(|i| format!("e{i}"))
        .collect();
    assert_eq!(ids(&out.batch), expected);
    assert!(out.failed_calls > 0);
}

#[test]
fn a_trap_on_one_event_rejects_only_that_event() {
    let mut runner = hostile("trap", Limits::default(), &[]);
    assert_isolated(&mut runner, 1000, &[500], "trapped");
    // the panic's text, through the SDK's hook, not only `unreachable`
    assert_isolated(
        &mut runner,
        64,
        &[0, 63],
        "the plugin's last words: panicked at",
    );
    assert_isolated(&mut runner, 8, &[4], "poison event");
}

#[test]
fn endless_loops_in_a_large_batch_are_isolated_with_short_deadlines() {
    // the default limits: 2 s per call, then 100 ms per isolating call
    let mut runner = hostile("loop", Limits::default(), &[]);
    let poison = [100, 2000, 4000];
    assert_isolated(&mut runner, 4096, &poison, "timed out after 100 ms");
    let next = runner.process(&events(4096, &[]));
    assert_eq!(next.batch.num_rows(), 4096);
}

#[test]
fn a_plugin_that_sleeps_is_refused_its_timer_instead_of_blocking_its_worker() {
    // each sleep would wait 30 s in host code, past every deadline (were
    // the timer granted, the isolating calls would take minutes, and the
    // reason would not match)
    let started = std::time::Instant::now();
    let mut runner = hostile("sleep", Limits::default(), &[]);
    assert_isolated(
        &mut runner,
        100,
        &[7, 60],
        "plugins may not wait on a timer",
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    let next = runner.process(&events(100, &[]));
    assert_eq!(next.batch.num_rows(), 100);
}

#[test]
fn isolation_stops_at_its_cpu_time_budget() {
    let limits = Limits {
        call_timeout_ms: 200,
        isolation_budget_ms: 1,
        ..Limits::default()
    };
    let mut runner = hostile("loop", limits, &[]);
    let out = runner.process(&events(64, &[5]));
    assert_eq!(out.excluded.len(), 64);
    assert_eq!(out.batch.num_rows(), 0);
    for e in &out.excluded {
        assert!(
            e.reason
                .contains("timed out after 200 ms (isolation budget of 1 ms spent)"),
            "{}",
            e.reason
        );
    }
}

#[test]
fn an_infinite_loop_is_stopped_and_the_next_batch_is_served() {
    let limits = Limits {
        call_timeout_ms: 100,
        ..Limits::default()
    };
    let mut runner = hostile("loop", limits, &[]);
    assert_isolated(&mut runner, 16, &[5], "timed out after 100 ms");
    let next = runner.process(&events(100, &[]));
    assert_eq!(next.batch.num_rows(), 100);
    assert_eq!(next.failed_calls, 0);
}

#[test]
fn a_memory_bomb_is_stopped_at_the_limit() {
    let limits = Limits {
        memory_mib: 32,
        ..Limits::default()
    };
    let mut runner = hostile("bomb", limits, &[]);
    assert_isolated(&mut runner, 8, &[3], "out of memory (limit 33554432 bytes)");
    assert_eq!(runner.process(&events(10, &[])).batch.num_rows(), 10);
}

#[test]
fn files_and_sockets_are_out_of_reach() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let target = listener.local_addr().unwrap().to_string();
    let mut runner = hostile("escape", Limits::default(), &[("target", &target)]);
    let out = runner.process(&events(4, &[2]));
    assert_eq!(out.excluded.len(), 1);
    let reason = &out.excluded[0].reason;
    assert!(
        reason.starts_with("escape blocked: file denied"),
        "{reason}"
    );
    assert!(reason.contains("tcp denied"), "{reason}");
    assert_eq!(
        listener.accept().map(|_| ()).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock
    );
    assert_eq!(out.batch.num_rows(), 3);
}

#[test]
fn noisy_output_is_bounded_and_harmless() {
    let limits = Limits {
        output_bytes: 1024,
        ..Limits::default()
    };
    let mut runner = hostile("noisy", limits, &[]);
    let out = runner.process(&events(5, &[1]));
    assert_eq!(out.batch.num_rows(), 5);
    assert_eq!(out.failed_calls, 0);
}

#[test]
fn init_failure_is_reported_with_the_plugin_digest() {
    let engine = engine(Limits::default());
    let plugin = engine.load_file(&wasm("weir_fixture_hostile")).unwrap();
    let config = [("mode".to_string(), "init-fail".to_string())];
    let err = PluginRunner::new(
        engine,
        plugin.clone(),
        &DeclaredSchema::web_vitals(),
        &config,
    )
    .unwrap_err();
    assert!(matches!(err, PluginError::Init { .. }));
    let text = err.to_string();
    assert!(text.contains("init refused on purpose"), "{text}");
    assert!(text.contains(&plugin.digest), "{text}");
}

#[test]
fn a_plugin_built_for_another_contract_version_is_refused() {
    let engine = engine(Limits::default());
    let err = engine
        .load_file(&wasm("weir_fixture_wrong_version"))
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, PluginError::WrongVersion { .. }), "{text}");
    assert!(
        text.contains("weir:preprocess@0.2.0") || text.contains("targets weir:preprocess@0.2.0"),
        "{text}"
    );
    assert!(text.contains("accepts weir:preprocess@0.1.0"), "{text}");
}
