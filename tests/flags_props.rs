//! Property tests: the hash stays in [0, 1], variant choice follows the cumulative weights, and
//! evaluation is total (never panics) on arbitrary definitions and properties.

use proptest::prelude::*;
use serde_json::{json, Map, Value};
use switchyard::flags::bucketing::{hash, pick_variant, variant_bounds};
use switchyard::flags::{CompiledFlags, EvalInput, FlagDefinitions};

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        prop_oneof![
            Just("exact"),
            Just("regex"),
            Just("gt"),
            Just("is_date_before"),
            Just("semver_caret"),
            Just("cohort"),
            Just("flag"),
            Just("AND"),
            Just("OR"),
            Just("-7d"),
            Just("1.2.*"),
            Just("(["),
            Just("key"),
            Just("a"),
            Just("0"),
            Just("1")
        ]
        .prop_map(Value::from),
        ".{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("key"),
                        Just("value"),
                        Just("operator"),
                        Just("type"),
                        Just("values"),
                        Just("negation"),
                        Just("dependency_chain"),
                        Just("a")
                    ]
                    .prop_map(str::to_owned),
                    inner
                ),
                0..6
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn arb_filter() -> impl Strategy<Value = Value> {
    (arb_json(), arb_json(), prop_oneof![Just(Value::Null), (0u8..=100).prop_map(Value::from), arb_json()], arb_json())
        .prop_map(|(p1, p2, rollout, variants)| json!({
            "groups": [{"properties": [p1, p2], "rollout_percentage": rollout, "variant": "a", "aggregation_group_type_index": 0}],
            "multivariate": {"variants": variants}, "aggregation_group_type_index": null, "early_exit": true
        }))
}

proptest! {
    #[test]
    fn hash_is_between_zero_and_one(key in ".{0,20}", id in ".{0,40}", salt in ".{0,8}") {
        let h = hash(&key, &id, &salt);
        prop_assert!((0.0..=1.0).contains(&h));
    }

    #[test]
    fn variant_choice_is_consistent_with_cumulative_weights(weights in prop::collection::vec(0.0f64..60.0, 1..6), h in 0.0f64..1.0) {
        let bounds = variant_bounds(&weights);
        let mut acc = 0.0;
        let mut expected = None;
        for (i, w) in weights.iter().enumerate() {
            let hi = acc + w / 100.0;
            if expected.is_none() && h >= acc && h < hi { expected = Some(i); }
            acc = hi;
        }
        prop_assert_eq!(pick_variant(&bounds, h), expected);
        if let Some(i) = expected { prop_assert!(bounds[i].0 <= h && h < bounds[i].1); }
    }

    #[test]
    fn evaluation_never_panics_on_arbitrary_definitions(filters in arb_filter(), cohort in arb_json(), props in arb_json(), id in ".{0,12}") {
        let defs = json!({"flags": [{"key": "f", "active": true, "filters": filters}], "cohorts": {"1": cohort, "0": cohort},
            "group_type_mapping": {"0": "company"}});
        let flags = CompiledFlags::compile(&FlagDefinitions::from_value(defs).unwrap_or_default());
        let person: Map<String, Value> = props.as_object().cloned().unwrap_or_default();
        let groups: Map<String, Value> = [("company".to_owned(), Value::from(id.clone()))].into_iter().collect();
        let gp: Map<String, Value> = [("company".to_owned(), props.clone())].into_iter().collect();
        let input = EvalInput { distinct_id: &id, device_id: None, person_properties: &person, groups: &groups,
            group_properties: &gp, now: chrono::Utc::now() };
        let e = flags.evaluate("f", &input);
        prop_assert!(e.value.is_some() || !e.reason.is_empty());
    }

    #[test]
    fn parsing_arbitrary_json_never_panics(doc in arb_json()) {
        let _ = FlagDefinitions::from_value(json!({"flags": [doc.clone()], "cohorts": doc}));
    }
}
