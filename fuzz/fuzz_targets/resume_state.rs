//! Download state files (on disk, maybe damaged): decoding never panics, and what decodes
//! encodes back to the same state.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerdex_download::part::PartState;

fuzz_target!(|data: &[u8]| {
    if let Ok(state) = PartState::decode(data) {
        let again = PartState::decode(&state.encode()).expect("re-encoded state decodes");
        assert_eq!(again, state);
    }
});
