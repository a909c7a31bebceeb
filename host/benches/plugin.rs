//! The plugin boundary, measured side by side over the same events:
//! - `web-vitals/native`: the web-vitals logic compiled natively (SDK types);
//! - `web-vitals/wasm`: the same logic as a component, through the host
//!   (Arrow → WIT → guest → WIT → Arrow, checked);
//! - `identity/wasm`: a component that keeps every event (boundary cost only).
//!
//! Run: `bash scripts/bench.sh plugin` (builds the components first).
#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float64Type, TimestampMillisecondType};
use arrow::record_batch::RecordBatch;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use weir::decode::JsonDecoder;
use weir::pipeline::DeclaredSchema;
use weir::plugin::{Limits, PluginEngine, PluginRunner};
use weir::tools::generate::{Generator, GeneratorOptions};
use weir_plugin_sdk::testing::init_plugin;
use weir_plugin_sdk::{Batch, BatchBuilder, F64, Plugin, Str, TimestampMs};
use weir_plugin_web_vitals::WebVitals;

const BATCH: usize = 4096;

fn events() -> RecordBatch {
    let mut generator = Generator::new(GeneratorOptions {
        bad_share: 0.0,
        ..GeneratorOptions::default()
    });
    let mut decoder = JsonDecoder::new(&DeclaredSchema::web_vitals(), BATCH);
    let mut line = String::new();
    while decoder.len() < BATCH {
        generator.next_into(&mut line);
        decoder
            .push(line.as_bytes())
            .expect("generated events decode");
    }
    decoder.flush()
}

/// The same events as an SDK batch, for the native run.
fn sdk_batch(batch: &RecordBatch) -> Batch {
    let schema = weir_plugin_web_vitals::input_schema();
    let mut b = BatchBuilder::new(&schema, batch.num_rows());
    for row in 0..batch.num_rows() {
        for (i, f) in schema.fields.iter().enumerate() {
            let c = batch.column(i);
            let valid = c.is_valid(row);
            match f.ty {
                weir_plugin_sdk::FieldType::String => b.push(
                    schema.field::<Str>(&f.name).unwrap(),
                    valid.then(|| c.as_string::<i32>().value(row)),
                ),
                weir_plugin_sdk::FieldType::Float64 => b.push(
                    schema.field::<F64>(&f.name).unwrap(),
                    valid.then(|| c.as_primitive::<Float64Type>().value(row)),
                ),
                weir_plugin_sdk::FieldType::TimestampMs => b.push(
                    schema.field::<TimestampMs>(&f.name).unwrap(),
                    valid.then(|| c.as_primitive::<TimestampMillisecondType>().value(row)),
                ),
                other => unreachable!("{other:?}"),
            }
        }
    }
    b.finish().unwrap()
}

fn wasm(name: &str) -> PathBuf {
    let dir = std::env::var_os("WEIR_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map_or_else(|| PathBuf::from("target"), PathBuf::from);
            target.join("wasm32-wasip2/release")
        });
    dir.join(format!("{name}.wasm"))
}

fn runner(engine: &Arc<PluginEngine>, name: &str) -> PluginRunner {
    let plugin = engine
        .load_file(&wasm(name))
        .expect("built plugin (run scripts/bench.sh)");
    PluginRunner::new(engine.clone(), plugin, &DeclaredSchema::web_vitals(), &[]).unwrap()
}

fn plugin_boundary(c: &mut Criterion) {
    let batch = events();
    let native_batch = sdk_batch(&batch);
    let engine = PluginEngine::new(Limits::default()).unwrap();
    let mut web_vitals = runner(&engine, "weir_plugin_web_vitals");
    let mut identity = runner(&engine, "weir_plugin_identity");
    let (mut native, _) =
        init_plugin::<WebVitals>(&weir_plugin_web_vitals::input_schema(), &[]).unwrap();

    let mut group = c.benchmark_group("plugin");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("web-vitals/native", |b| {
        b.iter_batched(
            || native_batch.clone(),
            |input| native.process(input).unwrap(),
            criterion::BatchSize::LargeInput,
        )
    });
    group.bench_function("web-vitals/wasm", |b| b.iter(|| web_vitals.process(&batch)));
    group.bench_function("identity/wasm", |b| b.iter(|| identity.process(&batch)));
    group.finish();
}

criterion_group!(benches, plugin_boundary);
criterion_main!(benches);
