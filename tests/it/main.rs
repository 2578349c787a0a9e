//! Integration tests: one binary (see ARCHITECTURE.md), real git repositories, real processes.

mod plan_cli;
mod secrets;
mod support;
