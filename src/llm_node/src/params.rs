//! llm_node's ROS parameters and their validation. Names and defaults follow
//! the reference Jetson deployment (llama.cpp server flags in brackets).

use r2r::RosParams;
use voice_core::intent::Replies;
pub use voice_core::params::ParamError;
use voice_core::params::{check, in_range};
use voice_core::places::Places;
use voice_ros::params::NodeParams;
use voice_ros::server::{self, ServerConfig};

/// Parameters of llm_node. Doc comments are what `ros2 param describe` shows.
#[derive(RosParams, Debug, Clone)]
pub struct LlmParams {
    /// Where replies are generated: "local" (llama.cpp in this process, model_path) or "openai" (an OpenAI-compatible server at server.base_url: vLLM, SGLang, llama.cpp's server, Ollama).
    pub engine: String,
    /// engine openai: the server.
    pub server: ServerParams,
    /// engine openai: who answers when the server cannot: "local" (model_path in this process, until the server answers again) or "none" (the turn ends with the error).
    pub fallback: String,
    /// fallback local: load the local model at "start" (configure; a fallback answers within its first-token time, the model's RAM is held) or "on_demand" (at the first fault; that turn waits for the load).
    pub fallback_load: String,
    /// GGUF chat model (e.g. Llama-3.2-3B-Instruct-Q4_K_M.gguf); with engine openai, the fallback's (may be "" with fallback none).
    pub model_path: String,
    /// Managed (lifecycle) node: start unconfigured and wait for a lifecycle manager (ros2 lifecycle set, Nav2's lifecycle_manager); false = configure and activate at start.
    pub managed: bool,
    /// Context size shared by all conversations [tokens] (-c).
    pub ctx_size: i32,
    /// CPU threads for generation (-t).
    pub n_threads: i32,
    /// CPU threads for prompt processing (-tb); -1 = n_threads.
    pub n_threads_batch: i32,
    /// Logical batch size: most tokens submitted per decode (-b).
    pub n_batch: i32,
    /// Physical micro-batch size (-ub); must be <= n_batch.
    pub n_ubatch: i32,
    /// Layers offloaded to the GPU (-ngl); needs a CUDA build.
    pub n_gpu_layers: i32,
    /// Flash attention (-fa).
    pub flash_attn: bool,
    /// Lock the model in RAM (--mlock).
    pub use_mlock: bool,
    /// Memory-map the model file (--no-mmap when false).
    pub use_mmap: bool,
    /// Conversations decoded concurrently, each with its own KV sequence (-np).
    pub parallel: i32,
    /// Sampling temperature; 0 = greedy (deterministic).
    pub temperature: f32,
    /// Nucleus sampling threshold (0..1].
    pub top_p: f32,
    /// Top-k sampling; 0 = off.
    pub top_k: i32,
    /// Repetition penalty; 1.0 = off.
    pub repeat_penalty: f32,
    /// Most tokens generated per reply.
    pub max_tokens: i32,
    /// The reply's first chunk ends after this many words (at a word boundary) when no sentence or clause ended sooner, so the first audio does not wait for a long first sentence; later chunks are whole sentences; 0 = off.
    pub first_chunk_words: i32,
    /// Preemptive reply: at a pause whose words score at least this (end_of_turn), the reply's first chunk is generated before the turn is confirmed and sent on reply/tentative only (tts_node synthesizes it into a held buffer), released when the turn is confirmed with the same words, discarded when the user goes on; 0 = off (0..1). Not with places_file (intents).
    pub preempt_above: f32,
    /// Sampling seed (with temperature > 0).
    pub seed: i64,
    /// System prompt of every conversation.
    pub system_prompt: String,
    /// Past exchanges kept per conversation (trimmed further to fit the context).
    pub history_turns: i32,
    /// A new utterance in a conversation still being answered: "merge" (joined to the turn it follows), "queue", "interrupt" or "drop".
    pub busy_policy: String,
    /// YAML file of named places (name, aliases, frame_id, x, y, yaw); set to turn on
    /// the intent layer (navigate_to / stop / answer by constrained decoding). "" = off.
    pub places_file: String,
    /// How goals reach the navigation stack: "action" (nav2_msgs/NavigateToPose
    /// action client: outcome spoken, feedback in the prompt, stop cancels) or
    /// "topic" (PoseStamped on goal_topic, std_msgs/Empty on stop_topic).
    pub nav_mode: String,
    /// NavigateToPose action server (Nav2's bt_navigator serves navigate_to_pose).
    pub nav_action: String,
    /// nav_mode topic: topic for navigate_to goals (geometry_msgs/PoseStamped; RViz and Nav2 use goal_pose).
    pub goal_topic: String,
    /// nav_mode topic: topic for the stop action (std_msgs/Empty).
    pub stop_topic: String,
    /// Spoken confirmation of navigate_to; {place} is the place's name.
    pub reply_navigate: String,
    /// Spoken confirmation of stop.
    pub reply_stop: String,
    /// Spoken question when navigate_to names no known place; {place} = the words used, {places} = the known ones.
    pub reply_unknown_place: String,
    /// nav_mode action: said when the goal is reached; {place}.
    pub reply_arrived: String,
    /// nav_mode action: said when the goal is aborted or refused; {place}, {reason}.
    pub reply_not_reached: String,
    /// sensor_msgs/BatteryState topic whose latest reading goes into the system prompt; "" = none.
    pub battery_topic: String,
    /// geometry_msgs/PoseWithCovarianceStamped topic (e.g. amcl_pose) whose latest pose goes into the system prompt; "" = none.
    pub pose_topic: String,
    /// Readings older than this are left out of the prompt [s].
    pub state_max_age_s: f64,
}

/// llm_node's OpenAI-compatible server (engine openai).
#[derive(RosParams, Debug, Clone)]
pub struct ServerParams {
    /// Base URL up to and including the API version, e.g. http://gpu-server:8000/v1 (https:// for TLS; the system's CA certificates are trusted).
    pub base_url: String,
    /// Model name the server serves (the requests' "model").
    pub model: String,
    /// Name of the environment variable that holds the API key (sent as a bearer token); "" = no key. The key itself is never a parameter and is never logged.
    pub api_key_env: String,
    /// Longest wait for the server's answer, and between two pieces of a streamed reply, before the server counts as failed [s].
    pub timeout_s: f64,
    /// fallback local: how often a failed server is asked again (GET models) [s].
    pub probe_interval_s: f64,
    /// With intents, how the action's JSON schema is sent: "json_schema" (OpenAI's form: vLLM, SGLang, llama.cpp's server) or "json_object" (the schema inside a json_object format: llama-cpp-python, llama.cpp's server).
    pub response_format: String,
}

impl Default for ServerParams {
    fn default() -> Self {
        Self {
            base_url: "http://127.0.0.1:8000/v1".into(),
            model: "llama-3.2-3b-instruct".into(),
            api_key_env: String::new(),
            timeout_s: 5.0,
            probe_interval_s: 5.0,
            response_format: "json_schema".into(),
        }
    }
}

impl Default for LlmParams {
    fn default() -> Self {
        Self {
            engine: "local".into(),
            server: ServerParams::default(),
            fallback: "local".into(),
            fallback_load: "start".into(),
            model_path: String::new(),
            managed: false,
            ctx_size: 2048,
            n_threads: 8,
            n_threads_batch: -1,
            n_batch: 512,
            n_ubatch: 256,
            n_gpu_layers: 99,
            flash_attn: true,
            use_mlock: true,
            use_mmap: true,
            parallel: 8,
            temperature: 0.7,
            top_p: 0.9,
            top_k: 40,
            repeat_penalty: 1.1,
            max_tokens: 128,
            first_chunk_words: 6,
            preempt_above: 0.0,
            seed: 42,
            system_prompt:
                "You are a helpful robot assistant. Answer in one or two short spoken sentences."
                    .into(),
            history_turns: 8,
            busy_policy: "merge".into(),
            places_file: String::new(),
            nav_mode: "action".into(),
            nav_action: "navigate_to_pose".into(),
            goal_topic: "goal_pose".into(),
            stop_topic: "stop".into(),
            reply_navigate: Replies::default().navigate,
            reply_stop: Replies::default().stop,
            reply_unknown_place: Replies::default().unknown_place,
            reply_arrived: Replies::default().arrived,
            reply_not_reached: Replies::default().not_reached,
            battery_topic: String::new(),
            pose_topic: String::new(),
            state_max_age_s: 30.0,
        }
    }
}

pub use voice_core::scheduler::BusyPolicy;

/// Validated engine settings.
#[derive(Debug, Clone)]
pub struct LlmConfig {
    /// engine openai: the server (None = engine local).
    pub remote: Option<RemoteConfig>,
    /// "" only with engine openai and fallback none.
    pub model_path: String,
    pub ctx_size: u32,
    pub n_threads: i32,
    pub n_threads_batch: i32,
    pub n_batch: u32,
    pub n_ubatch: u32,
    pub n_gpu_layers: u32,
    pub flash_attn: bool,
    pub use_mlock: bool,
    pub use_mmap: bool,
    pub parallel: u32,
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: i32,
    pub repeat_penalty: f32,
    pub max_tokens: u32,
    pub first_chunk_words: usize,
    /// `None` = off.
    pub preempt_above: Option<f32>,
    pub seed: u32,
    pub system_prompt: String,
    pub history_turns: usize,
    pub busy_policy: BusyPolicy,
    /// Present when places_file is set.
    pub intents: Option<IntentConfig>,
    pub context: ContextConfig,
}

impl LlmConfig {
    /// Takes the values that may change at runtime from `new` (a config
    /// validated from the same read-only values); the rest stays.
    pub fn apply_live(&mut self, new: &LlmConfig) {
        self.temperature = new.temperature;
        self.top_p = new.top_p;
        self.top_k = new.top_k;
        self.repeat_penalty = new.repeat_penalty;
        self.max_tokens = new.max_tokens;
        self.first_chunk_words = new.first_chunk_words;
        self.preempt_above = new.preempt_above;
        self.seed = new.seed;
        self.system_prompt = new.system_prompt.clone();
        self.history_turns = new.history_turns;
        self.busy_policy = new.busy_policy;
        if let (Some(mine), Some(theirs)) = (self.intents.as_mut(), new.intents.as_ref()) {
            mine.replies = theirs.replies.clone();
        }
        self.context.max_age = new.context.max_age;
        if let (Some(mine), Some(theirs)) = (self.remote.as_mut(), new.remote.as_ref()) {
            mine.server.timeout = theirs.server.timeout;
            mine.server.probe_interval = theirs.server.probe_interval;
        }
    }
}

/// engine openai: the server and what answers without it.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteConfig {
    pub server: ServerConfig,
    /// The local model answers while the server cannot.
    pub fallback: bool,
    /// The fallback model is loaded at configure (else at the first fault).
    pub fallback_at_start: bool,
    /// The intent schema in OpenAI's json_schema form (else inside json_object).
    pub json_schema_format: bool,
}

/// The intent layer's settings.
#[derive(Debug, Clone)]
pub struct IntentConfig {
    pub places: Places,
    pub replies: Replies,
    pub nav: NavOut,
}

/// Where navigation goals go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NavOut {
    /// nav2_msgs/action/NavigateToPose goals to this action server.
    Action { server: String },
    /// PoseStamped goals and std_msgs/Empty stops on topics.
    Topic { goal: String, stop: String },
}

/// Whether this build has nav2_msgs (found in the ROS prefix at build time).
pub const HAS_NAV2: bool = cfg!(nav2);

/// Robot-state subscriptions for the system prompt.
#[derive(Debug, Clone)]
pub struct ContextConfig {
    pub battery_topic: Option<String>,
    pub pose_topic: Option<String>,
    pub max_age: std::time::Duration,
}

/// `t` as a topic name for parameter `name`: non-empty, no whitespace.
fn topic(name: &'static str, t: &str) -> Result<String, ParamError> {
    check(
        !t.is_empty() && !t.chars().any(char::is_whitespace),
        name,
        || format!("not a topic name: {t:?}"),
    )?;
    Ok(t.to_string())
}

impl NodeParams for LlmParams {
    type Config = LlmConfig;
    /// Fixed at start: the model, its context and threads, the places and
    /// the topics (publishers and subscriptions are made once).
    const READ_ONLY: &'static [&'static str] = &[
        "engine",
        "server.base_url",
        "server.model",
        "server.api_key_env",
        "server.response_format",
        "fallback",
        "fallback_load",
        "model_path",
        "managed",
        "ctx_size",
        "n_threads",
        "n_threads_batch",
        "n_batch",
        "n_ubatch",
        "n_gpu_layers",
        "flash_attn",
        "use_mlock",
        "use_mmap",
        "parallel",
        "places_file",
        "nav_mode",
        "nav_action",
        "goal_topic",
        "stop_topic",
        "battery_topic",
        "pose_topic",
    ];

    fn validate(&self) -> Result<LlmConfig, ParamError> {
        let remote = self.remote()?;
        let needs_model = remote.as_ref().is_none_or(|r| r.fallback);
        check(
            !needs_model || !self.model_path.trim().is_empty(),
            "model_path",
            || {
                "not set (path to a GGUF model; with engine openai, fallback none needs none)"
                    .into()
            },
        )?;
        in_range(self.ctx_size, 64..=1_048_576, "ctx_size")?;
        in_range(self.n_threads, 1..=256, "n_threads")?;
        check(
            self.n_threads_batch == -1 || (1..=256).contains(&self.n_threads_batch),
            "n_threads_batch",
            || {
                format!(
                    "must be -1 (= n_threads) or 1..=256, got {}",
                    self.n_threads_batch
                )
            },
        )?;
        in_range(self.n_batch, 1..=65_536, "n_batch")?;
        check(
            (1..=self.n_batch).contains(&self.n_ubatch),
            "n_ubatch",
            || {
                format!(
                    "must be 1..=n_batch ({}), got {}",
                    self.n_batch, self.n_ubatch
                )
            },
        )?;
        in_range(self.n_gpu_layers, 0..=1000, "n_gpu_layers")?;
        in_range(self.parallel, 1..=64, "parallel")?;
        check(self.ctx_size / self.parallel >= 64, "ctx_size", || {
            format!(
                "{} / parallel {} leaves fewer than 64 tokens per conversation",
                self.ctx_size, self.parallel
            )
        })?;
        in_range(self.temperature, 0.0..=5.0, "temperature")?;
        check(self.top_p > 0.0 && self.top_p <= 1.0, "top_p", || {
            format!("must be in (0, 1], got {}", self.top_p)
        })?;
        check(self.top_k >= 0, "top_k", || {
            format!("must be >= 0, got {}", self.top_k)
        })?;
        in_range(self.repeat_penalty, 0.5..=3.0, "repeat_penalty")?;
        in_range(self.max_tokens, 1..=8192, "max_tokens")?;
        in_range(self.first_chunk_words, 0..=100, "first_chunk_words")?;
        in_range(self.preempt_above, 0.0..=1.0, "preempt_above")?;
        check(
            self.max_tokens < self.ctx_size / self.parallel,
            "max_tokens",
            || {
                format!(
                    "{} does not fit the per-conversation context ctx_size/parallel = {}",
                    self.max_tokens,
                    self.ctx_size / self.parallel
                )
            },
        )?;
        in_range(self.seed, 0..=u32::MAX as i64, "seed")?;
        in_range(self.history_turns, 0..=1000, "history_turns")?;
        let busy_policy = match self.busy_policy.as_str() {
            "merge" => BusyPolicy::Merge,
            "queue" => BusyPolicy::Queue,
            "interrupt" => BusyPolicy::Interrupt,
            "drop" => BusyPolicy::Drop,
            other => {
                return Err(ParamError {
                    name: "busy_policy",
                    msg: format!(
                        "must be \"merge\", \"queue\", \"interrupt\" or \"drop\", got {other:?}"
                    ),
                })
            }
        };
        check(
            self.state_max_age_s.is_finite() && self.state_max_age_s > 0.0,
            "state_max_age_s",
            || format!("must be > 0, got {}", self.state_max_age_s),
        )?;
        let optional_topic = |name: &'static str, t: &str| -> Result<Option<String>, ParamError> {
            let t = t.trim();
            (!t.is_empty()).then(|| topic(name, t)).transpose()
        };
        let context = ContextConfig {
            battery_topic: optional_topic("battery_topic", &self.battery_topic)?,
            pose_topic: optional_topic("pose_topic", &self.pose_topic)?,
            max_age: std::time::Duration::from_secs_f64(self.state_max_age_s.min(1e9)),
        };
        let intents = if self.places_file.trim().is_empty() {
            None
        } else {
            let places =
                Places::load(std::path::Path::new(self.places_file.trim())).map_err(|e| {
                    ParamError {
                        name: "places_file",
                        msg: e.to_string(),
                    }
                })?;
            Some(IntentConfig {
                places,
                replies: Replies {
                    navigate: self.reply_navigate.clone(),
                    stop: self.reply_stop.clone(),
                    unknown_place: self.reply_unknown_place.clone(),
                    arrived: self.reply_arrived.clone(),
                    not_reached: self.reply_not_reached.clone(),
                },
                nav: match self.nav_mode.as_str() {
                    "action" => {
                        check(HAS_NAV2, "nav_mode", || {
                            "\"action\" needs nav2_msgs, and this llm_node was built without it: \
                             install nav2_msgs (ros-<distro>-nav2-msgs) and rebuild, or set \
                             nav_mode to \"topic\""
                                .into()
                        })?;
                        NavOut::Action {
                            server: topic("nav_action", &self.nav_action)?,
                        }
                    }
                    "topic" => NavOut::Topic {
                        goal: topic("goal_topic", &self.goal_topic)?,
                        stop: topic("stop_topic", &self.stop_topic)?,
                    },
                    other => {
                        return Err(ParamError {
                            name: "nav_mode",
                            msg: format!("must be \"action\" or \"topic\", got {other:?}"),
                        })
                    }
                },
            })
        };
        Ok(LlmConfig {
            remote,
            model_path: self.model_path.clone(),
            ctx_size: self.ctx_size as u32,
            n_threads: self.n_threads,
            n_threads_batch: if self.n_threads_batch == -1 {
                self.n_threads
            } else {
                self.n_threads_batch
            },
            n_batch: self.n_batch as u32,
            n_ubatch: self.n_ubatch as u32,
            n_gpu_layers: self.n_gpu_layers as u32,
            flash_attn: self.flash_attn,
            use_mlock: self.use_mlock,
            use_mmap: self.use_mmap,
            parallel: self.parallel as u32,
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            repeat_penalty: self.repeat_penalty,
            max_tokens: self.max_tokens as u32,
            first_chunk_words: self.first_chunk_words as usize,
            preempt_above: (self.preempt_above > 0.0).then_some(self.preempt_above),
            seed: self.seed as u32,
            system_prompt: voice_core::chat::sanitize(&self.system_prompt),
            history_turns: self.history_turns as usize,
            busy_policy,
            intents,
            context,
        })
    }
}

impl LlmParams {
    /// engine and the server's parameters.
    fn remote(&self) -> Result<Option<RemoteConfig>, ParamError> {
        if !server::remote_engine(&self.engine)? {
            return Ok(None);
        }
        let s = &self.server;
        let server = server::validate(server::ServerArgs {
            base_url: &s.base_url,
            model: &s.model,
            api_key_env: &s.api_key_env,
            timeout_s: s.timeout_s,
            probe_interval_s: s.probe_interval_s,
        })?;
        Ok(Some(RemoteConfig {
            server,
            fallback: server::local_fallback(&self.fallback)?,
            fallback_at_start: server::choice(
                "fallback_load",
                &self.fallback_load,
                "on_demand",
                "start",
            )?,
            json_schema_format: server::choice(
                "server.response_format",
                &s.response_format,
                "json_object",
                "json_schema",
            )?,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_names_are_declared() {
        let names = voice_ros::params::table::<LlmParams>();
        for n in LlmParams::READ_ONLY {
            assert!(names.contains_key(*n), "{n}");
        }
    }

    fn ok() -> LlmParams {
        LlmParams {
            model_path: "m.gguf".into(),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_are_the_reference_values_and_valid() {
        let c = ok().validate().unwrap();
        assert_eq!(
            (
                c.ctx_size,
                c.n_threads,
                c.n_batch,
                c.n_ubatch,
                c.n_gpu_layers,
                c.parallel
            ),
            (2048, 8, 512, 256, 99, 8)
        );
        assert!(c.flash_attn && c.use_mlock);
        assert_eq!(c.n_threads_batch, 8);
    }

    #[test]
    fn nonsense_is_refused_with_the_parameter_name() {
        let cases: Vec<(LlmParams, &str)> = vec![
            (
                LlmParams {
                    n_ubatch: 1024,
                    ..ok()
                },
                "n_ubatch",
            ),
            (
                LlmParams {
                    ctx_size: 256,
                    parallel: 8,
                    ..ok()
                },
                "ctx_size",
            ),
            (
                LlmParams {
                    max_tokens: 300,
                    ..ok()
                },
                "max_tokens",
            ),
            (
                LlmParams {
                    temperature: -1.0,
                    ..ok()
                },
                "temperature",
            ),
            (LlmParams { top_p: 0.0, ..ok() }, "top_p"),
            (
                LlmParams {
                    busy_policy: "maybe".into(),
                    ..ok()
                },
                "busy_policy",
            ),
            (
                LlmParams {
                    model_path: "".into(),
                    ..ok()
                },
                "model_path",
            ),
            (
                LlmParams {
                    parallel: 0,
                    ..ok()
                },
                "parallel",
            ),
            (LlmParams { seed: -5, ..ok() }, "seed"),
            (
                LlmParams {
                    places_file: "/nonexistent/places.yaml".into(),
                    ..ok()
                },
                "places_file",
            ),
            (
                LlmParams {
                    battery_topic: "battery state".into(),
                    ..ok()
                },
                "battery_topic",
            ),
            (
                LlmParams {
                    state_max_age_s: 0.0,
                    ..ok()
                },
                "state_max_age_s",
            ),
        ];
        for (p, name) in cases {
            let e = p.validate().unwrap_err();
            assert_eq!(e.name, name, "{e}");
        }
    }

    #[test]
    fn the_server_engine_is_checked_and_needs_a_model_only_to_fall_back() {
        let openai = |f: fn(&mut LlmParams)| {
            let mut p = LlmParams {
                engine: "openai".into(),
                ..ok()
            };
            f(&mut p);
            p.validate()
        };
        let r = openai(|p| p.server.base_url = "https://gpu.site:8443/v1/ ".into())
            .unwrap()
            .remote
            .unwrap();
        assert_eq!(r.server.base_url, "https://gpu.site:8443/v1");
        assert!(r.fallback && r.fallback_at_start && r.server.api_key_env.is_none());
        let no_model = openai(|p| {
            p.fallback = "none".into();
            p.model_path = "".into();
        });
        assert!(no_model.unwrap().remote.is_some_and(|r| !r.fallback));
        type Edit = fn(&mut LlmParams);
        let cases: Vec<(Edit, &str)> = vec![
            (|p| p.engine = "cloud".into(), "engine"),
            (
                |p| p.server.base_url = "gpu-server:8000".into(),
                "server.base_url",
            ),
            (
                |p| p.server.base_url = "ftp://host/v1".into(),
                "server.base_url",
            ),
            (
                |p| p.server.base_url = "http://user:secret@host/v1".into(),
                "server.base_url",
            ),
            (|p| p.server.model = " ".into(), "server.model"),
            (
                |p| p.server.api_key_env = "sk-123 456".into(),
                "server.api_key_env",
            ),
            (|p| p.server.timeout_s = 0.0, "server.timeout_s"),
            (
                |p| p.server.probe_interval_s = f64::NAN,
                "server.probe_interval_s",
            ),
            (|p| p.fallback = "cloud".into(), "fallback"),
            (
                |p| p.server.response_format = "grammar".into(),
                "server.response_format",
            ),
            (|p| p.fallback_load = "later".into(), "fallback_load"),
            (|p| p.model_path = "".into(), "model_path"),
        ];
        for (f, name) in cases {
            assert_eq!(openai(f).unwrap_err().name, name);
        }
    }

    #[test]
    fn nav_modes() {
        let places = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../config/places/example.yaml"
        );
        let with = |mode: &str| LlmParams {
            places_file: places.into(),
            nav_mode: mode.into(),
            ..ok()
        };
        let nav = |p: LlmParams| p.validate().map(|c| c.intents.unwrap().nav);
        assert_eq!(
            nav(with("topic")).unwrap(),
            NavOut::Topic {
                goal: "goal_pose".into(),
                stop: "stop".into()
            }
        );
        match nav(with("action")) {
            Ok(n) => assert!(
                HAS_NAV2
                    && n == NavOut::Action {
                        server: "navigate_to_pose".into()
                    }
            ),
            Err(e) => assert!(
                !HAS_NAV2 && e.name == "nav_mode" && e.msg.contains("nav2_msgs"),
                "{e}"
            ),
        }
        assert_eq!(nav(with("drive")).unwrap_err().name, "nav_mode");
        let bad_server = LlmParams {
            nav_action: "".into(),
            ..with("action")
        };
        assert_eq!(
            nav(bad_server).unwrap_err().name,
            if HAS_NAV2 { "nav_action" } else { "nav_mode" }
        );
    }
}
