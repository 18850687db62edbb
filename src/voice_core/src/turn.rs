//! End of turn: when has the user finished speaking?
//!
//! Silence alone cannot tell: people pause 0.4-1 s inside sentences. A short
//! silence makes a *tentative* end; the words decide whether to end the turn
//! there or wait for more, up to a hard maximum. The score is the language
//! model's own probability that the user's message ends here, read from the
//! chat template's end-of-turn token right after the transcript (the method
//! behind LiveKit's turn detector); llm_node computes it while it pre-fills
//! the reply's prompt, stt_node decides with it.

/// Probability of `token` under `logits` (softmax, numerically stable).
/// Returns 0 for an out-of-range token or non-finite logits.
pub fn token_probability(logits: &[f32], token: usize) -> f32 {
    let Some(&x) = logits.get(token) else {
        return 0.0;
    };
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() || !x.is_finite() {
        return 0.0;
    }
    let sum: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
    (f64::from(x - max).exp() / sum) as f32
}

/// What to do at a tentative end of turn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    /// The user is done: end the turn now.
    End,
    /// Probably more to come: wait for speech until the hard maximum silence.
    Wait,
}

/// `score` (end-of-turn probability, or `None` when no judge answered)
/// against `threshold`.
pub fn decide(score: Option<f32>, threshold: f32) -> Decision {
    match score {
        Some(p) if p >= threshold => Decision::End,
        _ => Decision::Wait,
    }
}

/// Decades below the threshold over which the required silence grows from
/// the tentative to the maximum silence. One: with SmolLM2-135M complete
/// requests score 0.2-0.8 and clause fragments ("When you get to the lab.",
/// "And so, my fellow Americans.") 0.001-0.08, so a fragment a few times
/// below the threshold already waits most of the way.
const SCORE_DECADES: f32 = 1.0;

/// The silence to wait for before ending the turn [ms], from the judge's
/// score: at or above `threshold` the tentative silence (`min_ms`) is
/// enough; below it the wait grows with how unlikely an end is (log scale,
/// over one decade) up to `max_ms`; no score waits `max_ms`.
pub fn required_silence_ms(score: Option<f32>, threshold: f32, min_ms: u32, max_ms: u32) -> u32 {
    let max_ms = max_ms.max(min_ms);
    let Some(p) = score.filter(|p| p.is_finite()) else {
        return max_ms;
    };
    if p >= threshold {
        return min_ms;
    }
    let decades = if p <= 0.0 {
        SCORE_DECADES
    } else {
        (threshold / p).log10().clamp(0.0, SCORE_DECADES)
    };
    min_ms + ((max_ms - min_ms) as f32 * decades / SCORE_DECADES).round() as u32
}

/// Who judges a tentative end of turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judge {
    /// The words: llm_node's probability that the message ends here.
    Text,
    /// The voice: the audio end-of-turn model on the utterance's sound.
    Audio,
    /// Both, fused ([`fuse`]).
    Both,
}

impl Judge {
    /// The parameter value naming it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Audio => "audio",
            Self::Both => "both",
        }
    }
}

impl std::str::FromStr for Judge {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(Self::Text),
            "audio" => Ok(Self::Audio),
            "both" => Ok(Self::Both),
            other => Err(format!(
                "must be \"text\", \"audio\" or \"both\", got {other:?}"
            )),
        }
    }
}

/// How the two scores make one ([`Judge::Both`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fusion {
    /// Weight of the voice's log-odds against the words' (0..1).
    pub audio_weight: f32,
    /// A judge scoring below this is sure the user is not done: its score
    /// is the decision, whatever the other says (0..1).
    pub veto_below: f32,
}

impl Default for Fusion {
    fn default() -> Self {
        Self {
            audio_weight: 0.5,
            veto_below: 0.05,
        }
    }
}

/// Log-odds are bounded so that no score is infinitely sure.
const LOGIT_LIMIT: f32 = 6.0;

fn logit(p: f32) -> f32 {
    let p = p.clamp(1e-6, 1.0 - 1e-6);
    (p / (1.0 - p)).ln().clamp(-LOGIT_LIMIT, LOGIT_LIMIT)
}

/// The end-of-turn score `judge` decides with, from the words' and the
/// voice's scores (`None`: that judge has not answered, or cannot). `Both`
/// needs both: a judge sure that the user is not done (below
/// `veto_below`) decides alone, so a confident but wrong score of the other
/// cannot end a turn (the words "And so, my fellow Americans," with a
/// falling voice; a complete-looking "ask not" said mid-sentence); otherwise
/// their log-odds are averaged with `audio_weight`, so a doubtful text score
/// at a real end ("Go to the kitchen." at P 0.11) is lifted by a voice that
/// clearly finished, and the other way round.
pub fn fuse(judge: Judge, text: Option<f32>, audio: Option<f32>, f: Fusion) -> Option<f32> {
    let ok = |p: Option<f32>| p.filter(|p| p.is_finite()).map(|p| p.clamp(0.0, 1.0));
    let (text, audio) = (ok(text), ok(audio));
    match judge {
        Judge::Text => text,
        Judge::Audio => audio,
        Judge::Both => {
            let (t, a) = (text?, audio?);
            let low = t.min(a);
            if low < f.veto_below {
                return Some(low);
            }
            let w = f.audio_weight.clamp(0.0, 1.0);
            let x = (1.0 - w) * logit(t) + w * logit(a);
            Some(1.0 / (1.0 + (-x).exp()))
        }
    }
}

/// Words that open a phrase: a transcript ending in one of them without
/// terminal punctuation is unfinished ("go to the", "turn left and").
/// Verbs, pronouns and prepositions that can end a sentence ("it is",
/// "I can", "what is it for?") are not here.
const OPEN_WORDS: &[&str] = &[
    "a", "an", "the", "and", "or", "but", "because", "if", "than", "my", "your", "his", "her",
    "our", "their", "its", "um", "uh", "er",
];

/// Whether the transcript's ending says the user is not done: a trailing
/// comma, colon, semicolon, dash or ellipsis, or no terminal punctuation
/// after a word that opens a phrase ("the", "and", "my"). Such a pause is
/// not judged: the turn waits for more speech (up to the maximum silence).
pub fn open_ending(text: &str) -> bool {
    let t = text.trim_end();
    if t.ends_with([',', ';', ':', '-', '\u{2026}']) || t.ends_with("...") {
        return true;
    }
    if t.ends_with(['.', '?', '!']) {
        return false;
    }
    let last = t
        .rsplit(char::is_whitespace)
        .next()
        .unwrap_or("")
        .trim_matches(|c: char| !c.is_alphanumeric() && c != '\'')
        .to_lowercase();
    OPEN_WORDS.contains(&last.as_str())
}

/// Words that begin a continuation of what the user said before.
const CONTINUATION_WORDS: &[&str] = &["and", "but", "or", "so", "because", "then", "also", "plus"];

/// Whether `text` continues the previous utterance ("and bring me ...",
/// "but not the kitchen"): its first word joins it to what came before.
pub fn continues(text: &str) -> bool {
    let first = text
        .split_whitespace()
        .next()
        .unwrap_or("")
        .trim_matches(|c: char| !c.is_alphanumeric())
        .to_lowercase();
    CONTINUATION_WORDS.contains(&first.as_str())
}

/// Why an utterance continues the turn before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Continues {
    /// It starts with "and", "but", "so", ...
    FirstWord,
    /// The turn before was unfinished by its words: an open ending ("Go to
    /// the", "..., ask not,") or a score from the words below
    /// `unfinished_below` at the pause that ended it (the voice or the
    /// silence ended it while the words doubted), so what follows completes
    /// it whatever its first word ("When you get to the lab." + "What is
    /// the temperature there?").
    Unfinished,
}

/// Whether `text`, said within the continuation window after the turn
/// `before` (its transcript, and the words' end-of-turn score at the pause
/// that ended it, `None` when not judged), continues that turn.
pub fn continuation(
    before: &str,
    before_text_score: Option<f32>,
    unfinished_below: f32,
    text: &str,
) -> Option<Continues> {
    if text.trim().is_empty() || before.trim().is_empty() {
        return None;
    }
    if continues(text) {
        return Some(Continues::FirstWord);
    }
    let doubted = before_text_score
        .filter(|p| p.is_finite())
        .is_some_and(|p| p < unfinished_below);
    (doubted || open_ending(before)).then_some(Continues::Unfinished)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fusion_lifts_a_doubtful_end_and_a_sure_no_vetoes() {
        let f = Fusion::default();
        // the words doubt a real end the voice is sure of: ends (threshold 0.2)
        let p = fuse(Judge::Both, Some(0.11), Some(0.9), f).unwrap();
        assert!(p > 0.4, "{p}");
        // a sure "not done" from either side decides, however sure the other
        assert_eq!(fuse(Judge::Both, Some(0.0), Some(0.95), f), Some(0.0));
        assert_eq!(fuse(Judge::Both, Some(0.91), Some(0.006), f), Some(0.006));
        // both doubtful: stays doubtful
        let p = fuse(Judge::Both, Some(0.1), Some(0.1), f).unwrap();
        assert!((p - 0.1).abs() < 1e-4, "{p}");
        // weights: all audio = the audio score (within the log-odds bound)
        let all_audio = Fusion {
            audio_weight: 1.0,
            ..f
        };
        let p = fuse(Judge::Both, Some(0.3), Some(0.8), all_audio).unwrap();
        assert!((p - 0.8).abs() < 1e-4, "{p}");
        // one judge missing: Both waits for it; the single judges need only theirs
        assert_eq!(fuse(Judge::Both, Some(0.5), None, f), None);
        assert_eq!(fuse(Judge::Audio, None, Some(0.7), f), Some(0.7));
        assert_eq!(fuse(Judge::Text, Some(0.3), Some(0.9), f), Some(0.3));
        assert_eq!(fuse(Judge::Text, Some(f32::NAN), None, f), None);
        assert_eq!("both".parse::<Judge>(), Ok(Judge::Both));
        for j in [Judge::Text, Judge::Audio, Judge::Both] {
            assert_eq!(j.as_str().parse::<Judge>(), Ok(j));
        }
        assert!("loud".parse::<Judge>().is_err());
    }

    #[test]
    fn required_silence_follows_the_score_on_a_log_scale() {
        assert_eq!(required_silence_ms(Some(0.5), 0.1, 300, 1200), 300);
        assert_eq!(required_silence_ms(None, 0.1, 300, 1200), 1200);
        assert_eq!(required_silence_ms(Some(0.0), 0.1, 300, 1200), 1200);
        assert_eq!(
            required_silence_ms(Some(0.1 / 10f32.sqrt()), 0.1, 300, 1200),
            750
        );
        assert_eq!(required_silence_ms(Some(0.01), 0.1, 300, 1200), 1200);
        assert_eq!(required_silence_ms(Some(1e-9), 0.1, 300, 1200), 1200);
        assert_eq!(required_silence_ms(Some(f32::NAN), 0.1, 300, 1200), 1200);
        // a maximum below the tentative silence is the tentative silence
        assert_eq!(required_silence_ms(None, 0.1, 300, 0), 300);
    }

    #[test]
    fn continuations() {
        assert!(continues("and bring me a glass of water."));
        assert!(continues("And, then go home"));
        assert!(continues("but not the kitchen"));
        assert!(!continues("Bring me a glass of water."));
        assert!(!continues("Andrew is here."));
        assert!(!continues(""));
    }

    #[test]
    fn a_turn_the_words_doubted_is_continued_by_any_words() {
        use Continues::*;
        // the JFK case: the voice ended "ask not." where the words doubted
        let c = |before, score, text| continuation(before, score, 0.2, text);
        assert_eq!(
            c(
                "And so my fellow Americans, ask not.",
                Some(0.09),
                "What your country can do for you."
            ),
            Some(Unfinished)
        );
        // an open ending needs no score
        assert_eq!(c("Go to the", None, "Kitchen."), Some(Unfinished));
        assert_eq!(c("Bring me, um,", Some(0.9), "a glass."), Some(Unfinished));
        // the words said it was finished: a new request stays a new turn
        assert_eq!(c("Go to the kitchen.", Some(0.6), "What time is it?"), None);
        assert_eq!(c("Go to the kitchen.", None, "What time is it?"), None);
        // ... unless it starts as a continuation
        assert_eq!(
            c("Go to the kitchen.", Some(0.6), "and bring me water."),
            Some(FirstWord)
        );
        // 0 turns the words' rule off; a score that is no number does not count
        assert_eq!(
            continuation("Go to the kitchen.", Some(0.01), 0.0, "What?"),
            None
        );
        assert_eq!(c("Go to the kitchen.", Some(f32::NAN), "What?"), None);
        assert_eq!(c("Go to the kitchen.", Some(0.01), "  "), None);
        assert_eq!(c("", Some(0.01), "What?"), None);
    }

    #[test]
    fn open_endings() {
        for t in [
            "And so, my fellow Americans,",
            "Go to the",
            "I was wondering...",
            "well\u{2026}",
            "Turn left and",
            "Bring me my",
        ] {
            assert!(open_ending(t), "{t}");
        }
        for t in [
            "Go to the kitchen.",
            "What time is it?",
            "Tell me how warm it is.",
            "Where is it from?",
            "Stop!",
            "",
            "Hello there",
            "Go to the.",
        ] {
            assert!(!open_ending(t), "{t}");
        }
    }

    #[test]
    fn probability_is_a_softmax_entry() {
        let p = token_probability(&[0.0, 0.0, 0.0, 0.0], 2);
        assert!((p - 0.25).abs() < 1e-6);
        let p = token_probability(&[10.0, 0.0], 0);
        assert!(p > 0.999);
        assert_eq!(token_probability(&[1.0], 5), 0.0);
        assert_eq!(token_probability(&[f32::NAN, 1.0], 0), 0.0);
        // large logits do not overflow
        let p = token_probability(&[1000.0, 999.0], 1);
        assert!((p - 0.2689).abs() < 1e-3, "{p}");
    }

    #[test]
    fn decision_needs_a_score_above_the_threshold() {
        assert_eq!(decide(Some(0.9), 0.5), Decision::End);
        assert_eq!(decide(Some(0.2), 0.5), Decision::Wait);
        assert_eq!(decide(None, 0.5), Decision::Wait);
    }
}
