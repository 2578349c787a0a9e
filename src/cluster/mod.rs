//! The manager cluster's trust, after swarmkit's `ca/`: the cluster's own root CA, node
//! certificates that say who a node is, Swarm-format join tokens, and the mutual-TLS
//! configuration every link between nodes uses. (Raft, the gRPC services and `init`/`join`
//! build on this; see the manager-cluster issue.)

pub mod ca;
pub mod config;
pub mod files;
pub mod node;
pub mod raft;
pub mod rpc;
pub mod services;
pub mod start;
pub mod tls;
pub mod token;

#[cfg(test)]
mod tests;
