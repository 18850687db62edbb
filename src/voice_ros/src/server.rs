//! What the nodes that can call an OpenAI-compatible server share
//! (`engine: openai`: llm_node's chat completions, stt_node's
//! transcriptions): the checks of the server parameters, the API key read
//! from the environment variable a parameter names, and the faults a
//! request can end in.

use std::time::Duration;

use voice_core::params::{check, ParamError};

/// The server's checked parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Without a trailing slash.
    pub base_url: String,
    pub model: String,
    /// The environment variable's name (never its value).
    pub api_key_env: Option<String>,
    pub timeout: Duration,
    pub probe_interval: Duration,
}

/// The server parameters as the node declares them (`server.*`).
pub struct ServerArgs<'a> {
    pub base_url: &'a str,
    pub model: &'a str,
    pub api_key_env: &'a str,
    pub timeout_s: f64,
    pub probe_interval_s: f64,
}

/// `engine`: true for "openai", false for "local".
pub fn remote_engine(engine: &str) -> Result<bool, ParamError> {
    choice("engine", engine, "local", "openai")
}

/// `fallback`: true for "local", false for "none".
pub fn local_fallback(fallback: &str) -> Result<bool, ParamError> {
    choice("fallback", fallback, "none", "local")
}

/// `value` is `no` (false) or `yes` (true).
pub fn choice(name: &'static str, value: &str, no: &str, yes: &str) -> Result<bool, ParamError> {
    match value {
        v if v == yes => Ok(true),
        v if v == no => Ok(false),
        other => Err(ParamError {
            name,
            msg: format!("must be {no:?} or {yes:?}, got {other:?}"),
        }),
    }
}

/// Checks the `server.*` parameters.
pub fn validate(a: ServerArgs<'_>) -> Result<ServerConfig, ParamError> {
    let url = a.base_url.trim().trim_end_matches('/');
    let parsed = reqwest::Url::parse(url).map_err(|e| ParamError {
        name: "server.base_url",
        msg: format!("not a URL ({e}): {url:?}"),
    })?;
    check(
        matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some(),
        "server.base_url",
        || format!("must be an http:// or https:// URL with a host, got {url:?}"),
    )?;
    check(
        parsed.username().is_empty() && parsed.password().is_none(),
        "server.base_url",
        || "must not hold credentials: name the key's variable in server.api_key_env".into(),
    )?;
    check(!a.model.trim().is_empty(), "server.model", || {
        "not set (the model name the server serves)".into()
    })?;
    let env = a.api_key_env.trim();
    check(
        env.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !env.starts_with(|c: char| c.is_ascii_digit()),
        "server.api_key_env",
        || format!("not an environment variable name: {env:?}"),
    )?;
    let seconds = |v: f64, name: &'static str, max: f64| {
        check(v.is_finite() && v > 0.0 && v <= max, name, || {
            format!("must be in (0, {max}] s, got {v}")
        })
        .map(|()| Duration::from_secs_f64(v))
    };
    Ok(ServerConfig {
        base_url: url.to_string(),
        model: a.model.trim().to_string(),
        api_key_env: (!env.is_empty()).then(|| env.to_string()),
        timeout: seconds(a.timeout_s, "server.timeout_s", 600.0)?,
        probe_interval: seconds(a.probe_interval_s, "server.probe_interval_s", 3600.0)?,
    })
}

/// The API key from the environment variable `server.api_key_env` names;
/// an error (naming the parameter and the variable, never a value) when it
/// is not set.
pub fn api_key(cfg: &ServerConfig) -> Result<Option<String>, String> {
    let Some(var) = &cfg.api_key_env else {
        return Ok(None);
    };
    match std::env::var(var) {
        Ok(k) if !k.trim().is_empty() => Ok(Some(k.trim().to_string())),
        _ => Err(format!(
            "server.api_key_env: the environment variable {var} is not set (it holds the server's API key)"
        )),
    }
}

/// Characters of a server's error body quoted in the log.
pub const BODY_QUOTE: usize = 300;

/// Why the server gave no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Fault {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("no answer within {0:.1} s (server.timeout_s)")]
    Timeout(f64),
    #[error("HTTP {0}: the server refused the API key (server.api_key_env names the variable that holds it)")]
    Unauthorized(u16),
    #[error("HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("malformed answer: {0}")]
    Malformed(String),
    #[error("the answer broke off: {0}")]
    Cut(String),
}

impl Fault {
    /// A request that failed in the client (the URL is left out: it is in
    /// the node's start-up line).
    pub fn of_request(e: reqwest::Error, timeout: Duration) -> Fault {
        if e.is_timeout() {
            Fault::Timeout(timeout.as_secs_f64())
        } else if e.is_connect() {
            Fault::Connect(e.without_url().to_string())
        } else {
            Fault::Cut(e.without_url().to_string())
        }
    }

    /// An answer that is not a success; `body`: its start.
    pub fn of_status(status: u16, body: &str) -> Fault {
        if matches!(status, 401 | 403) {
            return Fault::Unauthorized(status);
        }
        Fault::Status {
            status,
            body: quote(body),
        }
    }
}

/// The start of a text, for a log line.
pub fn quote(text: &str) -> String {
    text.trim().chars().take(BODY_QUOTE).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(base_url: &str) -> ServerArgs<'_> {
        ServerArgs {
            base_url,
            model: "m",
            api_key_env: "",
            timeout_s: 5.0,
            probe_interval_s: 5.0,
        }
    }

    #[test]
    fn server_parameters_are_checked_with_their_names() {
        let ok = validate(args("https://gpu.site:8443/v1/ ")).unwrap();
        assert_eq!(ok.base_url, "https://gpu.site:8443/v1");
        assert!(ok.api_key_env.is_none());
        for (a, name) in [
            (args("gpu-server:8000"), "server.base_url"),
            (args("ftp://host/v1"), "server.base_url"),
            (args("http://user:secret@host/v1"), "server.base_url"),
            (
                ServerArgs {
                    model: " ",
                    ..args("http://h/v1")
                },
                "server.model",
            ),
            (
                ServerArgs {
                    api_key_env: "sk-123 456",
                    ..args("http://h/v1")
                },
                "server.api_key_env",
            ),
            (
                ServerArgs {
                    timeout_s: 0.0,
                    ..args("http://h/v1")
                },
                "server.timeout_s",
            ),
            (
                ServerArgs {
                    probe_interval_s: f64::NAN,
                    ..args("http://h/v1")
                },
                "server.probe_interval_s",
            ),
        ] {
            assert_eq!(validate(a).unwrap_err().name, name);
        }
        assert!(remote_engine("openai").unwrap() && !remote_engine("local").unwrap());
        assert_eq!(remote_engine("cloud").unwrap_err().name, "engine");
        assert_eq!(local_fallback("maybe").unwrap_err().name, "fallback");
    }

    #[test]
    fn a_missing_key_variable_is_named_and_a_refused_key_is_said() {
        let cfg = ServerConfig {
            api_key_env: Some("VOICE_ROS_TEST_NO_SUCH_VAR".into()),
            ..validate(args("http://h/v1")).unwrap()
        };
        let e = api_key(&cfg).unwrap_err();
        assert!(e.contains("server.api_key_env") && e.contains("VOICE_ROS_TEST_NO_SUCH_VAR"));
        assert!(matches!(
            Fault::of_status(401, ""),
            Fault::Unauthorized(401)
        ));
        let long = "x".repeat(1000);
        match Fault::of_status(503, &long) {
            Fault::Status { status, body } => assert!(status == 503 && body.len() == BODY_QUOTE),
            f => panic!("{f}"),
        }
    }
}
