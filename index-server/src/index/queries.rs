//! Building tantivy queries from a bounded plan: no user text reaches a query parser.

use super::*;
use tantivy::query::ConstScoreQuery;

/// The score a clause earns by matching a tag: more than BM25 can give a path match (at most
/// idf × (1 + k1) ≈ 2.2 × ln(1 + 2N), under 38 for 10M entries), so a word found in tags ranks
/// above the same word found only in a folder name, whatever the words' frequencies. Among tag
/// matches, a path match on top and then the number of copies decide.
const TAG_MATCH_SCORE: f32 = 40.0;

/// `query`, scoring [`TAG_MATCH_SCORE`] where it matches.
fn tag_match(query: Box<dyn Query>) -> Box<dyn Query> {
    Box::new(ConstScoreQuery::new(query, TAG_MATCH_SCORE))
}

impl SearchIndex {
    pub(super) fn word_query(
        &self,
        searcher: &tantivy::Searcher,
        term: &str,
        prefix: bool,
        max_expansions: u32,
    ) -> Box<dyn Query> {
        if prefix && prefix_is_indexed(term) {
            // Every word starting with `term`, whole words included, in one posting list.
            let t = Term::from_field_text(self.fields.prefix, term);
            return Box::new(TermQuery::new(t, IndexRecordOption::Basic));
        }
        let t = Term::from_field_text(self.fields.text, term);
        let exact = TermQuery::new(t.clone(), IndexRecordOption::WithFreqs);
        if !prefix {
            if !self.in_any_tag(searcher, term) {
                return Box::new(exact);
            }
            // In a path or in the tags (scored above any path match).
            let in_tags = Term::from_field_text(self.fields.tags, term);
            return Box::new(BooleanQuery::new(vec![
                (Occur::Should, Box::new(exact) as Box<dyn Query>),
                (
                    Occur::Should,
                    tag_match(Box::new(TermQuery::new(in_tags, IndexRecordOption::Basic))),
                ),
            ]));
        }
        let mut starts_with = PhrasePrefixQuery::new(vec![t]);
        starts_with.set_max_expansions(max_expansions);
        // Exact matches score by BM25; words that merely start with the term still match.
        Box::new(BooleanQuery::new(vec![
            (Occur::Should, Box::new(exact) as Box<dyn Query>),
            (Occur::Should, Box::new(starts_with)),
        ]))
    }

    pub(super) fn clause_query(
        &self,
        searcher: &tantivy::Searcher,
        clause: &Clause,
        allow_prefix: bool,
        max_expansions: u32,
    ) -> Box<dyn Query> {
        match clause {
            Clause::Word { term, prefix } => {
                self.word_query(searcher, term, *prefix && allow_prefix, max_expansions)
            }
            Clause::Phrase(terms) => {
                let in_path = phrase(self.fields.text, terms);
                if !terms.iter().all(|t| self.in_any_tag(searcher, t)) {
                    return in_path;
                }
                Box::new(BooleanQuery::new(vec![
                    (Occur::Should, in_path),
                    (Occur::Should, tag_match(phrase(self.fields.tags, terms))),
                ]))
            }
            Clause::Tag { field, terms } => tag_match(phrase(self.fields.of_tag(*field), terms)),
        }
    }

    /// The query for `spec`; words match as prefixes too only with `allow_prefix`.
    pub(super) fn build_query(
        &self,
        searcher: &tantivy::Searcher,
        spec: &SearchSpec,
        allow_prefix: bool,
    ) -> Box<dyn Query> {
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for clause in &spec.plan.required {
            clauses.push((
                Occur::Must,
                self.clause_query(searcher, clause, allow_prefix, spec.max_prefix_expansions),
            ));
        }
        // Exclusions are exact: `-live` should not also hide "liverpool".
        for clause in &spec.plan.excluded {
            clauses.push((
                Occur::MustNot,
                self.clause_query(searcher, clause, false, 0),
            ));
        }
        // Filters are not clauses: the collector checks them on fast fields (see `Filters`).
        // A lone term query keeps tantivy's block-max pruning for single terms.
        if clauses.len() == 1
            && clauses[0].0 == Occur::Must
            && let Some((_, query)) = clauses.pop()
        {
            return query;
        }
        Box::new(BooleanQuery::new(clauses))
    }
}

/// `terms` next to each other in `field` (a term query for one term).
fn phrase(field: Field, terms: &[String]) -> Box<dyn Query> {
    match terms {
        [term] => Box::new(TermQuery::new(
            Term::from_field_text(field, term),
            IndexRecordOption::WithFreqs,
        )),
        _ => Box::new(PhraseQuery::new(
            terms
                .iter()
                .map(|t| Term::from_field_text(field, t))
                .collect(),
        )),
    }
}
