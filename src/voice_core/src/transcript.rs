//! Cleaning Whisper output before it becomes a turn.
//!
//! Whisper writes non-speech as bracketed tags ("[BLANK_AUDIO]", "(music)",
//! "*coughs*") and hallucinates stock phrases on noise. None of that is a
//! user request, so it is not published as a turn.

/// Phrases Whisper emits on silence or noise that no user says to a robot
/// (compared case-insensitively, without punctuation). "Thank you" is a
/// frequent hallucination too, but users do say it, so it stays a turn.
const HALLUCINATIONS: &[&str] = &[
    "thanks for watching",
    "thank you for watching",
    "you",
    "subtitles by the amaraorg community",
];

/// Returns the cleaned transcript, or `None` when nothing speech-like is left.
pub fn clean(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut depth_sq = 0u32;
    let mut depth_par = 0u32;
    let mut in_star = false;
    for c in raw.chars() {
        match c {
            '[' => depth_sq += 1,
            ']' => depth_sq = depth_sq.saturating_sub(1),
            '(' => depth_par += 1,
            ')' => depth_par = depth_par.saturating_sub(1),
            '*' => in_star = !in_star,
            '♪' | '♫' => {}
            c if c.is_control() => out.push(' '),
            c if depth_sq == 0 && depth_par == 0 && !in_star => out.push(c),
            _ => {}
        }
    }
    let text = out.split_whitespace().collect::<Vec<_>>().join(" ");
    let words = normalize_words(&text);
    if words.is_empty() {
        return None;
    }
    let joined = words.join(" ");
    if HALLUCINATIONS.contains(&joined.as_str()) {
        return None;
    }
    Some(text)
}

/// Lowercase words with punctuation removed (apostrophes kept): the form used
/// for word error rate and for hallucination matching.
pub fn normalize_words(text: &str) -> Vec<String> {
    words_as_written(text).into_iter().map(|(_, w)| w).collect()
}

/// The words of `text` as written, each with its normalized form (lower
/// case, letters, digits and apostrophes); tokens with no letter or digit
/// are left out.
fn words_as_written(text: &str) -> Vec<(&str, String)> {
    text.split(|c: char| c.is_whitespace() || c == '-')
        .filter_map(|t| {
            let w = t
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == '\'')
                .flat_map(char::to_lowercase)
                .collect::<String>();
            (!w.is_empty()).then_some((t, w))
        })
        .collect()
}

/// Word error rate of `hypothesis` against `reference` (both normalized):
/// (substitutions + deletions + insertions) / reference words.
pub fn word_error_rate(reference: &str, hypothesis: &str) -> f64 {
    let r = normalize_words(reference);
    let h = normalize_words(hypothesis);
    if r.is_empty() {
        return if h.is_empty() { 0.0 } else { 1.0 };
    }
    let mut prev: Vec<usize> = (0..=h.len()).collect();
    let mut cur = vec![0; h.len() + 1];
    for i in 1..=r.len() {
        cur[0] = i;
        for j in 1..=h.len() {
            let sub = prev[j - 1] + usize::from(r[i - 1] != h[j - 1]);
            cur[j] = sub.min(prev[j] + 1).min(cur[j - 1] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[h.len()] as f64 / r.len() as f64
}

/// Whether the text repeats a phrase of three or more words back to back
/// ("when you get to the lab. When you get to the lab."): Whisper's
/// repetition loop, a sign the hypothesis is not to be trusted.
pub fn repeats(text: &str) -> bool {
    let w = normalize_words(text);
    (3..=w.len() / 2).any(|k| (0..=w.len() - 2 * k).any(|i| w[i..i + k] == w[i + k..i + 2 * k]))
}

/// Longest phrase [words] checked for a repetition loop.
const LOOP_PHRASE_MAX: usize = 4;
/// Share of the transcript a loop must cover to make all of it one.
const LOOP_COVERAGE: f32 = 0.8;

/// Times a phrase of `k` words must repeat back to back to be a loop: a
/// person may well say "no, no, no, no" to a robot, Whisper looping on echo
/// or noise says "Okay." until its token bound.
fn loop_repeats(k: usize) -> usize {
    match k {
        1 => 5,
        2 => 4,
        _ => 3,
    }
}

/// Words from which a transcript's vocabulary is judged.
const LOOP_VOCABULARY_MIN_WORDS: usize = 8;
/// Uses per distinct word at or above which a long transcript is a loop.
const LOOP_USES_PER_WORD: usize = 4;

/// Whether the transcript is (nearly all) one short phrase repeated back
/// to back ("Okay. Okay. Okay. Okay. Okay. Okay.", "Thank you. Thank you.
/// Thank you. Thank you."), or a long one made of a word or two said over
/// and over in varying spellings ("ok. ok. okay. ok. ok. okay, ok. ..."):
/// Whisper's repetition loop on echo or noise, not a request. Such a
/// transcript is not a turn.
pub fn repetition_loop(text: &str) -> bool {
    is_loop(&normalize_words(text))
}

/// [`repetition_loop`] on normalized words.
fn is_loop(w: &[String]) -> bool {
    let n = w.len();
    if n >= LOOP_VOCABULARY_MIN_WORDS {
        let distinct: std::collections::HashSet<&String> = w.iter().collect();
        if distinct.len() * LOOP_USES_PER_WORD <= n {
            return true;
        }
    }
    (1..=LOOP_PHRASE_MAX).any(|k| {
        (0..n.saturating_sub(k)).any(|i| {
            let phrase = &w[i..i + k];
            let reps = w[i..].chunks_exact(k).take_while(|c| *c == phrase).count();
            reps >= loop_repeats(k) && (reps * k) as f32 >= LOOP_COVERAGE * n as f32
        })
    })
}

/// Fewest distinct words of a phrase whose loop is the phrase said once.
const LOOP_SAID_ONCE_MIN_WORDS: usize = 3;

/// What a transcript that repeats itself is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repetition {
    /// Not a repetition loop.
    None,
    /// A word or two over and over ("Okay. Okay. Okay. ...", "Thank you.
    /// Thank you. ..."), or a loop that does not start at the transcript's
    /// first word: Whisper looping on echo or noise; not a turn.
    Noise,
    /// A phrase of three or more different words over and over, from its
    /// first word ("Please go to the kitchen. Please go to the kitchen.
    /// Please go to t"): Whisper looping on a short utterance (or a person
    /// insisting); the phrase said once is the turn.
    Phrase(String),
    /// A clause of [`TWICE_MIN_WORDS`] or more said twice back to back inside
    /// a longer transcript ("when you get to the lab, tell me how warm it is.
    /// Tell me how warm it is.": Whisper repeating a sentence's tail, seen
    /// in CI; or a person repeating themselves): the text with it said once.
    Twice(String),
}

/// Tells a repetition loop ([`repetition_loop`]) of a real phrase from one
/// of noise: see [`Repetition`].
pub fn repetition(text: &str) -> Repetition {
    let words = words_as_written(text);
    let w: Vec<String> = words.iter().map(|(_, w)| w.clone()).collect();
    if !is_loop(&w) {
        return match repeated_clause(&w) {
            Some((first_end, second_end)) => {
                // the text as written up to the first copy's last word,
                // then whatever followed the second copy
                let end = |i: usize| offset(text, words[i].0) + words[i].0.len();
                let (a, b) = (end(first_end), end(second_end));
                Repetition::Twice(format!("{}{}", &text[..a], &text[b..]))
            }
            None => Repetition::None,
        };
    }
    match said_once(&w) {
        Some(k) => {
            let said: Vec<&str> = words[..k].iter().map(|(t, _)| *t).collect();
            Repetition::Phrase(said.join(" "))
        }
        None => Repetition::Noise,
    }
}

/// Fewest words of a clause whose back-to-back repeat is taken once: a
/// person says "no, no", "thank you, thank you", "I think I think"; Whisper
/// repeats whole sentences.
const TWICE_MIN_WORDS: usize = 4;
/// Fewest different words in such a clause ("no no no no" stays).
const TWICE_MIN_DISTINCT: usize = 3;

/// The first clause of [`TWICE_MIN_WORDS`] or more (the longest where
/// one starts) that `w` says twice back to back, as the
/// indices of its first and second copy's last words.
fn repeated_clause(w: &[String]) -> Option<(usize, usize)> {
    let n = w.len();
    (0..n).find_map(|i| {
        (TWICE_MIN_WORDS..=(n - i) / 2).rev().find_map(|k| {
            let clause = &w[i..i + k];
            let distinct: std::collections::HashSet<&String> = clause.iter().collect();
            (clause == &w[i + k..i + 2 * k] && distinct.len() >= TWICE_MIN_DISTINCT)
                .then_some((i + k - 1, i + 2 * k - 1))
        })
    })
}

/// Byte offset of `part`, a slice of `text`, within `text`.
fn offset(text: &str, part: &str) -> usize {
    part.as_ptr() as usize - text.as_ptr() as usize
}

/// Words opening a looped phrase that mark where each of its repeats starts.
const LOOP_OPENING_WORDS: usize = 3;

/// The length of the phrase a looping transcript `w` says over and over
/// from its first word, or `None` when it is not such a loop. Each repeat
/// starts where the opening words come back; the repeats may differ at
/// their ends (Whisper adds a stray word, "Please go to the kitchen T.",
/// or is cut mid-word at its token bound), so the phrase is the repeat
/// that most others begin with (the shortest on a tie), and the loop must
/// be that phrase, word for word, over [`LOOP_COVERAGE`] of the transcript.
fn said_once(w: &[String]) -> Option<usize> {
    let n = w.len();
    let open = w.get(..LOOP_OPENING_WORDS)?;
    let mut starts: Vec<usize> = (0..=n - LOOP_OPENING_WORDS)
        .filter(|&i| &w[i..i + LOOP_OPENING_WORDS] == open)
        .collect();
    // a start inside the previous repeat's opening is the same repeat
    starts.dedup_by(|b, a| *b < *a + LOOP_OPENING_WORDS);
    if starts.len() < 2 {
        return None;
    }
    let repeats: Vec<&[String]> = starts
        .iter()
        .zip(starts.iter().skip(1).chain([&n]))
        .map(|(&a, &b)| &w[a..b])
        .collect();
    // the last repeat may be cut short: it can match, not be the phrase
    let complete = &repeats[..repeats.len() - 1];
    let phrase = complete
        .iter()
        .min_by_key(|p| {
            let begun = complete.iter().filter(|r| r.starts_with(p)).count();
            (std::cmp::Reverse(begun), p.len())
        })
        .copied()?;
    let distinct: std::collections::HashSet<&String> = phrase.iter().collect();
    if distinct.len() < LOOP_SAID_ONCE_MIN_WORDS {
        return None;
    }
    let matching: usize = repeats
        .iter()
        .map(|r| r.iter().zip(phrase).filter(|(a, b)| a == b).count())
        .sum();
    (matching as f32 >= LOOP_COVERAGE * n as f32).then_some(phrase.len())
}

/// Fewest words of the robot's speech that make an echo at a transcript's start.
const ECHO_MIN_WORDS: usize = 3;
/// One word in this many of an echo may differ, and one in any echo
/// (Whisper mishears the robot's voice through the room too).
const ECHO_SLIP: usize = 5;

/// How many words at the start of `heard` (normalized) are the robot's own
/// speech heard back: the longest opening of `heard`, of
/// [`ECHO_MIN_WORDS`] or more, that is word for word (one word in
/// [`ECHO_SLIP`] may differ) a run of consecutive words of one of the
/// robot's texts `said` (all of a sentence, or its tail as the person
/// heard it end); 0 when there is none.
pub fn echo_prefix(heard: &[String], said: &[Vec<String>]) -> usize {
    let mut best = 0;
    for s in said {
        for i in 0..s.len() {
            let (mut matched, mut slips) = (0, 0);
            for (k, h) in heard.iter().enumerate().take(s.len() - i) {
                if *h == s[i + k] {
                    matched = k + 1;
                } else {
                    slips += 1;
                    if slips > 1.max((k + 1) / ECHO_SLIP) {
                        break;
                    }
                }
            }
            best = best.max(matched);
        }
    }
    if best >= ECHO_MIN_WORDS {
        best
    } else {
        0
    }
}

/// `text` without the robot's own speech at its start ([`echo_prefix`]):
/// a person who answers while the robot's voice still comes back through
/// the room is heard as one utterance, echo first. The rest as written, or
/// `None` when there is no echo at the start or nothing after it.
pub fn without_echo(text: &str, said: &[Vec<String>]) -> Option<String> {
    let words = words_as_written(text);
    let w: Vec<String> = words.iter().map(|(_, w)| w.clone()).collect();
    let k = echo_prefix(&w, said);
    let (first, _) = words.get(k).filter(|_| k > 0)?;
    Some(text[offset(text, first)..].trim().to_string())
}

/// Fraction of `heard`'s words (normalized) that occur in `spoken`: how much
/// of a transcript is the robot's own recent speech heard back.
pub fn overlap(heard: &str, spoken: &std::collections::HashSet<String>) -> f32 {
    let words = normalize_words(heard);
    if words.is_empty() {
        return 0.0;
    }
    let found = words.iter().filter(|w| spoken.contains(*w)).count();
    found as f32 / words.len() as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_and_noise_are_not_turns() {
        for s in [
            "",
            "  ",
            "[BLANK_AUDIO]",
            " (music) ",
            "*coughs*",
            "♪ ♪",
            "[Music] (applause)",
            " Thanks for watching!",
            "you",
            "...",
        ] {
            assert_eq!(clean(s), None, "{s:?}");
        }
    }

    #[test]
    fn speech_is_kept_and_tidied() {
        assert_eq!(
            clean(" Go to the kitchen. [BLANK_AUDIO]").as_deref(),
            Some("Go to the kitchen.")
        );
        assert_eq!(clean("Thank you.").as_deref(), Some("Thank you."));
        assert_eq!(clean("a\u{0}b").as_deref(), Some("a b"));
    }

    #[test]
    fn repetition_loops() {
        assert!(repeats("when you get to the lab. When you get to the lab."));
        assert!(repeats("I think I think I think that I think that"));
        assert!(!repeats("Go to the kitchen and then go to the lab."));
        assert!(!repeats("no no no"));
        assert!(!repeats(""));
    }

    #[test]
    fn hallucination_loops_are_told_from_people_repeating_themselves() {
        for t in [
            "Okay. Okay. Okay. Okay. Okay. Okay. Okay. Okay.",
            "Thank you. Thank you. Thank you. Thank you.",
            "so okay okay okay okay okay",
            "Go to the lab. Go to the lab. Go to the lab.",
            // seen from Whisper under load: the spelling varies inside the loop
            "ok. ok. ok. ok. ok. ok, ok. ok. ok. ok. ok. okay. ok. ok. ok. ok. ok. okay. ok. ok. okay, ok. ok",
        ] {
            assert!(repetition_loop(t), "{t}");
        }
        for t in [
            "No, no, no, no.",
            "Okay. Okay.",
            "Go to the lab. Go to the lab.",
            "Okay okay okay okay okay, now tell me where the kitchen is and how far it is.",
            "The robot should go to the kitchen and then go to the lab and then go home.",
            "",
            "Go to the kitchen.",
        ] {
            assert!(!repetition_loop(t), "{t}");
        }
    }

    #[test]
    fn a_loop_of_a_real_phrase_is_the_phrase_said_once() {
        // Whisper tiny looping on a 1.5 s "Please go to the kitchen." (seen in CI)
        let looped =
            "Please go to the kitchen. Please go to the kitchen. Please go to the kitchen -- \
                      please go to the kitchen. Please go to the kitchen. Please go to t";
        assert_eq!(
            repetition(looped),
            Repetition::Phrase("Please go to the kitchen.".into())
        );
        assert_eq!(
            repetition("Go to the lab. Go to the lab. Go to the lab."),
            Repetition::Phrase("Go to the lab.".into())
        );
        // seen in CI under load: a stray word at the end of each repeat
        let variant = "Please go to the kitchen. Please go to the kitchen T. Please go to the \
                       kitchen T. Please go to the kitchen T. Please go to the kitchen T. \
                       Please go to the kitchen T. Please go to the kitchen T. Please go";
        assert_eq!(
            repetition(variant),
            Repetition::Phrase("Please go to the kitchen.".into())
        );
        // a repeat that drops a word does not shorten the phrase
        assert_eq!(
            repetition(
                "Go to the lab now. Go to the lab now. Go to lab now. Go to the lab now. \
                 Go to the lab now. Go to the lab now."
            ),
            Repetition::Phrase("Go to the lab now.".into())
        );
        // a word or two over and over stays noise, whatever the phrase length tried
        for t in [
            "Okay. Okay. Okay. Okay. Okay. Okay. Okay. Okay.",
            "Thank you. Thank you. Thank you. Thank you.",
            "ok. ok. ok. ok. ok. ok, ok. ok. ok. ok. ok. okay. ok. ok. ok. ok. ok. okay. ok. ok. okay, ok. ok",
        ] {
            assert_eq!(repetition(t), Repetition::Noise, "{t}");
        }
        // a loop that starts after other words is noise (echo, not a request)
        assert_eq!(
            repetition("Um what. Go to the lab. Go to the lab. Go to the lab. Go to the lab."),
            Repetition::Noise
        );
        assert_eq!(repetition("Go to the kitchen."), Repetition::None);
        assert_eq!(repetition("No, no, no, no."), Repetition::None);
    }

    #[test]
    fn a_clause_said_twice_is_taken_once() {
        // seen in CI (piper, slow, noisy room): Whisper repeated the tail
        assert_eq!(
            repetition("when you get to the lab, tell me how warm it is. Tell me how warm it is."),
            Repetition::Twice("when you get to the lab, tell me how warm it is.".into())
        );
        // in the middle: the first copy as written, then what follows
        assert_eq!(
            repetition("Go to the kitchen, go to the kitchen and wait for me there."),
            Repetition::Twice("Go to the kitchen, and wait for me there.".into())
        );
        assert_eq!(
            repetition("Go to the lab. Go to the lab."),
            Repetition::Twice("Go to the lab.".into())
        );
        // three times after other words stays a loop of noise
        assert_eq!(
            repetition("Please bring the red cup, bring the red cup. Bring the red cup."),
            Repetition::Noise
        );
        // short repeats people make, and clauses that only recur later
        for t in [
            "No, no, stop.",
            "Thank you, thank you.",
            "I think I think it is there.",
            "No, no, no, no.",
            "Go to the kitchen and then come back from the kitchen to the lab.",
            "Tell me how warm it is, and then tell me how warm it was.",
        ] {
            assert_eq!(repetition(t), Repetition::None, "{t}");
        }
    }

    #[test]
    fn the_robots_voice_at_the_start_of_a_turn_is_taken_off() {
        let said = vec![normalize_words("Which room should I go to next?")];
        // seen in test_actions: the question's echo ran into the answer
        assert_eq!(
            without_echo(
                "Which room should I go to next? Go forward 10 meters.",
                &said
            ),
            Some("Go forward 10 meters.".into())
        );
        // the tail of what the robot said, one word misheard
        assert_eq!(
            without_echo("should I goat to next? The kitchen, please.", &said),
            Some("The kitchen, please.".into())
        );
        // no echo at the start, too short an echo, or nothing after it
        for t in [
            "Go forward 10 meters.",
            "Which room? The kitchen.",
            "Which room should I go to next?",
        ] {
            assert_eq!(without_echo(t, &said), None, "{t}");
        }
        assert_eq!(without_echo("Which room should I go", &[]), None);
    }

    #[test]
    fn wer() {
        assert_eq!(
            word_error_rate("Go to the kitchen.", "go to the kitchen"),
            0.0
        );
        assert_eq!(word_error_rate("go to the kitchen", "go to kitchen"), 0.25);
        assert_eq!(word_error_rate("a b", "a b c d"), 1.0);
        assert_eq!(word_error_rate("", ""), 0.0);
        assert_eq!(word_error_rate("", "x"), 1.0);
        assert_eq!(word_error_rate("It's 3 o'clock", "it's 3 o'clock!"), 0.0);
    }
}
