//! The integration test binary: the real rpcdns against a real etcd, over
//! real sockets. `harness` holds the shared machinery; each other module is
//! one area of the SPEC and says at its top what belongs in it.

mod answers;
mod config;
mod demo;
mod deploy;
mod forward;
mod fuzz_corpus;
mod harness;
mod lifecycle;
mod metrics;
mod security;
mod sync;
mod transport;
