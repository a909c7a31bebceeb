//! Four implementations of the web-vitals rules, in Rust, Python,
//! JavaScript and C, held to one behaviour by `weir plugin diff` over a
//! large, messy sample: the rule cases, the edge cases, and thousands of
//! generated events with every kind of bad input.

use serde_json::Value;
use weir::tools::generate::{Generator, GeneratorOptions};

use crate::support::{repo, wasm, weir, weir_cmd, weir_ok};

fn messy_sample(dir: &std::path::Path) -> std::path::PathBuf {
    let testdata = repo().join("plugins/web-vitals/testdata");
    let mut text = String::new();
    for line in std::fs::read_to_string(testdata.join("cases.jsonl"))
        .unwrap()
        .lines()
    {
        let case: Value = serde_json::from_str(line).unwrap();
        text.push_str(&case["event"].to_string());
        text.push('\n');
    }
    text.push_str(&std::fs::read_to_string(testdata.join("edge-events.jsonl")).unwrap());
    let mut generator = Generator::new(GeneratorOptions {
        seed: 7,
        bad_share: 0.2,
        ..GeneratorOptions::default()
    });
    let mut line = String::new();
    for _ in 0..5000 {
        generator.next_into(&mut line);
        text.push_str(&line);
        text.push('\n');
    }
    let path = dir.join("messy.jsonl");
    std::fs::write(&path, text).unwrap();
    path
}

/// `weir plugin diff` of the Rust plugin and `other`: no difference.
fn agrees_with_rust(other: &str) {
    let dir = tempfile::tempdir().unwrap();
    let sample = messy_sample(dir.path());
    let rust = wasm("weir_plugin_web_vitals");
    let other = wasm(other);
    let out = weir_ok(&mut weir_cmd(&[
        "plugin",
        "diff",
        rust.to_str().unwrap(),
        other.to_str().unwrap(),
        "--input",
        sample.to_str().unwrap(),
        "--json",
    ]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["differing"], 0, "{report}");
    assert!(report["events"].as_u64().unwrap() > 4000, "{report}");
    // and it passes the gate on its own: no failed call, idempotent
    weir_ok(&mut weir_cmd(&[
        "plugin",
        "check",
        other.to_str().unwrap(),
        "--input",
        sample.to_str().unwrap(),
    ]));
}

#[test]
fn rust_and_python_web_vitals_agree_on_every_event() {
    agrees_with_rust("weir_plugin_web_vitals_py");
}

#[test]
fn rust_and_javascript_web_vitals_agree_on_every_event() {
    agrees_with_rust("weir_plugin_web_vitals_js");
}

#[test]
fn rust_and_c_web_vitals_agree_on_every_event() {
    agrees_with_rust("weir_plugin_web_vitals_c");
}

#[test]
fn diff_reports_differences_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let sample = messy_sample(dir.path());
    let rust = wasm("weir_plugin_web_vitals");
    let identity = wasm("weir_plugin_identity");
    let out = weir(&[
        "plugin",
        "diff",
        rust.to_str().unwrap(),
        identity.to_str().unwrap(),
        "--input",
        sample.to_str().unwrap(),
        "--examples",
        "2",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("output schemas differ"), "{stdout}");
    assert_eq!(
        stdout.matches("\nline ").count() + usize::from(stdout.starts_with("line ")),
        2,
        "{stdout}"
    );
    assert!(stdout.contains("differ ("), "{stdout}");
}
