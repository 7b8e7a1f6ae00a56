//! Search text from anyone: parsing never panics and respects the term cap.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerdex_server::query::{QueryLimits, parse};

fuzz_target!(|text: &str| {
    let limits = QueryLimits {
        max_query_bytes: 1024,
        max_terms: 16,
    };
    if let Ok(plan) = parse(text, &limits) {
        assert!(plan.required.len() + plan.excluded.len() <= limits.max_terms);
    }
});
