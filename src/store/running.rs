//! What the cluster runs, as a desired state: the format `plan --server` diffs against, and
//! the "before" of each commit's plan in the history.

use std::collections::BTreeMap;

use super::state::{Owned, State};
use crate::desired::DesiredState;
use crate::spec::StackSpec;

impl State {
    /// The services and objects the store holds, grouped by stack as a stack file has them.
    pub fn running_state(&self) -> DesiredState {
        let mut out = DesiredState {
            revision: self.revision.applied.as_ref().map(|a| a.commit.clone()),
            ..Default::default()
        };
        for svc in self.services.values() {
            entry(&mut out, &svc.spec.stack)
                .services
                .insert(svc.spec.name.clone(), svc.spec.clone());
        }
        place(&mut out, &self.networks, |st| &mut st.networks);
        place(&mut out, &self.volumes, |st| &mut st.volumes);
        place(&mut out, &self.secrets, |st| &mut st.secrets);
        place(&mut out, &self.configs, |st| &mut st.configs);
        out
    }
}

/// Objects are keyed by their short name in a stack file; the full name is unique too.
fn place<T: Clone>(
    out: &mut DesiredState,
    objects: &BTreeMap<String, Owned<T>>,
    section: fn(&mut StackSpec) -> &mut BTreeMap<String, T>,
) {
    for (name, o) in objects {
        let key = short(&o.stack, name);
        section(entry(out, &o.stack)).insert(key, o.spec.clone());
    }
}

fn entry<'a>(out: &'a mut DesiredState, stack: &str) -> &'a mut StackSpec {
    out.stacks
        .entry(stack.to_string())
        .or_insert_with(|| StackSpec {
            name: stack.to_string(),
            ..Default::default()
        })
}

fn short(stack: &str, full: &str) -> String {
    full.strip_prefix(&format!("{stack}_"))
        .unwrap_or(full)
        .to_string()
}
