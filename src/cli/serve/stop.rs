//! Stop sequences (`stop`): generation ends before the first occurrence of any of them, and
//! the stop text is not returned. Streamed text that could be the start of a stop sequence is
//! held back until it is known not to be one, so a stream never shows text that the
//! non-streamed reply would not have.

/// Filters streamed text for stop sequences.
#[derive(Debug, Default)]
pub struct StopFilter {
    stops: Vec<String>,
    /// Text received but not released: a suffix that is a prefix of some stop sequence.
    held: String,
    /// A stop sequence was found; nothing more passes.
    hit: bool,
}

impl StopFilter {
    /// A filter for `stops` (empty strings are ignored).
    pub fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            ..Self::default()
        }
    }

    /// Whether a stop sequence was found.
    pub fn hit(&self) -> bool {
        self.hit
    }

    /// Takes the next piece of text; returns the text that is now certain to be part of the
    /// reply. After a stop sequence is found ([`StopFilter::hit`]) it returns nothing more.
    pub fn push(&mut self, piece: &str) -> String {
        if self.hit {
            return String::new();
        }
        self.held.push_str(piece);
        let first = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min();
        if let Some(at) = first {
            self.hit = true;
            let out = self.held[..at].to_owned();
            self.held.clear();
            return out;
        }
        // Hold back the longest suffix that some stop sequence starts with.
        let keep = self
            .held
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| {
                let tail = &self.held[i..];
                self.stops.iter().any(|s| s.starts_with(tail))
            })
            .unwrap_or(self.held.len());
        let out = self.held[..keep].to_owned();
        self.held.drain(..keep);
        out
    }

    /// The held-back text, when generation ended without a stop sequence.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut f = StopFilter::new(&stops);
        let mut out = String::new();
        for p in pieces {
            out.push_str(&f.push(p));
        }
        if !f.hit() {
            out.push_str(&f.finish());
        }
        (out, f.hit())
    }

    #[test]
    fn stops_before_the_sequence_across_pieces() {
        assert_eq!(
            run(&["END"], &["hello E", "N", "D more"]),
            ("hello ".into(), true)
        );
        assert_eq!(run(&["\n\n"], &["a\n", "\nb"]), ("a".into(), true));
        assert_eq!(run(&["x", "yz"], &["abyzx"]), ("ab".into(), true));
    }

    #[test]
    fn a_false_start_is_released() {
        assert_eq!(run(&["END"], &["E", "N", "d"]), ("ENd".into(), false));
        assert_eq!(run(&["END"], &["EN"]), ("EN".into(), false));
        assert_eq!(run(&[], &["abc"]), ("abc".into(), false));
    }

    #[test]
    fn held_text_is_released_as_soon_as_it_cannot_start_a_stop() {
        let stops = vec!["STOP".to_string()];
        let mut f = StopFilter::new(&stops);
        assert_eq!(f.push("aS"), "a");
        assert_eq!(f.push("T"), "");
        assert_eq!(f.push("x"), "STx");
        assert_eq!(f.push("é"), "é");
    }
}
