//! The restart supervisor's decision, as a pure function: a slot's task has ended while the
//! slot should run; is it replaced, when, or does the slot stay down?

use crate::spec::model::{RestartCondition, RestartPolicy};
use crate::store::{Millis, Task, TaskState};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Replace the task once `at` has passed.
    ReplaceAt { at: Millis, is_restart: bool },
    /// Leave the slot empty until the spec changes, for this reason.
    StayDown(String),
}

/// Decide for a slot whose newest task `ended` has stopped for good.
pub fn restart_decision(policy: &RestartPolicy, ended: &Task, now: Millis) -> Decision {
    let finished = ended.status.timestamp;
    // Stopped on purpose (update, drain, scale): the slot is refilled at once, no attempt spent.
    if ended.desired_state > TaskState::Running {
        return Decision::ReplaceAt {
            at: now,
            is_restart: false,
        };
    }
    let exited_cleanly = ended.status.state == TaskState::Complete;
    match policy.condition {
        RestartCondition::None => {
            return Decision::StayDown("restart_policy condition is none".into());
        }
        RestartCondition::OnFailure if exited_cleanly => {
            return Decision::StayDown(
                "task completed; restart_policy condition is on-failure".into(),
            );
        }
        _ => {}
    }
    if policy.max_attempts > 0 {
        let window = policy.window.as_std().as_millis() as Millis;
        let counted = ended
            .restarts
            .iter()
            .filter(|t| window == 0 || **t + window >= finished)
            .count() as u64;
        if counted >= policy.max_attempts {
            return Decision::StayDown(format!(
                "restart_policy max_attempts ({}) reached",
                policy.max_attempts
            ));
        }
    }
    let delay = policy.delay.as_std().as_millis() as Millis;
    Decision::ReplaceAt {
        at: finished.saturating_add(delay).max(now),
        is_restart: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::units::Duration;
    use crate::store::TaskStatus;

    fn ended(state: TaskState, at: Millis, restarts: Vec<Millis>) -> Task {
        Task {
            id: "t".into(),
            service: "s".into(),
            slot: Some(1),
            node: "n".into(),
            service_version: 1,
            spec: serde_json::from_value(serde_json::json!({
                "container": {"image": "x", "env": [], "labels": {}, "read_only": false, "tty": false,
                  "stdin_open": false, "mounts": [], "ulimits": {}, "sysctls": {}, "cap_add": [],
                  "cap_drop": [], "extra_hosts": [], "dns": [], "dns_search": [], "dns_options": [],
                  "secrets": [], "configs": []},
                "resources": {"reserve_generic": {}},
                "restart_policy": {"condition": "any", "delay": "5s", "max_attempts": 0, "window": "0s"},
                "placement": {"constraints": [], "spread": [], "max_replicas_per_node": 0},
                "networks": []
            }))
            .unwrap(),
            endpoint: Default::default(),
            desired_state: TaskState::Running,
            status: TaskStatus {
                state,
                timestamp: at,
                message: String::new(),
                error: None,
                container_id: None,
                exit_code: None,
                running_since: None,
            },
            created_at: 0,
            restarts,
        }
    }

    fn policy(condition: RestartCondition, max_attempts: u64, window_s: u64) -> RestartPolicy {
        RestartPolicy {
            condition,
            delay: Duration::from_secs(5),
            max_attempts,
            window: Duration::from_secs(window_s),
        }
    }

    #[test]
    fn replacement_waits_for_the_delay_after_the_task_stopped() {
        let d = restart_decision(
            &policy(RestartCondition::Any, 0, 0),
            &ended(TaskState::Failed, 10_000, vec![]),
            11_000,
        );
        assert_eq!(
            d,
            Decision::ReplaceAt {
                at: 15_000,
                is_restart: true
            }
        );
    }

    #[test]
    fn conditions() {
        let none = policy(RestartCondition::None, 0, 0);
        assert!(matches!(
            restart_decision(&none, &ended(TaskState::Failed, 0, vec![]), 0),
            Decision::StayDown(_)
        ));
        let on_failure = policy(RestartCondition::OnFailure, 0, 0);
        assert!(matches!(
            restart_decision(&on_failure, &ended(TaskState::Complete, 0, vec![]), 0),
            Decision::StayDown(_)
        ));
        assert!(matches!(
            restart_decision(&on_failure, &ended(TaskState::Failed, 0, vec![]), 0),
            Decision::ReplaceAt { .. }
        ));
        let any = policy(RestartCondition::Any, 0, 0);
        assert!(matches!(
            restart_decision(&any, &ended(TaskState::Complete, 0, vec![]), 0),
            Decision::ReplaceAt { .. }
        ));
    }

    #[test]
    fn max_attempts_counts_restarts_and_the_window_forgets_old_ones() {
        let p = policy(RestartCondition::Any, 2, 0);
        assert!(matches!(
            restart_decision(&p, &ended(TaskState::Failed, 100, vec![10]), 100),
            Decision::ReplaceAt { .. }
        ));
        assert!(matches!(
            restart_decision(&p, &ended(TaskState::Failed, 100, vec![10, 50]), 100),
            Decision::StayDown(_)
        ));
        let windowed = policy(RestartCondition::Any, 2, 60);
        // Restarts at 0s and 10s; failure at 100s: both are outside the 60s window.
        let t = ended(TaskState::Failed, 100_000, vec![0, 10_000]);
        assert!(matches!(
            restart_decision(&windowed, &t, 100_000),
            Decision::ReplaceAt { .. }
        ));
        let t = ended(TaskState::Failed, 100_000, vec![50_000, 90_000]);
        assert!(matches!(
            restart_decision(&windowed, &t, 100_000),
            Decision::StayDown(_)
        ));
    }

    #[test]
    fn a_task_stopped_on_purpose_is_replaced_at_once_without_spending_an_attempt() {
        let mut t = ended(TaskState::Shutdown, 100, vec![1, 2, 3]);
        t.desired_state = TaskState::Shutdown;
        let p = policy(RestartCondition::None, 1, 0);
        assert_eq!(
            restart_decision(&p, &t, 200),
            Decision::ReplaceAt {
                at: 200,
                is_restart: false
            }
        );
    }
}
