//! The intent layer's model-independent half: the grammar that constrains
//! the model to one action, the prompt that explains it, reading the spoken
//! part while it streams, parsing the finished action and deciding what to
//! do and say.
//!
//! With intents on, every reply is exactly one JSON object:
//! `{"action":"navigate_to","place":"kitchen"}`, `{"action":"stop"}` or
//! `{"action":"answer","say":"..."}`. The grammar (llama.cpp GBNF) makes any
//! other output impossible; the place is free text so an unknown place can be
//! asked back instead of being forced onto a known one. (Strings use `+`/`*`
//! repetition, not bounded `{1,n}`: llama.cpp nests one parse level per
//! bounded position, and the full-vocabulary grammar pass grew from ~10 ms to
//! ~400 ms per token 40 characters into a place name.)

use serde::Deserialize;

use crate::places::{Place, Places};

pub const NAVIGATE_TO: &str = "navigate_to";
pub const STOP: &str = "stop";
pub const ANSWER: &str = "answer";

/// What the answer action's output starts with; the spoken text follows.
pub const ANSWER_PREFIX: &str = r#"{"action":"answer","say":""#;

/// The start every action shares. It is written into the prompt after the
/// assistant header instead of being generated token by token, so the model
/// starts at the choice of action; the grammar covers what follows it.
pub const PREFILL: &str = r#"{"action":""#;

/// The GBNF grammar for the rest of one action object after `PREFILL`
/// (root rule `root`).
pub fn grammar() -> String {
    format!(
        r#"root ::= ( navigate | stop | answer ) "}}"
navigate ::= "{NAVIGATE_TO}\",\"place\":\"" place "\""
stop ::= "{STOP}\""
answer ::= "{ANSWER}\",\"say\":\"" say "\""
place ::= [^"\\\x00-\x1f]+
say ::= [^"\\\x00-\x1f]*
"#
    )
}

/// The same choice as [`grammar`] as a JSON schema, for servers that
/// constrain their output by one (OpenAI `response_format`: vLLM, SGLang,
/// llama.cpp's server, llama-cpp-python). Each object lists `action` first,
/// so a server that keeps the schema's property order (llama.cpp's does)
/// writes the answer's `say` as it streams.
pub fn json_schema() -> serde_json::Value {
    let object = |action: &str, field: Option<&str>| {
        let mut properties = serde_json::Map::new();
        properties.insert("action".into(), serde_json::json!({ "const": action }));
        let mut required = vec!["action"];
        if let Some(f) = field {
            properties.insert(f.into(), serde_json::json!({ "type": "string" }));
            required.push(f);
        }
        serde_json::json!({
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": false,
        })
    };
    serde_json::json!({
        "oneOf": [
            object(NAVIGATE_TO, Some("place")),
            object(STOP, None),
            object(ANSWER, Some("say")),
        ]
    })
}

/// A server's schema-constrained action as it streams, in the form the
/// local grammar writes: whitespace between JSON tokens dropped (servers
/// may write `{"action": "answer", ...}`) and [`PREFILL`] taken off, so it
/// can feed a [`SayStream`] the same way. Output that does not start with
/// [`PREFILL`] passes whole (and fails [`parse`] with what it was).
#[derive(Debug, Default)]
pub struct ServerOutput {
    in_string: bool,
    escaped: bool,
    head: String,
    started: bool,
}

impl ServerOutput {
    pub fn new() -> Self {
        Self::default()
    }

    /// The next piece, compacted; empty while the opening is being matched.
    pub fn push(&mut self, piece: &str) -> String {
        let mut out = String::with_capacity(piece.len());
        for c in piece.chars() {
            if self.in_string {
                out.push(c);
                match (self.escaped, c) {
                    (true, _) => self.escaped = false,
                    (false, '\\') => self.escaped = true,
                    (false, '"') => self.in_string = false,
                    _ => {}
                }
            } else if !c.is_whitespace() {
                self.in_string = c == '"';
                out.push(c);
            }
        }
        if self.started {
            return out;
        }
        self.head.push_str(&out);
        if self.head.len() < PREFILL.len() && PREFILL.starts_with(self.head.as_str()) {
            return String::new();
        }
        self.started = true;
        let head = std::mem::take(&mut self.head);
        match head.strip_prefix(PREFILL) {
            Some(rest) => rest.to_string(),
            None => head,
        }
    }

    /// What is still held at the end (an output shorter than the opening).
    pub fn finish(&mut self) -> String {
        self.started = true;
        std::mem::take(&mut self.head)
    }
}

/// The instructions appended to the system prompt when intents are on.
pub fn instructions(places: &Places) -> String {
    format!(
        "You control a mobile robot. Reply with exactly one JSON object and nothing else:\n\
         - when asked to go, drive or move to a place: {{\"action\":\"navigate_to\",\"place\":\"<place>\"}}\n\
         - when asked to stop or halt: {{\"action\":\"stop\"}}\n\
         - otherwise: {{\"action\":\"answer\",\"say\":\"<short spoken answer>\"}}\n\
         Known places: {}.",
        places.describe(),
    )
}

/// One action as the model wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    NavigateTo { place: String },
    Stop,
    Answer { say: String },
}

/// The JSON object before its fields are checked against the action.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAction {
    action: String,
    place: Option<String>,
    say: Option<String>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("model output is not an action ({msg}): {output:?}")]
pub struct ParseError {
    pub msg: String,
    pub output: String,
}

/// Parses the whole output (surrounding whitespace allowed): exactly one of
/// the three actions with exactly its fields.
pub fn parse(output: &str) -> Result<Action, ParseError> {
    let err = |msg: String| ParseError {
        msg,
        output: output.chars().take(200).collect(),
    };
    let raw: RawAction = serde_json::from_str(output.trim()).map_err(|e| err(e.to_string()))?;
    match (raw.action.as_str(), raw.place, raw.say) {
        (NAVIGATE_TO, Some(place), None) => Ok(Action::NavigateTo { place }),
        (STOP, None, None) => Ok(Action::Stop),
        (ANSWER, None, Some(say)) => Ok(Action::Answer { say }),
        (NAVIGATE_TO | STOP | ANSWER, _, _) => {
            Err(err(format!("wrong fields for action {:?}", raw.action)))
        }
        (other, _, _) => Err(err(format!("unknown action {other:?}"))),
    }
}

/// The spoken text of an answer, as it streams: feed the model's output
/// piece by piece, get back the new part of the `say` string.
#[derive(Debug, Default)]
pub struct SayStream {
    raw: String,
    emitted: usize,
}

impl SayStream {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, piece: &str) -> String {
        self.raw.push_str(piece);
        let Some(body) = self.raw.strip_prefix(ANSWER_PREFIX) else {
            return String::new();
        };
        let say = body.find('"').map_or(body, |end| &body[..end]);
        let new = say.get(self.emitted..).unwrap_or_default().to_string();
        self.emitted = say.len();
        new
    }

    /// Everything the model wrote so far.
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// The spoken text streamed so far.
    pub fn said(&self) -> &str {
        let body = self.raw.strip_prefix(ANSWER_PREFIX).unwrap_or_default();
        body.get(..self.emitted).unwrap_or_default()
    }
}

/// What the robot says back for actions; `{place}` and `{places}` are filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Replies {
    pub navigate: String,
    pub stop: String,
    pub unknown_place: String,
    /// Said when Nav2 reports the goal reached ({place}).
    pub arrived: String,
    /// Said when Nav2 aborts or refuses the goal ({place}, {reason}).
    pub not_reached: String,
}

impl Replies {
    /// The spoken outcome of a goal to `place`: `reason` `None` = arrived.
    pub fn outcome(&self, place: &str, reason: Option<&str>) -> String {
        match reason {
            None => self.arrived.replace("{place}", place),
            Some(r) => self
                .not_reached
                .replace("{place}", place)
                .replace("{reason}", r),
        }
    }
}

impl Default for Replies {
    fn default() -> Self {
        Self {
            navigate: "Going to the {place}.".into(),
            stop: "Stopping.".into(),
            unknown_place: "I don't know a place called {place}. I know {places}.".into(),
            arrived: "I'm at the {place}.".into(),
            not_reached: "I couldn't reach the {place}: {reason}.".into(),
        }
    }
}

/// What to do for one finished turn.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision<'p> {
    /// Send a navigation goal to `place`, say `say`.
    Navigate { place: &'p Place, say: String },
    /// Stop (cancel the goal or publish a stop), say `say`.
    Stop { say: String },
    /// navigate_to a place not in the file: send nothing, ask back.
    Unknown { place: String, say: String },
    /// Only speak (already streamed).
    Answer { say: String },
}

impl Decision<'_> {
    pub fn action(&self) -> &'static str {
        match self {
            Decision::Navigate { .. } | Decision::Unknown { .. } => NAVIGATE_TO,
            Decision::Stop { .. } => STOP,
            Decision::Answer { .. } => ANSWER,
        }
    }

    pub fn say(&self) -> &str {
        match self {
            Decision::Navigate { say, .. }
            | Decision::Stop { say }
            | Decision::Unknown { say, .. }
            | Decision::Answer { say } => say,
        }
    }
}

/// Turns an action into what the robot does and says.
pub fn decide<'p>(action: &Action, places: &'p Places, replies: &Replies) -> Decision<'p> {
    match action {
        Action::NavigateTo { place } => match places.resolve(place) {
            Some(p) => Decision::Navigate {
                place: p,
                say: fill(&replies.navigate, &p.name, places),
            },
            None => {
                let spoken = place.trim().to_string();
                Decision::Unknown {
                    say: fill(&replies.unknown_place, &spoken, places),
                    place: spoken,
                }
            }
        },
        Action::Stop => Decision::Stop {
            say: fill(&replies.stop, "", places),
        },
        Action::Answer { say } => Decision::Answer { say: say.clone() },
    }
}

fn fill(template: &str, place: &str, places: &Places) -> String {
    template
        .replace("{places}", &places.names_for_speech())
        .replace("{place}", place)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn places() -> Places {
        Places::parse(
            "places:\n  - name: kitchen\n    x: 1\n    y: 2\n  - name: dock\n    aliases: [charger]\n    x: 0\n    y: 0\n",
            "t",
        )
        .unwrap()
    }

    #[test]
    fn parses_the_three_actions_and_nothing_else() {
        assert_eq!(
            parse(r#"{"action":"navigate_to","place":"kitchen"}"#).unwrap(),
            Action::NavigateTo {
                place: "kitchen".into()
            }
        );
        assert_eq!(parse(r#" {"action":"stop"} "#).unwrap(), Action::Stop);
        assert_eq!(
            parse(r#"{"action":"answer","say":"Hi."}"#).unwrap(),
            Action::Answer { say: "Hi.".into() }
        );
        for bad in [
            r#"{"action":"fly","place":"moon"}"#,
            r#"{"action":"navigate_to"}"#,
            r#"{"action":"stop","say":"x"}"#,
            r#"{"action":"answer","say":"a"} trailing"#,
            r#"{"action":"answer","say":"unterminated"#,
            "Sure, going to the kitchen!",
            "",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn say_streams_only_the_spoken_text() {
        let out = r#"{"action":"answer","say":"The sky is blue. It is."}"#;
        for split in 1..out.len() {
            let mut s = SayStream::new();
            let mut said = s.push(&out[..split]);
            said += &s.push(&out[split..]);
            assert_eq!(said, "The sky is blue. It is.", "split at {split}");
            assert_eq!(s.said(), said);
            assert_eq!(s.raw(), out);
        }
        let mut s = SayStream::new();
        assert_eq!(s.push(r#"{"action":"navigate_to","place":"kitchen"}"#), "");
        let mut s = SayStream::new();
        assert_eq!(s.push(r#"{"action":"answer","say":"héllo 🤖"#), "héllo 🤖");
        assert_eq!(s.push(r#""}"#), "");
    }

    #[test]
    fn decisions() {
        let p = places();
        let r = Replies::default();
        let nav = Action::NavigateTo {
            place: "The Kitchen".into(),
        };
        match decide(&nav, &p, &r) {
            Decision::Navigate { place, say } => {
                assert_eq!(place.name, "kitchen");
                assert_eq!(say, "Going to the kitchen.");
            }
            d => panic!("{d:?}"),
        }
        let d = decide(
            &Action::NavigateTo {
                place: "garage".into(),
            },
            &p,
            &r,
        );
        assert_eq!(
            d,
            Decision::Unknown {
                place: "garage".into(),
                say: "I don't know a place called garage. I know kitchen and dock.".into()
            }
        );
        assert_eq!(d.action(), NAVIGATE_TO);
        assert_eq!(decide(&Action::Stop, &p, &r).say(), "Stopping.");
        assert_eq!(decide(&Action::Stop, &p, &r).action(), STOP);
        let a = decide(&Action::Answer { say: "Hi".into() }, &p, &r);
        assert_eq!((a.action(), a.say()), (ANSWER, "Hi"));
    }

    #[test]
    fn grammar_and_instructions_name_every_action() {
        let g = grammar();
        for a in [NAVIGATE_TO, STOP, ANSWER] {
            assert!(g.contains(a));
            assert!(instructions(&places()).contains(a));
        }
        assert!(g.starts_with("root ::= "));
        assert!(instructions(&places()).contains("dock (also charger)"));
    }

    #[test]
    fn a_servers_spaced_output_streams_like_the_local_grammars() {
        let pieces = [
            "{",
            "\"action",
            "\": ",
            "\"answer\",\n  ",
            "\"say\": \"It is ",
            "sunny,  really",
            " today.\"",
            " }",
        ];
        let mut out = ServerOutput::new();
        let mut say = SayStream::new();
        say.push(PREFILL);
        let mut spoken = String::new();
        let mut raw = String::from(PREFILL);
        for p in pieces {
            let compact = out.push(p);
            raw.push_str(&compact);
            spoken.push_str(&say.push(&compact));
        }
        raw.push_str(&out.finish());
        assert_eq!(spoken, "It is sunny,  really today.");
        assert_eq!(
            parse(&raw).unwrap(),
            Action::Answer {
                say: "It is sunny,  really today.".into()
            }
        );
        // navigation, and output that is not an action at all
        let mut out = ServerOutput::new();
        let raw: String = [
            "{ \"action\" : \"navigate_to\" , ",
            "\"place\": \"the \\\"big\\\" lab\"}",
        ]
        .iter()
        .map(|p| out.push(p))
        .collect();
        assert_eq!(
            parse(&format!("{PREFILL}{raw}")).unwrap(),
            Action::NavigateTo {
                place: r#"the "big" lab"#.into()
            }
        );
        let mut out = ServerOutput::new();
        assert_eq!(out.push("Sure! "), "Sure!");
        assert_eq!(out.push("Going."), "Going.");
        let mut out = ServerOutput::new();
        assert_eq!(out.push("{"), "");
        assert_eq!(out.finish(), "{");
    }

    #[test]
    fn the_json_schema_offers_the_three_actions_with_their_fields() {
        let schema = json_schema();
        let options = schema["oneOf"].as_array().unwrap();
        let actions: Vec<&str> = options
            .iter()
            .map(|o| o["properties"]["action"]["const"].as_str().unwrap())
            .collect();
        assert_eq!(actions, [NAVIGATE_TO, STOP, ANSWER]);
        assert_eq!(
            options[0]["required"],
            serde_json::json!(["action", "place"])
        );
        assert_eq!(options[2]["required"], serde_json::json!(["action", "say"]));
    }
}
