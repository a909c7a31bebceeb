//! One plugin instance and the batches it processes.
//!
//! [`PluginRunner::process`] never fails: when a call traps, times out, runs
//! out of memory, refuses the batch or breaks the contract, the instance is
//! replaced (when it is no longer usable) and the batch is split in halves
//! and retried until the failing events stand alone; those are rejected with
//! the error, every other event gets its normal verdict. The number of calls
//! one batch may spend on this is bounded by [`Limits::isolation_calls`].

use std::sync::Arc;

use arrow::compute::concat_batches;
use arrow::record_batch::RecordBatch;
use wasmtime::{Store, Trap};

use super::bindings::Preprocessor;
use super::convert::{batch_from_wit, batch_to_wit, schema_from_wit, schema_to_wit};
use super::engine::{EPOCH_TICK, LoadedPlugin, PluginEngine};
use super::error::{CallFailure, PluginError};
use super::limits::Limits;
use super::sandbox::HostState;
use crate::pipeline::DeclaredSchema;

/// Why an input event is not in the output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// deliberately discarded (e.g. a bot).
    Drop,
    /// invalid: belongs in the dead letters.
    Reject,
}

/// One dropped or rejected input event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Excluded {
    /// its row in the input batch.
    pub row: usize,
    /// drop or reject.
    pub verdict: Verdict,
    /// the plugin's reason, or the failure that isolated it.
    pub reason: Arc<str>,
}

/// The result of one batch.
#[derive(Clone, Debug)]
pub struct Processed {
    /// kept events, cleaned, in input order, in the plugin's output schema.
    pub batch: RecordBatch,
    /// dropped and rejected events, in row order.
    pub excluded: Vec<Excluded>,
    /// calls that failed while processing this batch (0 on the happy path).
    pub failed_calls: usize,
}

struct Instance {
    store: Store<HostState>,
    bindings: Preprocessor,
}

/// Runs one plugin: instantiated once, `init` once, batches many times.
pub struct PluginRunner {
    engine: Arc<PluginEngine>,
    plugin: Arc<LoadedPlugin>,
    label: Arc<str>,
    input: DeclaredSchema,
    config: Vec<(String, String)>,
    output: DeclaredSchema,
    instance: Option<Instance>,
}

impl std::fmt::Debug for PluginRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRunner")
            .field("plugin", &self.label)
            .field("output", &self.output)
            .finish()
    }
}

impl PluginRunner {
    /// Instantiate `plugin` and negotiate its schema.
    pub fn new(
        engine: Arc<PluginEngine>,
        plugin: Arc<LoadedPlugin>,
        input: &DeclaredSchema,
        config: &[(String, String)],
    ) -> Result<Self, PluginError> {
        let label: Arc<str> = plugin.label().into();
        let (instance, output) =
            instantiate(&engine, &plugin, &label, input, config).map_err(|reason| {
                PluginError::Init {
                    name: plugin.name.clone(),
                    digest: plugin.digest.clone(),
                    reason,
                }
            })?;
        Ok(PluginRunner {
            engine,
            plugin,
            label,
            input: input.clone(),
            config: config.to_vec(),
            output,
            instance: Some(instance),
        })
    }

    /// The schema the plugin declared for its output.
    pub fn output_schema(&self) -> &DeclaredSchema {
        &self.output
    }

    /// The schema the plugin was initialised with.
    pub fn input_schema(&self) -> &DeclaredSchema {
        &self.input
    }

    /// The plugin this runner runs.
    pub fn plugin(&self) -> &Arc<LoadedPlugin> {
        &self.plugin
    }

    /// Run one batch (of the input schema) through the plugin.
    pub fn process(&mut self, batch: &RecordBatch) -> Processed {
        if batch.num_rows() == 0 {
            let empty = RecordBatch::new_empty(self.output.arrow().clone());
            return Processed {
                batch: empty,
                excluded: Vec::new(),
                failed_calls: 0,
            };
        }
        let mut budget = self.engine.limits().isolation_calls.max(1);
        let mut failed_calls = 0;
        let mut processed = self.run(batch, &mut budget, &mut failed_calls, None);
        processed.failed_calls = failed_calls;
        processed
    }

    fn run(
        &mut self,
        batch: &RecordBatch,
        budget: &mut usize,
        failed_calls: &mut usize,
        last_failure: Option<&CallFailure>,
    ) -> Processed {
        if *budget == 0 {
            let failure =
                last_failure.map_or_else(|| "unknown failure".to_string(), |f| f.to_string());
            return self.reject_all(
                batch,
                &format!("plugin {} {failure} (isolation budget spent)", self.label),
            );
        }
        *budget -= 1;
        let failure = match self.call(batch) {
            Ok(processed) => return processed,
            Err(failure) => failure,
        };
        *failed_calls += 1;
        tracing::warn!(plugin = %self.label, rows = batch.num_rows(), %failure, "plugin call failed; isolating the failing events");
        let rows = batch.num_rows();
        if rows <= 1 {
            return self.reject_all(batch, &format!("plugin {} {failure}", self.label));
        }
        let mid = rows / 2;
        let left = self.run(&batch.slice(0, mid), budget, failed_calls, Some(&failure));
        let right = self.run(
            &batch.slice(mid, rows - mid),
            budget,
            failed_calls,
            Some(&failure),
        );
        let merged = concat_batches(self.output.arrow(), [&left.batch, &right.batch])
            .expect("both halves are in the output schema");
        let mut excluded = left.excluded;
        excluded.extend(right.excluded.into_iter().map(|e| Excluded {
            row: e.row + mid,
            ..e
        }));
        Processed {
            batch: merged,
            excluded,
            failed_calls: 0,
        }
    }

    fn reject_all(&self, batch: &RecordBatch, reason: &str) -> Processed {
        let reason: Arc<str> = reason.into();
        Processed {
            batch: RecordBatch::new_empty(self.output.arrow().clone()),
            excluded: (0..batch.num_rows())
                .map(|row| Excluded {
                    row,
                    verdict: Verdict::Reject,
                    reason: reason.clone(),
                })
                .collect(),
            failed_calls: 0,
        }
    }

    /// One `process` call; on a trap the instance is discarded.
    fn call(&mut self, batch: &RecordBatch) -> Result<Processed, CallFailure> {
        if self.instance.is_none() {
            let (instance, _) = instantiate(
                &self.engine,
                &self.plugin,
                &self.label,
                &self.input,
                &self.config,
            )
            .map_err(|e| CallFailure::Trap(format!("re-instantiation failed: {e}")))?;
            self.instance = Some(instance);
        }
        let limits = self.engine.limits().clone();
        let instance = self.instance.as_mut().expect("instantiated above");
        let input = batch_to_wit(batch);
        arm(&mut instance.store, &limits);
        let result = instance
            .bindings
            .weir_preprocess_plugin()
            .call_process(&mut instance.store, &input);
        instance.store.data().flush_output();
        let output = match result {
            Ok(Ok(output)) => output,
            Ok(Err(message)) => return Err(CallFailure::Refused(message)),
            Err(error) => {
                let failure = classify(&error, &instance.store, &limits);
                self.instance = None;
                return Err(failure);
            }
        };
        self.accept(output, batch.num_rows())
            .map_err(CallFailure::BadOutput)
    }

    /// Check the plugin's answer and convert it.
    fn accept(
        &self,
        output: super::bindings::types::Output,
        rows: usize,
    ) -> Result<Processed, String> {
        use super::bindings::types::Verdict as WitVerdict;
        let reasons: Vec<Arc<str>> = output
            .reasons
            .iter()
            .map(|r| Arc::from(r.as_str()))
            .collect();
        let mut excluded = Vec::with_capacity(output.exclusions.len());
        let mut previous: Option<u32> = None;
        for e in &output.exclusions {
            if e.row as usize >= rows || previous.is_some_and(|p| p >= e.row) {
                return Err(format!(
                    "exclusion of row {} is out of order or out of range ({rows} rows)",
                    e.row
                ));
            }
            previous = Some(e.row);
            let reason = reasons
                .get(e.reason as usize)
                .ok_or_else(|| format!("reason index {} out of range", e.reason))?;
            let verdict = match e.verdict {
                WitVerdict::Drop => Verdict::Drop,
                WitVerdict::Reject => Verdict::Reject,
            };
            excluded.push(Excluded {
                row: e.row as usize,
                verdict,
                reason: reason.clone(),
            });
        }
        if output.batch.num_rows as usize + excluded.len() != rows {
            return Err(format!(
                "{} kept + {} excluded events for {rows} input events",
                output.batch.num_rows,
                excluded.len()
            ));
        }
        let batch = batch_from_wit(output.batch, &self.output)?;
        Ok(Processed {
            batch,
            excluded,
            failed_calls: 0,
        })
    }
}

/// Set the CPU deadline and reset the out-of-memory flag before a call.
fn arm(store: &mut Store<HostState>, limits: &Limits) {
    let ticks = limits
        .call_timeout_ms
        .div_ceil(EPOCH_TICK.as_millis() as u64)
        .max(1)
        + 1;
    store.set_epoch_deadline(ticks);
    store.data_mut().limiter.refused = false;
}

fn classify(error: &wasmtime::Error, store: &Store<HostState>, limits: &Limits) -> CallFailure {
    if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        CallFailure::Timeout(limits.call_timeout_ms)
    } else if store.data().limiter.refused {
        CallFailure::OutOfMemory(limits.memory_bytes())
    } else if let Some(trap) = error.downcast_ref::<Trap>() {
        CallFailure::Trap(trap.to_string())
    } else {
        let cause = error.root_cause().to_string();
        CallFailure::Trap(cause.lines().next().unwrap_or("unknown trap").to_string())
    }
}

/// A fresh instance, initialised; the error is the plugin's own message.
fn instantiate(
    engine: &PluginEngine,
    plugin: &LoadedPlugin,
    label: &Arc<str>,
    input: &DeclaredSchema,
    config: &[(String, String)],
) -> Result<(Instance, DeclaredSchema), String> {
    let limits = engine.limits();
    let mut store = Store::new(engine.engine(), HostState::new(label.clone(), limits));
    store.limiter(|state| &mut state.limiter);
    store.epoch_deadline_trap();
    arm(&mut store, limits);
    let bindings = plugin
        .pre
        .instantiate(&mut store)
        .map_err(|e| format!("instantiation failed: {e:#}"))?;
    let result =
        bindings
            .weir_preprocess_plugin()
            .call_init(&mut store, &schema_to_wit(input), config);
    store.data().flush_output();
    let fields = match result {
        Ok(Ok(fields)) => fields,
        Ok(Err(message)) => return Err(message),
        Err(error) => return Err(format!("init {}", classify(&error, &store, limits))),
    };
    let output = schema_from_wit(&fields)?;
    Ok((Instance { store, bindings }, output))
}
