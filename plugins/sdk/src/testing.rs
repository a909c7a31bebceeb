//! Running a plugin natively, the way the host runs it, for unit tests and
//! benchmarks: `init` with configuration checking, then `process`.

use crate::{Batch, Config, Output, Plugin, Schema};

/// Run `init` as the host would: configuration keys the plugin did not read
/// are an error.
pub fn init_plugin<P: Plugin>(
    input: &Schema,
    config: &[(&str, &str)],
) -> Result<(P, Schema), String> {
    let mut config = Config::new(config.iter().copied());
    let (plugin, output) = P::init(input, &mut config)?;
    config.check_all_read()?;
    Ok((plugin, output))
}

/// Run `process` and check the answer's shape against the output schema.
pub fn process_batch<P: Plugin>(
    plugin: &mut P,
    output_schema: &Schema,
    batch: Batch,
) -> Result<Output, String> {
    let rows = batch.num_rows();
    let out = plugin.process(batch)?;
    if out.batch.columns().len() != output_schema.fields.len() {
        return Err(format!(
            "output has {} columns, schema has {}",
            out.batch.columns().len(),
            output_schema.fields.len()
        ));
    }
    if out.batch.num_rows() + out.exclusions.len() != rows {
        return Err(format!(
            "{} kept + {} excluded rows for {rows} input rows",
            out.batch.num_rows(),
            out.exclusions.len()
        ));
    }
    Ok(out)
}
