//! Named places the robot can be sent to (`places_file`, YAML), and matching
//! what someone said ("the Kitchen", "galley") to one of them.
//!
//! ```yaml
//! places:
//!   - name: kitchen
//!     aliases: [galley]
//!     frame_id: map     # optional, default "map"
//!     x: 4.2            # metres
//!     y: -1.5
//!     yaw: 1.57         # radians, optional, default 0
//! ```

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum PlacesError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a valid places file: {msg}")]
    Parse { path: String, msg: String },
    #[error("{path}: {msg}")]
    Invalid { path: String, msg: String },
}

/// One named pose.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Place {
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default = "default_frame")]
    pub frame_id: String,
    pub x: f64,
    pub y: f64,
    #[serde(default)]
    pub yaw: f64,
}

fn default_frame() -> String {
    "map".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlacesFile {
    places: Vec<Place>,
}

/// The places of one file, with a lookup by normalized name and alias.
#[derive(Debug, Clone, Default)]
pub struct Places {
    places: Vec<Place>,
    by_key: HashMap<String, usize>,
}

/// At most this many places (each one costs prompt tokens on every turn).
pub const MAX_PLACES: usize = 200;
/// Largest places file read [bytes].
pub const MAX_FILE_BYTES: u64 = 1 << 20;
/// Longest name or alias, in characters.
pub const MAX_NAME_CHARS: usize = 48;

impl Places {
    pub fn load(path: &Path) -> Result<Self, PlacesError> {
        let shown = path.display().to_string();
        let bytes = std::fs::metadata(path)
            .and_then(|m| {
                if m.len() > MAX_FILE_BYTES {
                    Ok(None)
                } else {
                    std::fs::read(path).map(Some)
                }
            })
            .map_err(|source| PlacesError::Io {
                path: shown.clone(),
                source,
            })?;
        let invalid = |msg: &str| PlacesError::Parse {
            path: shown.clone(),
            msg: msg.into(),
        };
        let bytes = bytes.ok_or_else(|| invalid("larger than 1 MiB"))?;
        let text = String::from_utf8(bytes).map_err(|_| invalid("not UTF-8 text"))?;
        Self::parse(&text, &shown)
    }

    /// Parses and validates YAML text; `path` is only used in messages.
    pub fn parse(text: &str, path: &str) -> Result<Self, PlacesError> {
        let file: PlacesFile = serde_yaml_ng::from_str(text).map_err(|e| PlacesError::Parse {
            path: path.into(),
            msg: e.to_string(),
        })?;
        Self::new(file.places).map_err(|msg| PlacesError::Invalid {
            path: path.into(),
            msg,
        })
    }

    /// Validates the places: names and aliases non-empty, unique after
    /// normalization, at most `MAX_NAME_CHARS`; finite coordinates; a frame.
    pub fn new(places: Vec<Place>) -> Result<Self, String> {
        if places.is_empty() {
            return Err("no places listed".into());
        }
        if places.len() > MAX_PLACES {
            return Err(format!("{} places, at most {MAX_PLACES}", places.len()));
        }
        let mut by_key: HashMap<String, usize> = HashMap::new();
        for (i, p) in places.iter().enumerate() {
            if !(p.x.is_finite() && p.y.is_finite() && p.yaw.is_finite()) {
                return Err(format!(
                    "place {:?}: x, y and yaw must be finite numbers",
                    p.name
                ));
            }
            if p.frame_id.trim().is_empty() {
                return Err(format!("place {:?}: empty frame_id", p.name));
            }
            for label in std::iter::once(&p.name).chain(&p.aliases) {
                let key = normalize(label);
                if key.is_empty() {
                    return Err(format!("place {:?}: empty name or alias {label:?}", p.name));
                }
                if label.chars().count() > MAX_NAME_CHARS {
                    return Err(format!(
                        "place {:?}: {label:?} is longer than {MAX_NAME_CHARS} characters",
                        p.name
                    ));
                }
                if let Some(&j) = by_key.get(&key) {
                    if j != i {
                        return Err(format!(
                            "{label:?} names both {:?} and {:?}",
                            places[j].name, p.name
                        ));
                    }
                }
                by_key.insert(key, i);
            }
        }
        Ok(Self { places, by_key })
    }

    pub fn iter(&self) -> impl Iterator<Item = &Place> {
        self.places.iter()
    }

    pub fn len(&self) -> usize {
        self.places.len()
    }

    pub fn is_empty(&self) -> bool {
        self.places.is_empty()
    }

    /// The place meant by `said`: a name or alias, ignoring case, leading
    /// articles ("the"), punctuation and underscores. Nothing looser: going
    /// to the wrong place is worse than asking back.
    pub fn resolve(&self, said: &str) -> Option<&Place> {
        self.by_key.get(&normalize(said)).map(|&i| &self.places[i])
    }

    /// The closest place to (x, y) in `frame_id`, with its distance [m].
    pub fn nearest(&self, frame_id: &str, x: f64, y: f64) -> Option<(&Place, f64)> {
        self.places
            .iter()
            .filter(|p| p.frame_id == frame_id)
            .map(|p| (p, (p.x - x).hypot(p.y - y)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
    }

    /// "kitchen (also galley), dock, lab" for prompts.
    pub fn describe(&self) -> String {
        self.places
            .iter()
            .map(|p| {
                if p.aliases.is_empty() {
                    p.name.clone()
                } else {
                    format!("{} (also {})", p.name, p.aliases.join(", "))
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// "kitchen, dock and lab" for speech.
    pub fn names_for_speech(&self) -> String {
        let names: Vec<&str> = self.places.iter().map(|p| p.name.as_str()).collect();
        match names.split_last() {
            None => String::new(),
            Some((last, [])) => (*last).to_string(),
            Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        }
    }
}

/// Lower case, letters and digits only, single spaces, leading articles and
/// possessives dropped.
pub fn normalize(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| {
            if c.is_alphanumeric() {
                c.to_lowercase().next().unwrap_or(c)
            } else if c == '\'' {
                '\0'
            } else {
                ' '
            }
        })
        .filter(|&c| c != '\0')
        .collect();
    let mut words: Vec<&str> = cleaned.split_whitespace().collect();
    while let Some(first) = words.first() {
        if matches!(*first, "the" | "a" | "an" | "my" | "our" | "your") && words.len() > 1 {
            words.remove(0);
        } else {
            break;
        }
    }
    words.join(" ")
}

/// Quaternion (x, y, z, w) of a rotation by `yaw` about z.
pub fn yaw_to_quaternion(yaw: f64) -> [f64; 4] {
    let h = yaw / 2.0;
    [0.0, 0.0, h.sin(), h.cos()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = "places:\n  - name: kitchen\n    aliases: [galley]\n    x: 4.2\n    y: -1.5\n    yaw: 1.57\n  - name: charging dock\n    aliases: [dock, charger]\n    frame_id: map\n    x: 0\n    y: 0\n  - name: lab\n    x: -3\n    y: 2\n";

    #[test]
    fn parses_and_resolves() {
        let p = Places::parse(YAML, "t.yaml").unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p.resolve("Kitchen").unwrap().name, "kitchen");
        assert_eq!(p.resolve("the kitchen.").unwrap().name, "kitchen");
        assert_eq!(p.resolve("GALLEY").unwrap().name, "kitchen");
        assert_eq!(p.resolve("dock").unwrap().name, "charging dock");
        assert_eq!(p.resolve("Charging_Dock").unwrap().name, "charging dock");
        // no guessing from lists or sentences
        assert!(p.resolve("the charging dock please").is_none());
        assert!(p.resolve("lab, kitchen").is_none());
        assert_eq!(p.resolve("lab").unwrap().frame_id, "map");
        assert!(p.resolve("garage").is_none());
        assert!(p.resolve("").is_none());
        assert!(p.resolve("the").is_none());
        assert!(p.resolve("labrador").is_none());
        assert_eq!(p.names_for_speech(), "kitchen, charging dock and lab");
        assert!(p.describe().contains("charging dock (also dock, charger)"));
    }

    #[test]
    fn rejects_bad_files_naming_the_file() {
        for (text, want) in [
            ("places: []\n", "no places"),
            ("nonsense: 1\n", "not a valid places file"),
            ("places:\n  - name: a\n    x: .nan\n    y: 0\n", "finite"),
            (
                "places:\n  - name: a\n    x: 0\n",
                "not a valid places file",
            ),
            (
                "places:\n  - name: a\n    x: 0\n    y: 0\n  - name: A\n    x: 1\n    y: 1\n",
                "names both",
            ),
            (
                "places:\n  - name: '  '\n    x: 0\n    y: 0\n",
                "empty name",
            ),
            (
                "places:\n  - name: a\n    frame_id: ''\n    x: 0\n    y: 0\n",
                "empty frame_id",
            ),
            (
                "places:\n  - name: a\n    x: 0\n    y: 0\n    z: 1\n",
                "unknown field",
            ),
            (":::\n", "not a valid places file"),
        ] {
            let e = Places::parse(text, "p.yaml").unwrap_err().to_string();
            assert!(e.starts_with("p.yaml"), "{e}");
            assert!(e.contains(want), "{text:?}: {e}");
        }
        let e = Places::load(Path::new("/nonexistent/places.yaml")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/places.yaml"));
    }

    #[test]
    fn nearest_and_quaternions() {
        let p = Places::parse(YAML, "t").unwrap();
        let (near, d) = p.nearest("map", 4.0, -1.0).unwrap();
        assert_eq!(near.name, "kitchen");
        assert!((d - 0.5385).abs() < 1e-3);
        assert!(p.nearest("odom", 0.0, 0.0).is_none());
        for yaw in [-3.0, -1.0, 0.0, 0.5, 1.57, 3.1] {
            let [x, y, z, w] = yaw_to_quaternion(yaw);
            assert_eq!((x, y), (0.0, 0.0));
            assert!((x * x + y * y + z * z + w * w - 1.0).abs() < 1e-12);
            assert!((2.0 * z.atan2(w) - yaw).abs() < 1e-9);
        }
    }
}
