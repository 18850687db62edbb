//! Partial transcripts while the user speaks: each new hypothesis of the
//! utterance so far is split into a committed prefix, which never changes
//! once published, and an unstable tail.
//!
//! A word is committed when two consecutive hypotheses agree on it and on
//! every word before it (the "local agreement" policy of streaming Whisper
//! systems). Later hypotheses may still disagree inside the committed part
//! (Whisper re-reads the whole utterance); the committed text stays as
//! published and only the tail follows the newest hypothesis.

use crate::transcript::normalize_words;

#[derive(Debug, Default, Clone)]
pub struct Agreement {
    committed: Vec<String>,
    previous: Vec<String>,
}

/// One partial result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partial {
    /// Committed words (a prefix of every later `stable`).
    pub stable: String,
    /// The rest of the newest hypothesis.
    pub unstable: String,
}

impl Agreement {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the newest hypothesis of the whole utterance so far.
    pub fn push(&mut self, hypothesis: &str) -> Partial {
        let words: Vec<String> = hypothesis.split_whitespace().map(str::to_string).collect();
        let same = |a: &str, b: &str| normalize_words(a) == normalize_words(b);
        let agreed = self
            .previous
            .iter()
            .zip(&words)
            .take_while(|(a, b)| same(a, b))
            .count();
        if agreed > self.committed.len() {
            let from = self.committed.len();
            self.committed.extend(words[from..agreed].iter().cloned());
        }
        let tail = words.get(self.committed.len()..).unwrap_or(&[]).join(" ");
        self.previous = words;
        Partial {
            stable: self.committed.join(" "),
            unstable: tail,
        }
    }

    /// The committed text so far.
    pub fn stable(&self) -> String {
        self.committed.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_commit_when_two_hypotheses_agree_and_never_change() {
        let mut a = Agreement::new();
        let p = a.push("Ask");
        assert_eq!((p.stable.as_str(), p.unstable.as_str()), ("", "Ask"));
        let p = a.push("Ask not what");
        assert_eq!(
            (p.stable.as_str(), p.unstable.as_str()),
            ("Ask", "not what")
        );
        let p = a.push("Ask not what your");
        assert_eq!(p.stable, "Ask not what");
        assert_eq!(p.unstable, "your");
        // a later hypothesis that disagrees inside the committed part: the
        // committed text stays as published
        let p = a.push("As not what your country");
        assert_eq!(p.stable, "Ask not what");
        assert_eq!(p.unstable, "your country");
        // punctuation and case do not block agreement
        let p = a.push("Ask not, what your country can");
        assert!(p.stable.starts_with("Ask not what"));
    }

    #[test]
    fn committed_is_always_a_prefix_of_the_next() {
        let hyps = [
            "go",
            "go to",
            "go to the",
            "no to the kit",
            "go to the kitchen",
            "go to the kitchen.",
        ];
        let mut a = Agreement::new();
        let mut last = String::new();
        for h in hyps {
            let p = a.push(h);
            assert!(p.stable.starts_with(&last), "{last:?} -> {:?}", p.stable);
            last = p.stable;
        }
        assert_eq!(last, "go to the kitchen.");
    }
}
