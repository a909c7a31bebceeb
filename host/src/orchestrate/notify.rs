//! Failure notices: an asynchronous invoke of an AWS Lambda function
//! (`aws-sdk-lambda`, invocation type `Event`) with a JSON payload, or an
//! error log line when no function is configured. A notice that cannot be
//! sent is logged; it never stops the orchestrator.

use aws_sdk_lambda::Client;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use serde::Serialize;

use super::dynamo::{AwsSettings, aws_config};

/// What a failure notice says.
#[derive(Clone, Debug, Serialize)]
pub struct FailureNotice {
    /// the pipeline.
    pub pipeline: String,
    /// the date partition.
    pub partition: String,
    /// attempts made.
    pub attempts: u32,
    /// the last error.
    pub error: String,
    /// when (RFC 3339).
    pub time: String,
}

/// Where notices go.
#[derive(Debug)]
pub enum Notifier {
    /// an error log line.
    Log,
    /// a Lambda function.
    Lambda {
        /// the client.
        client: Client,
        /// function name or ARN.
        function: String,
    },
}

impl Notifier {
    /// A Lambda notifier for `function`, or the log when `None`.
    pub async fn new(function: Option<&str>, settings: &AwsSettings) -> Notifier {
        match function {
            Some(function) => Notifier::Lambda {
                client: Client::new(&aws_config(settings).await),
                function: function.into(),
            },
            None => Notifier::Log,
        }
    }

    /// Send one notice; failures are logged and swallowed.
    pub async fn notify(&self, notice: &FailureNotice) {
        tracing::error!(pipeline = %notice.pipeline, partition = %notice.partition, attempts = notice.attempts,
            error = %notice.error, "partition failed after every attempt");
        let Notifier::Lambda { client, function } = self else {
            return;
        };
        let payload = serde_json::to_vec(notice).expect("serialisable");
        let sent = client
            .invoke()
            .function_name(function)
            .invocation_type(InvocationType::Event)
            .payload(Blob::new(payload))
            .send()
            .await;
        match sent {
            Ok(out) => {
                tracing::info!(function = %function, status = out.status_code(), "failure notice sent")
            }
            Err(e) => {
                tracing::error!(function = %function, error = ?e.into_service_error(), "failure notice could not be sent")
            }
        }
    }
}
