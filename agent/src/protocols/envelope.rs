//! What a queued message's own bytes say about it, for brokers whose protocol carries no
//! properties (a Redis list holds bare strings). kombu, the transport under Celery, wraps
//! every message in a JSON envelope: `body`, `headers` (Celery's task id in `id`, and the
//! `traceparent` an instrumented producer added) and `properties` (`correlation_id`). Only
//! those fields are read; the body is never looked at.

use serde::Deserialize;

/// The fields of a kombu envelope the spans use.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Envelope {
    /// The message's own id: Celery's task id.
    pub id: Option<String>,
    pub correlation_id: Option<String>,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

#[derive(Deserialize)]
struct Kombu {
    // Required: a JSON object without a body, headers and properties is someone else's.
    #[allow(dead_code)]
    body: serde::de::IgnoredAny,
    headers: Headers,
    properties: Properties,
}

#[derive(Deserialize)]
struct Headers {
    #[serde(default)]
    id: Option<Text>,
    #[serde(default)]
    traceparent: Option<Text>,
    #[serde(default)]
    tracestate: Option<Text>,
}

#[derive(Deserialize)]
struct Properties {
    #[serde(default)]
    correlation_id: Option<Text>,
}

/// A string field, or any other JSON value in its place (which is then not used).
#[derive(Deserialize)]
#[serde(untagged)]
enum Text {
    Text(String),
    Other(serde::de::IgnoredAny),
}

impl Text {
    /// The value, when it is a short string (ids and trace context are short; anything longer
    /// is not what the field should hold).
    fn take(this: Option<Text>) -> Option<String> {
        match this {
            Some(Text::Text(s)) if s.len() <= 256 => Some(s),
            _ => None,
        }
    }
}

/// The kombu envelope a message's whole bytes hold, if they are one.
pub fn kombu(bytes: &[u8]) -> Option<Envelope> {
    if bytes.first() != Some(&b'{') {
        return None;
    }
    let k: Kombu = serde_json::from_slice(bytes).ok()?;
    Some(Envelope {
        id: Text::take(k.headers.id),
        correlation_id: Text::take(k.properties.correlation_id),
        traceparent: Text::take(k.headers.traceparent),
        tracestate: Text::take(k.headers.tracestate),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The envelope Celery 5.7 (kombu 5.7) pushed for `work.delay(7)`, as seen on the wire.
    const CELERY: &str = r#"{"body": "W1s3XSwge30sIHsiY2FsbGJhY2tzIjogbnVsbH1d", "content-encoding": "utf-8", "content-type": "application/json", "headers": {"lang": "py", "task": "tasks.work", "id": "4ceddcbb-3425-4b88-891f-d9a6e8b34e8f", "shadow": null, "eta": null, "retries": 0, "timelimit": [null, null], "root_id": "4ceddcbb-3425-4b88-891f-d9a6e8b34e8f", "parent_id": null, "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}, "properties": {"correlation_id": "4ceddcbb-3425-4b88-891f-d9a6e8b34e8f", "reply_to": "5b1f", "delivery_mode": 2, "delivery_info": {"exchange": "", "routing_key": "celery"}, "priority": 0, "body_encoding": "base64", "delivery_tag": "98d20b90-0964-4c4f-b612-0480db5b651a"}}"#;

    #[test]
    fn a_celery_envelope_gives_the_task_id_and_context() {
        let e = kombu(CELERY.as_bytes()).expect("an envelope");
        assert_eq!(e.id.as_deref(), Some("4ceddcbb-3425-4b88-891f-d9a6e8b34e8f"));
        assert_eq!(e.correlation_id, e.id);
        assert_eq!(e.traceparent.as_deref(), Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"));
        assert_eq!(e.tracestate, None);
    }

    #[test]
    fn other_json_and_garbage_are_no_envelope() {
        assert_eq!(kombu(br#"{"id": "x", "headers": {}}"#), None, "no body or properties");
        assert_eq!(kombu(b"{\"body\": 1, \"headers\": {\"id\": "), None, "cut");
        assert_eq!(kombu(b"hello"), None);
        let odd = kombu(br#"{"body": 1, "headers": {"id": 7, "traceparent": ["x"]}, "properties": {}}"#).expect("an envelope");
        assert_eq!(odd, Envelope::default(), "fields of other types are not used");
    }
}
