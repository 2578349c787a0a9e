//! Helpers for the project's own tests against a real Docker Engine: local test images (there
//! is no registry), skipping or failing when there is no engine, exec into containers, and
//! clean-up by label. Not part of the product's API.
#![doc(hidden)]

pub mod docker;
pub mod images;

pub use docker::{
    docker_or_skip, exec, remove_labelled, require_docker, unique_suffix, ExecOutput,
};
pub use images::{ensure_test_images, BUSYBOX, EXITS, TEST_LABEL, UNHEALTHY};
