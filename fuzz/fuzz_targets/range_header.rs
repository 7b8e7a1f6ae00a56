//! `Range` headers from peers: a satisfiable range always lies inside the file.
#![no_main]

use hyper::header::HeaderValue;
use libfuzzer_sys::fuzz_target;
use peerdex_agent::bench::{RangeRequest, parse_range};

fuzz_target!(|input: (u64, &str)| {
    let (len, header) = input;
    let Ok(value) = HeaderValue::from_str(header) else {
        return;
    };
    if let RangeRequest::Partial(range) = parse_range(Some(&value), len) {
        assert!(range.start < range.end, "{range:?} of {len}");
        assert!(range.end <= len, "{range:?} of {len}");
    }
});
