//! The identity plugin: keeps every event unchanged. Written with the SDK; it
//! measures the cost of the plugin boundary itself (`weir plugin bench`).

use weir_plugin_sdk::prelude::*;

/// Keeps every event as it is; output schema = input schema.
pub struct Identity;

impl Plugin for Identity {
    fn init(input: &Schema, _config: &mut Config) -> Result<(Self, Schema), String> {
        Ok((Identity, input.clone()))
    }

    fn process(&mut self, batch: Batch) -> Result<Output, String> {
        Ok(Output::keep_all(batch))
    }
}

export_plugin!(Identity);
