//! The registry: stage kinds by name (implemented ones, and kinds the paper suites name that are not
//! implemented yet, with their declared inputs, outputs and metrics), and through them the metrics: every
//! metric has an id `<kind>.<name>`, a unit, a direction and the kind that emits it.
use std::collections::BTreeMap;
use std::sync::Arc;

use super::stage::{ArtefactKind, DynStage, MetricSpec, Registered, Slot, Stage};

/// A kind the suites may name before it is implemented: validation checks its inputs and the metrics bound
/// to goldens; `suite plan` lists it as missing and `suite run` refuses to start.
#[derive(Debug, Clone)]
pub struct PlannedKind {
    pub kind: &'static str,
    /// The issue that implements it.
    pub issue: u32,
    pub about: &'static str,
    pub inputs: &'static [Slot],
    pub outputs: &'static [Slot],
    pub metrics: &'static [MetricSpec],
}

/// A kind as the registry knows it.
#[derive(Clone, Copy)]
pub enum KindRef<'a> {
    Implemented(&'a dyn DynStage),
    Planned(&'a PlannedKind),
}

impl<'a> KindRef<'a> {
    pub fn name(&self) -> &'static str {
        match self {
            KindRef::Implemented(s) => s.kind(),
            KindRef::Planned(p) => p.kind,
        }
    }
    pub fn inputs(&self) -> &'static [Slot] {
        match self {
            KindRef::Implemented(s) => s.inputs(),
            KindRef::Planned(p) => p.inputs,
        }
    }
    pub fn outputs(&self) -> &'static [Slot] {
        match self {
            KindRef::Implemented(s) => s.outputs(),
            KindRef::Planned(p) => p.outputs,
        }
    }
    pub fn metrics(&self) -> &'static [MetricSpec] {
        match self {
            KindRef::Implemented(s) => s.metrics(),
            KindRef::Planned(p) => p.metrics,
        }
    }
    pub fn about(&self) -> &'static str {
        match self {
            KindRef::Implemented(s) => s.about(),
            KindRef::Planned(p) => p.about,
        }
    }
    pub fn implemented(&self) -> Option<&'a dyn DynStage> {
        match self {
            KindRef::Implemented(s) => Some(*s),
            KindRef::Planned(_) => None,
        }
    }
    pub fn metric(&self, name: &str) -> Option<&'static MetricSpec> {
        self.metrics().iter().find(|m| m.name == name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("stage kind '{0}' is registered twice")]
    Duplicate(String),
    #[error("stage kind '{kind}': {msg}")]
    Invalid { kind: String, msg: String },
}

/// Stage kinds by name.
#[derive(Default, Clone)]
pub struct Registry {
    kinds: BTreeMap<&'static str, Arc<dyn DynStage>>,
    planned: BTreeMap<&'static str, PlannedKind>,
}

impl Registry {
    /// Every stage kind contracam implements, and the planned ones not implemented yet.
    pub fn builtin() -> Self {
        let mut r = Registry::default();
        super::stages::register_builtin(&mut r);
        for p in super::stages::planned() {
            // A kind that is implemented replaces its plan.
            if !r.kinds.contains_key(p.kind) {
                r.planned.insert(p.kind, p);
            }
        }
        r
    }

    /// Registers a stage kind; a second kind with the same name, duplicate slot or metric names, or
    /// outputs without a file name are refused.
    pub fn register<S: Stage>(&mut self) -> Result<(), RegistryError> {
        let d: Arc<dyn DynStage> = Arc::new(Registered::<S>::default());
        self.insert(d)
    }

    pub fn insert(&mut self, d: Arc<dyn DynStage>) -> Result<(), RegistryError> {
        let kind = d.kind();
        if self.kinds.contains_key(kind) {
            return Err(RegistryError::Duplicate(kind.into()));
        }
        check_declarations(kind, d.inputs(), d.outputs(), d.metrics())?;
        if let Some(m) = d
            .optional_metrics()
            .iter()
            .find(|m| !d.metrics().iter().any(|s| s.name == **m))
        {
            return Err(RegistryError::Invalid {
                kind: kind.into(),
                msg: format!("optional metric '{m}' is not declared"),
            });
        }
        self.planned.remove(kind);
        self.kinds.insert(kind, d);
        Ok(())
    }

    /// Declares a kind that is not implemented yet (ignored when an implementation is registered).
    pub fn plan(&mut self, p: PlannedKind) -> Result<(), RegistryError> {
        check_declarations(p.kind, p.inputs, p.outputs, p.metrics)?;
        if !self.kinds.contains_key(p.kind) {
            self.planned.insert(p.kind, p);
        }
        Ok(())
    }

    pub fn get(&self, kind: &str) -> Option<KindRef<'_>> {
        if let Some(s) = self.kinds.get(kind) {
            return Some(KindRef::Implemented(s.as_ref()));
        }
        self.planned.get(kind).map(KindRef::Planned)
    }

    /// All kinds, implemented and planned, sorted by name.
    pub fn kinds(&self) -> Vec<KindRef<'_>> {
        let mut v: Vec<KindRef> = self
            .kinds
            .values()
            .map(|s| KindRef::Implemented(s.as_ref()))
            .chain(self.planned.values().map(KindRef::Planned))
            .collect();
        v.sort_by_key(|k| k.name());
        v
    }

    /// Names of all known kinds (for "unknown kind" messages).
    pub fn names(&self) -> Vec<&'static str> {
        self.kinds().iter().map(|k| k.name()).collect()
    }

    /// The metric registry: (emitting kind, spec) for every metric of every known kind.
    pub fn metrics(&self) -> Vec<(&'static str, &'static MetricSpec)> {
        self.kinds()
            .iter()
            .flat_map(|k| k.metrics().iter().map(move |m| (k.name(), m)))
            .collect()
    }
}

fn check_declarations(
    kind: &str,
    inputs: &[Slot],
    outputs: &[Slot],
    metrics: &[MetricSpec],
) -> Result<(), RegistryError> {
    let bad = |msg: String| {
        Err(RegistryError::Invalid {
            kind: kind.into(),
            msg,
        })
    };
    if !super::config::is_safe_name(kind) {
        return bad(super::config::SAFE_NAME_RULE.into());
    }
    let mut seen = std::collections::BTreeSet::new();
    for s in inputs.iter().chain(outputs) {
        if !seen.insert(s.name) {
            return bad(format!("slot '{}' is declared twice", s.name));
        }
    }
    for o in outputs {
        if o.kind == ArtefactKind::Dataset {
            return bad(format!("output '{}' cannot be a dataset", o.name));
        }
        if o.file.is_empty() || o.file.contains('/') || o.file.starts_with('.') {
            return bad(format!(
                "output '{}' needs a plain file name inside the stage directory",
                o.name
            ));
        }
        if o.file == super::cache::RESULT_FILE || o.file == super::cache::DONE_FILE {
            return bad(format!("output '{}' uses a reserved file name", o.name));
        }
    }
    let mut names = std::collections::BTreeSet::new();
    for m in metrics {
        if !names.insert(m.name) {
            return bad(format!("metric '{}' is declared twice", m.name));
        }
        if m.name.is_empty() || m.name.contains('.') {
            return bad(format!("metric '{}': a name without dots", m.name));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::stage::*;

    struct Twice;
    impl Stage for Twice {
        type Params = serde_json::Value;
        const KIND: &'static str = "twice";
        const VERSION: u32 = 1;
        const INPUTS: &'static [Slot] = &[];
        const OUTPUTS: &'static [Slot] = &[
            Slot::file("a", ArtefactKind::Json, "a.json"),
            Slot::file("a", ArtefactKind::Json, "b.json"),
        ];
        const METRICS: &'static [MetricSpec] = &[];
        fn run(_: &Self::Params, _: &mut StageContext) -> Result<StageResult, StageError> {
            Ok(StageResult::default())
        }
    }

    #[test]
    fn builtin_registry_knows_the_issue_kinds() {
        let r = Registry::builtin();
        for k in [
            "pretrain",
            "localize",
            "eval-masks",
            "linear-eval",
            "import",
            "eval-maxboxacc",
            "eval-bg-challenge",
            "eval-shift",
            "train-classifier",
            "detectron2-finetune",
        ] {
            assert!(r.get(k).is_some(), "{k} unknown: {:?}", r.names());
        }
        // Every metric id is unique per kind and has a unit and a direction.
        let m = r.metrics();
        let mut ids: Vec<String> = m.iter().map(|(k, s)| format!("{k}.{}", s.name)).collect();
        let n = ids.len();
        ids.dedup();
        assert_eq!(ids.len(), n);
    }

    #[test]
    fn duplicate_slots_and_kinds_are_refused() {
        let mut r = Registry::default();
        let e = r.register::<Twice>().unwrap_err().to_string();
        assert!(e.contains("'a' is declared twice"), "{e}");
        let mut r = Registry::builtin();
        let first = r.kinds().len();
        let e = r
            .register::<crate::suite::stages::center_box::CenterBox>()
            .unwrap_err();
        assert!(matches!(e, RegistryError::Duplicate(_)));
        assert_eq!(r.kinds().len(), first);
    }
}
