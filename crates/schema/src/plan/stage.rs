//! Expand and contract: a plan cut into the three stages an application
//! is deployed between (`etl schema apply --phase expand|backfill|contract`).
//!
//! - **expand** adds: new tables, columns, indexes, the new column of a
//!   type change and the trigger keeping it in step, a renamed column's
//!   twin under its new name (kept in step both ways by a trigger), a
//!   renamed table's old name as a view over it, a NOT NULL's CHECK
//!   (`NOT VALID`: only new rows are checked), a repartitioned table's
//!   new twin and the trigger writing into it. Code of the old and of the
//!   new schema both work on the result.
//! - **backfill** fills and proves: the batches that fill a new column,
//!   the scans that validate a constraint, a repartition's move.
//! - **contract** removes what only the old code used: drops, the swap of
//!   a type change's columns, a rename's twin or view, SET NOT NULL, a
//!   repartition's swap and the old table.
//!
//! A statement's stage is the latest of its rule's and those of the
//! statements it waits on, so no stage waits on a later one.

use super::Step;

/// One of the three stages of a staged change.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Expand,
    Backfill,
    Contract,
}

impl Stage {
    pub const ALL: [Stage; 3] = [Stage::Expand, Stage::Backfill, Stage::Contract];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Expand => "expand",
            Stage::Backfill => "backfill",
            Stage::Contract => "contract",
        }
    }

    pub fn named(name: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The stage after this one.
    pub fn next(self) -> Option<Stage> {
        match self {
            Stage::Expand => Some(Stage::Backfill),
            Stage::Backfill => Some(Stage::Contract),
            Stage::Contract => None,
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The stage a rule's statement belongs to by itself.
fn by_rule(step: &Step) -> Stage {
    match step.rule.as_ref() {
        "phased-backfill"
        | "phased-rename-backfill"
        | "repartition-move"
        | "set-not-null-validate"
        | "validate-constraint" => Stage::Backfill,
        "phased-contract"
        | "phased-rename-contract"
        | "repartition-swap"
        | "repartition-drop-old"
        | "phased-rename-view-drop"
        | "set-not-null"
        | "set-not-null-cleanup" => Stage::Contract,
        rule if step.drop_phase || rule.starts_with("drop-") => Stage::Contract,
        _ => Stage::Expand,
    }
}

/// Gives each of the ordered, numbered `steps` its stage.
pub(super) fn assign(steps: &mut [Step]) {
    for i in 0..steps.len() {
        let waits = steps[i]
            .after
            .iter()
            .filter_map(|&n| steps.get(n - 1).and_then(|s| s.stage))
            .max();
        let own = by_rule(&steps[i]);
        steps[i].stage = Some(waits.map_or(own, |w| w.max(own)));
        if waits > Some(own) {
            let stage = steps[i].stage.expect("just set");
            steps[i]
                .reasons
                .push(format!("{stage}: waits on a statement of that stage"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(n: usize, rule: &str, after: &[usize]) -> Step {
        serde_json::from_value(serde_json::json!({
            "n": n, "kind": "index", "name": format!("public.i{n}"), "change": "changed",
            "sql": "SELECT 1", "rule": rule, "risk": "low", "reasons": [], "tables": [],
            "transactional": true, "after": after, "work": [],
        }))
        .unwrap()
    }

    #[test]
    fn a_statement_takes_the_latest_stage_of_what_it_waits_on() {
        let mut steps = vec![
            step(1, "drop-index", &[]),
            step(2, "create-index", &[1]),
            step(3, "create-index", &[]),
            step(4, "set-not-null-validate", &[3]),
            step(5, "add-column", &[4]),
        ];
        assign(&mut steps);
        let stages: Vec<Stage> = steps.iter().map(|s| s.stage.unwrap()).collect();
        assert_eq!(
            stages,
            [
                Stage::Contract,
                Stage::Contract,
                Stage::Expand,
                Stage::Backfill,
                Stage::Backfill
            ]
        );
        assert!(steps[1].reasons[0].starts_with("contract: waits on"));
        assert!(steps[2].reasons.is_empty());
    }
}
