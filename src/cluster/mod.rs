//! The manager cluster: its trust, after swarmkit's `ca/` (the cluster's own root CA, node
//! certificates that say who a node is and are renewed as they age, Swarm-format join tokens,
//! mutual TLS on every link), Raft between the managers, the gRPC services beside it, and
//! how a node starts (`init`, `join`, or again from its data dir).

pub mod autolock;
pub mod ca;
pub mod config;
pub mod files;
pub mod lifecycle;
pub mod node;
pub mod raft;
pub mod renew;
pub mod rpc;
pub mod seal;
pub mod services;
pub mod start;
pub mod tls;
pub mod token;

#[cfg(test)]
mod tests;
