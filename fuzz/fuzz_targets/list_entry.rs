//! File-list lines from peers: decoding and validation never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerdex_shared::api::{DeltaOp, ListEntry};
use peerdex_shared::validate::{PathLimits, validate_entry};

fuzz_target!(|data: &[u8]| {
    let limits = PathLimits::default();
    for line in data.split(|b| *b == b'\n') {
        if let Ok(entry) = serde_json::from_slice::<ListEntry>(line) {
            let _ = validate_entry(&entry, &limits);
        }
        if let Ok(DeltaOp::Add(entry) | DeltaOp::Change(entry)) = serde_json::from_slice(line) {
            let _ = validate_entry(&entry, &limits);
        }
    }
});
