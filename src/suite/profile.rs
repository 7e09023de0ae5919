//! Profiles and `--set` overrides of a graph suite: one file describes one experiment at every scale. The
//! file as written is the `paper` profile; `[profiles.<name>]` holds what a reduced scale changes:
//!
//! ```toml
//! [profiles.ci]
//! about = "tiny: 4 samples per dataset, 1 epoch"
//! seeds = [0]                                  # replaces the suite's seeds
//! [profiles.ci.datasets.coco_train]
//! limit = 4                                    # the first 4 samples of the split, in index order
//! [profiles.ci.kinds.pretrain]                 # params of every stage of kind `pretrain`
//! epochs = 1
//! batch_size = 4
//! [profiles.ci.stages.vanilla.params]          # params of one stage (applied after `kinds`)
//! arch = "resnet18"
//! ```
//!
//! Tables are merged key by key (a nested table too); any other value replaces the one written. The
//! result is validated as if it had been written so. `--set KEY=VALUE` then sets one dotted key of that
//! table to a TOML value (unquoted text that is no TOML value is taken as a string).
use std::collections::BTreeMap;

use serde::Deserialize;

/// `[profiles.<name>]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileDecl {
    /// What the profile is for (shown by `suite validate`).
    #[serde(default)]
    pub about: Option<String>,
    /// Replaces the suite's `seeds`.
    #[serde(default)]
    pub seeds: Option<Vec<u64>>,
    /// Merged into `[datasets.<id>]` (e.g. `limit`, or `synth = { count = 8 }`).
    #[serde(default)]
    pub datasets: BTreeMap<String, toml::Table>,
    /// Merged into the `params` of every stage of the kind.
    #[serde(default)]
    pub kinds: BTreeMap<String, toml::Table>,
    /// Merged into one stage (after `kinds`).
    #[serde(default)]
    pub stages: BTreeMap<String, StageOverride>,
}

/// `[profiles.<name>.stages.<stage>]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageOverride {
    #[serde(default)]
    pub params: Option<toml::Table>,
    #[serde(default)]
    pub seeds: Option<Vec<u64>>,
    #[serde(default)]
    pub resources: Option<toml::Table>,
}

/// Merges `over` into `base` key by key: tables recursively, anything else replaced.
pub fn merge(base: &mut toml::Table, over: &toml::Table) {
    for (k, v) in over {
        match (base.get_mut(k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

/// The table at `key` of `t`, created empty when absent; an error when it is another value.
fn table_at<'t>(t: &'t mut toml::Table, key: &str) -> Option<&'t mut toml::Table> {
    t.entry(key.to_string())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
}

fn names(t: Option<&toml::Value>) -> String {
    let v: Vec<&str> = t
        .and_then(|v| v.as_table())
        .map(|t| t.keys().map(|k| k.as_str()).collect())
        .unwrap_or_default();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// Applies profile `name` to the suite table `t` (without its `[profiles]`). An error is the key path inside
/// the file and what is wrong: a profile naming a dataset, stage or kind the suite does not have.
pub fn apply_profile(
    t: &mut toml::Table,
    name: &str,
    p: &ProfileDecl,
) -> Result<(), (String, String)> {
    let key = |rest: &str| format!("profiles.{name}.{rest}");
    if let Some(seeds) = &p.seeds {
        t.insert(
            "seeds".into(),
            toml::Value::Array(
                seeds
                    .iter()
                    .map(|s| toml::Value::Integer(*s as i64))
                    .collect(),
            ),
        );
    }
    for (id, over) in &p.datasets {
        let known = names(t.get("datasets"));
        let Some(d) = t
            .get_mut("datasets")
            .and_then(|d| d.as_table_mut())
            .and_then(|d| d.get_mut(id))
            .and_then(|d| d.as_table_mut())
        else {
            return Err((
                key(&format!("datasets.{id}")),
                format!("the suite declares no dataset '{id}'; declared: {known}"),
            ));
        };
        merge(d, over);
    }
    let known_stages = names(t.get("stages"));
    let stages = t.get_mut("stages").and_then(|s| s.as_table_mut());
    let Some(stages) = stages else {
        return Err(("stages".into(), "a graph suite needs [stages]".into()));
    };
    for (kind, over) in &p.kinds {
        let mut hit = false;
        for (_, st) in stages.iter_mut() {
            let Some(st) = st.as_table_mut() else {
                continue;
            };
            if st.get("kind").and_then(|k| k.as_str()) != Some(kind.as_str()) {
                continue;
            }
            hit = true;
            if let Some(params) = table_at(st, "params") {
                merge(params, over);
            }
        }
        if !hit {
            let mut kinds: Vec<&str> = stages
                .values()
                .filter_map(|s| s.get("kind").and_then(|k| k.as_str()))
                .collect();
            kinds.sort();
            kinds.dedup();
            return Err((
                key(&format!("kinds.{kind}")),
                format!(
                    "no stage of the suite has kind '{kind}'; its kinds: {}",
                    kinds.join(", ")
                ),
            ));
        }
    }
    for (id, over) in &p.stages {
        let Some(st) = stages.get_mut(id).and_then(|s| s.as_table_mut()) else {
            return Err((
                key(&format!("stages.{id}")),
                format!("the suite declares no stage '{id}'; declared: {known_stages}"),
            ));
        };
        for (field, value) in [("params", &over.params), ("resources", &over.resources)] {
            if let Some(v) = value {
                if let Some(at) = table_at(st, field) {
                    merge(at, v);
                }
            }
        }
        if let Some(seeds) = &over.seeds {
            st.insert(
                "seeds".into(),
                toml::Value::Array(
                    seeds
                        .iter()
                        .map(|s| toml::Value::Integer(*s as i64))
                        .collect(),
                ),
            );
        }
    }
    Ok(())
}

/// The TOML value of `--set` text: a TOML value when it parses as one (`2`, `true`, `"x"`, `[1, 2]`),
/// else the text as a string (a sha256 or a path need no quotes).
pub fn set_value(text: &str) -> toml::Value {
    format!("v = {text}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(text.into()))
}

/// Applies one `--set KEY=VALUE` to the suite table: KEY is a dotted path under `seeds`, `datasets.<id>` or
/// `stages.<id>` of a declared dataset or stage; missing tables below those are created (the suite's own
/// validation then refuses a key its kind does not take).
pub fn apply_set(t: &mut toml::Table, set: &str) -> Result<(), (String, String)> {
    let flag = format!("--set {set}");
    let Some((key, text)) = set.split_once('=') else {
        return Err((
            flag,
            "write KEY=VALUE, e.g. stages.x.params.epochs=2".into(),
        ));
    };
    let key = key.trim();
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err((flag, format!("'{key}' is not a dotted key")));
    }
    match parts.as_slice() {
        ["seeds"] => {}
        ["datasets" | "stages", id, _, ..] => {
            let known = names(t.get(parts[0]));
            let declared = t
                .get(parts[0])
                .and_then(|x| x.as_table())
                .is_some_and(|x| x.contains_key(*id));
            if !declared {
                let what = if parts[0] == "stages" {
                    "stage"
                } else {
                    "dataset"
                };
                return Err((
                    flag,
                    format!("the suite declares no {what} '{id}'; declared: {known}"),
                ));
            }
        }
        _ => {
            return Err((
                flag,
                "KEY must be `seeds`, `datasets.<id>.<field>...` or `stages.<id>.<field>...`"
                    .into(),
            ))
        }
    }
    let (last, dirs) = parts.split_last().unwrap_or((&"", &[]));
    let mut at: &mut toml::Table = t;
    for (i, d) in dirs.iter().enumerate() {
        at = table_at(at, d).ok_or_else(|| {
            (
                flag.clone(),
                format!("{} is not a table", parts[..=i].join(".")),
            )
        })?;
    }
    at.insert((*last).to_string(), set_value(text.trim()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_is_key_by_key_and_recursive() {
        let mut base: toml::Table = "a = 1\nb = { c = 2, d = 3 }".parse().unwrap();
        merge(&mut base, &"b = { c = 5 }\ne = [1]".parse().unwrap());
        assert_eq!(base.to_string(), "a = 1\ne = [1]\n\n[b]\nc = 5\nd = 3\n");
    }

    #[test]
    fn set_values_are_toml_or_text() {
        assert_eq!(set_value("2"), toml::Value::Integer(2));
        assert_eq!(set_value("\"2\""), toml::Value::String("2".into()));
        assert_eq!(
            set_value("ab12ff"),
            toml::Value::String("ab12ff".into()),
            "a hash needs no quotes"
        );
        assert_eq!(set_value("[30, 50]").as_array().map(|a| a.len()), Some(2));
    }

    #[test]
    fn set_refuses_undeclared_stages_and_other_keys() {
        let mut t: toml::Table = "[stages.a]\nkind = \"import\"".parse().unwrap();
        apply_set(&mut t, "stages.a.params.sha256=ab").unwrap();
        assert_eq!(t["stages"]["a"]["params"]["sha256"].as_str(), Some("ab"));
        let (k, m) = apply_set(&mut t, "stages.b.params.x=1").unwrap_err();
        assert!(
            k.contains("stages.b.params.x") && m.contains("declared: a"),
            "{k}: {m}"
        );
        assert!(apply_set(&mut t, "name=x").is_err());
        assert!(apply_set(&mut t, "stages.a.params").is_err(), "no =");
        assert!(
            apply_set(&mut t, "stages.a.kind.x=1").is_err(),
            "kind is not a table"
        );
    }
}
