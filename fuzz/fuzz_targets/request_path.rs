//! Fuzzes the whole request path: one packet → fast or full path → the
//! response bytes, over UDP at three server limits and over TCP, with the
//! invariants of `rpcdns::fuzzing::check_response` on every response.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rpcdns::fuzzing::RequestPath;

static PATH: OnceLock<RequestPath> = OnceLock::new();

fuzz_target!(|packet: &[u8]| {
    let path = PATH.get_or_init(RequestPath::new);
    if let Err(violation) = path.check(packet) {
        panic!("{violation}");
    }
});
