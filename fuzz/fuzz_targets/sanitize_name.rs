//! Names from peers: the sanitized name is always one plain component inside the output folder.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use peerdex_download::names::sanitize_file_name;

fuzz_target!(|name: &str| {
    let clean = sanitize_file_name(name, "fallback");
    assert!(!clean.is_empty());
    assert!(clean != "." && clean != "..");
    assert!(!clean.contains('/') && !clean.contains('\\'));
    assert!(!clean.chars().any(char::is_control));
    assert!(!clean.starts_with('.'));
    assert!(clean.len() <= 201);
    let root = Path::new("/downloads/here");
    assert_eq!(root.join(&clean).parent(), Some(root));
});
