//! The sandbox against a hostile plugin: each misbehaviour costs only the
//! records that set it off, is reported with plugin, step and cause, and the
//! next batch runs on a fresh instance.

use crate::common::{self, batch, chain, results};
use serde_json::json;

fn hostile(mode: &str, extra: &str) -> String {
    format!(
        "[[transforms]]\nuses = \"hostile\"\nmax_call_ms = 200\n{extra}\nparams = {{ mode = \"{mode}\", trigger = \"bad\" }}\n"
    )
}

/// Eight records, the fourth sets the plugin off.
fn eight() -> Vec<String> {
    (0..8).map(|i| if i == 3 { json!({"i": i, "bad": true}) } else { json!({"i": i}) }.to_string()).collect()
}

/// Runs `mode` on a batch with one bad record, then on a clean batch; the
/// bad record's rejection reason is returned.
fn isolate(mode: &str, extra: &str) -> String {
    let mut c = chain(&hostile(mode, extra));
    let out = c.run(&batch(&eight())).expect("a failing call costs records, not the chain");
    let res = results(8, &out);
    for (i, r) in res.iter().enumerate() {
        if i != 3 {
            assert_eq!(r, &json!({"emit": [{"i": i}]}), "{mode}: record {i} is unharmed");
        }
    }
    let reason =
        res[3]["reject"].as_str().unwrap_or_else(|| panic!("{mode}: record 3 rejected, got {}", res[3])).to_string();
    // The next batch runs on a fresh instance.
    let clean: Vec<String> = (0..3).map(|i| json!({"i": i}).to_string()).collect();
    let out = c.run(&batch(&clean)).expect("next batch");
    assert_eq!(out.batch.records.len(), 3, "{mode}: the next batch runs");
    reason
}

#[test]
fn an_endless_loop_is_interrupted_at_its_budget() {
    assert_eq!(isolate("loop", ""), "step 1 (`hostile`): exceeded its time budget of 200 ms per call");
}

#[test]
fn a_huge_allocation_is_refused_by_the_memory_cap() {
    assert_eq!(isolate("alloc", "max_memory_mb = 64"), "step 1 (`hostile`): ran out of memory (cap 64 MiB)");
}

#[test]
fn a_projected_step_is_given_only_the_fields_it_reads_and_the_others_keep_their_place() {
    // `projected` declares it reads `bad` (and writes `seen`), and says in
    // `seen` how many fields it was given.
    let mut c = chain(&hostile("projected", ""));
    let lines: Vec<String> = (0..4).map(|i| format!(r#"{{"i":{i},"bad":{},"name":"n{i}"}}"#, i == 3)).collect();
    let out = c.run(&batch(&lines)).unwrap();
    let rows: Vec<String> = out.batch.iter().map(|cells| host::batch::json::record_json(&out.batch, cells)).collect();
    assert_eq!(rows[0], r#"{"i":0,"bad":false,"name":"n0"}"#);
    assert_eq!(rows[3], r#"{"i":3,"bad":true,"seen":"fields=1","name":"n3"}"#);
}

#[test]
fn a_projected_step_that_emits_a_field_it_did_not_declare_costs_only_that_record() {
    assert_eq!(
        isolate("undeclared", ""),
        "step 1 (`hostile`): returned malformed output: field `sneaky` is not among the fields it declared (reads and writes)"
    );
}

#[test]
fn a_panic_is_reported_without_its_message_by_default() {
    let reason = isolate("panic", "");
    assert!(
        reason.starts_with(
            "step 1 (`hostile`): panicked (wasm trap: wasm `unreachable` instruction executed); message withheld"
        ),
        "{reason}"
    );
}

#[test]
fn a_panic_message_is_shown_when_the_pipeline_opts_in() {
    let body = format!("[logging]\nrecord_values = true\n{}", hostile("panic", ""));
    let mut c = chain(&body);
    let out = c.run(&batch(&eight())).unwrap();
    let reason = out.rejected[0].reason.clone();
    assert!(reason.contains("hostile plugin panics on purpose"), "{reason}");
}

#[test]
fn wrong_shaped_output_is_refused() {
    assert_eq!(
        isolate("wrong-shape", ""),
        "step 1 (`hostile`): returned malformed output: 0 outcomes for 1 input records"
    );
    let reason = isolate("bad-span", "");
    assert!(reason.starts_with("step 1 (`hostile`): returned malformed output: record 0: text span"), "{reason}");
}

#[test]
fn a_failing_configure_stops_the_chain_from_building_with_file_and_step() {
    let p = common::pipeline("\n\n[[transforms]]\nuses = \"hostile\"\nparams = { mode = \"configure-fails\" }\n");
    let err = host::transform::TransformChain::build(&common::engine(), &p).err().expect("configure fails");
    assert_eq!(err.to_string(), "test.toml:4: step 1 (`hostile`) refused its params: configure failed on purpose");
}

#[test]
fn isolation_finds_one_bad_record_among_a_thousand() {
    let lines: Vec<String> =
        (0..1000).map(|i| if i == 617 { json!({"i": i, "bad": true}) } else { json!({"i": i}) }.to_string()).collect();
    let mut c = chain(&hostile("panic", ""));
    let out = c.run(&batch(&lines)).unwrap();
    assert_eq!(out.batch.records.len(), 999);
    assert_eq!(out.rejected.len(), 1);
    assert_eq!(out.rejected[0].record, 617);
    assert!(out.origin.iter().all(|&o| o != 617));
}

#[test]
fn isolation_gives_up_after_a_bounded_number_of_failed_calls() {
    // Every record panics: at most a bounded number of calls are tried, and
    // every record is rejected, none lost.
    let lines: Vec<String> = (0..256).map(|i| json!({"i": i}).to_string()).collect();
    let mut c = chain("[[transforms]]\nuses = \"hostile\"\nparams = { mode = \"panic\" }\n");
    let out = c.run(&batch(&lines)).unwrap();
    assert_eq!(out.rejected.len(), 256);
    assert!(out.rejected.last().unwrap().reason.contains("not isolated: too many failed calls"));
}

fn seen(extra: &str, mode: &str) -> String {
    let mut c = chain(&format!("[[transforms]]\nuses = \"hostile\"\n{extra}\nparams = {{ mode = \"{mode}\" }}\n"));
    let out = c.run(&batch(&[json!({"i": 1}).to_string()])).unwrap();
    results(1, &out)[0]["emit"][0]["seen"].as_str().unwrap().to_string()
}

#[test]
fn no_environment_files_or_clock_unless_granted() {
    assert_eq!(seen("", "read-env"), "env=0");
    assert_eq!(seen("", "read-file"), "file=false");
    assert_eq!(seen("", "clock"), "clock=0");
    assert_eq!(seen("grants = { env = [\"PATH\"] }", "read-env"), "env=1");
    let granted = seen("grants = { clock = true }", "clock");
    let secs: u64 = granted.trim_start_matches("clock=").parse().unwrap();
    assert!(secs > 1_700_000_000, "{granted}");
}

#[test]
fn a_plugin_with_another_digest_than_its_pin_is_refused() {
    let pinned = |digest: &str| format!("[[transforms]]\nuses = \"flatten\"\ndigest = \"{digest}\"\n");
    let wrong = format!("sha256:{}", "0".repeat(64));
    let err = host::transform::TransformChain::build(&common::engine(), &common::pipeline(&pinned(&wrong)))
        .err()
        .expect("refused");
    let msg = err.to_string();
    assert!(msg.starts_with("test.toml:2: step 1: plugin `flatten`: "), "{msg}");
    assert!(msg.contains(&format!("but the step pins {wrong}")), "{msg}");
    let right = host::transform::digest_of(
        &std::fs::read(std::path::Path::new(common::PLUGIN_DIR).join("flatten.wasm")).unwrap(),
    );
    host::transform::TransformChain::build(&common::engine(), &common::pipeline(&pinned(&right)))
        .expect("the pinned version loads");
}

#[test]
fn a_plugin_that_sleeps_is_stopped_not_waited_for() {
    // A host thread blocked in WASI's poll is not reached by the epoch
    // deadline: waiting is refused outright.
    let reason = isolate("sleep", "");
    assert!(reason.contains(host::transform::BLOCKED), "{reason}");
}

#[test]
fn a_plugin_that_sleeps_in_configure_is_refused_at_load() {
    let p = common::pipeline("[[transforms]]\nuses = \"hostile\"\nparams = { mode = \"sleep-in-configure\" }\n");
    let err = host::transform::TransformChain::build(&common::engine(), &p).err().expect("refused");
    assert!(err.to_string().contains(host::transform::BLOCKED), "{err}");
}

#[test]
fn deeply_nested_output_is_refused_not_a_host_stack_overflow() {
    let reason = isolate("deep", "");
    assert!(reason.ends_with("containers nested deeper than 128 levels"), "{reason}");
    // As deep as JSON input may be is fine.
    let mut c = chain(&hostile("deep", "").replace("trigger = \"bad\"", "trigger = \"bad\", depth = 100"));
    let out = c.run(&batch(&eight())).unwrap();
    assert!(out.rejected.is_empty(), "{:?}", out.rejected.iter().map(|r| r.to_string()).collect::<Vec<_>>());
    let row = &results(8, &out)[3]["emit"][0]["deep"];
    assert!(row.is_array(), "{row}");
}

#[test]
fn a_plugin_that_logs_keeps_working_whatever_it_logs() {
    // A kilobyte per record: 4 KiB of stderr was full after four records.
    let mut c = chain("[[transforms]]\nuses = \"hostile\"\nparams = { mode = \"log\" }\n");
    for round in 0..3 {
        let lines: Vec<String> = (0..10).map(|i| json!({"i": i}).to_string()).collect();
        let out = c.run(&batch(&lines)).unwrap();
        let reasons: Vec<String> = out.rejected.iter().map(|r| r.to_string()).collect();
        assert!(reasons.is_empty(), "round {round}: {reasons:?}");
        assert_eq!(out.batch.records.len(), 10, "round {round}");
    }
}

#[test]
fn the_digest_import_refuses_an_answer_larger_than_the_step_may_hold() {
    // 4 million empty inputs would be 512 MiB of SHA-512 digests allocated
    // on the host.
    let mut c = chain("[[transforms]]\nuses = \"hostile\"\nparams = { mode = \"digest-flood\" }\n");
    let out = c.run(&batch(&[json!({"i": 0}).to_string()])).unwrap();
    assert_eq!(results(1, &out)[0], json!({"emit": [{"i": 0, "seen": "digests=refused"}]}));
}
