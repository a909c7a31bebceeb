//! `weir plugin check` end to end through the binary, and its errors.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::plugin_cases::cases;
use crate::support::{repo, wasm, weir, weir_cmd, weir_ok};

#[test]
fn check_reports_the_expected_counts_and_idempotence() {
    let cases = cases();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl");
    let mut text: String = cases.iter().map(|c| format!("{}\n", c["event"])).collect();
    // lines the decoder refuses, with the reasons it gives
    text.push_str("{not json\n[1,2]\n{\"event_id\":\"x\",\"timestamp\":\"2026-11-24T10:00:00\",\"page_url\":\"https://x.org\"}\n");
    text.push_str("{\"event_id\":\"x\",\"timestamp\":1,\"page_url\":\"https://x.org\",\"tti_ms\":\"slow\"}\n\n");
    std::fs::write(&input, text).unwrap();

    let out = weir_ok(&mut weir_cmd(&[
        "plugin",
        "check",
        wasm("weir_plugin_web_vitals").to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--json",
    ]));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();

    let count = |verdict: &str| cases.iter().filter(|c| c["verdict"] == verdict).count() as u64;
    assert_eq!(report["kept"], count("keep"));
    assert_eq!(report["dropped"], count("drop"));
    assert_eq!(report["rejected"], count("reject") + 4);
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    for c in cases.iter().filter(|c| c["verdict"] != "keep") {
        *reasons
            .entry(c["reason"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    for r in [
        "invalid JSON",
        "not a JSON object",
        "field `timestamp`: timestamp without UTC offset",
        "field `tti_ms`: not a float64",
    ] {
        reasons.insert(r.to_string(), 1);
    }
    let got: BTreeMap<String, u64> = serde_json::from_value(report["reasons"].clone()).unwrap();
    assert_eq!(got, reasons);
    assert_eq!(report["idempotent"], true);
    assert_eq!(report["output_schema"].as_array().unwrap().len(), 11);
}

/// One line on stderr that names `needle`, exit code 2, no panic.
fn assert_user_error(args: &[&str], needle: &str) {
    let out = weir(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains(needle),
        "`{}` lacks `{needle}`",
        errors[0]
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
}

#[test]
fn bad_plugins_give_one_clear_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let web_vitals = wasm("weir_plugin_web_vitals");
    let missing = dir.path().join("missing.wasm");
    assert_user_error(
        &["plugin", "check", missing.to_str().unwrap()],
        "missing.wasm",
    );

    let truncated = dir.path().join("truncated.wasm");
    let bytes = std::fs::read(&web_vitals).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    assert_user_error(
        &["plugin", "check", truncated.to_str().unwrap()],
        "truncated.wasm",
    );

    let text = dir.path().join("text.wasm");
    std::fs::write(&text, "not wasm at all").unwrap();
    assert_user_error(
        &["plugin", "check", text.to_str().unwrap()],
        "is not a valid WebAssembly component",
    );

    let wrong = wasm("weir_fixture_wrong_version");
    assert_user_error(
        &["plugin", "check", wrong.to_str().unwrap()],
        "weir:preprocess@0.2.0",
    );

    let hostile = wasm("weir_fixture_hostile");
    assert_user_error(
        &[
            "plugin",
            "check",
            hostile.to_str().unwrap(),
            "--config",
            "mode=init-fail",
        ],
        "refused init",
    );
    assert_user_error(
        &[
            "plugin",
            "check",
            web_vitals.to_str().unwrap(),
            "--config",
            "colour=blue",
        ],
        "unknown config key(s): colour",
    );
}

/// Sample lines for the hostile fixture: `n` events, those at `poison`
/// (0-based) with a poison id; line numbers are index + 1.
fn hostile_sample(dir: &std::path::Path, n: usize, poison: &[usize]) -> std::path::PathBuf {
    let text: String = (0..n)
        .map(|i| {
            let id = if poison.contains(&i) {
                format!("poison-{i}")
            } else {
                format!("e{i}")
            };
            format!(
                "{{\"event_id\":\"{id}\",\"timestamp\":1764000000000,\"page_url\":\"https://x.org/{i}\",\"tti_ms\":100}}\n"
            )
        })
        .collect();
    let path = dir.join("hostile.jsonl");
    std::fs::write(&path, text).unwrap();
    path
}

/// `weir plugin check --json` with `args`: exit code and report.
fn check_report(args: &[&str]) -> (Option<i32>, Value) {
    let mut all = vec!["plugin", "check"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = weir(&all);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code(), report)
}

fn failure<'a>(report: &'a Value, class: &str) -> &'a Value {
    report["failures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["class"] == class)
        .unwrap_or_else(|| panic!("no `{class}` failure: {report}"))
}

#[test]
fn check_fails_on_a_trap_with_the_panic_message_and_the_sample_line() {
    let dir = tempfile::tempdir().unwrap();
    let sample = hostile_sample(dir.path(), 40, &[2, 30]);
    let hostile = wasm("weir_fixture_hostile");
    let (code, report) = check_report(&[
        hostile.to_str().unwrap(),
        "--config",
        "mode=trap",
        "--input",
        sample.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(report["passed"], false);
    assert_eq!(report["kept"], 38);
    let trap = failure(&report, "trap");
    assert_eq!(trap["events"], 2, "{report}");
    assert_eq!(trap["line"], 3, "{report}");
    let example = trap["example"].as_str().unwrap();
    // the SDK's panic hook: the author's words and where, not just `unreachable`
    assert!(
        example.contains("unreachable") && example.contains("panicked at"),
        "{example}"
    );
    assert!(example.contains("poison event"), "{example}");
    // one cause, one reason, whatever the piece it was isolated in
    assert_eq!(report["reasons"].as_object().unwrap().len(), 1, "{report}");
}

#[test]
fn a_contract_break_is_one_reason_whatever_the_piece_size() {
    let dir = tempfile::tempdir().unwrap();
    let sample = hostile_sample(dir.path(), 3000, &[5, 1500, 2999]);
    let hostile = wasm("weir_fixture_hostile");
    let (code, report) = check_report(&[
        hostile.to_str().unwrap(),
        "--config",
        "mode=contract",
        "--input",
        sample.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1), "{report}");
    let contract = failure(&report, "contract");
    assert_eq!(contract["events"], 3, "{report}");
    let reasons = report["reasons"].as_object().unwrap();
    assert_eq!(reasons.len(), 1, "{report}");
    let (reason, count) = reasons.iter().next().unwrap();
    assert_eq!(count, 3);
    assert!(reason.contains("broke the contract"), "{reason}");
    assert!(!reason.contains("rows)"), "{reason}");
}

#[test]
fn check_names_the_pass_column_and_values_when_not_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let sample = hostile_sample(dir.path(), 5, &[]);
    let hostile = wasm("weir_fixture_hostile");
    let (code, report) = check_report(&[
        hostile.to_str().unwrap(),
        "--config",
        "mode=drift",
        "--input",
        sample.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(report["idempotent"], false);
    let example = failure(&report, "not-idempotent")["example"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(example.contains("second pass"), "{example}");
    assert!(example.contains("line 1"), "{example}");
    assert!(example.contains("column `page_url`"), "{example}");
    assert!(
        example.contains("\"https://x.org/0/x\"") && example.contains("\"https://x.org/0/x/x\""),
        "{example}"
    );
}

#[test]
fn check_gates_the_share_of_rejected_events() {
    let cases = cases();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl");
    let text: String = cases.iter().map(|c| format!("{}\n", c["event"])).collect();
    std::fs::write(&input, text).unwrap();
    let web_vitals = wasm("weir_plugin_web_vitals");
    let args = [
        web_vitals.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
    ];
    let (code, report) = check_report(&args);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["passed"], true);
    let rejected = cases.iter().filter(|c| c["verdict"] == "reject").count() as u64;
    assert_eq!(report["plugin_rejected"], rejected);

    let mut strict = args.to_vec();
    strict.extend(["--max-rejected-share", "0.01"]);
    let (code, report) = check_report(&strict);
    assert_eq!(code, Some(1), "{report}");
    let share = failure(&report, "rejected-share");
    assert_eq!(share["events"], rejected);
    assert!(
        share["example"]
            .as_str()
            .unwrap()
            .contains("--max-rejected-share"),
        "{report}"
    );
}

#[test]
fn check_and_validate_name_every_column_the_pipeline_needs() {
    let pipeline = repo().join("pipelines/local.toml");
    let identity = wasm("weir_plugin_identity");
    let dir = tempfile::tempdir().unwrap();
    let sample = hostile_sample(dir.path(), 3, &[]);
    // the identity plugin outputs the input schema: no event_date
    let (code, report) = check_report(&[
        identity.to_str().unwrap(),
        "--pipeline",
        pipeline.to_str().unwrap(),
        "--input",
        sample.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1), "{report}");
    let problem = failure(&report, "pipeline")["example"].as_str().unwrap();
    assert!(
        problem.contains("lake.partition_by: the plugin's output has no column `event_date`"),
        "{problem}"
    );
    // the pipeline's own plugin meets them
    let (code, report) = check_report(&[
        "--pipeline",
        pipeline.to_str().unwrap(),
        "--input",
        sample.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{report}");

    let out = weir(&[
        "validate",
        pipeline.to_str().unwrap(),
        "--set",
        &format!("plugin.path={}", identity.display()),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("lake.partition_by: the plugin's output has no column `event_date` (expected one of type date or timestamp)"),
        "{stderr}"
    );
}

#[test]
fn validate_checks_every_url_with_the_message_a_run_gives() {
    let pipeline = repo().join("pipelines/local.toml");
    assert_user_error(
        &[
            "validate",
            pipeline.to_str().unwrap(),
            "--set",
            "lake.url=ftp://x/y",
        ],
        "key `lake.url`: url `ftp://x/y`: expected a local path, file:///path or s3://bucket/prefix",
    );
    assert_user_error(
        &[
            "validate",
            pipeline.to_str().unwrap(),
            "--set",
            "checkpoints.url=redis://x",
        ],
        "key `checkpoints.url`: url `redis://x`: expected dynamodb://table or a directory path",
    );
}

#[test]
fn a_closed_stderr_is_not_a_panic() {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let status = weir_cmd(&["validate", "/nonexistent/pipeline.toml"])
        .stderr(writer)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(2));
}

#[test]
fn the_sdk_ships_the_contract_unchanged() {
    let contract = std::fs::read_to_string(repo().join("wit/preprocess.wit")).unwrap();
    let shipped = std::fs::read_to_string(repo().join("plugins/sdk/wit/preprocess.wit")).unwrap();
    assert!(
        contract == shipped,
        "plugins/sdk/wit/preprocess.wit differs from wit/preprocess.wit: cp wit/preprocess.wit plugins/sdk/wit/"
    );
}

#[test]
fn the_c_plugins_committed_bindings_match_the_contract() {
    let wit = std::fs::read(repo().join("wit/preprocess.wit")).unwrap();
    let stamp =
        std::fs::read_to_string(repo().join("plugins/web-vitals-c/gen/WIT_SHA256")).unwrap();
    let digest = weir::plugin::digest_of(&wit);
    assert_eq!(
        stamp.trim(),
        digest,
        "plugins/web-vitals-c/gen is stale: bash scripts/build-plugins.sh regenerates it"
    );
}
