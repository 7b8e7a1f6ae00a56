//! Building tantivy queries from a bounded plan: no user text reaches a query parser.

use super::*;

impl SearchIndex {
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
            Clause::Phrase(terms) => Box::new(PhraseQuery::new(
                terms
                    .iter()
                    .map(|t| Term::from_field_text(self.fields.text, t))
                    .collect(),
            )),
        }
    }

    /// The query for `spec`; words match as prefixes too only with `allow_prefix`.
    pub(super) fn build_query(&self, spec: &SearchSpec, allow_prefix: bool) -> Box<dyn Query> {
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
