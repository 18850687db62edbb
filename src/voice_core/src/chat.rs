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

    /// The exchanges kept, oldest first: (user, assistant).
    pub fn exchanges(&self) -> impl Iterator<Item = &(String, String)> {
        self.turns.iter()
    }

    /// Takes `exchanges` (oldest first) as the whole history (another
    /// engine answered the conversation until now), within the bound.
    pub fn replace(&mut self, exchanges: Vec<(String, String)>) {
        self.turns = exchanges.into();
        while self.turns.len() > self.max_turns {
            self.turns.pop_front();
        }
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

    /// How many of the oldest exchanges are forgotten at once when the
    /// history is over its bound: half the bound (at least one); over the
    /// context budget, [`fit`](Self::fit) forgets in steps too. Forgetting in
    /// steps keeps the beginning of the prompt (system prompt and history)
    /// the same for several turns, so the KV cache still holds it and a turn
    /// evaluates only what is new; forgetting one exchange per turn changed
    /// it on every turn, and every turn evaluated the whole history again.
    fn step(&self) -> usize {
        (self.max_turns / 2).max(1)
    }

    /// Records a finished exchange; beyond `max_turns`, forgets the oldest
    /// [`step`](Self::step) exchanges.
    pub fn push(&mut self, user: String, assistant: String) {
        if self.max_turns == 0 {
            return;
        }
        self.turns.push_back((user, assistant));
        if self.turns.len() > self.max_turns {
            let forget = (self.turns.len() - self.max_turns).max(self.step());
            self.turns.drain(..forget.min(self.turns.len()));
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

    /// Builds system + history + user within `budget` (`count` measures).
    /// When the history does not fit, the oldest exchanges that do not fit
    /// are forgotten, and with them half of the rest: the conversation then
    /// grows for several turns before anything is forgotten again, and the
    /// prompt's beginning (what the KV cache holds) stays the same until
    /// then. When even the user's text alone does not fit, this turn leaves
    /// out the whole history (kept for the next turns) and cuts the text.
    /// Returns `None` when even the system prompt with an empty user message
    /// does not fit.
    pub fn fit(
        &mut self,
        system: &str,
        user: &str,
        budget: usize,
        mut count: impl FnMut(&[Message]) -> usize,
    ) -> Option<Fitted> {
        let len = self.turns.len();
        if let Some(needed) =
            (0..=len).find(|&skip| count(&self.messages(system, user, skip)) <= budget)
        {
            let forget = if needed == 0 {
                0
            } else {
                needed + (len - needed) / 2
            };
            self.turns.drain(..forget);
            return Some(Fitted {
                messages: self.messages(system, user, 0),
                dropped_turns: forget,
                truncated_user: None,
            });
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
        assert_eq!(
            f.dropped_turns, 1,
            "1 needed + half of the 1 other, rounded down"
        );
        assert_eq!(f.truncated_user, None);
        let long = "w ".repeat(100);
        let f = h.fit("system prompt", &long, 20, words).unwrap();
        assert_eq!(f.dropped_turns, 1, "this turn leaves out the whole history");
        assert!(f.truncated_user.is_some());
        assert!(words(&f.messages) <= 20);
        assert!(h.fit(&"s ".repeat(30), "q", 20, words).is_none());
    }

    /// The first history message of each turn's prompt, for a conversation
    /// of `n` turns.
    fn first_kept(max_turns: usize, budget: usize, n: usize) -> Vec<String> {
        let mut h = History::new(max_turns);
        (0..n)
            .map(|i| {
                let user = format!("question {i} with a few words");
                let f = h.fit("system prompt", &user, budget, words).unwrap();
                assert!(words(&f.messages) <= budget);
                h.push(user, format!("answer {i} of several words"));
                f.messages[1].content.clone()
            })
            .collect()
    }

    /// How often the prompt's beginning changed (the KV cache lost) over a
    /// conversation whose history is full.
    fn changes(firsts: &[String]) -> usize {
        firsts.windows(2).filter(|w| w[0] != w[1]).count()
    }

    #[test]
    fn a_full_history_is_forgotten_in_steps_so_the_prompt_start_holds() {
        // bounded by max_turns: 8 -> forgets 4 at a time
        let firsts = first_kept(8, 10_000, 30);
        // turn 0 has no history; from turn 1 the first exchange is 'question 0' until the bound
        assert!(firsts[1..=8]
            .iter()
            .all(|f| f == "question 0 with a few words"));
        // after that, a change every 4 turns, not every turn
        assert_eq!(changes(&firsts[9..]), (30 - 9) / 4);
        let mut h = History::new(8);
        for i in 0..9 {
            h.push(format!("q{i}"), format!("a{i}"));
        }
        assert_eq!(h.len(), 5, "9 > 8: the 4 oldest forgotten");
    }

    #[test]
    fn over_budget_the_oldest_are_forgotten_with_room_to_grow() {
        // bounded by the budget (each exchange 14 words, the bound far away)
        let firsts = first_kept(100, 150, 40);
        let tail = &firsts[10..];
        // the history holds ~9 exchanges: one change every ~4 turns, where it was every turn
        assert!(
            changes(tail) <= tail.len() / 3,
            "{} changes in {} turns",
            changes(tail),
            tail.len()
        );
        let mut h = History::new(100);
        for i in 0..10 {
            h.push(format!("q{i} a b c"), format!("a{i} d e f"));
        }
        let all = words(&h.messages("sys", "now", 0));
        let f = h.fit("sys", "now", all - 1, words).unwrap();
        // 1 needed, then half of the 9 others
        assert_eq!(f.dropped_turns, 1 + 4);
        assert_eq!(h.len(), 5);
        assert_eq!(f.messages[1].content, "q5 a b c");
        // a user text too long for any history: this turn without it, the history kept
        let f = h.fit("sys", &"w ".repeat(200), 40, words).unwrap();
        assert!(f.truncated_user.is_some());
        assert_eq!(h.len(), 5);
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
