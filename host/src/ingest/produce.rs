//! `weir produce`: send JSON lines to a pipeline's topic (and the producer
//! `weir generate` sends its synthetic events through).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};

use super::source::client_config;
use crate::pipeline::Pipeline;

/// Why sending failed.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    /// `brokers = "embedded"` lives inside `weir ingest`.
    #[error(
        "source.brokers is `embedded`: the broker lives inside `weir ingest` (or `weir broker`); pass --set source.brokers=<the address it printed>"
    )]
    Embedded,
    /// The broker did not acknowledge every message.
    #[error(
        "kafka ({brokers}): {failed} of {sent} messages were not acknowledged; the first error: {first}"
    )]
    Unacknowledged {
        /// bootstrap servers.
        brokers: String,
        /// messages queued.
        sent: u64,
        /// messages whose delivery failed.
        failed: u64,
        /// the first delivery error.
        first: String,
    },
    /// The producer failed.
    #[error("kafka ({brokers}): {error}")]
    Kafka {
        /// bootstrap servers.
        brokers: String,
        /// the client's error.
        error: KafkaError,
    },
}

/// Counts delivery reports: a message counts as sent only once the broker
/// acknowledged it.
#[derive(Default)]
struct Deliveries {
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
            first.get_or_insert_with(|| error.to_string());
        }
    }
}

/// A producer to a pipeline's first topic.
pub struct EventProducer {
    producer: ThreadedProducer<Deliveries>,
    topic: String,
    brokers: String,
    sent: u64,
}

impl EventProducer {
    /// Connect to the pipeline's brokers.
    pub fn new(pipeline: &Pipeline) -> Result<Self, ProduceError> {
        let source = &pipeline.config.source;
        if source.brokers == "embedded" {
            return Err(ProduceError::Embedded);
        }
        let mut config = client_config(source, &source.brokers);
        config
            .set("linger.ms", "5")
            .set("queue.buffering.max.messages", "1000000");
        let producer = config
            .create_with_context(Deliveries::default())
            .map_err(|error| ProduceError::Kafka {
                brokers: source.brokers.clone(),
                error,
            })?;
        let topic = source
            .topics()
            .into_iter()
            .next()
            .expect("validated: at least one topic");
        Ok(EventProducer {
            producer,
            topic,
            brokers: source.brokers.clone(),
            sent: 0,
        })
    }

    /// Queue one message (retrying while the local queue is full).
    pub fn send(&mut self, payload: &[u8]) -> Result<(), ProduceError> {
        loop {
            match self
                .producer
                .send(BaseRecord::<(), [u8]>::to(&self.topic).payload(payload))
            {
                Ok(()) => {
                    self.sent += 1;
                    return Ok(());
                }
                Err((
                    KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    _,
                )) => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((error, _)) => {
                    return Err(ProduceError::Kafka {
                        brokers: self.brokers.clone(),
                        error,
                    });
                }
            }
        }
    }

    /// Wait until every queued message is acknowledged; returns the count
    /// sent, or an error when the broker did not acknowledge them all.
    pub fn finish(self) -> Result<u64, ProduceError> {
        self.producer
            .flush(Duration::from_secs(60))
            .map_err(|error| ProduceError::Kafka {
                brokers: self.brokers.clone(),
                error,
            })?;
        let deliveries = self.producer.context();
        let failed = deliveries.failed.load(Ordering::Relaxed);
        if failed > 0 {
            let first = deliveries
                .first_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .unwrap_or_default();
            return Err(ProduceError::Unacknowledged {
                brokers: self.brokers.clone(),
                sent: self.sent,
                failed,
                first,
            });
        }
        Ok(self.sent)
    }
}
