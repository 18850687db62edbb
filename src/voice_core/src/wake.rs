//! Being addressed: wake words matched on the transcript, tolerant of how
//! Whisper spells a name ("Robbie", "Robby,", "hey robbie").

use crate::transcript::normalize_words;

/// Words before the wake phrase that still count as addressing ("hey", "ok").
const LEAD_IN: usize = 2;

/// Parses the `turn.wake_words` parameter: phrases separated by commas.
pub fn parse(list: &str) -> Vec<Vec<String>> {
    list.split(',')
        .map(normalize_words)
        .filter(|w| !w.is_empty())
        .collect()
}

/// Whether `text` begins with one of the wake phrases (after at most two
/// lead-in words), each word matching within a small edit distance.
pub fn addressed(text: &str, phrases: &[Vec<String>]) -> bool {
    let words = normalize_words(text);
    phrases.iter().any(|p| {
        (0..=LEAD_IN).any(|skip| {
            words.len() >= skip + p.len()
                && p.iter().zip(&words[skip..]).all(|(w, h)| similar(w, h))
        })
    })
}

/// Equal, or within one edit for words of four letters, two for five or
/// more: "robbie" ~ "robby", "jarvis" ~ "jervis".
fn similar(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    let n = a.chars().count().min(b.chars().count());
    let allowed = match n {
        0..=3 => 0,
        4 => 1,
        _ => 2,
    };
    allowed > 0 && edit_distance(a, b) <= allowed
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            cur[j] = (prev[j - 1] + usize::from(a[i - 1] != b[j - 1]))
                .min(prev[j] + 1)
                .min(cur[j - 1] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wake_words_tolerate_spelling_and_lead_ins() {
        let w = parse("Robbie, hey jarvis");
        assert_eq!(w.len(), 2);
        for t in [
            "Robbie, go to the kitchen.",
            "Robby go to the kitchen",
            "Hey Robbie, what time is it?",
            "OK so robbie stop",
            "hey Jervis, lights on",
        ] {
            assert!(addressed(t, &w), "{t}");
        }
        for t in [
            "Go to the kitchen, Robbie.",
            "Bob, go to the kitchen.",
            "Did you see the new robot?",
            "",
        ] {
            assert!(!addressed(t, &w), "{t}");
        }
        assert!(parse(" , ").is_empty());
    }
}
