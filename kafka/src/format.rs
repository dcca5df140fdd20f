//! How records turn into Kafka keys and values and back.

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A record as read from Kafka, borrowed from the consumer.
#[derive(Debug, Clone, Copy)]
pub struct KafkaRecord<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    /// Milliseconds since the epoch (create or log-append time), if the record has one.
    pub timestamp: Option<i64>,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
}

/// Turns a Kafka record into at most one output record; `Err` is a malformed record (skipped
/// and counted with `format.ignore-parse-errors`, otherwise the job fails naming its offset).
pub trait KafkaDeserializer<T>: Send + Sync + 'static {
    fn deserialize(&self, record: &KafkaRecord<'_>) -> Result<Option<T>, String>;
}

impl<T, F> KafkaDeserializer<T> for F
where
    F: Fn(&KafkaRecord<'_>) -> Result<Option<T>, String> + Send + Sync + 'static,
{
    fn deserialize(&self, record: &KafkaRecord<'_>) -> Result<Option<T>, String> {
        self(record)
    }
}

/// The value as UTF-8 text (records without a value are skipped).
#[derive(Debug, Clone, Copy, Default)]
pub struct StringValues;

impl KafkaDeserializer<String> for StringValues {
    fn deserialize(&self, record: &KafkaRecord<'_>) -> Result<Option<String>, String> {
        match record.value {
            None => Ok(None),
            Some(v) => std::str::from_utf8(v)
                .map(|s| Some(s.to_string()))
                .map_err(|e| format!("value is not UTF-8: {e}")),
        }
    }
}

/// `(key, value)` as UTF-8 text; a missing value reads as empty.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyValueStrings;

impl KafkaDeserializer<(Option<String>, String)> for KeyValueStrings {
    fn deserialize(
        &self,
        record: &KafkaRecord<'_>,
    ) -> Result<Option<(Option<String>, String)>, String> {
        let text = |b: &[u8]| {
            std::str::from_utf8(b)
                .map(str::to_string)
                .map_err(|e| format!("not UTF-8: {e}"))
        };
        let key = record.key.map(text).transpose()?;
        let value = text(record.value.unwrap_or_default())?;
        Ok(Some((key, value)))
    }
}

/// The value as a JSON document of type `T` (records without a value are skipped).
pub struct JsonValues<T>(PhantomData<fn() -> T>);

impl<T> Default for JsonValues<T> {
    fn default() -> Self {
        JsonValues(PhantomData)
    }
}

impl<T> JsonValues<T> {
    pub fn new() -> Self {
        Self::default()
    }
}

impl<T: DeserializeOwned + 'static> KafkaDeserializer<T> for JsonValues<T> {
    fn deserialize(&self, record: &KafkaRecord<'_>) -> Result<Option<T>, String> {
        match record.value {
            None => Ok(None),
            Some(v) => serde_json::from_slice(v)
                .map(Some)
                .map_err(|e| format!("malformed JSON: {e}")),
        }
    }
}

/// Turns a record into a Kafka key (optional) and value.
pub trait KafkaSerializer<T>: Send + Sync + 'static {
    fn serialize(&self, record: &T) -> (Option<Vec<u8>>, Vec<u8>);
}

impl<T, F> KafkaSerializer<T> for F
where
    F: Fn(&T) -> (Option<Vec<u8>>, Vec<u8>) + Send + Sync + 'static,
{
    fn serialize(&self, record: &T) -> (Option<Vec<u8>>, Vec<u8>) {
        self(record)
    }
}

/// The record as a JSON value, without a key.
#[derive(Debug, Clone, Copy, Default)]
pub struct ToJson;

impl<T: Serialize> KafkaSerializer<T> for ToJson {
    fn serialize(&self, record: &T) -> (Option<Vec<u8>>, Vec<u8>) {
        (
            None,
            serde_json::to_vec(record).unwrap_or_else(|e| format!("\"{e}\"").into_bytes()),
        )
    }
}

/// The record's `Display` text as the value, without a key.
#[derive(Debug, Clone, Copy, Default)]
pub struct ToStrings;

impl<T: std::fmt::Display> KafkaSerializer<T> for ToStrings {
    fn serialize(&self, record: &T) -> (Option<Vec<u8>>, Vec<u8>) {
        (None, record.to_string().into_bytes())
    }
}
