//! Live parameters, as rclcpp nodes have them: the node's parameter struct is
//! served through the standard parameter services (set, get, list, describe,
//! types, set atomically), and a set is validated exactly as at start.
//!
//! - a parameter the node applies at runtime: the set is checked by the
//!   node's own `validate`; valid -> the new typed config goes out on a watch
//!   channel the node's workers read before their next turn; invalid -> the
//!   set is refused with the reason (`ros2 param set` prints it) and the old
//!   value stays;
//! - a parameter fixed at start (model paths, threads, context size, ...)
//!   is declared read-only: `ros2 param describe` says so and a set is refused;
//! - a wrong type or an undeclared name is refused too.
//!
//! r2r's own derived handler accepts every set of the right type and never
//! tells the node's logic (seen: max_tokens 5 and n_threads -5 "successful",
//! neither used), which is why the services are served here.

use std::sync::{Arc, Mutex};

use anyhow::Result;
use futures::StreamExt;
use indexmap::IndexMap;
use r2r::rcl_interfaces::msg::{
    ListParametersResult, ParameterDescriptor, ParameterType, ParameterValue as ValueMsg,
    SetParametersResult,
};
use r2r::rcl_interfaces::srv::{
    DescribeParameters, GetParameterTypes, GetParameters, ListParameters, SetParameters,
    SetParametersAtomically,
};
use r2r::{Parameter, ParameterValue, RosParams};
use tokio::sync::watch;
pub use voice_core::params::ParamError;

/// A node's parameter struct: its validation into a typed config and the
/// names that cannot change after start.
pub trait NodeParams: RosParams + Default + Clone + Send + 'static {
    /// What `validate` makes of the values: what the node's logic reads.
    type Config: Send + Sync + 'static;
    /// Parameters fixed at start; a runtime set is refused.
    const READ_ONLY: &'static [&'static str];
    /// The same check at start and on every runtime set.
    fn validate(&self) -> Result<Self::Config, ParamError>;
}

/// Parameters every node accepts that are not in its own struct.
pub const RESERVED: &[&str] = &["use_sim_time", "qos_overrides"];

/// The validated parameters of a running node.
pub struct Live<P: NodeParams> {
    /// Values at start (command line, params files, defaults).
    pub values: P,
    /// `values` validated.
    pub config: Arc<P::Config>,
    /// Every accepted runtime set: the new config (read it before each turn).
    pub updates: watch::Receiver<Arc<P::Config>>,
    /// Names given on the command line or in a params file that the node does not know.
    pub unknown: Vec<String>,
}

struct Server<P: NodeParams> {
    values: P,
    /// Declared names in order, with descriptions and current values.
    table: IndexMap<String, Parameter>,
    tx: watch::Sender<Arc<P::Config>>,
    log: crate::log::Log,
}

/// The declared parameter table of `P` (its defaults), in declaration order.
pub fn table<P: NodeParams>() -> IndexMap<String, Parameter> {
    let mut map = IndexMap::new();
    // Registering into an empty map only inserts the defaults; it cannot fail.
    let _ = P::default().register_parameters("", None, &mut map);
    map
}

/// Reads the node's parameters (command line and params files applied to the
/// defaults), validates them, and serves the parameter services from then
/// on. A wrong type or an invalid value is an error naming the parameter.
/// The returned future serves the services; spawn it.
pub fn declare<P: NodeParams>(
    node: &mut r2r::Node,
    log: &crate::log::Log,
) -> Result<(Live<P>, impl std::future::Future<Output = ()> + Send)> {
    let mut given: IndexMap<String, Parameter> = node
        .params
        .lock()
        .map_err(|_| anyhow::anyhow!("parameter lock poisoned"))?
        .iter()
        .map(|(k, p)| (k.clone(), Parameter::new(p.value.clone())))
        .collect();
    let declared = table::<P>();
    let unknown = given
        .keys()
        .filter(|g| !declared.contains_key(*g) && !RESERVED.iter().any(|r| g.starts_with(r)))
        .cloned()
        .collect();
    let use_sim_time = matches!(
        given.get("use_sim_time").map(|p| &p.value),
        Some(ParameterValue::Bool(true))
    );
    let mut values = P::default();
    values
        .register_parameters("", None, &mut given)
        .map_err(|e| anyhow::anyhow!("invalid parameter: {e}"))?;
    let config = Arc::new(values.validate()?);
    let mut table = declared;
    for (name, p) in table.iter_mut() {
        if let Some(v) = given.get(name) {
            p.value = v.value.clone();
        }
    }
    if use_sim_time {
        node.get_time_source().enable_sim_time(node)?;
    }
    let (tx, updates) = watch::channel(config.clone());
    let server = Arc::new(Mutex::new(Server {
        values: values.clone(),
        table,
        tx,
        log: log.clone(),
    }));
    let serve = services(node, server)?;
    Ok((
        Live {
            values,
            config,
            updates,
            unknown,
        },
        serve,
    ))
}

fn services<P: NodeParams>(
    node: &mut r2r::Node,
    server: Arc<Mutex<Server<P>>>,
) -> Result<impl std::future::Future<Output = ()> + Send> {
    let qos = r2r::QosProfile::services_default;
    let mut set = node.create_service::<SetParameters::Service>("~/set_parameters", qos())?;
    let mut set_all = node
        .create_service::<SetParametersAtomically::Service>("~/set_parameters_atomically", qos())?;
    let mut get = node.create_service::<GetParameters::Service>("~/get_parameters", qos())?;
    let mut list = node.create_service::<ListParameters::Service>("~/list_parameters", qos())?;
    let mut describe =
        node.create_service::<DescribeParameters::Service>("~/describe_parameters", qos())?;
    let mut types =
        node.create_service::<GetParameterTypes::Service>("~/get_parameter_types", qos())?;
    Ok(async move {
        loop {
            tokio::select! {
                Some(r) = set.next() => {
                    let results = r.message.parameters.iter()
                        .map(|p| with(&server, |s| s.set(&p.name, &p.value)))
                        .collect();
                    let _ = r.respond(SetParameters::Response { results });
                }
                Some(r) = set_all.next() => {
                    let result = with(&server, |s| s.set_atomically(&r.message.parameters));
                    let _ = r.respond(SetParametersAtomically::Response { result });
                }
                Some(r) = get.next() => {
                    let values = with(&server, |s| r.message.names.iter().map(|n| s.get(n)).collect());
                    let _ = r.respond(GetParameters::Response { values });
                }
                Some(r) = list.next() => {
                    let result = with(&server, |s| s.list(&r.message.prefixes, r.message.depth));
                    let _ = r.respond(ListParameters::Response { result });
                }
                Some(r) = describe.next() => {
                    let descriptors =
                        with(&server, |s| r.message.names.iter().map(|n| s.describe(n)).collect());
                    let _ = r.respond(DescribeParameters::Response { descriptors });
                }
                Some(r) = types.next() => {
                    let types = with(&server, |s| r.message.names.iter().map(|n| s.type_of(n)).collect());
                    let _ = r.respond(GetParameterTypes::Response { types });
                }
                else => break,
            }
        }
    })
}

fn with<P: NodeParams, R>(server: &Mutex<Server<P>>, f: impl FnOnce(&mut Server<P>) -> R) -> R {
    let mut s = server.lock().unwrap_or_else(|e| e.into_inner());
    f(&mut s)
}

fn refused(reason: impl Into<String>) -> SetParametersResult {
    SetParametersResult {
        successful: false,
        reason: reason.into(),
    }
}

impl<P: NodeParams> Server<P> {
    /// The values with `name` set to `msg`, validated; or why not.
    fn try_set(&self, name: &str, msg: &ValueMsg) -> Result<(P, P::Config), String> {
        if !self.table.contains_key(name) {
            return Err(if RESERVED.iter().any(|r| name.starts_with(r)) {
                format!("{name} is read-only: fixed at start-up")
            } else {
                format!("parameter {name} is not declared by this node")
            });
        }
        if P::READ_ONLY.contains(&name) {
            return Err(format!(
                "{name} is read-only: fixed at start-up (restart the node to change it)"
            ));
        }
        let value = from_msg(msg);
        let mut next = self.values.clone();
        next.set_parameter(name, &value).map_err(|e| match e {
            r2r::Error::InvalidParameterType { ty, .. } => format!(
                "{name} has type {}, got {}",
                ty.trim_start_matches("ParameterValue::").to_lowercase(),
                type_name(msg.type_)
            ),
            other => other.to_string(),
        })?;
        let config = next.validate().map_err(|e| e.to_string())?;
        Ok((next, config))
    }

    fn commit(&mut self, next: P, config: P::Config, names: &[&str]) {
        for name in names {
            if let (Some(p), Ok(v)) = (self.table.get_mut(*name), next.clone().get_parameter(name))
            {
                p.value = v;
            }
        }
        self.values = next;
        self.tx.send_replace(Arc::new(config));
    }

    fn set(&mut self, name: &str, msg: &ValueMsg) -> SetParametersResult {
        match self.try_set(name, msg) {
            Ok((next, config)) => {
                self.commit(next, config, &[name]);
                self.log.info(format!(
                    "parameter {name} set to {}",
                    show(&self.table[name].value)
                ));
                SetParametersResult {
                    successful: true,
                    reason: String::new(),
                }
            }
            Err(reason) => {
                self.log.warn(format!("parameter set refused: {reason}"));
                refused(reason)
            }
        }
    }

    /// All or nothing: each value is checked on top of the ones before it.
    fn set_atomically(
        &mut self,
        params: &[r2r::rcl_interfaces::msg::Parameter],
    ) -> SetParametersResult {
        let saved = self.values.clone();
        let mut last = None;
        for p in params {
            match self.try_set(&p.name, &p.value) {
                Ok((next, config)) => {
                    self.values = next;
                    last = Some(config);
                }
                Err(reason) => {
                    self.values = saved;
                    self.log.warn(format!("parameter set refused: {reason}"));
                    return refused(reason);
                }
            }
        }
        if let Some(config) = last {
            let next = std::mem::replace(&mut self.values, saved);
            let names: Vec<&str> = params.iter().map(|p| p.name.as_str()).collect();
            self.commit(next, config, &names);
        }
        SetParametersResult {
            successful: true,
            reason: String::new(),
        }
    }

    fn get(&self, name: &str) -> ValueMsg {
        to_msg(
            self.table
                .get(name)
                .map_or(&ParameterValue::NotSet, |p| &p.value),
        )
    }

    fn type_of(&self, name: &str) -> u8 {
        self.get(name).type_
    }

    fn describe(&self, name: &str) -> ParameterDescriptor {
        let Some(p) = self.table.get(name) else {
            return ParameterDescriptor {
                name: name.into(),
                ..Default::default()
            };
        };
        let read_only = P::READ_ONLY.contains(&name);
        ParameterDescriptor {
            name: name.into(),
            type_: to_msg(&p.value).type_,
            description: p.description.into(),
            additional_constraints: if read_only {
                "fixed at start-up".into()
            } else {
                "applied at runtime; validated as at start-up".into()
            },
            read_only,
            ..Default::default()
        }
    }

    fn list(&self, prefixes: &[String], depth: u64) -> ListParametersResult {
        let recursive = depth == ListParameters::Request::DEPTH_RECURSIVE as u64;
        let within = |rest: &str| recursive || (rest.matches('.').count() as u64) < depth;
        let mut out = ListParametersResult::default();
        for name in self.table.keys() {
            let take = if prefixes.is_empty() {
                within(name)
            } else {
                prefixes.iter().any(|pre| {
                    name == pre
                        || name
                            .strip_prefix(pre.as_str())
                            .and_then(|r| r.strip_prefix('.'))
                            .is_some_and(within)
                })
            };
            if !take {
                continue;
            }
            out.names.push(name.clone());
            if let Some((pre, _)) = name.rsplit_once('.') {
                if !out.prefixes.iter().any(|p| p == pre) {
                    out.prefixes.push(pre.to_string());
                }
            }
        }
        out
    }
}

fn type_name(t: u8) -> &'static str {
    match t {
        x if x == ParameterType::PARAMETER_BOOL as u8 => "bool",
        x if x == ParameterType::PARAMETER_INTEGER as u8 => "integer",
        x if x == ParameterType::PARAMETER_DOUBLE as u8 => "double",
        x if x == ParameterType::PARAMETER_STRING as u8 => "string",
        x if x == ParameterType::PARAMETER_NOT_SET as u8 => "no value",
        _ => "an array",
    }
}

fn show(v: &ParameterValue) -> String {
    match v {
        ParameterValue::Bool(b) => b.to_string(),
        ParameterValue::Integer(i) => i.to_string(),
        ParameterValue::Double(d) => d.to_string(),
        ParameterValue::String(s) => format!("{s:?}"),
        other => format!("{other:?}"),
    }
}

/// A parameter message's value (arrays are not used by these nodes: they
/// come through as NotSet, which no declared parameter accepts).
pub fn from_msg(m: &ValueMsg) -> ParameterValue {
    match m.type_ {
        x if x == ParameterType::PARAMETER_BOOL as u8 => ParameterValue::Bool(m.bool_value),
        x if x == ParameterType::PARAMETER_INTEGER as u8 => {
            ParameterValue::Integer(m.integer_value)
        }
        x if x == ParameterType::PARAMETER_DOUBLE as u8 => ParameterValue::Double(m.double_value),
        x if x == ParameterType::PARAMETER_STRING as u8 => {
            ParameterValue::String(m.string_value.clone())
        }
        _ => ParameterValue::NotSet,
    }
}

pub fn to_msg(v: &ParameterValue) -> ValueMsg {
    let mut m = ValueMsg::default();
    match v {
        ParameterValue::Bool(b) => {
            m.type_ = ParameterType::PARAMETER_BOOL as u8;
            m.bool_value = *b;
        }
        ParameterValue::Integer(i) => {
            m.type_ = ParameterType::PARAMETER_INTEGER as u8;
            m.integer_value = *i;
        }
        ParameterValue::Double(d) => {
            m.type_ = ParameterType::PARAMETER_DOUBLE as u8;
            m.double_value = *d;
        }
        ParameterValue::String(s) => {
            m.type_ = ParameterType::PARAMETER_STRING as u8;
            m.string_value = s.clone();
        }
        _ => m.type_ = ParameterType::PARAMETER_NOT_SET as u8,
    }
    m
}
