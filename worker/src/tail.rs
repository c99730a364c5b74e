//! A bounded buffer that keeps only the last `cap` bytes written to it.
//!
//! Used for the stdout/stderr tails of commands: memory stays bounded by `cap` however much
//! a command writes, and the rendering as text is bounded by `cap` bytes too.

use std::collections::VecDeque;

/// The last `cap` bytes of a stream, plus how many bytes went through in total.
#[derive(Debug, Clone)]
pub struct Tail {
    cap: usize,
    buf: VecDeque<u8>,
    total: u64,
}

impl Tail {
    /// An empty tail keeping at most `cap` bytes.
    pub fn new(cap: usize) -> Self {
        Tail {
            cap,
            buf: VecDeque::with_capacity(cap.min(64 * 1024)),
            total: 0,
        }
    }

    /// Appends `data`, forgetting the oldest bytes beyond the bound.
    pub fn push(&mut self, data: &[u8]) {
        self.total = self.total.saturating_add(data.len() as u64);
        if data.len() >= self.cap {
            self.buf.clear();
            self.buf.extend(&data[data.len() - self.cap..]);
            return;
        }
        let overflow = (self.buf.len() + data.len()).saturating_sub(self.cap);
        self.buf.drain(..overflow);
        self.buf.extend(data);
    }

    /// Bytes written in total (including the forgotten ones).
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Whether bytes were forgotten.
    pub fn truncated(&self) -> bool {
        self.total > self.buf.len() as u64
    }

    /// The kept bytes.
    pub fn bytes(&self) -> Vec<u8> {
        self.buf.iter().copied().collect()
    }

    /// The kept bytes as text, at most `cap` bytes long.
    ///
    /// Invalid UTF-8 becomes U+FFFD. When the start was cut off, a partial character at the
    /// start is dropped rather than shown as U+FFFD; when replacements made the text longer
    /// than `cap`, its start is cut at a character boundary.
    pub fn to_string_lossy(&self) -> String {
        let bytes = self.bytes();
        let mut start = 0;
        if self.truncated() {
            // Skip at most 3 continuation bytes (10xxxxxx) of a character cut in half.
            while start < bytes.len().min(3) && bytes[start] & 0xC0 == 0x80 {
                start += 1;
            }
        }
        let text = String::from_utf8_lossy(&bytes[start..]);
        if text.len() <= self.cap {
            return text.into_owned();
        }
        let mut cut = text.len() - self.cap;
        while !text.is_char_boundary(cut) {
            cut += 1;
        }
        text[cut..].to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_bytes() {
        let mut t = Tail::new(5);
        t.push(b"abc");
        assert_eq!(t.to_string_lossy(), "abc");
        assert!(!t.truncated());
        t.push(b"defg");
        assert_eq!(t.to_string_lossy(), "cdefg");
        t.push(b"0123456789");
        assert_eq!(t.to_string_lossy(), "56789");
        assert_eq!(t.total(), 17);
        assert!(t.truncated());
    }

    #[test]
    fn zero_capacity_keeps_nothing() {
        let mut t = Tail::new(0);
        t.push(b"abc");
        assert_eq!(t.to_string_lossy(), "");
        assert_eq!(t.total(), 3);
    }

    #[test]
    fn a_character_cut_in_half_is_dropped() {
        let mut t = Tail::new(4);
        t.push("xé€".as_bytes()); // x, 2 bytes, 3 bytes: the tail is the last byte of é + €
        assert_eq!(t.to_string_lossy(), "€");
    }

    #[test]
    fn text_stays_within_the_bound_despite_replacements() {
        let mut t = Tail::new(4);
        t.push(&[0xFF, 0xFF, 0xFF, 0xFF]);
        let s = t.to_string_lossy();
        assert!(s.len() <= 4, "{s:?}");
        assert_eq!(s, "\u{FFFD}");
    }
}
