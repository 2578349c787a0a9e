//! Keys that Compose files may hold but swarm mode does not use. They are accepted (so files
//! written for `docker compose` still deploy) and each one gives a warning naming its line and,
//! where there is one, the swarm-mode way to say the same thing.

/// Service keys swarm mode ignores, with a hint.
pub const SERVICE_KEYS: &[(&str, &str)] = &[
    ("annotations", ""),
    ("attach", ""),
    ("blkio_config", ""),
    (
        "build",
        "build images in CI and reference them with `image:`",
    ),
    ("cgroup", ""),
    ("cgroup_parent", ""),
    (
        "container_name",
        "swarm names containers <stack>_<service>.<slot>.<task-id>",
    ),
    ("cpu_count", "use deploy.resources.limits.cpus"),
    ("cpu_percent", "use deploy.resources.limits.cpus"),
    ("cpu_period", "use deploy.resources.limits.cpus"),
    ("cpu_quota", "use deploy.resources.limits.cpus"),
    ("cpu_rt_period", ""),
    ("cpu_rt_runtime", ""),
    ("cpu_shares", "use deploy.resources.reservations.cpus"),
    ("cpus", "use deploy.resources.limits.cpus"),
    ("cpuset", ""),
    (
        "depends_on",
        "services start independently; use healthchecks and retries",
    ),
    ("develop", ""),
    ("device_cgroup_rules", ""),
    ("devices", ""),
    (
        "expose",
        "services on a shared network reach each other on every port",
    ),
    ("extends", "use YAML anchors and merge keys (`<<: *base`)"),
    (
        "external_links",
        "attach the service to a shared external network",
    ),
    (
        "gpus",
        "use deploy.resources.reservations.generic_resources",
    ),
    ("group_add", ""),
    ("ipc", ""),
    ("label_file", ""),
    (
        "links",
        "services on a shared network find each other by service name",
    ),
    ("mac_address", ""),
    ("mem_limit", "use deploy.resources.limits.memory"),
    (
        "mem_reservation",
        "use deploy.resources.reservations.memory",
    ),
    ("mem_swappiness", ""),
    ("memswap_limit", ""),
    ("network_mode", "use networks:"),
    ("oom_kill_disable", ""),
    ("oom_score_adj", ""),
    ("pid", ""),
    ("pids_limit", "use deploy.resources.limits.pids"),
    (
        "platform",
        "use a placement constraint on node.platform.arch",
    ),
    ("post_start", ""),
    ("pre_stop", ""),
    ("privileged", ""),
    ("profiles", ""),
    ("pull_policy", ""),
    ("restart", "use deploy.restart_policy"),
    ("runtime", ""),
    ("scale", "use deploy.replicas"),
    ("security_opt", ""),
    ("shm_size", "mount a tmpfs at /dev/shm"),
    ("stop_timeout", "use stop_grace_period"),
    ("storage_opt", ""),
    ("userns_mode", ""),
    ("uts", ""),
    ("volumes_from", "use a named volume"),
];

/// Top-level keys swarm mode ignores.
pub const TOP_LEVEL_KEYS: &[(&str, &str)] = &[
    ("name", "the stack is named after its directory"),
    ("include", "put each stack in its own directory"),
    ("models", ""),
];
