//! Node start-up and shutdown shared by the executables: typed parameters with
//! a check for unknown names, QoS choices, signal handling and the spin loop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result};
use r2r::{QosProfile, RosParams};

/// Parameters every node accepts that are not in its own struct.
const RESERVED_PARAMS: &[&str] = &["use_sim_time", "qos_overrides"];

/// Creates the node (name and namespace can be remapped with --ros-args).
pub fn create(name: &str) -> Result<r2r::Node> {
    let ctx = r2r::Context::create().context("rcl init failed")?;
    r2r::Node::create(ctx, name, "").context("node creation failed")
}

/// Fully qualified node name for logs and diagnostics.
pub fn fq_name(node: &r2r::Node) -> String {
    node.fully_qualified_name()
        .unwrap_or_else(|_| node.logger().to_string())
}

/// Declared parameters of a node, kept in sync with `ros2 param set`.
pub struct Params<P> {
    pub shared: Arc<Mutex<P>>,
    /// Names given on the command line or in a params file that the node does not know.
    pub unknown: Vec<String>,
}

/// The names a parameter struct declares (dotted for nested structs).
pub fn declared_names<P: RosParams + Default>() -> Vec<String> {
    let mut map = indexmap::IndexMap::new();
    let mut p = P::default();
    // Registering into an empty map only inserts the defaults; it cannot fail
    // on type grounds, and the names are all we want.
    let _ = p.register_parameters("", None, &mut map);
    map.keys().cloned().collect()
}

/// Registers `defaults` as the node's parameters, applying values from the
/// command line / params file. Wrong types are an error naming the parameter.
/// The returned future serves the parameter services; spawn it.
pub fn declare_params<P>(
    node: &mut r2r::Node,
    defaults: P,
) -> Result<(Params<P>, impl std::future::Future<Output = ()> + Send)>
where
    P: RosParams + Default + Send + 'static,
{
    let given: Vec<String> = node
        .params
        .lock()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let known = declared_names::<P>();
    let unknown = given
        .into_iter()
        .filter(|g| !known.contains(g) && !RESERVED_PARAMS.iter().any(|r| g.starts_with(r)))
        .collect();
    let shared = Arc::new(Mutex::new(defaults));
    let (handler, _events) = node
        .make_derived_parameter_handler(shared.clone())
        .map_err(|e| anyhow::anyhow!("invalid parameter: {e}"))?;
    Ok((Params { shared, unknown }, handler))
}

/// Audio subscriptions: sensor-data QoS (best effort, shallow) by default, as
/// microphones publish; `reliable` for bag replay or lossless links.
pub fn audio_qos(reliable: bool, depth: usize) -> QosProfile {
    if reliable {
        QosProfile::default().keep_last(depth).reliable()
    } else {
        QosProfile::sensor_data().keep_last(depth)
    }
}

/// Text and event topics: reliable, a few messages deep.
pub fn event_qos() -> QosProfile {
    QosProfile::default().keep_last(50).reliable()
}

/// A latched-like state topic (`speaking`): reliable + transient local, so a
/// late subscriber gets the current state.
pub fn state_qos() -> QosProfile {
    QosProfile::default()
        .keep_last(1)
        .reliable()
        .transient_local()
}

/// Set by SIGINT / SIGTERM.
pub fn shutdown_flag() -> Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook_consts::SIGINT, signal_hook_consts::SIGTERM] {
        let f = flag.clone();
        let mut stream =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(sig))
                .context("cannot install signal handler")?;
        tokio::spawn(async move {
            stream.recv().await;
            f.store(true, Ordering::SeqCst);
        });
    }
    Ok(flag)
}

mod signal_hook_consts {
    pub const SIGINT: i32 = 2;
    pub const SIGTERM: i32 = 15;
}

/// Spins the node on the current thread until the flag is set.
pub fn spin_until(node: &mut r2r::Node, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        node.spin_once(Duration::from_millis(20));
    }
}

/// The declared parameters as JSON (`<node> --describe-params`): name ->
/// type, default and description. The launch/config test checks every
/// parameter named in launch files and profiles against this.
pub fn describe_params<P: RosParams + Default>() -> String {
    use r2r::ParameterValue as V;
    let mut map = indexmap::IndexMap::new();
    let mut p = P::default();
    let _ = p.register_parameters("", None, &mut map);
    let mut out = serde_json::Map::new();
    for (name, param) in map {
        let (ty, default) = match &param.value {
            V::Bool(b) => ("bool", serde_json::json!(b)),
            V::Integer(i) => ("integer", serde_json::json!(i)),
            V::Double(d) => ("double", serde_json::json!(d)),
            V::String(s) => ("string", serde_json::json!(s)),
            other => ("other", serde_json::json!(format!("{other:?}"))),
        };
        out.insert(
            name,
            serde_json::json!({"type": ty, "default": default, "description": param.description}),
        );
    }
    serde_json::Value::Object(out).to_string()
}

/// Handles the node's own command-line flags before ROS starts; returns
/// true when the process should exit (a flag was served).
pub fn serve_cli<P: RosParams + Default>(node_name: &str) -> bool {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .take_while(|a| a != "--ros-args")
        .collect();
    if args.iter().any(|a| a == "--describe-params") {
        println!("{}", describe_params::<P>());
        return true;
    }
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!(
            "{node_name} (voice_agent)\n\nusage: {node_name} [--describe-params] [--ros-args -p name:=value ... --params-file FILE]\n\n  --describe-params  print the declared ROS parameters (type, default, description) as JSON"
        );
        return true;
    }
    false
}

/// A bench mode of a node binary: the flag and what it runs (no ROS).
pub type BenchMode = (&'static str, fn(&[String]) -> Result<()>);

/// The `main` every node executable shares: serves `--describe-params` and
/// `--help`, the node's bench mode when its flag is first, else runs `run`
/// on a two-worker tokio runtime. An error becomes one line in the ROS log
/// and exit code 1; a clean shutdown exits 0.
pub fn main<P, F, Fut>(node_name: &str, bench: BenchMode, run: F) -> std::process::ExitCode
where
    P: RosParams + Default,
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    use std::process::ExitCode;
    if serve_cli::<P>(node_name) {
        return ExitCode::SUCCESS;
    }
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(bench.0) {
        return match (bench.1)(&args[2..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("[{node_name}] cannot start async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            crate::log::Log::new(node_name).error(format!("{e:#}"));
            ExitCode::FAILURE
        }
    }
}

/// Node start-up shared by the executables: creates the node, registers the
/// parameter struct (serving `ros2 param` from then on), warns once per
/// unknown parameter and returns the node, its logger and the parameter values.
pub fn start<P>(node_name: &str) -> Result<(r2r::Node, crate::log::Log, P)>
where
    P: RosParams + Default + Clone + Send + 'static,
{
    let mut node = create(node_name)?;
    let log = crate::log::Log::new(node.logger());
    let (params, param_server) = declare_params(&mut node, P::default())?;
    tokio::spawn(param_server);
    for name in &params.unknown {
        log.warn(format!(
            "unknown parameter {name:?} ignored (not declared by {node_name})"
        ));
    }
    let values = params
        .shared
        .lock()
        .map_err(|_| anyhow::anyhow!("parameter lock poisoned"))?
        .clone();
    Ok((node, log, values))
}
