//! Conversation history and prompt assembly, independent of the model: the
//! llm_node renders the messages with the GGUF's chat template and counts
//! tokens with its tokenizer, passed in as a closure.

use std::collections::VecDeque;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
        }
    }
}

/// Makes outside text safe for a prompt: no NUL or other control characters
/// (newlines and tabs kept), whitespace runs of any length kept as they are.
pub fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                ' '
            } else {
                c
            }
        })
        .collect::<String>()
        .trim()
        .to_string()
}

/// The last `max_turns` exchanges of one conversation.
#[derive(Debug, Clone, Default)]
pub struct History {
    turns: VecDeque<(String, String)>,
    max_turns: usize,
}

/// A prompt that fits the budget.
#[derive(Debug, Clone, PartialEq)]
pub struct Fitted {
    pub messages: Vec<Message>,
    /// Oldest exchanges left out to fit.
    pub dropped_turns: usize,
    /// The user text was cut to fit (chars kept).
    pub truncated_user: Option<usize>,
}

impl History {
    pub fn new(max_turns: usize) -> Self {
        Self {
            turns: VecDeque::new(),
            max_turns,
        }
    }

    /// Changes how many exchanges are kept (the oldest beyond it are forgotten).
    pub fn set_max_turns(&mut self, max_turns: usize) {
        self.max_turns = max_turns;
        while self.turns.len() > max_turns {
            self.turns.pop_front();
        }
    }

    pub fn len(&self) -> usize {
        self.turns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.turns.is_empty()
    }

    pub fn clear(&mut self) {
        self.turns.clear();
    }

    /// Forgets the last exchange if its user text is `user` (a turn the user
    /// went on with: it is answered again, joined with what followed).
    pub fn forget_last(&mut self, user: &str) -> bool {
        if self.turns.back().is_some_and(|(u, _)| u == user) {
            self.turns.pop_back();
            return true;
        }
        false
    }

    /// Records a finished exchange, forgetting the oldest beyond `max_turns`.
    pub fn push(&mut self, user: String, assistant: String) {
        if self.max_turns == 0 {
            return;
        }
        self.turns.push_back((user, assistant));
        while self.turns.len() > self.max_turns {
            self.turns.pop_front();
        }
    }

    fn messages(&self, system: &str, user: &str, skip: usize) -> Vec<Message> {
        let mut m = Vec::with_capacity(2 + 2 * self.turns.len());
        if !system.is_empty() {
            m.push(Message::new(Role::System, system));
        }
        for (u, a) in self.turns.iter().skip(skip) {
            m.push(Message::new(Role::User, u.clone()));
            m.push(Message::new(Role::Assistant, a.clone()));
        }
        m.push(Message::new(Role::User, user));
        m
    }

    /// Builds system + history + user, dropping the oldest exchanges and then
    /// cutting the user text until `count(messages) <= budget`.
    /// Returns `None` when even the system prompt with an empty user message
    /// does not fit.
    pub fn fit(
        &self,
        system: &str,
        user: &str,
        budget: usize,
        mut count: impl FnMut(&[Message]) -> usize,
    ) -> Option<Fitted> {
        for skip in 0..=self.turns.len() {
            let m = self.messages(system, user, skip);
            if count(&m) <= budget {
                return Some(Fitted {
                    messages: m,
                    dropped_turns: skip,
                    truncated_user: None,
                });
            }
        }
        let skip = self.turns.len();
        if count(&self.messages(system, "", skip)) > budget {
            return None;
        }
        // binary search the longest prefix of the user text that fits
        let chars: Vec<char> = user.chars().collect();
        let (mut lo, mut hi) = (0usize, chars.len());
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            let text: String = chars[..mid].iter().collect();
            if count(&self.messages(system, &text, skip)) <= budget {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        let text: String = chars[..lo].iter().collect();
        Some(Fitted {
            messages: self.messages(system, &text, skip),
            dropped_turns: skip,
            truncated_user: Some(lo),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1 "token" per word plus 3 per message.
    fn words(m: &[Message]) -> usize {
        m.iter()
            .map(|x| 3 + x.content.split_whitespace().count())
            .sum()
    }

    #[test]
    fn history_is_bounded_and_ordered() {
        let mut h = History::new(2);
        for i in 0..5 {
            h.push(format!("q{i}"), format!("a{i}"));
        }
        assert_eq!(h.len(), 2);
        let f = h.fit("sys", "now", 1000, words).unwrap();
        let texts: Vec<_> = f.messages.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(texts, ["sys", "q3", "a3", "q4", "a4", "now"]);
        assert_eq!(f.messages[1].role, Role::User);
        assert_eq!(f.messages[2].role, Role::Assistant);
    }

    #[test]
    fn oldest_turns_dropped_then_user_truncated() {
        let mut h = History::new(10);
        h.push("one two three".into(), "four five".into());
        h.push("six".into(), "seven".into());
        // sys(4) + 2 turns (3+3 + 3+2) + (3+1) user(4) = 4+11+8+4 = 27
        let f = h.fit("system prompt", "question", 20, words).unwrap();
        assert_eq!(f.dropped_turns, 1);
        assert_eq!(f.truncated_user, None);
        let long = "w ".repeat(100);
        let f = h.fit("system prompt", &long, 20, words).unwrap();
        assert_eq!(f.dropped_turns, 2);
        assert!(f.truncated_user.is_some());
        assert!(words(&f.messages) <= 20);
        assert!(h.fit(&"s ".repeat(30), "q", 20, words).is_none());
    }

    #[test]
    fn zero_history_keeps_nothing() {
        let mut h = History::new(0);
        h.push("a".into(), "b".into());
        assert!(h.is_empty());
    }

    #[test]
    fn sanitize_removes_controls() {
        assert_eq!(sanitize("  hi\u{0}there\u{7}\nok  "), "hi there \nok");
    }
}
