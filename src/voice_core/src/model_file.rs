//! Start-up checks of model files, so a missing or corrupt model stops a node
//! with one line naming the file and the parameter, before an engine sees it.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Known model file formats, by their leading bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// whisper.cpp ggml ("lmgg" little-endian magic 0x67676d6c).
    WhisperGgml,
    /// GGUF (llama.cpp).
    Gguf,
    /// ONNX protobuf (no magic; checked for a plausible first field).
    Onnx,
    /// JSON document.
    Json,
    /// Anything readable.
    Any,
}

#[derive(Debug, thiserror::Error)]
pub enum ModelFileError {
    #[error("{param}: model file {path} not found")]
    Missing { param: String, path: PathBuf },
    #[error("{param}: cannot read model file {path}: {err}")]
    Unreadable {
        param: String,
        path: PathBuf,
        err: std::io::Error,
    },
    #[error("{param}: model file {path} is corrupt or not a {format:?} file ({why})")]
    Corrupt {
        param: String,
        path: PathBuf,
        format: Format,
        why: String,
    },
}

/// Smallest plausible size of any model file [bytes].
const MIN_SIZE: u64 = 64;

/// Checks that `path` (given by parameter `param`) exists, is readable and
/// starts like a `format` file.
pub fn check(param: &str, path: &str, format: Format) -> Result<PathBuf, ModelFileError> {
    let p = Path::new(path).to_path_buf();
    let missing = || ModelFileError::Missing {
        param: param.into(),
        path: p.clone(),
    };
    if path.trim().is_empty() {
        return Err(missing());
    }
    let meta = std::fs::metadata(&p).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => missing(),
        _ => ModelFileError::Unreadable {
            param: param.into(),
            path: p.clone(),
            err: e,
        },
    })?;
    let corrupt = |why: String| ModelFileError::Corrupt {
        param: param.into(),
        path: p.clone(),
        format,
        why,
    };
    if !meta.is_file() {
        return Err(corrupt("not a regular file".into()));
    }
    if meta.len() < MIN_SIZE {
        return Err(corrupt(format!("only {} bytes", meta.len())));
    }
    let mut head = [0u8; 8];
    File::open(&p)
        .and_then(|mut f| f.read_exact(&mut head))
        .map_err(|e| ModelFileError::Unreadable {
            param: param.into(),
            path: p.clone(),
            err: e,
        })?;
    let ok = match format {
        Format::WhisperGgml => head[..4] == 0x6767_6d6cu32.to_le_bytes(),
        Format::Gguf => &head[..4] == b"GGUF",
        // ONNX ModelProto starts with field 1 (ir_version, varint): tag 0x08.
        Format::Onnx => head[0] == 0x08,
        Format::Json => head.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{'),
        Format::Any => true,
    };
    if !ok {
        return Err(corrupt(format!(
            "unexpected header bytes {:02x?}",
            &head[..4]
        )));
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str, bytes: &[u8]) -> String {
        let p = std::env::temp_dir().join(format!("va_model_file_{}_{name}", std::process::id()));
        std::fs::write(&p, bytes).unwrap();
        p.to_string_lossy().into_owned()
    }

    #[test]
    fn errors_name_parameter_and_file() {
        let e = check("model_path", "/nonexistent/ggml.bin", Format::WhisperGgml).unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("model_path")
                && s.contains("/nonexistent/ggml.bin")
                && s.contains("not found"),
            "{s}"
        );
        let e = check("vad.model_path", "", Format::WhisperGgml).unwrap_err();
        assert!(matches!(e, ModelFileError::Missing { .. }));
    }

    #[test]
    fn header_is_checked() {
        let mut good = b"GGUF".to_vec();
        good.resize(100, 0);
        assert!(check("model_path", &tmp("g", &good), Format::Gguf).is_ok());
        let bad = vec![0u8; 100];
        let e = check("model_path", &tmp("b", &bad), Format::Gguf).unwrap_err();
        assert!(e.to_string().contains("corrupt"), "{e}");
        let e = check("model_path", &tmp("s", b"GGUF"), Format::Gguf).unwrap_err();
        assert!(e.to_string().contains("only 4 bytes"), "{e}");
    }
}
