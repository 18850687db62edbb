//! The process's onnxruntime environment, shared by the nodes that run ONNX
//! models (tts_node's Piper, stt_node's Smart Turn) through `ort`; included
//! by each (`#[path]`), since voice_ros does not link onnxruntime.
//!
//! ort allows one environment per process, never a second (not even once
//! the first is dropped), so it is kept for the process's life: a model
//! freed by a lifecycle cleanup can be loaded again.

use std::sync::Mutex;

use ort::environment::Environment;

static RUNTIME: Mutex<Option<Environment>> = Mutex::new(None);

/// The environment, created from the library at `path` (named `name`) the
/// first time; why not, otherwise.
pub fn environment(path: &str, name: &str) -> Result<Environment, String> {
    let mut rt = RUNTIME.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(env) = rt.as_ref() {
        return Ok(env.clone());
    }
    let env = ort::init_from(path)
        .map_err(|e| e.to_string())?
        .with_name(name)
        .build()
        .map_err(|e| e.to_string())?;
    *rt = Some(env.clone());
    Ok(env)
}
