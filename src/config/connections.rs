//! The checks on connectors across pipelines, as the collector's service graph makes
//! them (connector types are distinct from receiver and exporter types, so an id names
//! one or the other): every use of a connector has a pipeline on the other side that it can connect to (the signal
//! pair is one the connector supports); the pipelines a connector's own config names
//! list it as a receiver; and connectors never lead data back to a pipeline it came
//! from (a cycle would pass the same data round forever).

use super::{
    Checker, ComponentConfig, ComponentId, ConfigError, Connects, PipelineConfig, PipelineId,
};
use crate::model::Signal;
use std::collections::BTreeMap;

type Pipelines = BTreeMap<PipelineId, PipelineConfig>;

impl Checker<'_> {
    /// Resolves the names of a pipeline's `receivers:` or `exporters:` list: those of
    /// `section` and the connectors, each in its list.
    pub(super) fn ends<T: ComponentConfig, C: Connects>(
        &self,
        pipeline_path: &[&str],
        list: &str,
        names: &[String],
        (section, connectors): (&BTreeMap<ComponentId, T>, &BTreeMap<ComponentId, C>),
        signal: Signal,
    ) -> Result<(Vec<ComponentId>, Vec<ComponentId>), ConfigError> {
        let (own, connected): (Vec<String>, Vec<String>) =
            names.iter().cloned().partition(|name| {
                ComponentId::parse(name).map_or(true, |id| !connectors.contains_key(&id))
            });
        let own = self.references(pipeline_path, list, &own, section, signal)?;
        let path = [pipeline_path, &[list]].concat();
        let mut ids: Vec<ComponentId> = Vec::new();
        for name in &connected {
            let id = ComponentId::parse(name).expect("partitioned by parsing");
            if ids.contains(&id) {
                return Err(self.error(&path, Some(name), format!("`{name}` is listed twice")));
            }
            ids.push(id);
        }
        Ok((own, ids))
    }

    /// The checks across pipelines (see the module docs).
    pub(super) fn check_connections<C: Connects>(
        &self,
        connectors: &BTreeMap<ComponentId, C>,
        pipelines: &Pipelines,
    ) -> Result<(), ConfigError> {
        for (id, pipeline) in pipelines {
            for connector in &pipeline.connectors_out {
                let config = &connectors[connector];
                let others = pipelines
                    .iter()
                    .filter(|(_, p)| p.connectors_in.contains(connector));
                let pairs =
                    others.map(|(other, _)| (other, config.connects(id.signal, other.signal)));
                self.connected(id, "exporters", connector, pairs)?;
            }
            for connector in &pipeline.connectors_in {
                let config = &connectors[connector];
                let others = pipelines
                    .iter()
                    .filter(|(_, p)| p.connectors_out.contains(connector));
                let pairs =
                    others.map(|(other, _)| (other, config.connects(other.signal, id.signal)));
                self.connected(id, "receivers", connector, pairs)?;
            }
        }
        self.check_named_pipelines(connectors, pipelines)?;
        self.check_cycles(connectors, pipelines)
    }

    /// Fails unless the use of `connector` in `list` of `pipeline` connects to one of
    /// the pipelines using it on the other side (`others`, with whether it can).
    fn connected<'p>(
        &self,
        pipeline: &PipelineId,
        list: &str,
        connector: &ComponentId,
        others: impl Iterator<Item = (&'p PipelineId, Result<(), String>)>,
    ) -> Result<(), ConfigError> {
        let mut refused = None;
        for (other, connects) in others {
            match connects {
                Ok(()) => return Ok(()),
                Err(why) => refused = refused.or(Some((other, why))),
            }
        }
        let signal = pipeline.signal;
        let message = match (refused, list) {
            (Some((other, why)), _) => {
                format!("connector `{connector}` cannot connect this pipeline with `{other}`: {why}")
            }
            (None, "exporters") => format!(
                "connector `{connector}` is an exporter here, but no pipeline lists it under `receivers`"
            ),
            (None, _) => format!(
                "connector `{connector}` is a receiver of this {signal} pipeline, but no pipeline lists it under `exporters`"
            ),
        };
        Err(self.error(
            &["service", "pipelines", &pipeline.to_string(), list],
            Some(&connector.to_string()),
            message,
        ))
    }

    /// Every pipeline a connector's config names exists and lists the connector under
    /// `receivers`.
    fn check_named_pipelines<C: Connects>(
        &self,
        connectors: &BTreeMap<ComponentId, C>,
        pipelines: &Pipelines,
    ) -> Result<(), ConfigError> {
        for (id, config) in connectors {
            for (key, name) in config.named_pipelines() {
                let component = id.to_string();
                let mut path = vec![C::SECTION, component.as_str()];
                path.extend(key.split('.'));
                let listed = PipelineId::parse(&name)
                    .ok()
                    .and_then(|pid| pipelines.get(&pid))
                    .map(|p| p.connectors_in.contains(id));
                let problem = match listed {
                    None => format!("`{name}` is not a pipeline under `service.pipelines`"),
                    Some(false) => format!(
                        "pipeline `{name}` does not list `{id}` under its `receivers`, so nothing can reach it through this connector"
                    ),
                    Some(true) => continue,
                };
                let mut located = self.error(&path, Some(&name), problem);
                while located.line.is_none() && path.len() > 2 {
                    path.pop();
                    located.line = super::locate::line_of(self.text, &path);
                }
                return Err(located);
            }
        }
        Ok(())
    }

    /// Fails on a cycle of pipelines through connectors, naming it.
    fn check_cycles<C: Connects>(
        &self,
        connectors: &BTreeMap<ComponentId, C>,
        pipelines: &Pipelines,
    ) -> Result<(), ConfigError> {
        let next = |from: &PipelineId| -> Vec<&PipelineId> {
            let outs = &pipelines[from].connectors_out;
            pipelines
                .iter()
                .filter(|(to, p)| {
                    p.connectors_in.iter().any(|c| {
                        outs.contains(c) && connectors[c].connects(from.signal, to.signal).is_ok()
                    })
                })
                .map(|(to, _)| to)
                .collect()
        };
        let mut finished: Vec<&PipelineId> = Vec::new();
        for start in pipelines.keys() {
            let mut path = Vec::new();
            if let Some(cycle) = find_cycle(start, &next, &mut path, &mut finished) {
                let names: Vec<String> = cycle.iter().map(|p| p.to_string()).collect();
                return Err(self.error(
                    &["service", "pipelines", &names[0], "exporters"],
                    None,
                    format!(
                        "connectors lead data round in a cycle: {}; a pipeline must not receive what it exported",
                        names.join(" → ")
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Depth-first search from `at`: the cycle found, first pipeline repeated at the end.
fn find_cycle<'a>(
    at: &'a PipelineId,
    next: &impl Fn(&PipelineId) -> Vec<&'a PipelineId>,
    path: &mut Vec<&'a PipelineId>,
    finished: &mut Vec<&'a PipelineId>,
) -> Option<Vec<&'a PipelineId>> {
    if let Some(start) = path.iter().position(|p| *p == at) {
        let mut cycle = path[start..].to_vec();
        cycle.push(at);
        return Some(cycle);
    }
    if finished.contains(&at) {
        return None;
    }
    path.push(at);
    for to in next(at) {
        if let Some(cycle) = find_cycle(to, next, path, finished) {
            return Some(cycle);
        }
    }
    path.pop();
    finished.push(at);
    None
}
