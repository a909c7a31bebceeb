//! The Kafka consumer: client settings (with librdkafka pass-through) and
//! the rebalance callback, which has the coordinator flush revoked
//! partitions and hand assigned ones to its workers (the callback runs on
//! the consumer's thread, inside `poll`: the lock is never contended).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::TopicPartitionList;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use rdkafka::types::RDKafkaRespErr;

use super::core::Core;
use crate::pipeline::SourceConfig;

/// The consumer's context: routes rebalances to the shared [`Core`].
pub(crate) struct WeirContext {
    pub core: Arc<Mutex<Core>>,
    /// where consumer lag is reported (statistics callback).
    pub metrics: Option<Arc<crate::telemetry::Metrics>>,
}

impl ClientContext for WeirContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        let Some(metrics) = &self.metrics else { return };
        let mut lag = metrics.consumer_lag.lock().expect("metrics");
        for (name, topic) in &statistics.topics {
            for (id, p) in &topic.partitions {
                if *id >= 0 && p.consumer_lag >= 0 {
                    lag.insert((name.clone(), *id), p.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for WeirContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let mut core = self.core.lock().unwrap_or_else(|p| p.into_inner());
        let served = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => core.assign(consumer, tpl),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => core.revoke(consumer, tpl),
            other => {
                tracing::error!(error = ?other, "rebalance failed");
                let _ = rdkafka::consumer::Consumer::unassign(consumer);
                Ok(())
            }
        };
        // the consume loop meets the same stopped worker at its next send
        if let Err(e) = served {
            tracing::error!(error = %e, "rebalance not served");
        }
    }
}

/// Client settings shared by consumers and producers of a pipeline.
pub fn client_config(source: &SourceConfig, brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    for (key, value) in &source.kafka {
        config.set(key, value);
    }
    config
}

/// Fetch settings that favour throughput (bigger fetches, deeper local
/// queue); any of them can be overridden under `[source.kafka]`.
pub(crate) const THROUGHPUT_DEFAULTS: &[(&str, &str)] = &[
    ("fetch.wait.max.ms", "100"),
    ("fetch.min.bytes", "65536"),
    ("max.partition.fetch.bytes", "4194304"),
    ("queued.min.messages", "200000"),
];

/// Consumer settings: manual offsets (the lake's commit log is the truth).
pub(crate) fn consumer_config(source: &SourceConfig, brokers: &str) -> ClientConfig {
    let mut config = client_config(source, brokers);
    for &(key, value) in [
        ("group.id", source.group.as_str()),
        ("enable.auto.commit", "false"),
        ("enable.auto.offset.store", "false"),
        ("auto.offset.reset", "earliest"),
        ("session.timeout.ms", "6000"),
        ("heartbeat.interval.ms", "1000"),
        ("enable.partition.eof", "false"),
    ]
    .iter()
    .chain(THROUGHPUT_DEFAULTS)
    {
        if !source.kafka.contains_key(key) {
            config.set(key, value);
        }
    }
    config
}

/// How long a metadata query may take.
pub(crate) const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
