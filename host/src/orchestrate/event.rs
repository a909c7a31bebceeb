//! S3 event notifications in the standard AWS JSON shape (directly, or
//! wrapped in an SNS notification), reduced to the objects they name.

use serde::Deserialize;

/// One object an S3 notification names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectEvent {
    /// `ObjectCreated:Put`, `ObjectRemoved:Delete`, ...
    pub event_name: String,
    /// the bucket.
    pub bucket: String,
    /// the object key, URL-decoded.
    pub key: String,
    /// S3's ordering token for events of one key.
    pub sequencer: Option<String>,
    /// when S3 saw the event.
    pub event_time: Option<String>,
}

#[derive(Deserialize)]
struct Notification {
    #[serde(rename = "Records")]
    records: Option<Vec<Record>>,
    #[serde(rename = "Type")]
    sns_type: Option<String>,
    #[serde(rename = "Message")]
    message: Option<String>,
    #[serde(rename = "Event")]
    test_event: Option<String>,
}

#[derive(Deserialize)]
struct Record {
    #[serde(rename = "eventName")]
    event_name: String,
    #[serde(rename = "eventTime")]
    event_time: Option<String>,
    s3: S3Entity,
}

#[derive(Deserialize)]
struct S3Entity {
    bucket: Bucket,
    object: Object,
}

#[derive(Deserialize)]
struct Bucket {
    name: String,
}

#[derive(Deserialize)]
struct Object {
    key: String,
    sequencer: Option<String>,
}

/// Parse a notification body. `s3:TestEvent` and SNS subscription
/// messages give no objects; anything else that is not the AWS shape is
/// an error with the reason (an HTTP 400).
pub fn parse_notification(body: &[u8]) -> Result<Vec<ObjectEvent>, String> {
    let n: Notification =
        serde_json::from_slice(body).map_err(|e| format!("not an S3 event notification: {e}"))?;
    if let (Some(kind), Some(message)) = (&n.sns_type, &n.message) {
        if kind != "Notification" {
            tracing::info!(kind = %kind, "SNS message that is not a notification (confirm subscriptions in the AWS console)");
            return Ok(Vec::new());
        }
        return parse_notification(message.as_bytes());
    }
    if n.test_event.as_deref() == Some("s3:TestEvent") {
        return Ok(Vec::new());
    }
    let records = n
        .records
        .ok_or("not an S3 event notification: no `Records` array")?;
    records
        .into_iter()
        .map(|r| {
            Ok(ObjectEvent {
                event_name: r.event_name,
                bucket: r.s3.bucket.name,
                key: url_decode(&r.s3.object.key)?,
                sequencer: r.s3.object.sequencer,
                event_time: r.event_time,
            })
        })
        .collect()
}

/// Decode an S3 event key: `+` is a space, `%XX` a byte.
pub fn url_decode(key: &str) -> Result<String, String> {
    let bytes = key.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = key
                    .get(i + 1..i + 3)
                    .ok_or_else(|| format!("key `{key}`: truncated %-escape"))?;
                out.push(
                    u8::from_str_radix(hex, 16)
                        .map_err(|_| format!("key `{key}`: bad %-escape `%{hex}`"))?,
                );
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| format!("key `{key}`: not UTF-8 once decoded"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_sns_envelopes() {
        let body = r#"{"Records":[{"eventVersion":"2.1","eventSource":"aws:s3","eventTime":"2026-11-20T10:00:00.000Z",
            "eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"lake"},
            "object":{"key":"weir/data/event_date%3D2026-11-20/a+b.parquet","size":3,"sequencer":"0055AED6DCD90281E5"}}}]}"#;
        let events = parse_notification(body.as_bytes()).unwrap();
        assert_eq!(events[0].key, "weir/data/event_date=2026-11-20/a b.parquet");
        assert_eq!(events[0].bucket, "lake");
        let sns = serde_json::json!({"Type": "Notification", "Message": body}).to_string();
        assert_eq!(parse_notification(sns.as_bytes()).unwrap(), events);
        assert!(
            parse_notification(br#"{"Service":"Amazon S3","Event":"s3:TestEvent"}"#)
                .unwrap()
                .is_empty()
        );
        assert!(
            parse_notification(b"{\"hello\": 1}")
                .unwrap_err()
                .contains("Records")
        );
        assert!(parse_notification(b"not json").is_err());
        assert!(url_decode("a%2").is_err());
    }
}
