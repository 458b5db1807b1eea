//! The spec coverage gate: every rule in `spec/*.md` has an `r[impl]` and an
//! `r[verify]`, and every reference names a rule.

use std::path::Path;

use link_spec::{
    check, load_rules, references_in, rule_index, rules_from_markdown, scan_references,
    verify_placement,
};

fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("spec/ has a parent")
}

#[test]
fn every_rule_is_implemented_and_verified() {
    let root = workspace_root();
    let rules = load_rules(&root.join("spec")).expect("spec files parse");
    assert!(!rules.is_empty(), "no rules found in spec/");
    let (refs, warnings) = scan_references(root).expect("sources scan");
    let mut report = check(&rules, &refs, warnings);
    report.misplaced = verify_placement(&refs, &|p| {
        std::fs::read_to_string(if p.is_absolute() {
            p.to_owned()
        } else {
            root.join(p)
        })
        .ok()
    });
    println!("{}", report.table());
    // From each rule to its code and its tests, in one step.
    println!(
        "{}",
        rule_index(root, &rules, &refs, &|p| std::fs::read_to_string(
            root.join(p)
        )
        .ok())
    );
    let problems = report.problems();
    assert!(
        problems.is_empty(),
        "spec coverage problems:\n{}",
        problems.join("\n")
    );
}

// The checker's own tests build annotations at run time, so that this file
// does not itself carry references to made-up rules.
fn annot(verb: &str, id: &str) -> String {
    format!("// {}[{verb} {id}]\nfn f() {{}}\n", "r")
}

const SPEC: &str = "# T\n\n> r[demo.one]\n> The first rule.\n\n> r[demo.two]\n> The second rule.\n";

#[test]
fn markdown_rules_are_read_as_tracey_reads_them() {
    let rules = rules_from_markdown(Path::new("t.md"), SPEC).unwrap();
    let ids: Vec<_> = rules.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["demo.one", "demo.two"]);
}

#[test]
fn checker_flags_unknown_missing_impl_and_missing_verify() {
    let rules = rules_from_markdown(Path::new("t.md"), SPEC).unwrap();
    let src = [
        annot("impl", "demo.one"),
        annot("verify", "demo.one"),
        annot("impl", "demo.two"),
        annot("verify", "demo.three"),
    ]
    .concat();
    let (refs, warnings) = references_in(&[("a.rs", &src)]);
    let report = check(&rules, &refs, warnings);
    assert!(!report.is_clean());
    assert_eq!(
        report
            .unknown
            .iter()
            .map(|r| r.id.as_str())
            .collect::<Vec<_>>(),
        ["demo.three"]
    );
    assert!(report.missing_impl.is_empty());
    assert_eq!(
        report
            .missing_verify
            .iter()
            .map(|r| r.id.as_str())
            .collect::<Vec<_>>(),
        ["demo.two"]
    );
    assert_eq!(report.per_file[Path::new("t.md")], (2, 2, 1));
}

#[test]
fn checker_passes_a_fully_covered_spec_and_flags_duplicates() {
    let rules = rules_from_markdown(Path::new("t.md"), SPEC).unwrap();
    let src = [
        annot("impl", "demo.one"),
        annot("verify", "demo.one"),
        annot("impl", "demo.two"),
        annot("verify", "demo.two"),
    ]
    .concat();
    let (refs, warnings) = references_in(&[("a.rs", &src)]);
    assert!(check(&rules, &refs, warnings.clone()).is_clean());
    let mut doubled = rules.clone();
    doubled.push(rules[0].clone());
    assert_eq!(check(&doubled, &refs, warnings).duplicates, ["demo.one"]);
}

#[test]
fn checker_flags_a_verify_tag_that_is_not_on_a_test() {
    let rules = rules_from_markdown(Path::new("t.md"), SPEC).unwrap();
    let tag = |id: &str| format!("// {}[verify {id}]\n", "r");
    let src = [
        annot("impl", "demo.one"),
        annot("impl", "demo.two"),
        // On a test, with a doc comment and another attribute between.
        tag("demo.one"),
        "/// Checks one.\n#[ignore = \"slow\"]\n#[tokio::test(flavor = \"multi_thread\")]\nasync fn one() {}\n".into(),
        // On a plain function: misplaced.
        tag("demo.two"),
        "fn helper() {}\n".into(),
        // On a suite macro, a proptest block, a suite check, #[test]: fine.
        tag("demo.one"),
        "link_tests::reliable_suite!(#[tokio::test], F);\n".into(),
        tag("demo.one"),
        "proptest! {\n}\n".into(),
        tag("demo.one"),
        "pub async fn check<F: LinkFactory>(f: &F) {}\n".into(),
        tag("demo.two"),
        "#[test]\nfn two() {}\n".into(),
        // Separated from its test by a blank line, or on a constant: misplaced.
        tag("demo.two"),
        "\n#[test]\nfn three() {}\n".into(),
        tag("demo.one"),
        "const X: u8 = 1;\n".into(),
    ]
    .concat();
    let (refs, warnings) = references_in(&[("a.rs", &src)]);
    let mut report = check(&rules, &refs, warnings);
    assert!(report.is_clean(), "{:?}", report.problems());
    report.misplaced = verify_placement(&refs, &|_| Some(src.clone()));
    let what: Vec<_> = report.misplaced.iter().map(|(_, w)| w.as_str()).collect();
    assert_eq!(what, ["fn helper() {}", "", "const X: u8 = 1;"]);
    assert!(!report.is_clean());
    assert!(
        report.problems()[0].contains("is not directly above a test function"),
        "{:?}",
        report.problems()
    );
}

#[test]
fn the_index_leads_from_each_rule_to_its_code_and_its_tests() {
    let rules = rules_from_markdown(Path::new("t.md"), SPEC).unwrap();
    let test =
        |id: &str, name: &str| format!("// {}[verify {id}]\n#[test]\nfn {name}() {{}}\n", "r");
    let src = [
        annot("impl", "demo.one"),
        test("demo.one", "first_test"),
        annot("impl", "demo.two"),
        test("demo.two", "second_test"),
        test("demo.one", "third_test"),
    ]
    .concat();
    let (refs, _) = references_in(&[("a.rs", &src)]);
    let index = rule_index(Path::new(""), &rules, &refs, &|_| Some(src.clone()));
    let want = "t.md\n  demo.one (line 3)\n    impl   a.rs:1 f\n    verify a.rs:3 first_test\n    verify a.rs:11 third_test\n  demo.two (line 6)\n    impl   a.rs:6 f\n    verify a.rs:8 second_test\n";
    assert_eq!(index, want);
}
