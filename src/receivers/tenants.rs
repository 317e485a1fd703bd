//! Per-tenant admission limits (`tenant_limits` on the `otlp` receiver): each tenant —
//! the value of one request header, `metadata_key` (`x-scope-orgid`) — gets its own
//! token buckets of items per second and bytes per second (uncompressed request bytes),
//! each holding one second's worth. A request that would overdraw either is refused
//! with the retryable answer (`UNAVAILABLE` / 503 + `Retry-After`) while other tenants
//! flow; a request larger than a full bucket is let through once and leaves it in
//! debt, so no request is refused forever. Requests without the header are the tenant
//! `none`.
//!
//! Bounded: at most `max_tenants` are tracked (least recently seen forgotten, and its
//! counter series removed), so neither memory nor the label set of
//! `sieve_receiver_tenant_refused_items_total{receiver,tenant}` grows with tenants
//! that come and go. Buckets start full again after a reload.

use crate::config::FieldError;
use crate::telemetry::Telemetry;
use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::Deserialize;
use std::num::NonZeroUsize;
use std::time::Instant;

/// `tenant_limits:` of the `otlp` receiver.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantLimitsConfig {
    /// The request header naming the tenant.
    pub metadata_key: String,
    /// Items (spans, data points, log records) per second per tenant; 0: no limit.
    pub items_per_second: u64,
    /// Uncompressed request bytes per second per tenant; 0: no limit.
    pub bytes_per_second: u64,
    /// Tenants tracked at once; past it the least recently seen is forgotten.
    pub max_tenants: usize,
}

impl Default for TenantLimitsConfig {
    fn default() -> Self {
        TenantLimitsConfig {
            metadata_key: "x-scope-orgid".into(),
            items_per_second: 0,
            bytes_per_second: 0,
            max_tenants: 1000,
        }
    }
}

impl TenantLimitsConfig {
    pub fn validate(&self) -> Result<(), FieldError> {
        hyper::header::HeaderName::from_bytes(self.metadata_key.as_bytes())
            .map_err(|_| FieldError::new("tenant_limits.metadata_key", "not a header name"))?;
        if self.max_tenants == 0 {
            return Err(FieldError::new(
                "tenant_limits.max_tenants",
                "must be at least 1",
            ));
        }
        if self.items_per_second == 0 && self.bytes_per_second == 0 {
            return Err(FieldError::new(
                "tenant_limits.items_per_second",
                "set items_per_second or bytes_per_second",
            ));
        }
        Ok(())
    }
}

/// `bind_tenant:` of the `otlp` receiver (beyond the collector): a request's tenant comes
/// from who it authenticated as — a `bearertokenauth` `named_tokens` name, a `basicauth`
/// user, an `oidc` `username_claim` (or `sub`), else its client certificate's subject
/// common name (mutual TLS) — not from what it claims. The
/// `metadata_key` entry of its metadata (and the tenant `tenant_limits` sees) is that
/// identity mapped by `identities`, or the identity itself when unmapped; a client's own
/// header of that name is discarded. A request whose authenticator gives no identity
/// has no tenant.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BindTenantConfig {
    /// The metadata entry that names the tenant.
    pub metadata_key: String,
    /// Identity → tenant.
    pub identities: std::collections::BTreeMap<String, String>,
}

impl Default for BindTenantConfig {
    fn default() -> Self {
        BindTenantConfig {
            metadata_key: "x-scope-orgid".into(),
            identities: std::collections::BTreeMap::new(),
        }
    }
}

impl BindTenantConfig {
    /// The tenant of a request that authenticated as `identity`.
    pub fn tenant_of(&self, identity: Option<&str>) -> Option<String> {
        let identity = identity?;
        Some(
            self.identities
                .get(identity)
                .cloned()
                .unwrap_or_else(|| identity.to_string()),
        )
    }
}

/// A token bucket holding `rate` tokens at most, filling at `rate` a second.
#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(rate: u64, now: Instant) -> Bucket {
        Bucket {
            tokens: rate as f64,
            at: now,
        }
    }

    fn refill(&mut self, rate: u64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate as f64).min(rate as f64);
        self.at = now;
    }

    /// Whether `cost` may be taken: it fits, or the bucket is full (a request larger
    /// than a second's worth goes through once, leaving the bucket in debt).
    fn allows(&self, rate: u64, cost: u64) -> bool {
        rate == 0 || self.tokens >= cost as f64 || self.tokens >= rate as f64
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabels {
    receiver: String,
    tenant: String,
}

/// The buckets of the tenants seen lately.
pub struct TenantLimits {
    config: TenantLimitsConfig,
    receiver: String,
    tenants: Mutex<lru::LruCache<String, (Bucket, Bucket)>>,
    refused: Family<TenantLabels, Counter>,
}

impl TenantLimits {
    pub fn new(config: &TenantLimitsConfig, receiver: &str, telemetry: &Telemetry) -> TenantLimits {
        TenantLimits {
            config: config.clone(),
            receiver: receiver.to_string(),
            tenants: Mutex::new(lru::LruCache::new(
                NonZeroUsize::new(config.max_tenants).unwrap_or(NonZeroUsize::MIN),
            )),
            refused: telemetry.family(
                "receiver_tenant_refused_items",
                "Items refused because their tenant was over its tenant_limits (tenants tracked now only)",
            ),
        }
    }

    /// The tenant a request names (`none` without one): its bound tenant when
    /// `bind_tenant` sets this limits' key, else its header.
    pub fn tenant_of(
        &self,
        headers: &hyper::HeaderMap,
        bound: Option<(&str, Option<&str>)>,
    ) -> String {
        let named = match bound {
            Some((key, tenant)) if key.eq_ignore_ascii_case(&self.config.metadata_key) => tenant,
            _ => headers
                .get(self.config.metadata_key.as_str())
                .and_then(|v| v.to_str().ok()),
        };
        named.unwrap_or("none").to_string()
    }

    /// Takes `items` and `bytes` from `tenant`'s buckets; false (and counted) when
    /// either is overdrawn.
    pub fn admit(&self, tenant: &str, items: usize, bytes: usize) -> bool {
        let (items_rate, bytes_rate) = (self.config.items_per_second, self.config.bytes_per_second);
        let now = Instant::now();
        let mut tenants = self.tenants.lock();
        if !tenants.contains(tenant) {
            let fresh = (Bucket::full(items_rate, now), Bucket::full(bytes_rate, now));
            if let Some((gone, _)) = tenants.push(tenant.to_string(), fresh) {
                if gone != tenant {
                    self.refused.remove(&self.labels(&gone));
                }
            }
        }
        let (items_bucket, bytes_bucket) = tenants.get_mut(tenant).expect("inserted above");
        items_bucket.refill(items_rate, now);
        bytes_bucket.refill(bytes_rate, now);
        let allowed = items_bucket.allows(items_rate, items as u64)
            && bytes_bucket.allows(bytes_rate, bytes as u64);
        if allowed {
            items_bucket.tokens -= items as f64;
            bytes_bucket.tokens -= bytes as f64;
        } else {
            drop(tenants);
            self.refused
                .get_or_create(&self.labels(tenant))
                .inc_by(items as u64);
        }
        allowed
    }

    fn labels(&self, tenant: &str) -> TenantLabels {
        TenantLabels {
            receiver: self.receiver.clone(),
            tenant: tenant.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(items: u64, max_tenants: usize) -> TenantLimits {
        let config = TenantLimitsConfig {
            items_per_second: items,
            max_tenants,
            ..Default::default()
        };
        TenantLimits::new(&config, "otlp", &Telemetry::new())
    }

    #[test]
    fn a_tenant_over_its_rate_is_refused_while_others_flow() {
        let limits = limits(100, 10);
        assert!(limits.admit("noisy", 60, 0));
        assert!(!limits.admit("noisy", 60, 0), "120 in the same second");
        assert!(
            limits.admit("quiet", 60, 0),
            "another tenant has its own bucket"
        );
        assert!(
            limits.admit("noisy", 30, 0),
            "what is left of the second still fits"
        );
        let refused = limits.refused.get_or_create(&limits.labels("noisy")).get();
        assert_eq!(refused, 60);
    }

    #[test]
    fn a_request_larger_than_a_full_bucket_goes_through_once() {
        let limits = limits(10, 10);
        assert!(limits.admit("a", 500, 0));
        assert!(!limits.admit("a", 1, 0), "in debt now");
    }

    #[test]
    fn forgotten_tenants_leave_the_label_set() {
        let limits = limits(1, 2);
        for tenant in ["a", "b", "c"] {
            assert!(limits.admit(tenant, 1, 0));
            assert!(!limits.admit(tenant, 1, 0));
        }
        let labels: Vec<String> = {
            let mut text = String::new();
            let mut registry = prometheus_client::registry::Registry::default();
            registry.register("refused", "", limits.refused.clone());
            prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
            text.lines()
                .filter(|l| l.starts_with("refused_total"))
                .map(String::from)
                .collect()
        };
        assert_eq!(labels.len(), 2, "only tracked tenants: {labels:?}");
        assert!(
            !labels.iter().any(|l| l.contains("tenant=\"a\"")),
            "{labels:?}"
        );
    }
}
