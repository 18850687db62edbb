//! Node start-up and shutdown shared by the executables: typed parameters with
//! a check for unknown names, QoS choices, signal handling and the spin loop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use r2r::QosProfile;

use crate::params::{Live, NodeParams};

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
    use tokio::signal::unix::{signal, SignalKind};
    for kind in [SignalKind::interrupt(), SignalKind::terminate()] {
        let f = flag.clone();
        let mut stream = signal(kind).context("cannot install signal handler")?;
        tokio::spawn(async move {
            stream.recv().await;
            f.store(true, Ordering::SeqCst);
        });
    }
    Ok(flag)
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
pub fn describe_params<P: NodeParams>() -> String {
    use r2r::ParameterValue as V;
    let map = crate::params::table::<P>();
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
            name.clone(),
            serde_json::json!({
                "type": ty,
                "default": default,
                "description": param.description,
                "read_only": P::READ_ONLY.contains(&name.as_str()),
            }),
        );
    }
    serde_json::Value::Object(out).to_string()
}

/// Handles the node's own command-line flags before ROS starts; returns
/// true when the process should exit (a flag was served).
pub fn serve_cli<P: NodeParams>(node_name: &str) -> bool {
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
/// `--help`, the node's bench modes when their flag is first, else runs `run`
/// on a two-worker tokio runtime. An error becomes one line in the ROS log
/// and exit code 1; a clean shutdown exits 0.
pub fn main<P, F, Fut>(node_name: &str, benches: &[BenchMode], run: F) -> std::process::ExitCode
where
    P: NodeParams,
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    use std::process::ExitCode;
    if serve_cli::<P>(node_name) {
        return ExitCode::SUCCESS;
    }
    let args: Vec<String> = std::env::args().collect();
    if let Some(bench) = benches
        .iter()
        .find(|b| args.get(1).map(String::as_str) == Some(b.0))
    {
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

/// Node start-up shared by the executables: creates the node, reads and
/// validates its parameters (an invalid value stops the node with one line
/// naming the parameter), serves the parameter services from then on (sets
/// validated as at start, read-only ones refused), warns once per unknown
/// parameter, and returns the node, its logger and the live parameters.
pub fn start<P: NodeParams>(node_name: &str) -> Result<(r2r::Node, crate::log::Log, Live<P>)> {
    let mut node = create(node_name)?;
    let log = crate::log::Log::new(node.logger());
    let (params, server) = crate::params::declare::<P>(&mut node, &log)?;
    tokio::spawn(server);
    for name in &params.unknown {
        log.warn(format!(
            "unknown parameter {name:?} ignored (not declared by {node_name})"
        ));
    }
    Ok((node, log, params))
}
