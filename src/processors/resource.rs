//! The `resource` processor: the collector's attribute actions (see
//! [`super::attributes::actions`]) on the resource of every resource span, log and
//! metric list.
//!
//! It works on the encoded form: a batch's requests are walked as protobuf wire bytes
//! ([`crate::model::wire`]), each `Resource` (a few attributes) is decoded, changed and
//! encoded again, and everything under it — scopes, spans, logs, points — is copied as
//! bytes, never decoded. A batch already decoded by an earlier processor is changed in
//! place.

use super::attributes::actions::{ActionConfig, Actions, Context};
use super::Processor;
use crate::config::FieldError;
use crate::model::wire::{Fields, Value};
use crate::model::{Batch, Payload, Signal};
use bytes::Bytes;
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::encoding::encode_varint;
use prost::Message;
use serde::Deserialize;

/// `resource:` as the collector writes it.
#[derive(Clone, Debug, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ResourceConfig {
    /// The actions, applied in order to each resource's attributes.
    #[serde(default)]
    pub attributes: Vec<ActionConfig>,
}

impl ResourceConfig {
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.attributes.is_empty() {
            return Err(FieldError::new(
                "attributes",
                "the `resource` processor needs at least one action",
            ));
        }
        Actions::new("attributes", &self.attributes).map(|_| ())
    }
}

/// Applies the actions to every resource.
pub struct ResourceProcessor {
    actions: Actions,
}

impl ResourceProcessor {
    pub fn new(config: &ResourceConfig) -> Result<Self, FieldError> {
        Ok(ResourceProcessor {
            actions: Actions::new("attributes", &config.attributes)?,
        })
    }
}

impl Processor for ResourceProcessor {
    fn process(&mut self, mut batch: Batch, out: &mut Vec<Batch>) {
        let metadata = batch.metadata().cloned();
        let context = Context {
            metadata: metadata.as_ref(),
            client: batch.client(),
        };
        rewrite_resources(&mut batch, |resource| {
            self.actions.apply(&mut resource.attributes, context)
        });
        out.push(batch);
    }
}

/// Changes every resource of `batch` with `change` (a missing resource is changed as
/// an empty one): on the wire when the batch is encoded, in place when decoded.
pub fn rewrite_resources(batch: &mut Batch, mut change: impl FnMut(&mut Resource)) {
    let rewritten: Option<Vec<Bytes>> = match batch.payload() {
        Payload::Encoded(parts) => parts
            .iter()
            .map(|part| rewrite_request(part, &mut change))
            .collect(),
        _ => None,
    };
    if let Some(new) = rewritten {
        if let Some(parts) = batch.encoded_parts_mut() {
            *parts = new;
            return;
        }
    }
    let mut apply =
        |resource: &mut Option<Resource>| change(resource.get_or_insert_with(Resource::default));
    match batch.signal() {
        Signal::Traces => batch
            .traces_mut()
            .iter_mut()
            .for_each(|r| apply(&mut r.resource)),
        Signal::Logs => batch
            .logs_mut()
            .iter_mut()
            .for_each(|r| apply(&mut r.resource)),
        Signal::Metrics => batch
            .metrics_mut()
            .iter_mut()
            .for_each(|r| apply(&mut r.resource)),
    }
}

/// The request `part` with every resource changed, or `None` when its framing is not
/// what the receivers checked (then the batch is changed decoded).
fn rewrite_request(part: &[u8], change: &mut impl FnMut(&mut Resource)) -> Option<Bytes> {
    let mut out = Vec::with_capacity(part.len() + 64);
    for field in Fields::new(part, 0..part.len()) {
        let (number, value, record) = field.ok()?;
        match (number, value) {
            (1, Value::Delimited(inner)) => {
                let list = rewrite_resource_list(&part[inner], change)?;
                put_delimited(&mut out, 1, &list);
            }
            _ => out.extend_from_slice(&part[record]),
        }
    }
    Some(out.into())
}

/// One `ResourceSpans` / `ResourceLogs` / `ResourceMetrics`: its resource (field 1)
/// changed and written first, its other fields copied.
fn rewrite_resource_list(list: &[u8], change: &mut impl FnMut(&mut Resource)) -> Option<Vec<u8>> {
    let mut resource = Resource::default();
    let mut rest = Vec::with_capacity(list.len());
    for field in Fields::new(list, 0..list.len()) {
        let (number, value, record) = field.ok()?;
        match (number, value) {
            // repeated singular sub-messages merge, as a decoder would merge them
            (1, Value::Delimited(inner)) => resource.merge(&list[inner]).ok()?,
            _ => rest.extend_from_slice(&list[record]),
        }
    }
    change(&mut resource);
    let mut out = Vec::with_capacity(rest.len() + resource.encoded_len() + 8);
    put_delimited(&mut out, 1, &resource.encode_to_vec());
    out.extend_from_slice(&rest);
    Some(out)
}

fn put_delimited(out: &mut Vec<u8>, number: u32, bytes: &[u8]) {
    encode_varint(u64::from(number) << 3 | 2, out);
    encode_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Metadata;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};

    fn attribute(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value.into())),
            }),
            ..Default::default()
        }
    }

    fn logs(resources: Vec<Option<Resource>>) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: resources
                .into_iter()
                .map(|resource| ResourceLogs {
                    resource,
                    scope_logs: vec![ScopeLogs {
                        log_records: vec![LogRecord {
                            severity_text: "INFO".into(),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    schema_url: "https://example.com/schema".into(),
                })
                .collect(),
        }
    }

    fn processor(yaml: &str) -> ResourceProcessor {
        let config: ResourceConfig = serde_yaml::from_str(yaml).unwrap();
        config.validate().unwrap();
        ResourceProcessor::new(&config).unwrap()
    }

    const ACTIONS: &str = "attributes:
  - { key: deployment.environment, value: prod, action: upsert }
  - { key: cloud.zone, action: delete }
  - { key: tenant, from_context: metadata.x-tenant, action: insert }";

    /// What the wire path gives, decoded, is what the decoded path gives: resources with
    /// attributes, without attributes, and missing altogether; the logs under them
    /// untouched.
    #[test]
    fn the_wire_path_and_the_decoded_path_agree() {
        let request = logs(vec![
            Some(Resource {
                attributes: vec![attribute("service.name", "a"), attribute("cloud.zone", "z")],
                ..Default::default()
            }),
            Some(Resource::default()),
            None,
        ]);
        let metadata = Metadata::from_pairs([("X-Tenant".to_string(), "acme".to_string())]);
        let mut wire = Batch::from_request(Signal::Logs, request.encode_to_vec().into())
            .unwrap()
            .batch;
        wire.set_metadata(Some(metadata.clone()));
        let mut decoded = wire.clone();
        decoded.decode();
        let mut p = processor(ACTIONS);
        let (mut from_wire, mut from_decoded) = (Vec::new(), Vec::new());
        p.process(wire, &mut from_wire);
        p.process(decoded, &mut from_decoded);
        assert!(from_wire[0].is_encoded());
        let mut from_wire = from_wire.remove(0);
        let expected = from_decoded.remove(0).logs_mut().clone();
        assert_eq!(from_wire.logs_mut(), &expected);
        let names = |r: &ResourceLogs| {
            let mut keys: Vec<String> = r
                .resource
                .as_ref()
                .unwrap()
                .attributes
                .iter()
                .map(|kv| {
                    format!(
                        "{}={}",
                        kv.key,
                        crate::model::any_value_text(kv.value.as_ref())
                    )
                })
                .collect();
            keys.sort();
            keys
        };
        assert_eq!(
            names(&expected[0]),
            [
                "deployment.environment=prod",
                "service.name=a",
                "tenant=acme"
            ]
        );
        assert_eq!(
            names(&expected[2]),
            ["deployment.environment=prod", "tenant=acme"]
        );
        assert!(expected
            .iter()
            .all(|r| r.scope_logs[0].log_records[0].severity_text == "INFO"
                && r.schema_url == "https://example.com/schema"));
    }

    #[test]
    fn an_empty_list_of_actions_is_refused() {
        let config: ResourceConfig = serde_yaml::from_str("attributes: []").unwrap();
        assert_eq!(config.validate().unwrap_err().key, "attributes");
    }
}
