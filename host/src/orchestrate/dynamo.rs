//! The DynamoDB checkpoint store (`aws-sdk-dynamodb`): one item per
//! (pipeline, partition) — hash key `pipeline`, range key `partition` —
//! written only with a condition on its version. The table is created on
//! demand (on-demand billing) when missing.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType, TableStatus,
};

use super::checkpoint::{Checkpoint, CheckpointError, Status};
pub use crate::aws::{AwsSettings, aws_config};

/// Checkpoints in a DynamoDB table.
#[derive(Debug)]
pub struct DynamoStore {
    client: Client,
    table: String,
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_string())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

impl DynamoStore {
    /// Connect to `table`, creating it when missing.
    pub async fn open(table: &str, settings: &AwsSettings) -> Result<Self, CheckpointError> {
        let config = aws_config(settings).await;
        let client = Client::new(&config);
        let store = DynamoStore {
            client,
            table: table.into(),
        };
        store.ensure_table().await?;
        Ok(store)
    }

    fn fail(&self, error: impl std::fmt::Debug) -> CheckpointError {
        CheckpointError::Store {
            store: format!("dynamodb table {}", self.table),
            error: format!("{error:?}"),
        }
    }

    async fn ensure_table(&self) -> Result<(), CheckpointError> {
        match self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
        {
            Ok(_) => return Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) => {}
            Err(e) => return Err(self.fail(e.into_service_error())),
        }
        tracing::info!(table = %self.table, "creating the DynamoDB checkpoint table");
        let key = |name: &str, kind: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
        };
        let attr = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
        };
        let created = self
            .client
            .create_table()
            .table_name(&self.table)
            .key_schema(key("pipeline", KeyType::Hash).map_err(|e| self.fail(e))?)
            .key_schema(key("partition", KeyType::Range).map_err(|e| self.fail(e))?)
            .attribute_definitions(attr("pipeline").map_err(|e| self.fail(e))?)
            .attribute_definitions(attr("partition").map_err(|e| self.fail(e))?)
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await;
        if let Err(e) = created {
            // another orchestrator may have created it meanwhile
            if !e
                .as_service_error()
                .is_some_and(|s| s.is_resource_in_use_exception())
            {
                return Err(self.fail(e.into_service_error()));
            }
        }
        for _ in 0..120 {
            let d = self
                .client
                .describe_table()
                .table_name(&self.table)
                .send()
                .await
                .map_err(|e| self.fail(e.into_service_error()))?;
            if d.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(self.fail("table did not become ACTIVE within 60 s"))
    }

    /// One checkpoint, if stored (strongly consistent read).
    pub async fn get(
        &self,
        pipeline: &str,
        partition: &str,
    ) -> Result<Option<Checkpoint>, CheckpointError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pipeline", s(pipeline))
            .key("partition", s(partition))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.fail(e.into_service_error()))?;
        Ok(out.item().map(from_item))
    }

    /// Every checkpoint of a pipeline.
    pub async fn list(&self, pipeline: &str) -> Result<Vec<Checkpoint>, CheckpointError> {
        let mut out = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#p = :p")
                .expression_attribute_names("#p", "pipeline")
                .expression_attribute_values(":p", s(pipeline))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| self.fail(e.into_service_error()))?;
            out.extend(page.items().iter().map(from_item));
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        Ok(out)
    }

    /// Conditional put on the version.
    pub async fn swap(&self, next: &Checkpoint) -> Result<bool, CheckpointError> {
        let mut item = HashMap::new();
        item.insert("pipeline".to_string(), s(&next.pipeline));
        item.insert("partition".to_string(), s(&next.partition));
        item.insert("status".to_string(), s(next.status.as_str()));
        item.insert("attempts".to_string(), n(next.attempts));
        item.insert("lease_expires_ms".to_string(), n(next.lease_expires_ms));
        item.insert("version".to_string(), n(next.version + 1));
        for (k, v) in [
            ("position", &next.position),
            ("last_error", &next.last_error),
            ("failed_position", &next.failed_position),
            ("last_run", &next.last_run),
            ("lease_owner", &next.lease_owner),
        ] {
            if let Some(v) = v {
                item.insert(k.to_string(), s(v));
            }
        }
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item));
        let request = if next.version == 0 {
            request
                .condition_expression("attribute_not_exists(#v)")
                .expression_attribute_names("#v", "version")
        } else {
            request
                .condition_expression("#v = :v")
                .expression_attribute_names("#v", "version")
                .expression_attribute_values(":v", n(next.version))
        };
        match request.send().await {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(self.fail(e.into_service_error())),
        }
    }
}

fn from_item(item: &HashMap<String, AttributeValue>) -> Checkpoint {
    let text = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
    let num = |k: &str| {
        item.get(k)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0)
    };
    Checkpoint {
        pipeline: text("pipeline").unwrap_or_default(),
        partition: text("partition").unwrap_or_default(),
        position: text("position"),
        status: Status::parse(&text("status").unwrap_or_default()),
        attempts: num("attempts") as u32,
        last_error: text("last_error"),
        failed_position: text("failed_position"),
        last_run: text("last_run"),
        lease_owner: text("lease_owner"),
        lease_expires_ms: num("lease_expires_ms"),
        version: num("version") as u64,
    }
}
