//! Turns what a user typed into a bounded search plan; never hands user text to a query language.
//!
//! Syntax: words must all match (each also as a prefix), `-word` excludes, `"two words"` is a
//! phrase; `artist:`, `album:`, `title:` and `genre:` before a word or phrase look in that media
//! tag only, `year:1997` keeps files tagged with that year. Anything else is just text: `*`,
//! `:`, `(`, `^` are separators, not operators.

use thiserror::Error;

use crate::text;

/// Caps on a query, from the server configuration.
#[derive(Debug, Clone, Copy)]
pub struct QueryLimits {
    /// Longest query text accepted, in bytes.
    pub max_query_bytes: usize,
    /// Most words and phrases (required plus excluded).
    pub max_terms: usize,
}

/// A media tag a query clause may name (`artist:…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TagField {
    /// Artist or album artist (a document's author).
    Artist,
    /// Album.
    Album,
    /// Title.
    Title,
    /// Genre.
    Genre,
}

impl TagField {
    /// The field a query prefix names (`"artist"` for `artist:`), ASCII-case-insensitively.
    pub fn parse(name: &str) -> Option<TagField> {
        Some(match name.to_ascii_lowercase().as_str() {
            "artist" | "author" => TagField::Artist,
            "album" => TagField::Album,
            "title" => TagField::Title,
            "genre" => TagField::Genre,
            _ => return None,
        })
    }
}

/// One required or excluded element of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Clause {
    /// Words (one, or a phrase) that must occur in one media tag, whole.
    Tag {
        /// The tag.
        field: TagField,
        /// The folded terms, in order.
        terms: Vec<String>,
    },
    /// A single term; matches as a prefix too when `prefix` is set.
    Word {
        /// The folded term.
        term: String,
        /// Whether longer words starting with it match too.
        prefix: bool,
    },
    /// Terms that must appear next to each other, in order.
    Phrase(Vec<String>),
}

/// A parsed query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryPlan {
    /// All must match.
    pub required: Vec<Clause>,
    /// None may match.
    pub excluded: Vec<Clause>,
    /// `year:N`: only files tagged with this year.
    pub year: Option<u32>,
}

impl Clause {
    /// Whether the clause occurs in `terms` (a text's terms, in order, from
    /// [`text::tokenize`]); a word matches as a prefix only with `allow_prefix` and its own
    /// `prefix` flag, as in the index.
    fn occurs_in(&self, terms: &[String], allow_prefix: bool) -> bool {
        match self {
            Clause::Word { term, prefix } => terms
                .iter()
                .any(|t| t == term || (allow_prefix && *prefix && t.starts_with(term.as_str()))),
            Clause::Phrase(phrase) => {
                !phrase.is_empty() && terms.windows(phrase.len()).any(|w| w == phrase.as_slice())
            }
            // Not about texts: `matches` leaves them out.
            Clause::Tag { .. } => false,
        }
    }

    /// Every term of the clause, in order.
    pub fn terms(&self) -> Vec<&str> {
        match self {
            Clause::Word { term, .. } => vec![term.as_str()],
            Clause::Phrase(terms) | Clause::Tag { terms, .. } => {
                terms.iter().map(String::as_str).collect()
            }
        }
    }
}

impl QueryPlan {
    /// Whether a text (a path within a share) matches the plan the way the index matches it:
    /// every required clause occurs (words also as prefixes), no excluded one does (exactly).
    /// Tag clauses are not about paths and never decide.
    pub fn matches(&self, text: &str) -> bool {
        let terms = text::tokenize(text);
        let about_text = |c: &&Clause| !matches!(c, Clause::Tag { .. });
        self.required
            .iter()
            .filter(about_text)
            .all(|c| c.occurs_in(&terms, true))
            && !self
                .excluded
                .iter()
                .filter(about_text)
                .any(|c| c.occurs_in(&terms, false))
    }
}

/// Why a query was refused (all map to 400).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum QueryError {
    /// Over `max_query_bytes`.
    #[error("query is {len} bytes, over the limit of {limit} (max_query_bytes)")]
    TooLong {
        /// Length given.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// Over `max_terms`.
    #[error("query has more than {limit} words (max_query_terms)")]
    TooManyTerms {
        /// The limit.
        limit: usize,
    },
    /// Nothing searchable: no word with a letter or digit outside exclusions.
    #[error("query has no word to search for")]
    NoTerms,
    /// `year:` with something other than a year.
    #[error("year:{0} is not a year (use four digits, as in year:1997)")]
    BadYear(String),
}

fn clause_for(raw: &str, quoted: bool) -> Option<Clause> {
    let terms = text::tokenize_word(raw);
    match terms.len() {
        0 => None,
        1 if !quoted => {
            let term = terms.into_iter().next()?;
            let prefix = text::allows_prefix(&term);
            Some(Clause::Word { term, prefix })
        }
        1 => Some(Clause::Word {
            term: terms.into_iter().next()?,
            prefix: false,
        }),
        _ => Some(Clause::Phrase(terms)),
    }
}

/// Parses `input` into a plan, enforcing `limits`.
pub fn parse(input: &str, limits: &QueryLimits) -> Result<QueryPlan, QueryError> {
    if input.len() > limits.max_query_bytes {
        return Err(QueryError::TooLong {
            len: input.len(),
            limit: limits.max_query_bytes,
        });
    }
    let mut plan = QueryPlan::default();
    let mut rest = input;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        let (negated, mut body) = match rest.strip_prefix('-') {
            Some(after) => (true, after),
            None => (false, rest),
        };
        // `field:` names a tag (or the year) when the word before the colon is one.
        let mut field = None;
        let mut year = false;
        if let Some((name, after)) = body.split_once(':')
            && !name.is_empty()
            && !name.contains(char::is_whitespace)
            && !name.contains('"')
        {
            if let Some(tag) = TagField::parse(name) {
                field = Some(tag);
                body = after;
            } else if name.eq_ignore_ascii_case("year") && !negated {
                year = true;
                body = after;
            }
        }
        let (raw, quoted, remaining) = if let Some(after_quote) = body.strip_prefix('"') {
            match after_quote.find('"') {
                Some(end) => (&after_quote[..end], true, &after_quote[end + 1..]),
                None => (after_quote, true, ""),
            }
        } else {
            let end = body.find(char::is_whitespace).unwrap_or(body.len());
            (&body[..end], false, &body[end..])
        };
        rest = remaining;
        if year {
            let value = raw.trim();
            match value.parse::<u32>() {
                Ok(y) if value.len() == 4 => plan.year = Some(y),
                _ => return Err(QueryError::BadYear(value.to_string())),
            }
            continue;
        }
        let clause = match field {
            Some(field) => {
                let terms = text::tokenize_word(raw);
                (!terms.is_empty()).then_some(Clause::Tag { field, terms })
            }
            None => clause_for(raw, quoted),
        };
        if let Some(clause) = clause {
            let target = if negated {
                &mut plan.excluded
            } else {
                &mut plan.required
            };
            if !target.contains(&clause) {
                target.push(clause);
            }
            if plan.required.len() + plan.excluded.len() > limits.max_terms {
                return Err(QueryError::TooManyTerms {
                    limit: limits.max_terms,
                });
            }
        }
    }
    if plan.required.is_empty() {
        return Err(QueryError::NoTerms);
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: QueryLimits = QueryLimits {
        max_query_bytes: 512,
        max_terms: 16,
    };

    fn word(t: &str, prefix: bool) -> Clause {
        Clause::Word {
            term: t.into(),
            prefix,
        }
    }

    #[test]
    fn words_exclusions_phrases() {
        let plan = parse(r#"Beat -live "Let It Be" x"#, &LIMITS).unwrap();
        assert_eq!(
            plan.required,
            [
                word("beat", true),
                Clause::Phrase(vec!["let".into(), "it".into(), "be".into()]),
                word("x", false)
            ]
        );
        assert_eq!(plan.excluded, [word("live", true)]);
    }

    #[test]
    fn tag_fields_and_year() {
        let plan = parse(
            r#"artist:Radiohead album:"OK Computer" year:1997 -genre:jazz x:y"#,
            &LIMITS,
        )
        .unwrap();
        assert_eq!(
            plan.required,
            [
                Clause::Tag {
                    field: TagField::Artist,
                    terms: vec!["radiohead".into()]
                },
                Clause::Tag {
                    field: TagField::Album,
                    terms: vec!["ok".into(), "computer".into()]
                },
                Clause::Phrase(vec!["x".into(), "y".into()]),
            ]
        );
        assert_eq!(
            plan.excluded,
            [Clause::Tag {
                field: TagField::Genre,
                terms: vec!["jazz".into()]
            }]
        );
        assert_eq!(plan.year, Some(1997));
        assert!(matches!(
            parse("a year:97", &LIMITS),
            Err(QueryError::BadYear(_))
        ));
        // A year alone is no word to search for.
        assert_eq!(parse("year:1997", &LIMITS), Err(QueryError::NoTerms));
        // Tag clauses never decide whether a path matches.
        assert!(
            parse("artist:queen song", &LIMITS)
                .unwrap()
                .matches("a/song.mp3")
        );
    }

    #[test]
    fn compound_words_become_phrases() {
        let plan = parse("AC/DC 千尋", &LIMITS).unwrap();
        assert_eq!(
            plan.required,
            [
                Clause::Phrase(vec!["ac".into(), "dc".into()]),
                word("千尋", false)
            ]
        );
        let plan = parse("神隠し", &LIMITS).unwrap();
        assert_eq!(
            plan.required,
            [Clause::Phrase(vec!["神隠".into(), "隠し".into()])]
        );
    }

    #[test]
    fn operators_of_other_languages_are_text() {
        assert_eq!(parse("- *", &LIMITS), Err(QueryError::NoTerms));
        assert_eq!(parse("a:(^", &LIMITS).unwrap().required, [word("a", false)]);
        let nested = format!("{}x{}", "(".repeat(500), ")".repeat(500));
        assert_eq!(
            parse(
                &nested,
                &QueryLimits {
                    max_query_bytes: 2000,
                    ..LIMITS
                }
            )
            .unwrap()
            .required,
            [word("x", false)]
        );
        assert_eq!(
            parse("\"unterminated phrase", &LIMITS)
                .unwrap()
                .required
                .len(),
            1
        );
        assert_eq!(
            parse("-only -exclusions", &LIMITS),
            Err(QueryError::NoTerms)
        );
        assert_eq!(parse("", &LIMITS), Err(QueryError::NoTerms));
        assert_eq!(
            parse("a --x", &LIMITS).unwrap().excluded,
            [word("x", false)]
        );
    }

    #[test]
    fn plans_match_texts_as_the_index_does() {
        let plan = parse(r#"beat "abbey road" -live"#, &LIMITS).unwrap();
        assert!(plan.matches("The Beatles/Abbey Road/Come Together.mp3"));
        assert!(!plan.matches("The Beatles/Abbey Road (Live)/Come Together.mp3"));
        assert!(!plan.matches("The Beatles/Road Abbey/x.mp3"));
        // Exclusions are exact words: "liverpool" is not "live".
        assert!(plan.matches("Beatles/Abbey Road/Liverpool.mp3"));
        let cjk = parse("千尋", &LIMITS).unwrap();
        assert!(cjk.matches("千と千尋の神隠し.mkv"));
        assert!(!cjk.matches("神隠し.mkv"));
    }

    #[test]
    fn caps() {
        let long = "a".repeat(513);
        assert!(matches!(
            parse(&long, &LIMITS),
            Err(QueryError::TooLong { .. })
        ));
        let many: Vec<String> = (0..17).map(|i| format!("w{i}")).collect();
        assert_eq!(
            parse(&many.join(" "), &LIMITS),
            Err(QueryError::TooManyTerms { limit: 16 })
        );
        // Repeats do not count twice.
        assert!(parse(&["same"; 40].join(" "), &LIMITS).is_ok());
    }
}
