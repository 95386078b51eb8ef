//! The SourceSet parser never panics, and whatever it accepts is consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use multiloop::SourceSet;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for parsed in [
        text.parse::<SourceSet>(),
        SourceSet::parse_allowing_non_loopback(text),
    ] {
        let Ok(set) = parsed else { continue };
        assert!(!set.is_empty());
        let len = set.len();
        for index in [0, len / 2, len - 1] {
            let ip = set.get(index).expect("every index below len() has a member");
            assert!(set.contains(ip));
        }
        assert!(set.get(len).is_none());
    }
});
