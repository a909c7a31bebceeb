//! `weir plugin check` end to end through the binary, and its errors.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::plugin_cases::cases;
use crate::support::{wasm, weir, weir_cmd, weir_ok};

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
