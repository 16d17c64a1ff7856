//! Bundle loading, versions and the semantic diff.

mod common;

use common::*;
use tern_policy::{diff, Bundle, DocChange};

fn version(dir: &TempDir) -> String {
    match Bundle::load(dir.path()) {
        Ok(b) => b.version,
        Err(f) => panic!("invalid bundle:\n{f}"),
    }
}

#[test]
fn the_same_policies_in_other_files_order_or_formatting_have_the_same_version() {
    let a = good_bundle("split");
    let base = version(&a);

    // One file, documents in another order.
    let b = TempDir::new("one-file");
    b.write(
        "all.yml",
        &format!("{REPLAN}---\n{GENERATOR}---\n{OBJECTIVE}---\n{CHANNELS}"),
    );
    assert_eq!(version(&b), base);

    // Reformatted: block style, comments, quotes, equivalent durations, explicit defaults,
    // channels listed in another order, numbers spelled differently, nested folders.
    let c = TempDir::new("reformatted");
    c.write(
        "nested/deeper/channels.yaml",
        "# comment\napiVersion: \"tern/v1\"\nkind: Channel\nmetadata:\n  name: email\nspec: {}\n---\n\
         kind: Channel\napiVersion: tern/v1\nspec:\n  quietHours:\n    to: '08:00'\n    from: \"22:00\"\nmetadata: {name: push}\n",
    );
    c.write(
        "objective.yaml",
        "apiVersion: tern/v1\nkind: Objective\nmetadata: { name: default }\nspec:\n  minValue: 2e-2\n  horizon: 4w\n  weights:\n    retention: 2.0\n    conversion: 1\n    engagement: 0\n",
    );
    c.write(
        "generators.yaml",
        "apiVersion: tern/v1\nkind: Generator\nmetadata: { name: new-release }\nspec:\n  ttl: 2d\n  priority: normal\n  channels:\n    - email\n    - push\n  message:\n    category: content\n    template: new_release\n  when: event.popularity > 0.3\n  on:\n    event: artist_release\n",
    );
    c.write("replan.yaml", "---\napiVersion: tern/v1\nkind: Replan\nmetadata: { name: hourly }\nspec: { cron: '0 0 * * * *', horizon: 24h, exploration: 0 }\n...\n");
    // Hidden files and other extensions are not part of the bundle.
    c.write(".hidden.yaml", "this is not: [valid");
    c.write("notes.txt", "not a policy");
    c.write("backup.yaml~", "not: [valid");
    assert_eq!(version(&c), base);
}

#[test]
fn any_change_of_value_changes_the_version() {
    let base = version(&good_bundle("base"));
    for (file, from, to) in [
        ("generators.yaml", "ttl: 48h", "ttl: 47h"),
        ("generators.yaml", "> 0.3", "> 0.31"),
        ("objective.yaml", "minValue: 0.02", "minValue: 0.03"),
        ("channels.yaml", "\"22:00\"", "\"21:00\""),
        ("replan.yaml", "horizon: 1d", "horizon: 2d"),
        (
            "channels.yaml",
            "name: email }",
            "name: email, description: x }",
        ),
    ] {
        let dir = good_bundle("changed");
        let text = std::fs::read_to_string(dir.path().join(file)).unwrap();
        assert!(text.contains(from), "{from}");
        dir.write(file, &text.replace(from, to));
        assert_ne!(version(&dir), base, "{from} -> {to}");
    }
}

#[test]
fn canonical_json_is_what_the_version_hashes() {
    let b = Bundle::load(good_bundle("canonical").path()).unwrap();
    assert_eq!(tern_policy::version_of(&b.canonical_json()), b.version);
    let docs = b.canonical_json()["documents"].as_array().unwrap().len();
    assert_eq!(docs, 5);
    assert_eq!(b.short_version().len(), 12);
}

#[test]
fn a_missing_directory_is_a_finding_not_a_panic() {
    let err = Bundle::load("/nonexistent/tern/policies").unwrap_err();
    assert_eq!(err.0.len(), 1);
    assert!(err.to_text().contains("cannot read"), "{err}");
}

#[test]
fn kubernetes_configmap_mounts_are_read_through_the_visible_links() {
    let dir = TempDir::new("configmap");
    let data = dir.path().join("..2026_11_25_10_00_00.1");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("channels.yaml"), CHANNELS).unwrap();
    std::fs::write(data.join("objective.yaml"), OBJECTIVE).unwrap();
    std::os::unix::fs::symlink("..2026_11_25_10_00_00.1", dir.path().join("..data")).unwrap();
    for f in ["channels.yaml", "objective.yaml"] {
        std::os::unix::fs::symlink(format!("..data/{f}"), dir.path().join(f)).unwrap();
    }
    let b = Bundle::load(dir.path()).unwrap();
    assert_eq!(b.files.len(), 2, "{:?}", b.files);
    assert_eq!(b.channels.len(), 2);
}

#[test]
fn diff_reports_documents_and_fields() {
    let a = Bundle::load(good_bundle("old").path()).unwrap();
    let dir = good_bundle("new");
    dir.write(
        "objective.yaml",
        &OBJECTIVE.replace("minValue: 0.02", "minValue: 0.05\n  horizon: 14d"),
    );
    dir.remove("replan.yaml");
    dir.write(
        "experiment.yaml",
        "apiVersion: tern/v1\nkind: Experiment\nmetadata: { name: exp }\nspec:\n  salt: s\n  arms:\n    - { name: a, share: 0.5 }\n    - { name: b, share: 0.5, holdout: true }\n",
    );
    let b = Bundle::load(dir.path()).unwrap();
    let d = diff(&a, &b);
    let text = d.to_string();
    // An added or removed document lists its fields; a new experiment says whom it takes.
    assert_eq!(
        text,
        "~ Objective/default\n    spec.horizon: \"28d\" → \"14d\"\n    spec.minValue: 0.02 → 0.05\n\
         + Experiment/exp\n    + metadata.name: \"exp\"\n    + spec.arms: [{\"name\":\"a\",\"share\":0.5},{\"holdout\":true,\"name\":\"b\",\"share\":0.5}]\n    + spec.salt: \"s\"\n    + spec.traffic: 1.0\n\
         - Replan/hourly\n    - metadata.name: \"hourly\"\n    - spec.cron: \"0 0 * * * *\"\n    - spec.exploration: 0.0\n    - spec.horizon: \"1d\"\n\
         ! Experiment/exp: 0.0% of users change arm, 100.0% enter it, 0.0% leave it (estimated on 100000 sample ids); users who change arm see both arms and are left out of its report\n"
    );
    assert_eq!(d.moves[0].entered, tern_policy::MOVE_SAMPLE);

    // Moving a tenth of the share from one arm to the other moves about a tenth of the users,
    // and says so.
    let shifted = good_bundle("shifted");
    shifted.write(
        "experiment.yaml",
        "apiVersion: tern/v1\nkind: Experiment\nmetadata: { name: exp }\nspec:\n  salt: s\n  arms:\n    - { name: a, share: 0.6 }\n    - { name: b, share: 0.4, holdout: true }\n",
    );
    let shifted = Bundle::load(shifted.path()).unwrap();
    let moves = diff(&b, &shifted);
    let m = &moves.moves[0];
    let moved = m.moved as f64 / m.sampled as f64;
    assert!((moved - 0.1).abs() < 0.005, "{m:?}");
    assert_eq!((m.entered, m.left), (0, 0));
    assert!(
        moves.to_string().contains("! Experiment/exp: 10."),
        "{moves}"
    );
    assert!(matches!(d.changes[1], DocChange::Added { .. }));
    assert!(diff(&a, &a).is_empty());
    assert_eq!(d.to_json()["changes"].as_array().map(Vec::len), Some(3));
}

#[test]
fn users_are_assigned_to_arms_by_share_and_layers_are_exclusive() {
    let b = Bundle::load("../../policies").unwrap();
    let (mut in_retention, mut in_fewer, mut holdout) = (0usize, 0usize, 0usize);
    let mut in_long_term = 0usize;
    let n = 20_000;
    for i in 0..n {
        let user = format!("user-{i}");
        let a = b.assignments(&user);
        assert!(a.len() <= 1, "layer `objective` must be exclusive: {user}");
        assert_eq!(a, b.assignments(&user), "assignment must be deterministic");
        for (e, arm) in a {
            match e.metadata.name.as_str() {
                "retention-weights" => {
                    in_retention += 1;
                    holdout += usize::from(arm.holdout);
                }
                "fewer-pushes" => in_fewer += 1,
                "long-term-value" => in_long_term += 1,
                other => panic!("unexpected experiment {other}"),
            }
        }
    }
    let share = |k: usize, of: usize| k as f64 / of as f64;
    // traffic 0.5, 0.3 and 0.1 of the layer; 10% of retention-weights is the holdout.
    assert!(
        (share(in_long_term, n) - 0.1).abs() < 0.02,
        "{in_long_term}"
    );
    assert!(
        (share(in_retention, n) - 0.5).abs() < 0.02,
        "{in_retention}"
    );
    assert!((share(in_fewer, n) - 0.3).abs() < 0.02, "{in_fewer}");
    assert!(
        (share(holdout, in_retention) - 0.1).abs() < 0.02,
        "{holdout}"
    );
}

#[test]
fn changing_one_arms_share_moves_only_users_into_that_arm() {
    let b = Bundle::load("../../policies").unwrap();
    let before = b
        .experiments
        .iter()
        .find(|e| e.metadata.name == "retention-weights")
        .unwrap()
        .clone();
    // The holdout grows from 10% to 20%; the other two shrink in proportion, 45% → 40% each.
    let mut after = before.clone();
    for arm in &mut after.arms {
        arm.share = if arm.holdout { 0.2 } else { 0.4 };
    }
    let mut reordered = before.clone();
    reordered.arms.reverse();
    let n = 20_000;
    let (mut moved, mut into_holdout) = (0usize, 0usize);
    for i in 0..n {
        let user = format!("user-{i}");
        let old = before.arm_for(&user).unwrap();
        let new = after.arm_for(&user).unwrap();
        assert_eq!(
            reordered.arm_for(&user).unwrap().name,
            old.name,
            "the order of arms must not move {user}"
        );
        if old.name != new.name {
            moved += 1;
            assert!(
                new.holdout,
                "{user} moved from {} to {}",
                old.name, new.name
            );
            into_holdout += 1;
        }
    }
    // The least any assignment can move is the 10 points the holdout gains; consecutive ranges
    // would move 15 (5 from control to retention, 10 from retention to the holdout).
    let share = moved as f64 / n as f64;
    assert!((share - 0.10).abs() < 0.01, "{share}");
    assert_eq!(moved, into_holdout);
}

#[test]
fn quiet_hours_wrap_midnight() {
    let b = Bundle::load("../../policies").unwrap();
    let q = b
        .channel("push")
        .and_then(|c| c.quiet_hours.as_ref())
        .unwrap();
    let t = |h, m| chrono::NaiveTime::from_hms_opt(h, m, 0).unwrap();
    assert!(q.contains(t(23, 0)) && q.contains(t(22, 0)) && q.contains(t(7, 59)));
    assert!(!q.contains(t(8, 0)) && !q.contains(t(12, 0)) && !q.contains(t(21, 59)));
}

/// A `kind: Priority` document: decoded into the class and its sorted bypasses, versioned by
/// content (order and spelling of the list do not matter), and diffed field by field.
#[test]
fn priority_documents_are_decoded_versioned_and_diffed() {
    use tern_policy::{Bypass, Priority};
    let doc = |bypass: &str| {
        format!("apiVersion: tern/v1\nkind: Priority\nmetadata: {{ name: transactional }}\nspec:\n  bypass: {bypass}\n")
    };
    let a = good_bundle("prio-a");
    a.write("priority.yaml", &doc("[quietHours, caps]"));
    let b = good_bundle("prio-b");
    b.write("priority.yaml", &doc("\n    - caps\n    - quietHours"));
    let (a, b) = (
        Bundle::load(a.path()).unwrap(),
        Bundle::load(b.path()).unwrap(),
    );
    assert_eq!(a.version, b.version);
    assert_eq!(a.priorities.len(), 1);
    let p = a.priority(Priority::Transactional).unwrap();
    assert_eq!(p.bypass, vec![Bypass::Caps, Bypass::QuietHours]);
    assert!(a.bypasses(Priority::Transactional, Bypass::QuietHours));
    assert!(!a.bypasses(Priority::Transactional, Bypass::Holdouts));
    assert!(!a.bypasses(Priority::High, Bypass::Caps));
    assert!(a.urgent(Priority::Transactional) && !a.urgent(Priority::Low));
    // Without the document the version differs; with it the canonical form lists it.
    let none = Bundle::load(good_bundle("prio-none").path()).unwrap();
    assert_ne!(none.version, a.version);
    let canonical = a.canonical_json().to_string();
    assert!(
        canonical.contains(r#""kind":"Priority","metadata":{"name":"transactional"},"spec":{"bypass":["caps","quietHours"]}"#),
        "{canonical}"
    );

    let c = good_bundle("prio-c");
    c.write("priority.yaml", &doc("[caps, quietHours, holdouts]"));
    let c = Bundle::load(c.path()).unwrap();
    assert_eq!(
        diff(&a, &c).to_string(),
        "~ Priority/transactional\n    + spec.bypass[]: \"holdouts\"\n"
    );
    assert_eq!(
        diff(&none, &a).to_string(),
        "+ Priority/transactional\n    + metadata.name: \"transactional\"\n    + spec.bypass: [\"caps\",\"quietHours\"]\n"
    );
}

/// A cap set's `exempt` frees a class from that set only; `bypass: [caps]` from every set.
#[test]
fn exempt_frees_a_class_from_one_cap_set_and_bypass_from_all() {
    use tern_policy::Priority;
    let dir = good_bundle("exempt");
    dir.write(
        "caps.yaml",
        "apiVersion: tern/v1\nkind: Caps\nmetadata: { name: default }\nspec:\n  rules: [{ max: 5, per: 1d }]\n  exempt: [high]\n---\napiVersion: tern/v1\nkind: Caps\nmetadata: { name: strict }\nspec:\n  rules: [{ max: 1, per: 1d }]\n",
    );
    dir.write(
        "priority.yaml",
        "apiVersion: tern/v1\nkind: Priority\nmetadata: { name: transactional }\nspec:\n  bypass: [caps]\n",
    );
    let b = Bundle::load(dir.path()).unwrap();
    let (default, strict) = (b.cap_set("default").unwrap(), b.cap_set("strict").unwrap());
    assert!(!b.caps_hold(default, Priority::High));
    assert!(b.caps_hold(strict, Priority::High));
    assert!(!b.caps_hold(default, Priority::Transactional));
    assert!(!b.caps_hold(strict, Priority::Transactional));
    assert!(b.caps_hold(strict, Priority::Normal));
}
