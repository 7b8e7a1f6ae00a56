//! Building tantivy queries from a bounded plan: no user text reaches a query parser.

use super::*;

impl SearchIndex {
    /// A whole word alone in a query: in the text (path and tags) or, scoring again, in the
    /// tags. The `tags` field has no length norms, so its score for a word is at least the best
    /// a single occurrence in a path can score (and its idf at least the text's, the tags being
    /// part of the text): a file with the word in its tags ranks above one with it once in a
    /// folder name. Two term queries in a disjunction: tantivy still prunes (block-max WAND).
    fn lone_word_query(&self, searcher: &tantivy::Searcher, term: &str) -> Box<dyn Query> {
        let exact = TermQuery::new(
            Term::from_field_text(self.fields.text, term),
            IndexRecordOption::WithFreqs,
        );
        if !self.in_any_tag(searcher, term) {
            return Box::new(exact);
        }
        let in_tags = TermQuery::new(
            Term::from_field_text(self.fields.tags, term),
            IndexRecordOption::WithFreqs,
        );
        Box::new(BooleanQuery::new(vec![
            (Occur::Should, Box::new(exact) as Box<dyn Query>),
            (Occur::Should, Box::new(in_tags)),
        ]))
    }

    pub(super) fn word_query(
        &self,
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
            return Box::new(exact);
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
        clause: &Clause,
        allow_prefix: bool,
        max_expansions: u32,
    ) -> Box<dyn Query> {
        match clause {
            Clause::Word { term, prefix } => {
                self.word_query(term, *prefix && allow_prefix, max_expansions)
            }
            // The text holds the tags too: one phrase query finds them in either.
            Clause::Phrase(terms) => phrase(self.fields.text, terms),
            Clause::Tag { field, terms } => phrase(self.fields.of_tag(*field), terms),
        }
    }

    /// The query for `spec`; words match as prefixes too only with `allow_prefix`.
    pub(super) fn build_query(
        &self,
        searcher: &tantivy::Searcher,
        spec: &SearchSpec,
        allow_prefix: bool,
    ) -> Box<dyn Query> {
        if let ([Clause::Word { term, .. }], []) =
            (spec.plan.required.as_slice(), spec.plan.excluded.as_slice())
            && !allow_prefix
        {
            return self.lone_word_query(searcher, term);
        }
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for clause in &spec.plan.required {
            clauses.push((
                Occur::Must,
                self.clause_query(clause, allow_prefix, spec.max_prefix_expansions),
            ));
        }
        // Exclusions are exact: `-live` should not also hide "liverpool".
        for clause in &spec.plan.excluded {
            clauses.push((Occur::MustNot, self.clause_query(clause, false, 0)));
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
