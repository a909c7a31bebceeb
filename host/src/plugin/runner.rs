//! One plugin instance and the batches it processes.
//!
//! [`PluginRunner::process`] never fails: when a call traps, times out, runs
//! out of memory, refuses the batch or breaks the contract, the instance is
//! replaced (when it is no longer usable) and the batch is split in halves
//! and retried until the failing events stand alone; those are rejected with
//! the error, every other event gets its normal verdict. The number of calls
//! one batch may spend on this is bounded by [`Limits::isolation_calls`],
//! and its CPU time by [`Limits::isolation_budget_ms`]; after the first
//! timeout the pieces run with the shorter [`Limits::isolation_timeout_ms`].
//! Deadlines count the CPU time of the calling thread (`deadline`), so a
//! busy host slows isolation down but never changes its verdicts. One warning per batch says what was
//! isolated, at most one per runner every ten seconds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::compute::concat_batches;
use arrow::record_batch::RecordBatch;
use wasmtime::component::{Func, TypedFunc};
use wasmtime::{Store, Trap};

use super::bindings::{Preprocessor, types};
use super::convert::{
    BatchRef, batch_from_wit, convert_for_lending, lend_batch, schema_from_wit, schema_to_wit,
};
use super::deadline::{CpuDeadline, CpuStopwatch, ticks_for};
use super::engine::{LoadedPlugin, PluginEngine};
use super::error::{CallFailure, FailureKind, PluginError};
use super::limits::Limits;
use super::sandbox::{HostState, last_words};
use crate::pipeline::DeclaredSchema;

/// At most one warning about isolated events per runner and interval.
const WARNING_INTERVAL: Duration = Duration::from_secs(10);

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
    /// the class of the failed call that isolated it; `None` when the
    /// plugin itself dropped or rejected the event.
    pub failure: Option<FailureKind>,
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
    /// the export `process`, called with a batch lent from Arrow (the
    /// generated binding takes owned vectors, one copy more).
    process: Func,
}

/// `process` as called: a lent batch in, the generated `output` back.
type ProcessFunc<'a> = TypedFunc<(BatchRef<'a>,), (Result<types::Output, String>,)>;

/// Runs one plugin: instantiated once, `init` once, batches many times.
pub struct PluginRunner {
    engine: Arc<PluginEngine>,
    plugin: Arc<LoadedPlugin>,
    label: Arc<str>,
    input: DeclaredSchema,
    config: Vec<(String, String)>,
    output: DeclaredSchema,
    instance: Option<Instance>,
    /// CPU time per event of successful calls (moving average), to size
    /// the deadlines of isolating calls.
    nanos_per_row: Option<f64>,
    /// the warning about isolated events, at most one per interval.
    warnings: RateLimit,
}

impl std::fmt::Debug for PluginRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRunner")
            .field("plugin", &self.label)
            .field("output", &self.output)
            .finish()
    }
}

/// The isolation of one batch's failing events: calls and time left, and
/// the deadline its calls run with.
struct Isolation {
    calls_left: usize,
    /// the CPU time spent on the batch (its budget is CPU time, so a busy
    /// host does not cut isolation short).
    started: CpuStopwatch,
    failed_calls: usize,
    first_failure: Option<CallFailure>,
    /// a call of this batch timed out: the pieces get the shorter deadline.
    timed_out: bool,
}

impl Isolation {
    /// Why isolating must stop here, if it must.
    fn spent(&self, limits: &Limits) -> Option<String> {
        if self.calls_left == 0 {
            Some(format!(
                "isolation budget of {} calls spent",
                limits.isolation_calls
            ))
        } else if self.failed_calls > 0
            && self.started.elapsed() >= Duration::from_millis(limits.isolation_budget_ms)
        {
            Some(format!(
                "isolation budget of {} ms spent",
                limits.isolation_budget_ms
            ))
        } else {
            None
        }
    }
}

/// At most one message per interval; counts what it held back.
struct RateLimit {
    interval: Duration,
    next: Option<Instant>,
    held_back: u64,
}

impl RateLimit {
    fn new(interval: Duration) -> Self {
        RateLimit {
            interval,
            next: None,
            held_back: 0,
        }
    }

    /// `Some(messages held back since the last one)` when one may go now.
    fn admit(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.next.is_some_and(|next| now < next) {
            self.held_back += 1;
            return None;
        }
        self.next = Some(now + self.interval);
        Some(std::mem::take(&mut self.held_back))
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
            nanos_per_row: None,
            warnings: RateLimit::new(WARNING_INTERVAL),
        })
    }

    /// Another instance of the same plugin, initialised with the same
    /// schema and configuration (one per ingest worker).
    pub fn another(&self) -> Result<Self, PluginError> {
        PluginRunner::new(
            self.engine.clone(),
            self.plugin.clone(),
            &self.input,
            &self.config,
        )
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
        let limits = self.engine.limits().clone();
        let mut isolation = Isolation {
            calls_left: limits.isolation_calls.max(1),
            started: CpuStopwatch::start(),
            failed_calls: 0,
            first_failure: None,
            timed_out: false,
        };
        let mut processed = self.run(batch, &mut isolation);
        processed.failed_calls = isolation.failed_calls;
        if let Some(first) = &isolation.first_failure {
            self.warn_isolated(batch.num_rows(), &processed, first, &isolation);
        }
        processed
    }

    /// One warning per batch that needed isolating, rate-limited.
    fn warn_isolated(
        &mut self,
        rows: usize,
        processed: &Processed,
        first: &CallFailure,
        isolation: &Isolation,
    ) {
        let Some(held_back) = self.warnings.admit() else {
            return;
        };
        let isolated = processed
            .excluded
            .iter()
            .filter(|e| e.failure.is_some())
            .count();
        tracing::warn!(
            plugin = %self.label,
            rows,
            isolated,
            failed_calls = isolation.failed_calls,
            elapsed_ms = isolation.started.elapsed().as_millis() as u64,
            earlier_batches_not_logged = held_back,
            failure = %first,
            "plugin calls failed; the failing events were isolated and rejected"
        );
    }

    fn run(&mut self, batch: &RecordBatch, isolation: &mut Isolation) -> Processed {
        let limits = self.engine.limits().clone();
        if let Some(spent) = isolation.spent(&limits) {
            let failure = isolation
                .first_failure
                .clone()
                .unwrap_or_else(|| CallFailure::Trap("unknown failure".into()));
            return self.reject_all(batch, &failure, Some(&spent));
        }
        isolation.calls_left -= 1;
        let deadline_ms = if isolation.timed_out {
            self.isolation_deadline(batch.num_rows(), &limits)
        } else {
            limits.call_timeout_ms
        };
        let failure = match self.call(batch, deadline_ms) {
            Ok(processed) => return processed,
            Err(failure) => failure,
        };
        isolation.failed_calls += 1;
        isolation.timed_out |= matches!(failure, CallFailure::Timeout(_));
        tracing::debug!(plugin = %self.label, rows = batch.num_rows(), %failure, "plugin call failed; isolating the failing events");
        if isolation.first_failure.is_none() {
            isolation.first_failure = Some(failure.clone());
        }
        let rows = batch.num_rows();
        if rows <= 1 {
            return self.reject_all(batch, &failure, None);
        }
        let mid = rows / 2;
        let left = self.run(&batch.slice(0, mid), isolation);
        let right = self.run(&batch.slice(mid, rows - mid), isolation);
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

    /// The deadline of an isolating call over `rows` events: the isolation
    /// deadline, or ten times what that many events took in successful
    /// calls when that is longer, never past `call_timeout_ms`.
    fn isolation_deadline(&self, rows: usize, limits: &Limits) -> u64 {
        let typical_ms = self
            .nanos_per_row
            .map_or(0, |n| (n * rows as f64 * 10.0 / 1e6).ceil() as u64);
        limits
            .isolation_timeout_ms
            .max(typical_ms)
            .min(limits.call_timeout_ms)
    }

    fn reject_all(
        &self,
        batch: &RecordBatch,
        failure: &CallFailure,
        spent: Option<&str>,
    ) -> Processed {
        let reason: Arc<str> = match spent {
            None => format!("plugin {} {failure}", self.label).into(),
            Some(spent) => format!("plugin {} {failure} ({spent})", self.label).into(),
        };
        let kind = Some(failure.kind());
        Processed {
            batch: RecordBatch::new_empty(self.output.arrow().clone()),
            excluded: (0..batch.num_rows())
                .map(|row| Excluded {
                    row,
                    verdict: Verdict::Reject,
                    reason: reason.clone(),
                    failure: kind,
                })
                .collect(),
            failed_calls: 0,
        }
    }

    /// One `process` call under `deadline_ms`; on a trap the instance is
    /// discarded.
    fn call(&mut self, batch: &RecordBatch, deadline_ms: u64) -> Result<Processed, CallFailure> {
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
        let converted = convert_for_lending(batch);
        let input = lend_batch(batch, &converted);
        let process: ProcessFunc<'_> = instance
            .process
            .typed(&instance.store)
            .map_err(|e| CallFailure::Trap(format!("`process` has an unexpected type: {e}")))?;
        arm(&mut instance.store, deadline_ms);
        let started = CpuStopwatch::start();
        let result = process
            .call(&mut instance.store, (input,))
            .map(|(result,)| result);
        let elapsed = started.elapsed();
        instance.store.data_mut().flush_output();
        let output = match result {
            Ok(Ok(output)) => output,
            Ok(Err(message)) => return Err(CallFailure::Refused(message)),
            Err(error) => {
                let failure = classify(&error, &instance.store, &limits, deadline_ms);
                self.instance = None;
                return Err(failure);
            }
        };
        let processed = self
            .accept(output, batch.num_rows())
            .map_err(CallFailure::BadOutput)?;
        let per_row = elapsed.as_nanos() as f64 / batch.num_rows() as f64;
        self.nanos_per_row = Some(match self.nanos_per_row {
            None => per_row,
            Some(previous) => 0.8 * previous + 0.2 * per_row,
        });
        Ok(processed)
    }

    /// Check the plugin's answer and convert it.
    fn accept(&self, output: types::Output, rows: usize) -> Result<Processed, String> {
        use types::Verdict as WitVerdict;
        let reasons: Vec<Arc<str>> = output
            .reasons
            .iter()
            .map(|r| Arc::from(r.as_str()))
            .collect();
        let mut excluded = Vec::with_capacity(output.exclusions.len());
        let mut previous: Option<u32> = None;
        for e in &output.exclusions {
            if e.row as usize >= rows || previous.is_some_and(|p| p >= e.row) {
                // no sizes in the reason: one cause, one reason
                tracing::debug!(plugin = %self.label, row = e.row, rows, "exclusion out of order or out of range");
                return Err(
                    "exclusions out of order or out of range (each input row at most once, in increasing order)"
                        .into(),
                );
            }
            previous = Some(e.row);
            let reason = reasons
                .get(e.reason as usize)
                .ok_or("an exclusion names a reason index past the end of `reasons`")?;
            let verdict = match e.verdict {
                WitVerdict::Drop => Verdict::Drop,
                WitVerdict::Reject => Verdict::Reject,
            };
            excluded.push(Excluded {
                row: e.row as usize,
                verdict,
                reason: reason.clone(),
                failure: None,
            });
        }
        if output.batch.num_rows as usize + excluded.len() != rows {
            tracing::debug!(plugin = %self.label, kept = output.batch.num_rows, excluded = excluded.len(), rows, "kept + excluded rows differ from the input rows");
            return Err("kept + excluded rows differ from the input rows".into());
        }
        let batch = batch_from_wit(output.batch, &self.output)?;
        Ok(Processed {
            batch,
            excluded,
            failed_calls: 0,
        })
    }
}

/// Set the CPU deadline, reset the out-of-memory flag and forget the
/// plugin's last words before a call.
fn arm(store: &mut Store<HostState>, deadline_ms: u64) {
    let limit = Duration::from_millis(deadline_ms);
    store.data_mut().deadline = CpuDeadline::arm(limit);
    store.set_epoch_deadline(ticks_for(limit));
    store.data_mut().limiter.refused = false;
    store.data_mut().last_words = None;
}

/// What a failed call was; a trap carries what the plugin said last (a
/// panic message, through the SDK's hook or on stderr), since the trap
/// itself only says "`unreachable` executed".
fn classify(
    error: &wasmtime::Error,
    store: &Store<HostState>,
    limits: &Limits,
    deadline_ms: u64,
) -> CallFailure {
    if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        return CallFailure::Timeout(deadline_ms);
    }
    if store.data().limiter.refused {
        return CallFailure::OutOfMemory(limits.memory_bytes());
    }
    let trap = match error.downcast_ref::<Trap>() {
        Some(trap) => trap.to_string(),
        None => {
            let cause = error.root_cause().to_string();
            cause.lines().next().unwrap_or("unknown trap").to_string()
        }
    };
    let words = store.data().last_words.as_deref().map(last_words);
    CallFailure::Trap(match words.filter(|w| !w.is_empty()) {
        Some(words) => format!("{trap}; the plugin's last words: {words}"),
        None => trap,
    })
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
    store.epoch_deadline_callback(|store| Ok(store.data().deadline.on_epoch()));
    arm(&mut store, limits.call_timeout_ms);
    let instance = plugin
        .pre
        .instance_pre()
        .instantiate(&mut store)
        .map_err(|e| format!("instantiation failed: {e:#}"))?;
    let bindings = Preprocessor::new(&mut store, &instance)
        .map_err(|e| format!("instantiation failed: {e:#}"))?;
    let process = process_export(&mut store, &instance)?;
    let result =
        bindings
            .weir_preprocess_plugin()
            .call_init(&mut store, &schema_to_wit(input), config);
    store.data_mut().flush_output();
    let fields = match result {
        Ok(Ok(fields)) => fields,
        Ok(Err(message)) => return Err(message),
        Err(error) => {
            let failure = classify(&error, &store, limits, limits.call_timeout_ms);
            return Err(format!("init {failure}"));
        }
    };
    let output = schema_from_wit(&fields)?;
    Ok((Instance { store, process }, output))
}

/// The instance's export `process`, checked to have the type it is called
/// with.
fn process_export(
    store: &mut Store<HostState>,
    instance: &wasmtime::component::Instance,
) -> Result<Func, String> {
    let missing = || format!("the component exports no `{PLUGIN_INTERFACE}#process`");
    let interface = instance
        .get_export_index(&mut *store, None, PLUGIN_INTERFACE)
        .ok_or_else(missing)?;
    let index = instance
        .get_export_index(&mut *store, Some(&interface), "process")
        .ok_or_else(missing)?;
    let process = instance.get_func(&mut *store, index).ok_or_else(missing)?;
    process
        .typed::<(BatchRef<'_>,), (Result<types::Output, String>,)>(&*store)
        .map_err(|e| format!("`process` has an unexpected type: {e}"))?;
    Ok(process)
}

/// The WIT interface a plugin exports.
const PLUGIN_INTERFACE: &str = "weir:preprocess/plugin@0.1.0";
