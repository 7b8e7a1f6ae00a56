//! Response headers from sources: the range check never panics, and what it accepts is exactly
//! the range asked for.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerdex_shared::peer::range_answer_ok;

fuzz_target!(|input: (u16, Option<&str>, Option<&str>, u64, u64)| {
    let (status, content_range, content_length, start, end) = input;
    if range_answer_ok(status, content_range, content_length, start, end) {
        assert!(start < end);
        if status == 206 {
            let expected = format!("bytes {start}-{}/", end - 1);
            assert!(content_range.is_some_and(|v| v.starts_with(&expected)));
        } else {
            assert_eq!(status, 200);
            assert_eq!(start, 0);
        }
    }
});
