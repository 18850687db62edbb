//! Node start-up and shutdown shared by the executables: typed parameters with
//! a check for unknown names, QoS choices, and [`Tasks`]: named tasks and
//! threads, subscriptions relayed off r2r's channel on the spin thread, the
//! diagnostics ticker, signal handling and one shutdown path.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context as _, Result};
use futures::{FutureExt as _, Stream, StreamExt};
use r2r::diagnostic_msgs::msg::DiagnosticArray;
use r2r::QosProfile;
use tokio::signal::unix::{signal, SignalKind};

use crate::log::Log;
use crate::params::{Live, NodeParams};

/// How often each node publishes its status on `/diagnostics`.
pub const DIAGNOSTICS_PERIOD: Duration = Duration::from_secs(1);

/// Creates the node (name and namespace can be remapped with --ros-args).
pub fn create(name: &str) -> Result<r2r::Node> {
    let ctx = context()?.context("rcl init failed")?;
    r2r::Node::create(ctx, name, "").context("node creation failed")
}

/// r2r's context; r2r panics when rcl refuses the command line's ROS
/// arguments (`-p name:=` with no value, an unknown flag): that becomes one
/// error line naming what was refused, not a panic with a backtrace.
fn context() -> Result<r2r::Result<r2r::Context>> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let ctx = std::panic::catch_unwind(r2r::Context::create);
    std::panic::set_hook(hook);
    ctx.map_err(|p| {
        let msg = p
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| p.downcast_ref::<&str>().copied())
            .unwrap_or("unknown error");
        // "... Error: error not set, at /project/src/rcl/arguments.c:352"
        let msg = msg.split(". Error:").next().unwrap_or(msg);
        anyhow::anyhow!("the ROS arguments were refused: {msg}")
    })
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

/// Spins the node on the current thread until the flag is set; after every
/// take, the relays move what was taken into their own queues.
fn spin_until(node: &mut r2r::Node, relays: &mut [Relay], stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        node.spin_once(Duration::from_millis(20));
        for r in relays.iter_mut() {
            (r.pump)();
        }
    }
}

/// One subscription's relay. r2r hands each taken message to a channel ten
/// deep and drops, silently, what does not fit (even on a reliable
/// subscription) when the task reading it is slow to run, as on a loaded
/// machine. `spin_once` takes at most one message per subscription, and the
/// relay empties that channel right after it on the same thread, so it never
/// holds more than one; the relay's own queue is as deep as the QoS history,
/// and what overflows it is counted (`subscription_overflow` in
/// /diagnostics) and logged.
struct Relay {
    pump: Box<dyn FnMut()>,
}

/// The shallowest relay queue (r2r's own channel is 10 deep).
pub const RELAY_MIN_DEPTH: usize = 16;

/// Messages lost because a node's own subscription queue was full, by topic.
#[derive(Default)]
struct Overflow {
    by_topic: Mutex<Vec<(String, Arc<AtomicU64>)>>,
}

impl Overflow {
    fn counter(&self, topic: &str) -> Arc<AtomicU64> {
        let c = Arc::new(AtomicU64::new(0));
        if let Ok(mut v) = self.by_topic.lock() {
            v.push((topic.to_string(), c.clone()));
        }
        c
    }

    /// (total, "topic: n" for each topic that lost any)
    fn summary(&self) -> (u64, String) {
        let v = self.by_topic.lock().map(|v| v.clone()).unwrap_or_default();
        let lost: Vec<(String, u64)> = v
            .into_iter()
            .map(|(t, c)| (t, c.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect();
        let total = lost.iter().map(|(_, n)| n).sum();
        let list = lost
            .iter()
            .map(|(t, n)| format!("{t}: {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        (total, list)
    }
}

/// The signals that stop a node, by name.
fn stop_signals() -> [(&'static str, SignalKind); 2] {
    [
        ("SIGINT", SignalKind::interrupt()),
        ("SIGTERM", SignalKind::terminate()),
    ]
}

/// Set by the first stop signal; which one it was.
struct Signalled {
    flag: AtomicBool,
    name: OnceLock<&'static str>,
}

fn watch_signals() -> Result<Arc<Signalled>> {
    let s = Arc::new(Signalled {
        flag: AtomicBool::new(false),
        name: OnceLock::new(),
    });
    for (name, kind) in stop_signals() {
        let mut stream =
            signal(kind).with_context(|| format!("cannot install the {name} handler"))?;
        let s = s.clone();
        tokio::spawn(async move {
            stream.recv().await;
            let _ = s.name.set(name);
            s.flag.store(true, Ordering::SeqCst);
        });
    }
    Ok(s)
}

/// A node's running parts, and its one way to stop: named tasks (one per
/// subscription, service or timer), named threads (the engines), the
/// diagnostics ticker; [`Tasks::spin`] runs the node until SIGINT or
/// SIGTERM, then stops everything in order.
pub struct Tasks {
    log: Log,
    stop: Arc<AtomicBool>,
    threads: Vec<(String, std::thread::JoinHandle<()>)>,
    relays: Vec<Relay>,
    overflow: Arc<Overflow>,
}

impl Tasks {
    pub fn new(log: &Log) -> Self {
        Self {
            log: log.clone(),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            relays: Vec::new(),
            overflow: Arc::new(Overflow::default()),
        }
    }

    /// Subscribes to `topic` through a relay (see [`Relay`]): no message is
    /// lost uncounted between the middleware and the node. The queue is as
    /// deep as the QoS history, and at least [`RELAY_MIN_DEPTH`] (what r2r's
    /// channel held): a state topic one deep still queues a few changes.
    pub fn subscribe<T>(
        &mut self,
        node: &mut r2r::Node,
        topic: &str,
        qos: QosProfile,
    ) -> Result<impl Stream<Item = T> + Unpin + Send + 'static>
    where
        T: r2r::WrappedTypesupport + Send + 'static,
    {
        let depth = qos.depth.max(RELAY_MIN_DEPTH);
        let mut taken = node
            .subscribe::<T>(topic, qos)
            .with_context(|| format!("cannot subscribe to {topic}"))?;
        let (mut tx, rx) = futures::channel::mpsc::channel::<T>(depth);
        let lost = self.overflow.counter(topic);
        let (log, topic) = (self.log.clone(), topic.to_string());
        let mut last_warned: Option<std::time::Instant> = None;
        let pump = move || {
            while let Some(Some(m)) = taken.next().now_or_never() {
                if let Err(e) = tx.try_send(m) {
                    if e.is_disconnected() {
                        continue; // the node stopped reading: shutting down
                    }
                    let n = lost.fetch_add(1, Ordering::Relaxed) + 1;
                    if last_warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
                        last_warned = Some(std::time::Instant::now());
                        log.warn(format!(
                            "{topic}: message dropped, the node's queue ({depth}) is full \
                             ({n} so far; the node is behind)"
                        ));
                    }
                }
            }
        };
        self.relays.push(Relay {
            pump: Box::new(pump),
        });
        Ok(rx)
    }

    /// Set when shutdown starts; the node's threads watch it.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Calls `f` with every message of `stream` (a subscription) on the
    /// runtime; `f` must not block (it hands work to bounded queues).
    pub fn each<S, T, F>(&self, name: &'static str, mut stream: S, mut f: F)
    where
        S: Stream<Item = T> + Unpin + Send + 'static,
        T: Send + 'static,
        F: FnMut(T) + Send + 'static,
    {
        let log = self.log.clone();
        tokio::spawn(async move {
            while let Some(m) = stream.next().await {
                f(m);
            }
            log.debug(format!("task {name}: its stream ended"));
        });
    }

    /// Runs an async task (a service that awaits its answer) on the runtime.
    pub fn task(&self, name: &'static str, fut: impl Future<Output = ()> + Send + 'static) {
        let log = self.log.clone();
        tokio::spawn(async move {
            fut.await;
            log.debug(format!("task {name} ended"));
        });
    }

    /// Starts a named thread (an engine); it is joined at shutdown.
    pub fn thread(&mut self, name: &str, f: impl FnOnce() + Send + 'static) -> Result<()> {
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(f)
            .with_context(|| format!("cannot start thread {name}"))?;
        self.threads.push((name.into(), handle));
        Ok(())
    }

    /// Publishes `report()` on `/diagnostics` once a second.
    pub fn diagnostics(
        &self,
        node: &mut r2r::Node,
        mut report: impl FnMut() -> DiagnosticArray + Send + 'static,
    ) -> Result<()> {
        let publisher = node.create_publisher::<DiagnosticArray>("/diagnostics", event_qos())?;
        let (log, overflow) = (self.log.clone(), self.overflow.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(DIAGNOSTICS_PERIOD);
            loop {
                tick.tick().await;
                let mut a = report();
                if let Some(status) = a.status.first_mut() {
                    with_overflow(status, overflow.summary());
                }
                if let Err(e) = publisher.publish(&a) {
                    log.debug(format!("/diagnostics publish failed: {e}"));
                }
            }
        });
        Ok(())
    }

    /// Spins `node` until SIGINT or SIGTERM (`ready` is logged first). Then
    /// the one shutdown path: the stop flag is set, `stopping` runs (it
    /// wakes the threads: closes queues, cancels work), the node is dropped
    /// (its subscriptions end) and every thread is joined; a thread that
    /// panicked is an error naming it.
    pub fn spin(mut self, mut node: r2r::Node, ready: &str, stopping: impl FnOnce()) -> Result<()> {
        let signalled = watch_signals()?;
        self.log.info(ready);
        let relays = &mut self.relays;
        tokio::task::block_in_place(|| spin_until(&mut node, relays, &signalled.flag));
        self.log.info(format!(
            "{}: shutting down",
            signalled.name.get().copied().unwrap_or("stop")
        ));
        self.stop.store(true, Ordering::SeqCst);
        stopping();
        drop(node);
        let panicked: Vec<String> = self
            .threads
            .into_iter()
            .filter_map(|(name, h)| h.join().is_err().then_some(name))
            .collect();
        if !panicked.is_empty() {
            anyhow::bail!("shutdown: thread(s) {} panicked", panicked.join(", "));
        }
        Ok(())
    }
}

/// Adds the subscription overflow to a node's status: the count, and a
/// warning naming the topics when any message was lost.
fn with_overflow(
    status: &mut r2r::diagnostic_msgs::msg::DiagnosticStatus,
    (total, topics): (u64, String),
) {
    status.values.push(r2r::diagnostic_msgs::msg::KeyValue {
        key: "subscription_overflow".into(),
        value: total.to_string(),
    });
    if total > 0 && status.level == crate::diag::Level::Ok.byte() {
        status.level = crate::diag::Level::Warn.byte();
        status.message = format!("messages dropped, node behind ({topics})");
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
