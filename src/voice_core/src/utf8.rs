//! Incremental UTF-8 decoding of token bytes: a token may end in the middle
//! of a multi-byte character (emoji, accents); the tail waits for the next.

/// Bytes in, complete characters out.
#[derive(Debug, Default, Clone)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    pub fn new() -> Self {
        Self::default()
    }

    /// Returns the text completed by `bytes`; invalid bytes become U+FFFD.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // valid prefix is UTF-8 by construction
                    out.push_str(&String::from_utf8_lossy(&self.pending[..valid]));
                    match e.error_len() {
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            self.pending.drain(..valid + bad);
                        }
                        None => {
                            // incomplete character at the end: keep it for later
                            self.pending.drain(..valid);
                            return out;
                        }
                    }
                }
            }
        }
    }

    /// Flushes an incomplete tail at the end of the stream.
    pub fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_characters_are_joined() {
        let text = "Ça va 🎉 日本";
        let bytes = text.as_bytes();
        for step in 1..5 {
            let mut d = Utf8Stream::new();
            let mut out = String::new();
            for b in bytes.chunks(step) {
                out.push_str(&d.push(b));
            }
            out.push_str(&d.finish());
            assert_eq!(out, text);
        }
    }

    #[test]
    fn garbage_is_replaced_not_fatal() {
        let mut d = Utf8Stream::new();
        assert_eq!(d.push(&[b'a', 0xff, b'b']), "a\u{FFFD}b");
        assert_eq!(d.push(&[0xf0, 0x9f]), "");
        assert_eq!(d.finish(), "\u{FFFD}");
    }
}
