//! reconciler: a declarative GitOps reconciler for containers, modelled on Docker Swarm mode.
//!
//! The crate is split into rooms with one job each (see ARCHITECTURE.md). The pure cores
//! (`spec`, `desired::load`, `plan`) take data and return data; the shells (`cli`, git access,
//! files) do the I/O.
#![forbid(unsafe_code)]

pub mod agent;
pub mod api;
pub mod cli;
pub mod cluster;
pub mod desired;
pub mod dispatcher;
pub mod gitops;
pub mod logging;
pub mod manager;
pub mod notify;
pub mod orchestrator;
pub mod plan;
pub mod secrets;
pub mod spec;
pub mod store;
pub mod testing;
