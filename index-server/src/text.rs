//! Text normalization and tokenizing for file names, folder paths and search queries.
//!
//! The same function turns an indexed name and a typed query into terms, so what a user types
//! matches what peers share: case-folded, accents removed (`Beyoncé` → `beyonce`), compatibility
//! forms folded (full-width `ＡＢＣ` → `abc`), split on anything that is not a letter or digit.
//! Scripts written without spaces (Han, Hiragana, Katakana) are indexed as overlapping character
//! bigrams, so any two-or-more character run a user types is found inside a longer name. Hangul is
//! kept as whole syllables (Korean separates words with spaces).

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// Longest term kept, in bytes; longer runs are cut (tantivy refuses terms over 65 KB anyway).
pub const MAX_TERM_BYTES: usize = 64;

fn is_cjk_unspaced(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF      // Hiragana, Katakana
        | 0x31F0..=0x31FF    // Katakana phonetic extensions
        | 0x3400..=0x4DBF    // CJK extension A
        | 0x4E00..=0x9FFF    // CJK unified ideographs
        | 0xF900..=0xFAFF    // compatibility ideographs
        | 0x20000..=0x2FFFF) // supplementary ideographs
}

fn is_hangul_syllable(c: char) -> bool {
    matches!(c as u32, 0xAC00..=0xD7A3)
}

/// Folds one character into zero or more lowercase, accent-free characters.
fn fold_char(c: char, out: &mut String) {
    if c.is_ascii() {
        out.push(c.to_ascii_lowercase());
    } else if is_hangul_syllable(c) {
        // NFKD would split syllables into jamo; keep them whole so prefixes stay meaningful.
        out.push(c);
    } else {
        for d in std::iter::once(c).nfkd().filter(|d| !is_combining_mark(*d)) {
            out.extend(d.to_lowercase());
        }
    }
}

/// Normalizes `text` (lowercase, no accents, compatibility forms folded).
pub fn fold(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        fold_char(c, &mut out);
    }
    out
}

/// A word cut out of text, before CJK bigram expansion.
fn words(folded: &str) -> impl Iterator<Item = &str> {
    folded
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
}

fn truncate_to_char_boundary(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Splits a folded word into terms: runs of unspaced CJK become bigrams, other runs stay whole.
fn push_word_terms(word: &str, terms: &mut Vec<String>) {
    let mut run = String::new();
    let mut run_is_cjk = false;
    let flush = |run: &mut String, is_cjk: bool, terms: &mut Vec<String>| {
        if run.is_empty() {
            return;
        }
        if is_cjk {
            let chars: Vec<char> = run.chars().collect();
            if chars.len() == 1 {
                terms.push(run.clone());
            } else {
                terms.extend(chars.windows(2).map(|w| w.iter().collect::<String>()));
            }
        } else {
            terms.push(truncate_to_char_boundary(run, MAX_TERM_BYTES).to_string());
        }
        run.clear();
    };
    for c in word.chars() {
        let cjk = is_cjk_unspaced(c);
        if cjk != run_is_cjk {
            flush(&mut run, run_is_cjk, terms);
            run_is_cjk = cjk;
        }
        run.push(c);
    }
    flush(&mut run, run_is_cjk, terms);
}

/// Terms of a text, in order, as the index stores them.
pub fn tokenize(text: &str) -> Vec<String> {
    let folded = fold(text);
    let mut terms = Vec::new();
    for word in words(&folded) {
        push_word_terms(word, &mut terms);
    }
    terms
}

/// Terms of a single query word. A word that splits into several terms (`AC/DC`, a CJK run) is
/// matched as a phrase of those terms.
pub fn tokenize_word(word: &str) -> Vec<String> {
    tokenize(word)
}

/// Whether a term can stand as a prefix (`beat` → `beatles`). CJK bigrams are already substrings
/// of the names they came from, and one-letter prefixes would match half the index.
pub fn allows_prefix(term: &str) -> bool {
    let mut chars = term.chars();
    match (chars.next(), chars.next()) {
        (Some(first), Some(_)) => !is_cjk_unspaced(first),
        (Some(first), None) => is_hangul_syllable(first),
        _ => false,
    }
}

/// Longest prefix indexed by [`prefix_terms`], in characters. A longer typed word is matched as
/// a prefix by expanding it against the term dictionary (few words share a long prefix).
pub const MAX_INDEXED_PREFIX_CHARS: usize = 10;

/// Whether `term` is matched as a prefix through the prefix field (one term lookup) rather than
/// by expanding it against the dictionary.
pub fn prefix_is_indexed(term: &str) -> bool {
    allows_prefix(term) && term.chars().count() <= MAX_INDEXED_PREFIX_CHARS
}

/// The distinct prefixes of a text's terms that a typed word may stand for (see
/// [`allows_prefix`]), up to [`MAX_INDEXED_PREFIX_CHARS`] characters, whole terms included:
/// `Beatles` → `be`, `bea`, `beat`, `beatl`, `beatle`, `beatles`. Indexing them turns a prefix
/// search into one posting list instead of a union over every completion.
pub fn prefix_terms(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for term in tokenize(text) {
        for (chars, (end, c)) in term.char_indices().enumerate() {
            if chars >= MAX_INDEXED_PREFIX_CHARS {
                break;
            }
            let prefix = &term[..end + c.len_utf8()];
            if allows_prefix(prefix) {
                out.push(prefix.to_string());
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// The name of the tokenizer registered with tantivy.
pub const TOKENIZER_NAME: &str = "peerdex";

/// The name of the prefix tokenizer ([`prefix_terms`]) registered with tantivy.
pub const PREFIX_TOKENIZER_NAME: &str = "peerdex_prefix";

/// tantivy adapter around [`tokenize`] (the default) or [`prefix_terms`].
#[derive(Clone)]
pub struct PeerdexTokenizer {
    token: tantivy::tokenizer::Token,
    terms: fn(&str) -> Vec<String>,
}

impl Default for PeerdexTokenizer {
    fn default() -> Self {
        PeerdexTokenizer {
            token: tantivy::tokenizer::Token::default(),
            terms: tokenize,
        }
    }
}

impl PeerdexTokenizer {
    /// The tokenizer of the prefix field.
    pub fn prefixes() -> Self {
        PeerdexTokenizer {
            terms: prefix_terms,
            ..PeerdexTokenizer::default()
        }
    }
}

/// Token stream over pre-computed terms.
pub struct PeerdexTokenStream<'a> {
    terms: std::vec::IntoIter<String>,
    position: usize,
    token: &'a mut tantivy::tokenizer::Token,
}

impl tantivy::tokenizer::Tokenizer for PeerdexTokenizer {
    type TokenStream<'a> = PeerdexTokenStream<'a>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> PeerdexTokenStream<'a> {
        self.token.reset();
        PeerdexTokenStream {
            terms: (self.terms)(text).into_iter(),
            position: 0,
            token: &mut self.token,
        }
    }
}

impl tantivy::tokenizer::TokenStream for PeerdexTokenStream<'_> {
    fn advance(&mut self) -> bool {
        match self.terms.next() {
            Some(term) => {
                self.token.text = term;
                self.token.position = self.position;
                self.token.position_length = 1;
                self.position += 1;
                true
            }
            None => false,
        }
    }

    fn token(&self) -> &tantivy::tokenizer::Token {
        self.token
    }

    fn token_mut(&mut self) -> &mut tantivy::tokenizer::Token {
        self.token
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_case_and_accents() {
        assert_eq!(
            tokenize("Beyoncé - Halo (Live).MP3"),
            ["beyonce", "halo", "live", "mp3"]
        );
        assert_eq!(
            tokenize("Motörhead_Ace.of.Spades"),
            ["motorhead", "ace", "of", "spades"]
        );
        assert_eq!(tokenize("ＡＢＣ１２３"), ["abc123"]);
        assert_eq!(
            tokenize("Sigur Rós/Ágætis byrjun"),
            ["sigur", "ros", "agætis", "byrjun"]
        );
    }

    #[test]
    fn other_scripts() {
        assert_eq!(
            tokenize("아이유 - 좋은 날.mp3"),
            ["아이유", "좋은", "날", "mp3"]
        );
        assert_eq!(tokenize("Кино - Группа крови"), ["кино", "группа", "крови"]);
        assert_eq!(
            tokenize("千と千尋の神隠し"),
            ["千と", "と千", "千尋", "尋の", "の神", "神隠", "隠し"]
        );
        assert_eq!(tokenize("東京2020"), ["東京", "2020"]);
        assert_eq!(tokenize("愛"), ["愛"]);
    }

    #[test]
    fn hostile_text() {
        assert!(tokenize("").is_empty());
        assert!(tokenize("- * ( ) : ^ \" \0 \u{202e}").is_empty());
        let long = "x".repeat(10_000);
        assert_eq!(tokenize(&long)[0].len(), MAX_TERM_BYTES);
        let long_multibyte = "é".repeat(1000);
        assert!(tokenize(&long_multibyte)[0].len() <= MAX_TERM_BYTES);
    }

    #[test]
    fn prefix_terms_cover_what_a_typed_prefix_may_be() {
        assert_eq!(
            prefix_terms("The Beatles/be"),
            [
                "be", "bea", "beat", "beatl", "beatle", "beatles", "th", "the"
            ]
        );
        // Long words stop at the cap; CJK bigrams have no prefixes; a Hangul syllable does.
        let long = prefix_terms("abcdefghijklmnop");
        assert_eq!(long.len(), MAX_INDEXED_PREFIX_CHARS - 1);
        assert!(long.contains(&"abcdefghij".to_string()));
        assert!(prefix_terms("千尋").is_empty());
        assert_eq!(prefix_terms("아이유"), ["아", "아이", "아이유"]);
        for typed in ["be", "beatles", "아이"] {
            assert!(prefix_is_indexed(typed));
        }
        assert!(!prefix_is_indexed("abcdefghijk"));
    }

    #[test]
    fn prefix_rules() {
        assert!(allows_prefix("be"));
        assert!(!allows_prefix("b"));
        assert!(allows_prefix("아"));
        assert!(!allows_prefix("千尋"));
    }
}
