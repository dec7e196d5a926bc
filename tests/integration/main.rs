//! The integration test binary: the real rpcdns against a real etcd, over
//! real sockets. `harness` holds the shared machinery; each other module is
//! one area of the SPEC and says at its top what belongs in it.

mod answers;
mod clients;
mod cluster;
mod config;
mod converge;
mod demo;
mod deploy;
mod faults;
mod forward;
mod fuzz_corpus;
mod grpc;
mod hardening;
mod harness;
mod hostile;
mod layout;
mod lifecycle;
mod metrics;
mod netfaults;
mod programs;
mod replicas;
mod security;
mod skydns;
mod soak;
mod sources;
mod state;
mod sync;
mod transport;
