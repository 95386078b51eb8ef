//! The memcached reply decoder, text and meta, never panics, and never hands out a value for a
//! key not asked for or past its bound, whatever the server sends.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(broken) = multiloop::memcached::fuzz_reply(data) {
        panic!("{broken}");
    }
});
