//! The `routing` connector (the collector's contrib `connector/routingconnector`, its
//! current form): each item goes to the pipelines of the first route of `table` whose
//! condition it matches, or to `default_pipelines`; with no defaults, an item matching
//! no route is dropped and counted (`reason="unrouted"`).
//!
//! A route's `context` says what its condition is asked about: `resource` (the default;
//! `attributes` are the resource's), `span`, `log`, `metric`, `datapoint`, or `request`
//! (the request's metadata, which the receiver keeps with `include_metadata: true`, in
//! the collector's restricted form `request["name"] == "value"` or `!=`). Conditions are
//! OTTL ([`crate::ottl`]), given as `condition` or as a `statement` of the form
//! `route() where <condition>`.
//!
//! Routing by resource or request needs no decoding: an encoded batch is divided by its
//! resource records on the wire (each record's `resource` is decoded alone to evaluate
//! the conditions) and each part is handed on as the bytes that arrived. A table with a
//! condition on spans, log records, metrics or data points works on the decoded batch,
//! dividing resources and scopes between destinations as their items go.

use crate::config::FieldError;
use crate::model::wire::{self, Shards};
use crate::model::{Batch, Payload, Signal};
use crate::ottl::items::{
    retain_points, LogItem, MetricItem, Owner, Point, ResourceItem, SpanItem,
};
use crate::ottl::{Condition, Context, Item};
use crate::processors::filter::ErrorMode;
use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{Metric, ResourceMetrics, ScopeMetrics};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
use prost::Message;
use serde::Deserialize;

/// What a route's condition is evaluated on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RouteContext {
    /// The resource (`attributes` are the resource's).
    #[default]
    Resource,
    Span,
    Log,
    Metric,
    Datapoint,
    /// The request's metadata: `request["name"] == "value"` (or `!=`) only.
    Request,
}

/// One entry of `table`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// `resource` (default), `span`, `log`, `metric`, `datapoint` or `request`.
    #[serde(default)]
    pub context: RouteContext,
    /// The OTTL condition items of this route match.
    #[serde(default)]
    pub condition: Option<String>,
    /// The condition as a statement, `route() where <condition>` (not with `request`).
    #[serde(default)]
    pub statement: Option<String>,
    /// Where matching items go: pipelines listing this connector under `receivers`.
    pub pipelines: Vec<String>,
}

/// `routing:`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    /// The routes, tried in order: an item goes to the first one it matches.
    pub table: Vec<RouteConfig>,
    /// Where items matching no route go; with none, they are dropped and counted.
    #[serde(default)]
    pub default_pipelines: Vec<String>,
    /// `propagate` (default), `ignore` or `silent`, as in the collector. sieve's
    /// conditions cannot fail when evaluated (see [`crate::ottl`]), so all behave alike.
    #[serde(default)]
    pub error_mode: ErrorMode,
    /// Removed from the collector in v0.120.0 (routes now always match once): refused
    /// with what to do instead.
    #[serde(default)]
    pub match_once: Option<bool>,
}

impl RoutingConfig {
    pub fn validate(&self) -> Result<(), FieldError> {
        Router::new(self).map(|_| ())
    }

    /// The signals the table can route: its item contexts must belong to the signal.
    pub fn routes(&self, signal: Signal) -> Result<(), String> {
        let wrong = self.table.iter().position(|route| {
            let fits = match route.context {
                RouteContext::Resource | RouteContext::Request => true,
                RouteContext::Span => signal == Signal::Traces,
                RouteContext::Log => signal == Signal::Logs,
                RouteContext::Metric | RouteContext::Datapoint => signal == Signal::Metrics,
            };
            !fits
        });
        match wrong {
            Some(at) => Err(format!(
                "table[{at}] has context `{:?}`, which {signal} do not have",
                self.table[at].context
            )
            .to_lowercase()),
            None => Ok(()),
        }
    }

    /// Every pipeline the table and the defaults name, with the key naming it.
    pub fn named_pipelines(&self) -> Vec<(String, String)> {
        let routes = self
            .table
            .iter()
            .flat_map(|r| r.pipelines.iter().map(|p| ("table".to_string(), p.clone())));
        let defaults = self
            .default_pipelines
            .iter()
            .map(|p| ("default_pipelines".to_string(), p.clone()));
        routes.chain(defaults).collect()
    }
}

/// How a route decides.
enum Matcher {
    /// The request metadata's `name` equals (or, `equal: false`, differs from) `value`.
    Request {
        name: String,
        value: String,
        equal: bool,
    },
    /// A condition on the resource.
    Resource(Condition),
    /// A condition on each item (span, log record, metric or data point).
    Item(Condition),
}

struct Route {
    matcher: Matcher,
    pipelines: Vec<String>,
}

/// Where an item goes: the index of its route, or `DEFAULT`.
type Dest = usize;
const DEFAULT: Dest = usize::MAX;

/// A compiled routing table.
pub struct Router {
    routes: Vec<Route>,
    defaults: Vec<String>,
    /// Every route decides per resource or per request: no item is looked at.
    by_resource: bool,
}

/// A batch divided between pipelines.
pub struct Routed {
    /// Per pipeline, what goes there.
    pub parts: Vec<(String, Batch)>,
    /// Items that matched no route with no defaults configured.
    pub unrouted: usize,
}

impl Router {
    pub fn new(config: &RoutingConfig) -> Result<Router, FieldError> {
        if config.match_once.is_some() {
            return Err(FieldError::new(
                "match_once",
                "was removed from the collector in v0.120.0: routes match once; split the table into several routing connectors to match several",
            ));
        }
        if config.table.is_empty() {
            return Err(FieldError::new("table", "needs at least one route"));
        }
        listed_once("default_pipelines", &config.default_pipelines)?;
        let routes = config
            .table
            .iter()
            .enumerate()
            .map(|(at, route)| compile(at, route))
            .collect::<Result<Vec<_>, _>>()?;
        let by_resource = routes
            .iter()
            .all(|r| !matches!(r.matcher, Matcher::Item(_)));
        Ok(Router {
            routes,
            defaults: config.default_pipelines.clone(),
            by_resource,
        })
    }

    /// Whether some route looks at items (spans, log records, metrics, data points):
    /// the batch is then divided decoded, so the pipeline hands it over decoded.
    pub fn reads_items(&self) -> bool {
        !self.by_resource
    }

    /// Divides `batch` between the pipelines its items go to.
    pub fn route(&self, mut batch: Batch) -> Routed {
        let metadata = batch.metadata().cloned();
        let requested: Vec<Option<bool>> = self
            .routes
            .iter()
            .map(|r| request_match(&r.matcher, metadata.as_ref()))
            .collect();
        let client = batch.client();
        if requested.iter().all(Option::is_some) {
            // every route asks about the request: the batch goes whole, as it came
            let dest = requested
                .iter()
                .position(|m| *m == Some(true))
                .unwrap_or(DEFAULT);
            return self.hand_out(vec![(dest, batch)], metadata, client);
        }
        let groups = if self.by_resource && batch.is_encoded() {
            self.divide_encoded(&batch, &requested)
        } else {
            None
        };
        let groups = groups.unwrap_or_else(|| match batch.signal() {
            Signal::Traces => self.divide_traces(std::mem::take(batch.traces_mut()), &requested),
            Signal::Logs => self.divide_logs(std::mem::take(batch.logs_mut()), &requested),
            Signal::Metrics => self.divide_metrics(std::mem::take(batch.metrics_mut()), &requested),
        });
        self.hand_out(groups, metadata, client)
    }

    /// The destination of each resource record of an encoded batch, read on the wire;
    /// `None` when it does not parse (the decoded path then loses only what is bad).
    fn divide_encoded(
        &self,
        batch: &Batch,
        requested: &[Option<bool>],
    ) -> Option<Vec<(Dest, Batch)>> {
        let Payload::Encoded(chunks) = batch.payload() else {
            return None;
        };
        let shards = wire::divide_by_resource(batch.signal(), chunks, |resource| {
            let resource = Resource::decode(resource).ok();
            self.resource_dest(resource.as_ref(), requested)
                .map_or(0, |d| d.wrapping_add(1))
        })?;
        let dest = |shard: usize| shard.wrapping_sub(1);
        Some(match shards {
            Shards::One(shard) => vec![(dest(shard), batch.clone())],
            Shards::Several(parts) => parts
                .into_iter()
                .map(|(shard, parts, items)| {
                    (
                        dest(shard),
                        Batch::from_encoded_parts(batch.signal(), parts, items),
                    )
                })
                .collect(),
        })
    }

    /// Where a whole resource goes when no route looks at items: `None` for defaults.
    fn resource_dest(
        &self,
        resource: Option<&Resource>,
        requested: &[Option<bool>],
    ) -> Option<Dest> {
        let item = ResourceItem(resource);
        self.routes
            .iter()
            .zip(requested)
            .position(|(route, request)| {
                request.unwrap_or_else(|| match &route.matcher {
                    Matcher::Resource(c) => c.matches(&item),
                    _ => false,
                })
            })
    }

    /// Per route, whether a resource matches it (`None`: decided per item).
    fn resource_matches(
        &self,
        resource: Option<&Resource>,
        requested: &[Option<bool>],
    ) -> Vec<Option<bool>> {
        let item = ResourceItem(resource);
        self.routes
            .iter()
            .zip(requested)
            .map(|(route, request)| match (&route.matcher, request) {
                (_, Some(decided)) => Some(*decided),
                (Matcher::Resource(c), None) => Some(c.matches(&item)),
                _ => None,
            })
            .collect()
    }

    /// The destination of one item, given what its resource matched.
    fn item_dest(&self, resource: &[Option<bool>], item: &dyn Item) -> Dest {
        self.routes
            .iter()
            .zip(resource)
            .position(|(route, decided)| match (decided, &route.matcher) {
                (Some(decided), _) => *decided,
                (None, Matcher::Item(c)) => c.matches(item),
                (None, _) => false,
            })
            .unwrap_or(DEFAULT)
    }

    /// Where a resource's items go when every route decides per resource.
    fn whole(&self, resource: &[Option<bool>]) -> Option<Dest> {
        self.by_resource.then(|| {
            resource
                .iter()
                .position(|m| *m == Some(true))
                .unwrap_or(DEFAULT)
        })
    }

    fn divide_traces(
        &self,
        resources: Vec<ResourceSpans>,
        requested: &[Option<bool>],
    ) -> Vec<(Dest, Batch)> {
        let mut out = Groups::default();
        for mut rs in resources {
            let matched = self.resource_matches(rs.resource.as_ref(), requested);
            if let Some(dest) = self.whole(&matched) {
                out.add(dest, rs);
                continue;
            }
            let scopes = std::mem::take(&mut rs.scope_spans);
            let resource = rs.resource.clone();
            let mut split = Split::new(rs);
            for ScopeSpans {
                scope,
                spans,
                schema_url,
            } in scopes
            {
                let owner = Owner {
                    resource: resource.as_ref(),
                    scope: scope.as_ref(),
                };
                let dests: Vec<Dest> = spans
                    .iter()
                    .map(|span| self.item_dest(&matched, &SpanItem { owner, span }))
                    .collect();
                for (dest, spans) in partition(spans, &dests) {
                    let scope_spans = ScopeSpans {
                        scope: scope.clone(),
                        spans,
                        schema_url: schema_url.clone(),
                    };
                    split.at(dest).scope_spans.push(scope_spans);
                }
            }
            split.into(&mut out);
        }
        out.into_batches(Batch::from_traces)
    }

    fn divide_logs(
        &self,
        resources: Vec<ResourceLogs>,
        requested: &[Option<bool>],
    ) -> Vec<(Dest, Batch)> {
        let mut out = Groups::default();
        for mut rl in resources {
            let matched = self.resource_matches(rl.resource.as_ref(), requested);
            if let Some(dest) = self.whole(&matched) {
                out.add(dest, rl);
                continue;
            }
            let scopes = std::mem::take(&mut rl.scope_logs);
            let resource = rl.resource.clone();
            let mut split = Split::new(rl);
            for ScopeLogs {
                scope,
                log_records,
                schema_url,
            } in scopes
            {
                let owner = Owner {
                    resource: resource.as_ref(),
                    scope: scope.as_ref(),
                };
                let dests: Vec<Dest> = log_records
                    .iter()
                    .map(|record| self.item_dest(&matched, &LogItem { owner, record }))
                    .collect();
                for (dest, log_records) in partition(log_records, &dests) {
                    let scope_logs = ScopeLogs {
                        scope: scope.clone(),
                        log_records,
                        schema_url: schema_url.clone(),
                    };
                    split.at(dest).scope_logs.push(scope_logs);
                }
            }
            split.into(&mut out);
        }
        out.into_batches(Batch::from_logs)
    }

    fn divide_metrics(
        &self,
        resources: Vec<ResourceMetrics>,
        requested: &[Option<bool>],
    ) -> Vec<(Dest, Batch)> {
        let mut out = Groups::default();
        for mut rm in resources {
            let matched = self.resource_matches(rm.resource.as_ref(), requested);
            if let Some(dest) = self.whole(&matched) {
                out.add(dest, rm);
                continue;
            }
            let scopes = std::mem::take(&mut rm.scope_metrics);
            let resource = rm.resource.clone();
            let mut split = Split::new(rm);
            for ScopeMetrics {
                scope,
                metrics,
                schema_url,
            } in scopes
            {
                let owner = Owner {
                    resource: resource.as_ref(),
                    scope: scope.as_ref(),
                };
                let mut by_dest: Vec<(Dest, Vec<Metric>)> = Vec::new();
                for metric in &metrics {
                    for (dest, part) in self.divide_metric(&matched, owner, metric) {
                        match by_dest.iter_mut().find(|(d, _)| *d == dest) {
                            Some((_, list)) => list.push(part),
                            None => by_dest.push((dest, vec![part])),
                        }
                    }
                }
                for (dest, metrics) in by_dest {
                    let scope_metrics = ScopeMetrics {
                        scope: scope.clone(),
                        metrics,
                        schema_url: schema_url.clone(),
                    };
                    split.at(dest).scope_metrics.push(scope_metrics);
                }
            }
            split.into(&mut out);
        }
        out.into_batches(Batch::from_metrics)
    }

    /// A metric's data points by destination. A route on the resource, the request or
    /// the metric decides for all of its points; the first such route that matches
    /// takes the metric whole, unless a data point route before it matches a point.
    fn divide_metric(
        &self,
        matched: &[Option<bool>],
        owner: Owner,
        metric: &Metric,
    ) -> Vec<(Dest, Metric)> {
        let whole = MetricItem {
            owner,
            metric,
            point: None,
        };
        let decided: Vec<Option<bool>> = self
            .routes
            .iter()
            .zip(matched)
            .map(|(route, resource)| match (resource, &route.matcher) {
                (Some(decided), _) => Some(*decided),
                (None, Matcher::Item(c)) if c.context() == Context::Metric => {
                    Some(c.matches(&whole))
                }
                _ => None,
            })
            .collect();
        if decided.iter().all(Option::is_some) {
            let dest = decided
                .iter()
                .position(|d| *d == Some(true))
                .unwrap_or(DEFAULT);
            return vec![(dest, metric.clone())];
        }
        let point_dest = |metric: &Metric, point: Point| {
            let item = MetricItem {
                owner,
                metric,
                point: Some(point),
            };
            self.item_dest(&decided, &item)
        };
        let mut dests: Vec<Dest> = Vec::new();
        retain_points(&mut metric.clone(), |m, p| {
            let dest = point_dest(m, p);
            if !dests.contains(&dest) {
                dests.push(dest);
            }
            true
        });
        dests
            .into_iter()
            .map(|dest| {
                let mut part = metric.clone();
                retain_points(&mut part, |m, p| point_dest(m, p) == dest);
                (dest, part)
            })
            .collect()
    }

    /// Turns destination groups into per-pipeline batches carrying the original's
    /// metadata and client.
    fn hand_out(
        &self,
        groups: Vec<(Dest, Batch)>,
        metadata: Option<crate::model::Metadata>,
        client: Option<std::net::IpAddr>,
    ) -> Routed {
        let mut parts: Vec<(String, Batch)> = Vec::new();
        let mut unrouted = 0;
        for (dest, batch) in groups {
            let pipelines = match dest {
                DEFAULT => &self.defaults,
                route => &self.routes[route].pipelines,
            };
            if pipelines.is_empty() {
                unrouted += batch.items();
                continue;
            }
            let mut batch = Some(batch);
            for (at, pipeline) in pipelines.iter().enumerate() {
                let mut copy = match at + 1 == pipelines.len() {
                    true => batch.take().expect("moved into the last pipeline only"),
                    false => batch.clone().expect("kept until the last pipeline"),
                };
                copy.set_metadata(metadata.clone());
                copy.set_client(client);
                match parts.iter_mut().find(|(name, _)| name == pipeline) {
                    Some((_, existing)) => existing.merge(copy),
                    None => parts.push((pipeline.clone(), copy)),
                }
            }
        }
        Routed { parts, unrouted }
    }
}

/// `request["name"] == "value"` decided for the whole batch; `None` for other matchers.
fn request_match(matcher: &Matcher, metadata: Option<&crate::model::Metadata>) -> Option<bool> {
    let Matcher::Request { name, value, equal } = matcher else {
        return None;
    };
    let found = metadata.and_then(|m| m.get(name));
    Some((found == Some(value.as_str())) == *equal)
}

/// Items moved into groups by destination, in their order.
fn partition<T>(items: Vec<T>, dests: &[Dest]) -> Vec<(Dest, Vec<T>)> {
    let mut out: Vec<(Dest, Vec<T>)> = Vec::new();
    for (item, dest) in items.into_iter().zip(dests) {
        match out.iter_mut().find(|(d, _)| d == dest) {
            Some((_, list)) => list.push(item),
            None => out.push((*dest, vec![item])),
        }
    }
    out
}

/// Resource entries gathered by destination.
struct Groups<T>(Vec<(Dest, Vec<T>)>);

impl<T> Default for Groups<T> {
    fn default() -> Self {
        Groups(Vec::new())
    }
}

impl<T> Groups<T> {
    fn add(&mut self, dest: Dest, entry: T) {
        match self.0.iter_mut().find(|(d, _)| *d == dest) {
            Some((_, list)) => list.push(entry),
            None => self.0.push((dest, vec![entry])),
        }
    }

    fn into_batches(self, make: fn(Vec<T>) -> Batch) -> Vec<(Dest, Batch)> {
        self.0
            .into_iter()
            .map(|(dest, entries)| (dest, make(entries)))
            .collect()
    }
}

/// One resource entry divided between destinations: a copy of the entry (its scopes
/// taken out) per destination its items go to.
struct Split<T> {
    shell: T,
    parts: Vec<(Dest, T)>,
}

impl<T: Clone> Split<T> {
    fn new(shell: T) -> Self {
        Split {
            shell,
            parts: Vec::new(),
        }
    }

    /// The entry for `dest`, made from the shell the first time.
    fn at(&mut self, dest: Dest) -> &mut T {
        let at = match self.parts.iter().position(|(d, _)| *d == dest) {
            Some(at) => at,
            None => {
                self.parts.push((dest, self.shell.clone()));
                self.parts.len() - 1
            }
        };
        &mut self.parts[at].1
    }

    fn into(self, groups: &mut Groups<T>) {
        for (dest, entry) in self.parts {
            groups.add(dest, entry);
        }
    }
}

/// Compiles route `at` of the table.
fn compile(at: usize, route: &RouteConfig) -> Result<Route, FieldError> {
    let key = |field: &str| format!("table.{at}.{field}");
    if route.pipelines.is_empty() {
        return Err(FieldError::new(
            key("pipelines"),
            "needs at least one pipeline",
        ));
    }
    listed_once(&key("pipelines"), &route.pipelines)?;
    let (field, text) = match (&route.condition, &route.statement) {
        (Some(condition), None) => ("condition", condition.as_str()),
        (None, Some(statement)) if route.context == RouteContext::Request => {
            return Err(FieldError::new(
                key("statement"),
                format!("`{statement}`: the `request` context takes a `condition`"),
            ));
        }
        (None, Some(statement)) => (
            "statement",
            statement_condition(statement).map_err(|m| FieldError::new(key("statement"), m))?,
        ),
        _ => {
            return Err(FieldError::new(
                key("condition"),
                "give exactly one of `condition` and `statement`",
            ))
        }
    };
    let fail = |message: String| FieldError::new(key(field), format!("`{text}` {message}"));
    let matcher = match route.context {
        RouteContext::Request => request_condition(text).map_err(fail)?,
        RouteContext::Resource => Matcher::Resource(
            Condition::new(text, Context::Resource).map_err(|e| fail(e.to_string()))?,
        ),
        other => {
            let context = match other {
                RouteContext::Span => Context::Span,
                RouteContext::Log => Context::Log,
                RouteContext::Metric => Context::Metric,
                _ => Context::DataPoint,
            };
            Matcher::Item(Condition::new(text, context).map_err(|e| fail(e.to_string()))?)
        }
    };
    Ok(Route {
        matcher,
        pipelines: route.pipelines.clone(),
    })
}

/// Fails when a list names a pipeline twice (it would get the items twice).
fn listed_once(key: &str, pipelines: &[String]) -> Result<(), FieldError> {
    let twice = pipelines
        .iter()
        .enumerate()
        .find(|(at, p)| pipelines[..*at].contains(p));
    match twice {
        Some((_, pipeline)) => Err(FieldError::new(
            key,
            format!("`{pipeline}` is listed twice: it would get the same items twice"),
        )),
        None => Ok(()),
    }
}

/// The condition of `route() where <condition>`.
fn statement_condition(statement: &str) -> Result<&str, String> {
    let rest = statement
        .trim_start()
        .strip_prefix("route()")
        .map(str::trim_start);
    match rest.and_then(|r| r.strip_prefix("where")) {
        Some(condition) if condition.starts_with(char::is_whitespace) => Ok(condition.trim()),
        _ => Err(format!(
            "`{statement}` is not of the form `route() where <condition>`"
        )),
    }
}

/// `request["name"] == "value"` or `!=`, the collector's grammar for the request context.
fn request_condition(text: &str) -> Result<Matcher, String> {
    let pattern =
        regex::Regex::new(r#"^\s*request\s*\[\s*"([^"]+)"\s*\]\s*(==|!=)\s*"([^"]*)"\s*$"#)
            .expect("the pattern is valid");
    let captures = pattern.captures(text).ok_or_else(|| {
        "is not of the form `request[\"name\"] == \"value\"` (or `!=`), the only form the request context takes".to_string()
    })?;
    Ok(Matcher::Request {
        name: captures[1].to_string(),
        value: captures[3].to_string(),
        equal: &captures[2] == "==",
    })
}

#[cfg(test)]
mod tests;
