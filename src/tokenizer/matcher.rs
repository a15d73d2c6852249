//! Longest-prefix matching of user-defined symbols (SentencePiece's `PrefixMatcher`,
//! google/sentencepiece `src/normalizer.cc`). User-defined pieces are matched whole in the text,
//! are protected from normalization and are never merged with their neighbours.

/// A byte trie over the user-defined pieces.
#[derive(Debug, Clone, Default)]
pub(crate) struct PrefixMatcher {
    /// Node 0 is the root. Children are kept sorted by byte.
    nodes: Vec<Node>,
}

#[derive(Debug, Clone, Default)]
struct Node {
    children: Vec<(u8, u32)>,
    terminal: bool,
}

impl PrefixMatcher {
    /// A matcher for `symbols` (empty symbols are ignored).
    pub(crate) fn new<'a>(symbols: impl IntoIterator<Item = &'a str>) -> Self {
        let mut m = PrefixMatcher::default();
        for s in symbols {
            if s.is_empty() {
                continue;
            }
            if m.nodes.is_empty() {
                m.nodes.push(Node::default());
            }
            let mut node = 0usize;
            for &b in s.as_bytes() {
                node = match m.nodes[node].children.binary_search_by_key(&b, |c| c.0) {
                    Ok(i) => m.nodes[node].children[i].1 as usize,
                    Err(i) => {
                        let next = m.nodes.len();
                        m.nodes[node].children.insert(i, (b, next as u32));
                        m.nodes.push(Node::default());
                        next
                    }
                };
            }
            m.nodes[node].terminal = true;
        }
        m
    }

    /// Byte length of the longest symbol that is a prefix of `input`, if any.
    pub(crate) fn longest_match(&self, input: &[u8]) -> Option<usize> {
        let mut node = self.nodes.first()?;
        let mut longest = None;
        for (i, &b) in input.iter().enumerate() {
            let Ok(c) = node.children.binary_search_by_key(&b, |c| c.0) else {
                break;
            };
            let Some(next) = self.nodes.get(node.children[c].1 as usize) else {
                break;
            };
            node = next;
            if node.terminal {
                longest = Some(i + 1);
            }
        }
        longest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins() {
        let m = PrefixMatcher::new(["<a>", "<ab>", "<abc>x", ""]);
        assert_eq!(m.longest_match(b"<ab>cd"), Some(4));
        assert_eq!(m.longest_match(b"<a>"), Some(3));
        assert_eq!(m.longest_match(b"<abc>"), None);
        assert_eq!(m.longest_match(b"<abc>xy"), Some(6));
        assert_eq!(m.longest_match(b""), None);
        assert_eq!(PrefixMatcher::new([""]).longest_match(b"a"), None);
        assert_eq!(PrefixMatcher::default().longest_match(b"a"), None);
    }
}
