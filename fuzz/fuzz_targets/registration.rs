//! Fuzzes etcd key/value parsing: config selector, key, NUL, value →
//! Registration or skip reason, with the invariants of
//! `rpcdns::fuzzing::check_key_value`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = rpcdns::fuzzing::check_key_value(data) {
        panic!("{violation}");
    }
});
