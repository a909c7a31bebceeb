//! `weir plugin check | bench`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use weir::pipeline::{DeclaredSchema, FieldSpec};
use weir::plugin::check::{BenchOptions, Sample, bench, check};
use weir::plugin::diff::diff;
use weir::plugin::{Limits, PluginEngine};

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Load a plugin, run `init` and sample events, report verdicts and idempotence.
    Check(CheckArgs),
    /// Events per second through a plugin, with size and start-up time.
    Bench(BenchArgs),
    /// Run two plugins over the same events; report every event they treat differently.
    Diff(DiffArgs),
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The first plugin.
    left: PathBuf,
    /// The second plugin.
    right: PathBuf,
    /// Events, one JSON object per line.
    #[arg(long)]
    input: PathBuf,
    /// Configuration of the first plugin; repeatable.
    #[arg(long = "config-left", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    config_left: Vec<(String, String)>,
    /// Configuration of the second plugin; repeatable.
    #[arg(long = "config-right", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    config_right: Vec<(String, String)>,
    /// Input schema file (`[[schema.fields]]`); default: web-vitals.
    #[arg(long)]
    schema: Option<PathBuf>,
    /// Differences shown in full (the rest are counted).
    #[arg(long, default_value_t = 5)]
    examples: usize,
    /// Events per call.
    #[arg(long, default_value_t = 1024)]
    batch_size: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct PluginArgs {
    /// The plugin component (`.wasm`).
    plugin: PathBuf,
    /// A plugin configuration entry; repeatable.
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    config: Vec<(String, String)>,
    /// Input schema: a TOML file with `[[schema.fields]]` (a pipeline file
    /// works). Default: the web-vitals schema.
    #[arg(long)]
    schema: Option<PathBuf>,
    /// CPU deadline per call, in milliseconds.
    #[arg(long)]
    call_timeout_ms: Option<u64>,
    /// Memory limit per instance, in MiB.
    #[arg(long)]
    memory_mib: Option<usize>,
    /// Events per `process` call.
    #[arg(long, default_value_t = 1024)]
    batch_size: usize,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    plugin: PluginArgs,
    /// Sample events, one JSON object per line.
    #[arg(long)]
    input: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    plugin: PluginArgs,
    /// Events, one JSON object per line.
    #[arg(long)]
    input: PathBuf,
    /// How many times to run over the input.
    #[arg(long, default_value_t = 5)]
    repeat: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .ok_or_else(|| format!("expected KEY=VALUE, got `{s}`"))
}

pub fn run(command: PluginCommand) -> anyhow::Result<ExitCode> {
    match command {
        PluginCommand::Check(args) => run_check(args),
        PluginCommand::Bench(args) => run_bench(args),
        PluginCommand::Diff(args) => run_diff(args),
    }
}

impl PluginArgs {
    fn engine(&self) -> anyhow::Result<std::sync::Arc<PluginEngine>> {
        let mut limits = Limits::default();
        if let Some(ms) = self.call_timeout_ms {
            limits.call_timeout_ms = ms;
        }
        if let Some(mib) = self.memory_mib {
            limits.memory_mib = mib;
        }
        Ok(PluginEngine::new(limits)?)
    }

    fn schema(&self) -> anyhow::Result<DeclaredSchema> {
        match &self.schema {
            None => Ok(DeclaredSchema::web_vitals()),
            Some(path) => read_schema(path),
        }
    }
}

/// The `[[schema.fields]]` of a TOML file.
fn read_schema(path: &Path) -> anyhow::Result<DeclaredSchema> {
    #[derive(serde::Deserialize)]
    struct File {
        schema: Section,
    }
    #[derive(serde::Deserialize)]
    struct Section {
        fields: Vec<FieldSpec>,
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read schema file {}", path.display()))?;
    let file: File = toml::from_str(&text)
        .with_context(|| format!("{}: expected [[schema.fields]]", path.display()))?;
    DeclaredSchema::new(file.schema.fields).with_context(|| format!("{}: schema", path.display()))
}

fn read_input(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read input file {}", path.display()))
}

fn run_check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let engine = args.plugin.engine()?;
    let plugin = engine.load_file(&args.plugin.plugin)?;
    let schema = args.plugin.schema()?;
    let text = match &args.input {
        Some(path) => read_input(path)?,
        None => String::new(),
    };
    let sample = Sample::decode(&text, &schema, args.plugin.batch_size.max(1));
    let report = check(&engine, &plugin, &schema, &args.plugin.config, &sample)?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("plugin     {} (sha256 {})", report.plugin, report.digest);
        println!("contract   {}", report.accepted_versions.join(", "));
        println!("output     {}", report.output_schema.join(", "));
        println!("kept       {}", report.kept);
        println!("dropped    {}", report.dropped);
        println!("rejected   {}", report.rejected);
        for (reason, count) in &report.reasons {
            println!("  {count:>8}  {reason}");
        }
        match &report.idempotence_problem {
            None => println!("idempotent yes"),
            Some(problem) => println!("idempotent NO: {problem}"),
        }
    }
    Ok(if report.idempotent {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn run_bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let engine = args.plugin.engine()?;
    let path = &args.plugin.plugin;
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read plugin {}", path.display()))?;
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let schema = args.plugin.schema()?;
    let text = read_input(&args.input)?;
    let options = BenchOptions {
        batch_size: args.plugin.batch_size.max(1),
        repeat: args.repeat,
    };
    let report = bench(
        &engine,
        &name,
        &bytes,
        &schema,
        &args.plugin.config,
        &text,
        options,
    )?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "plugin        {} ({} bytes)",
            report.plugin, report.component_bytes
        );
        println!("compile       {:.1} ms (uncached)", report.compile_ms);
        println!(
            "start-up      {:.2} ms (instantiate + init)",
            report.startup_ms
        );
        println!(
            "throughput    {:.0} events/s over {} events",
            report.events_per_sec, report.events
        );
        println!(
            "decode only   {:.0} events/s ({:.1} MB/s)",
            report.decode_events_per_sec, report.decode_mb_per_sec
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn run_diff(args: DiffArgs) -> anyhow::Result<ExitCode> {
    let engine = PluginEngine::new(Limits::default())?;
    let left = engine.load_file(&args.left)?;
    let right = engine.load_file(&args.right)?;
    let schema = match &args.schema {
        None => DeclaredSchema::web_vitals(),
        Some(path) => read_schema(path)?,
    };
    let text = read_input(&args.input)?;
    let report = diff(
        &engine,
        (&left, &args.config_left),
        (&right, &args.config_right),
        &schema,
        &text,
        args.batch_size.max(1),
        args.examples,
    )?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        if let Some(schemas) = &report.schema_difference {
            println!("output schemas differ:\n{schemas}");
        }
        for d in &report.examples {
            println!(
                "line {}: {}\n  {}: {}\n  {}: {}",
                d.line, d.input, left.name, d.left, right.name, d.right
            );
        }
        let kinds: Vec<String> = report
            .kinds
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        println!(
            "{} events compared ({} undecodable lines skipped): {}",
            report.events,
            report.undecodable,
            if report.differing == 0 {
                "no differences".to_string()
            } else {
                format!("{} differ ({})", report.differing, kinds.join(", "))
            }
        );
    }
    Ok(
        if report.differing == 0 && report.schema_difference.is_none() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        },
    )
}
