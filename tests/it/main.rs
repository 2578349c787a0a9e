//! Integration tests: one binary (see ARCHITECTURE.md), real git repositories, real processes,
//! the real Docker Engine.

mod cli_docs;
mod cli_gitops_way;
mod cluster;
mod docker_runtime;
mod gitops;
mod history;
mod notify;
mod plan_cli;
mod secrets;
mod spec_corpus;
mod stacks_repo;
mod support;
mod up;
mod up_api;
mod up_content;
mod up_faults;
