//! The worker side of the cluster: what runs tasks on a node.
//!
//! - [`runtime`]: the `Runtime` trait the orchestrator drives, one call per step of a task.
//! - [`docker`]: its implementation on the local Docker Engine (bollard).
//! - [`labels`]: the labels that let a restarted agent adopt its containers.
//! - [`task_files`]: secret and config files, kept on a tmpfs and bind-mounted read-only.

pub mod docker;
pub mod labels;
pub mod runtime;
pub mod task_files;

pub use docker::DockerRuntime;
pub use runtime::{
    ContainerId, ContainerRequest, ContainerState, Health, ObservedContainer, ObservedObject,
    Runtime, RuntimeError, TaskRef,
};
pub mod assignment;
pub mod executor;
pub mod local_files;
pub mod session;
