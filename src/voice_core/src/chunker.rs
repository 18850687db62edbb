//! Cuts a streamed reply into speakable chunks at sentence and clause
//! boundaries, so speech can start before generation ends.
//!
//! Chunks are exact slices of the reply: concatenated they give the reply
//! back byte for byte. A boundary is only confirmed once the character after
//! the punctuation has arrived (whitespace), so "3.5", "e.g." and "Dr. Smith"
//! are never cut, and list markers ("1.") don't make one-word chunks.

/// Abbreviations after which a period does not end a sentence (lowercase, no period).
const ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "eg", "ie",
    "approx", "no", "fig", "inc", "ltd", "co", "mt", "ft", "min", "max", "cf", "al", "jan", "feb",
    "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "a.m", "p.m", "u.s",
];

/// Chunking limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChunkerConfig {
    /// A sentence end shorter than this many chars is merged with what follows
    /// (except for the very first chunk, which goes out as soon as possible).
    pub min_chars: usize,
    /// A chunk at least this long may also be cut at a clause boundary (, ; :).
    pub clause_chars: usize,
    /// The same for the first chunk of a reply: its first clause goes to
    /// speech as soon as it is complete, so speech starts sooner.
    pub first_clause_chars: usize,
    /// A chunk this long with no boundary is cut at the last space.
    pub max_chars: usize,
    /// The first chunk of a reply ends after this many words (at a word
    /// boundary) when no sentence or clause boundary came sooner, so the
    /// first audio does not wait for a long first sentence; 0 = off.
    pub first_words: usize,
}

impl Default for ChunkerConfig {
    fn default() -> Self {
        Self {
            min_chars: 12,
            clause_chars: 60,
            first_clause_chars: 16,
            max_chars: 200,
            first_words: 0,
        }
    }
}

/// Streaming sentence chunker.
#[derive(Debug, Clone)]
pub struct Chunker {
    cfg: ChunkerConfig,
    buf: String,
    emitted: usize,
}

impl Chunker {
    pub fn new(cfg: ChunkerConfig) -> Self {
        Self {
            cfg,
            buf: String::new(),
            emitted: 0,
        }
    }

    /// Adds generated text; returns the chunks completed by it.
    pub fn push(&mut self, text: &str) -> Vec<String> {
        self.buf.push_str(text);
        let mut out = Vec::new();
        while let Some(end) = self.find_cut() {
            let chunk: String = self.buf[..end].to_string();
            self.buf.drain(..end);
            self.emitted += 1;
            out.push(chunk);
        }
        out
    }

    /// Ends the stream; returns the rest (may be empty).
    pub fn finish(&mut self) -> String {
        self.emitted = 0;
        std::mem::take(&mut self.buf)
    }

    /// Byte offset just after the whitespace following a confirmed boundary.
    fn find_cut(&self) -> Option<usize> {
        let s = self.buf.as_str();
        let chars: Vec<(usize, char)> = s.char_indices().collect();
        let min = if self.emitted == 0 {
            2
        } else {
            self.cfg.min_chars
        };
        let mut last_space = None;
        let mut words = 0;
        for (i, &(pos, c)) in chars.iter().enumerate() {
            let len_chars = i + 1;
            if c.is_whitespace() && len_chars <= self.cfg.max_chars {
                last_space = Some(pos + c.len_utf8());
            }
            if c.is_whitespace() && i > 0 && !chars[i - 1].1.is_whitespace() {
                words += 1;
                if self.emitted == 0 && self.cfg.first_words > 0 && words >= self.cfg.first_words {
                    return Some(pos + c.len_utf8());
                }
            }
            if c == '\n' && len_chars > 1 && s[..pos].trim().chars().count() >= 2 {
                return Some(pos + 1);
            }
            let Some(&(npos, next)) = chars.get(i + 1) else {
                break;
            };
            if !next.is_whitespace() {
                continue;
            }
            let after = npos + next.len_utf8();
            let is_sentence_end = matches!(c, '.' | '!' | '?' | '…' | '。' | '！' | '？')
                || (matches!(c, '"' | '\'' | ')' | '”' | '’')
                    && i > 0
                    && matches!(chars[i - 1].1, '.' | '!' | '?'));
            if is_sentence_end
                && len_chars >= min
                && !(c == '.' && self.is_non_terminal_period(&s[..pos]))
            {
                return Some(after);
            }
            let clause = if self.emitted == 0 {
                self.cfg.first_clause_chars
            } else {
                self.cfg.clause_chars
            };
            if matches!(c, ',' | ';' | ':' | '—') && len_chars >= clause {
                return Some(after);
            }
        }
        if chars.len() >= self.cfg.max_chars {
            if let Some(sp) = last_space.filter(|&sp| sp > 0 && sp < s.len()) {
                return Some(sp);
            }
        }
        None
    }

    /// True when the period ending `before` is an abbreviation or list number.
    fn is_non_terminal_period(&self, before: &str) -> bool {
        let word = before
            .rsplit(|c: char| c.is_whitespace() || c == '(' || c == '"')
            .next()
            .unwrap_or("");
        if word.is_empty() {
            return false;
        }
        let lower = word.to_lowercase();
        if ABBREVIATIONS.contains(&lower.as_str()) {
            return true;
        }
        // single letters ("J. R. R.") and list numbers at line start ("1.", "12.")
        let is_initial = word.chars().count() == 1 && word.chars().all(char::is_alphabetic);
        let is_list_number = word.chars().all(|c| c.is_ascii_digit())
            && word.len() <= 3
            && before[..before.len() - word.len()]
                .trim_end_matches(' ')
                .ends_with('\n')
            || (word.chars().all(|c| c.is_ascii_digit()) && before.trim() == word);
        is_initial || is_list_number
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str, step: usize) -> Vec<String> {
        let mut c = Chunker::new(ChunkerConfig::default());
        let mut out = Vec::new();
        let chars: Vec<char> = text.chars().collect();
        for piece in chars.chunks(step) {
            out.extend(c.push(&piece.iter().collect::<String>()));
        }
        let rest = c.finish();
        if !rest.is_empty() {
            out.push(rest);
        }
        out
    }

    fn check(text: &str) -> Vec<String> {
        let a = run(text, 1);
        for step in [2, 3, 7, 100] {
            assert_eq!(run(text, step), a, "step {step}");
        }
        assert_eq!(a.concat(), text);
        a
    }

    #[test]
    fn sentences() {
        assert_eq!(
            check("Hello there! How are you today? I am fine."),
            vec!["Hello there! ", "How are you today? ", "I am fine."]
        );
    }

    #[test]
    fn decimals_abbreviations_and_initials() {
        let c = check("The value is 3.5 m, e.g. about Dr. Smith's height. J. R. R. Tolkien wrote it. Next one.");
        assert_eq!(
            c,
            vec![
                // the first clause goes out on its own (speech starts sooner)
                "The value is 3.5 m, ",
                "e.g. about Dr. Smith's height. ",
                "J. R. R. Tolkien wrote it. ",
                "Next one."
            ]
        );
    }

    #[test]
    fn lists_and_newlines() {
        let c = check("Steps:\n1. Open the door.\n2. Walk in.\n");
        assert_eq!(c.concat(), "Steps:\n1. Open the door.\n2. Walk in.\n");
        assert!(
            c.iter().all(|x| x.trim() != "1." && x.trim() != "2."),
            "{c:?}"
        );
        assert!(c.len() >= 2, "{c:?}");
    }

    #[test]
    fn emoji_and_multibyte() {
        let c = check("Great job 🎉! Ça va très bien. 日本語です。 Done.");
        assert_eq!(
            c.concat(),
            "Great job 🎉! Ça va très bien. 日本語です。 Done."
        );
        assert!(c.len() >= 3, "{c:?}");
    }

    #[test]
    fn long_clauses_and_run_on_text() {
        let clause =
            "This is a rather long introductory clause that keeps on going, and then it continues";
        let c = check(clause);
        assert_eq!(
            c[0],
            "This is a rather long introductory clause that keeps on going, "
        );
        let run_on = "word ".repeat(100);
        let c = check(&run_on);
        assert!(
            c.iter().all(|x| x.chars().count() <= 200),
            "{:?}",
            c.iter().map(|x| x.len()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn short_first_chunk_goes_out_early() {
        assert_eq!(check("Sure! Going now."), vec!["Sure! ", "Going now."]);
        // later short sentences merge
        assert_eq!(
            check("Sure! Ok. Fine then."),
            vec!["Sure! ", "Ok. Fine then."]
        );
    }

    #[test]
    fn a_long_first_sentence_is_cut_after_its_first_words() {
        let cfg = ChunkerConfig {
            first_words: 6,
            ..ChunkerConfig::default()
        };
        let run = |text: &str| {
            let mut c = Chunker::new(cfg);
            let mut out = Vec::new();
            for ch in text.chars() {
                out.extend(c.push(&ch.to_string()));
            }
            out.push(c.finish());
            out.retain(|s| !s.is_empty());
            out
        };
        let text = "This is a classic idiom that has been used in various languages to say much. It is old.";
        let c = run(text);
        assert_eq!(c.concat(), text);
        // the first chunk: six words; later chunks stay whole sentences
        assert_eq!(c[0], "This is a classic idiom that ");
        assert_eq!(
            c[1..],
            [
                "has been used in various languages to say much. ",
                "It is old."
            ]
        );
        // a sentence or clause that ends sooner still ends the first chunk
        assert_eq!(
            run("Sure! Going to the kitchen now, then the lab.")[0],
            "Sure! "
        );
        assert_eq!(
            run("When you get to the lab, tell me how warm it is.")[0],
            "When you get to the lab, "
        );
    }

    #[test]
    fn trailing_period_without_space_waits_for_finish() {
        let mut c = Chunker::new(ChunkerConfig::default());
        assert!(c.push("It costs 3.").is_empty());
        assert!(c.push("5 euros").is_empty());
        assert_eq!(c.finish(), "It costs 3.5 euros");
    }
}
