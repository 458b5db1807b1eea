//! Spec coverage for linkstream.
//!
//! The rules live in `spec/*.md` as `r[area.topic]` blocks, in the form the
//! tracey tool reads (parsed here with `marq`, tracey's own markdown parser).
//! Code carries `r[impl id]` above the item that implements a rule, and
//! `r[verify id]` above the test that checks it (extracted with
//! `tracey-core`). [`check`] reports unknown references, rules without an
//! implementation and rules without a test.
#![deny(missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};

use tracey_core::{RefVerb, Reqs, Sources, WalkSources};

/// A rule defined in a spec file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The rule id, e.g. `link.close.eof`.
    pub id: String,
    /// The spec file that defines it.
    pub file: PathBuf,
    /// Line of the definition (1-based).
    pub line: usize,
}

/// What a reference in code says about a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verb {
    /// `r[impl id]`: this item implements the rule.
    Impl,
    /// `r[verify id]`: this test checks the rule.
    Verify,
    /// Any other verb (`depends`, `related`): recorded, not counted.
    Other,
}

/// A reference to a rule found in source code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Impl, verify or other.
    pub verb: Verb,
    /// The referenced rule id.
    pub id: String,
    /// The file holding the reference.
    pub file: PathBuf,
    /// Line of the reference (1-based).
    pub line: usize,
}

/// Why the spec or the sources could not be read.
#[derive(Debug)]
#[non_exhaustive]
pub enum SpecError {
    /// Reading a file or directory failed.
    Io(PathBuf, std::io::Error),
    /// A spec file is not valid for marq (e.g. a malformed rule marker).
    Markdown(PathBuf, String),
    /// tracey-core could not extract references.
    Extract(String),
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpecError::Io(p, e) => write!(f, "cannot read {}: {e}", p.display()),
            SpecError::Markdown(p, e) => write!(f, "cannot parse spec {}: {e}", p.display()),
            SpecError::Extract(e) => write!(f, "cannot extract rule references: {e}"),
        }
    }
}

impl std::error::Error for SpecError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SpecError::Io(_, e) => Some(e),
            _ => None,
        }
    }
}

/// The rules defined in one markdown document.
pub fn rules_from_markdown(file: &Path, markdown: &str) -> Result<Vec<Rule>, SpecError> {
    let doc = futures::executor::block_on(marq::render(markdown, &marq::RenderOptions::default()))
        .map_err(|e| SpecError::Markdown(file.to_owned(), e.to_string()))?;
    Ok(doc
        .reqs
        .into_iter()
        .map(|r| Rule {
            id: r.id.base,
            file: file.to_owned(),
            line: r.line,
        })
        .collect())
}

/// Every rule in the `*.md` files of `spec_dir`, sorted by file.
pub fn load_rules(spec_dir: &Path) -> Result<Vec<Rule>, SpecError> {
    let io = |e| SpecError::Io(spec_dir.to_owned(), e);
    let mut files: Vec<PathBuf> = std::fs::read_dir(spec_dir)
        .map_err(io)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io)?;
    files.retain(|p| p.extension().is_some_and(|e| e == "md"));
    files.sort();
    let mut rules = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|e| SpecError::Io(file.clone(), e))?;
        rules.extend(rules_from_markdown(&file, &text)?);
    }
    Ok(rules)
}

fn convert(reqs: Reqs) -> (Vec<Reference>, Vec<String>) {
    let refs = reqs
        .references
        .into_iter()
        .filter(|r| r.prefix == "r")
        .map(|r| Reference {
            verb: match r.verb {
                RefVerb::Impl => Verb::Impl,
                RefVerb::Verify => Verb::Verify,
                _ => Verb::Other,
            },
            id: r.req_id.base,
            file: r.file,
            line: r.line,
        })
        .collect();
    let warnings = reqs
        .warnings
        .into_iter()
        .map(|w| format!("{}:{}: {:?}", w.file.display(), w.line, w.kind))
        .collect();
    (refs, warnings)
}

/// Every rule reference in the Rust sources below `root` (`target/` and
/// git-ignored files excluded), and tracey's warnings about malformed ones.
pub fn scan_references(root: &Path) -> Result<(Vec<Reference>, Vec<String>), SpecError> {
    let result = WalkSources::new(root)
        .include(["**/*.rs"])
        .exclude(["target/**", "**/target/**"])
        .extract()
        .map_err(|e| SpecError::Extract(e.to_string()))?;
    let (refs, mut warnings) = convert(result.reqs);
    warnings.extend(result.warnings);
    Ok((refs, warnings))
}

/// References in in-memory sources (used to test the checker itself).
pub fn references_in(files: &[(&str, &str)]) -> (Vec<Reference>, Vec<String>) {
    let mut reqs = Reqs::new();
    for (path, text) in files {
        reqs.extend(Reqs::extract_from_content(Path::new(path), text));
    }
    convert(reqs)
}

/// The result of checking rules against references.
#[derive(Debug, Default)]
pub struct Report {
    /// Per spec file: (rules, rules with impl, rules with verify).
    pub per_file: BTreeMap<PathBuf, (usize, usize, usize)>,
    /// References to ids that no spec defines.
    pub unknown: Vec<Reference>,
    /// Rules with no `r[impl]`.
    pub missing_impl: Vec<Rule>,
    /// Rules with no `r[verify]`.
    pub missing_verify: Vec<Rule>,
    /// Rule ids defined more than once.
    pub duplicates: Vec<String>,
    /// Malformed references reported by tracey.
    pub warnings: Vec<String>,
    /// `r[verify]` references that do not sit on a test (see
    /// [`verify_placement`]), with what they sit on instead.
    pub misplaced: Vec<(Reference, String)>,
}

impl Report {
    /// Whether every rule is implemented and verified and every reference
    /// names a rule.
    pub fn is_clean(&self) -> bool {
        self.unknown.is_empty()
            && self.missing_impl.is_empty()
            && self.missing_verify.is_empty()
            && self.duplicates.is_empty()
            && self.warnings.is_empty()
            && self.misplaced.is_empty()
    }

    /// The per-file coverage table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<24} {:>6} {:>6} {:>7}",
            "spec file", "rules", "impl", "verify"
        );
        let mut total = (0, 0, 0);
        for (file, (n, i, v)) in &self.per_file {
            let name = file
                .file_name()
                .map(|f| f.to_string_lossy())
                .unwrap_or_default();
            let _ = writeln!(out, "{name:<24} {n:>6} {i:>6} {v:>7}");
            total = (total.0 + n, total.1 + i, total.2 + v);
        }
        let _ = writeln!(
            out,
            "{:<24} {:>6} {:>6} {:>7}",
            "total", total.0, total.1, total.2
        );
        out
    }

    /// Every problem, one per line.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        for d in &self.duplicates {
            p.push(format!("rule `{d}` is defined more than once"));
        }
        for r in &self.unknown {
            p.push(format!(
                "{}:{}: reference to unknown rule `{}`",
                r.file.display(),
                r.line,
                r.id
            ));
        }
        for r in &self.missing_impl {
            p.push(format!(
                "{}:{}: rule `{}` has no r[impl]",
                r.file.display(),
                r.line,
                r.id
            ));
        }
        for r in &self.missing_verify {
            p.push(format!(
                "{}:{}: rule `{}` has no r[verify]",
                r.file.display(),
                r.line,
                r.id
            ));
        }
        for (r, what) in &self.misplaced {
            p.push(format!(
                "{}:{}: r[verify {}] is not directly above a test function \
                 (#[test], #[tokio::test], #[wasm_bindgen_test], a proptest block, \
                 a suite macro invocation or a suite check): it sits on `{what}`",
                r.file.display(),
                r.line,
                r.id
            ));
        }
        p.extend(
            self.warnings
                .iter()
                .map(|w| format!("malformed reference: {w}")),
        );
        p
    }
}

/// Check `rules` against `refs`.
pub fn check(rules: &[Rule], refs: &[Reference], warnings: Vec<String>) -> Report {
    let mut report = Report {
        warnings,
        ..Report::default()
    };
    let mut seen = BTreeSet::new();
    for r in rules {
        if !seen.insert(r.id.as_str()) {
            report.duplicates.push(r.id.clone());
        }
    }
    let has = |id: &str, verb: Verb| refs.iter().any(|r| r.id == id && r.verb == verb);
    for r in rules {
        let (i, v) = (has(&r.id, Verb::Impl), has(&r.id, Verb::Verify));
        let e = report.per_file.entry(r.file.clone()).or_default();
        e.0 += 1;
        e.1 += usize::from(i);
        e.2 += usize::from(v);
        if !i {
            report.missing_impl.push(r.clone());
        }
        if !v {
            report.missing_verify.push(r.clone());
        }
    }
    report.unknown = refs
        .iter()
        .filter(|r| !seen.contains(r.id.as_str()))
        .cloned()
        .collect();
    report
}

/// What a `verify` reference sits on: `Ok(())` for a test, `Err(line)`
/// with the first line of whatever else it is.
///
/// Going down from the reference, comment lines (more references, doc
/// comments) and attributes are skipped. It sits on a test when one of
/// those attributes is `#[test]`, `#[tokio::test...]` or
/// `#[wasm_bindgen_test]`, or when the first other line opens a proptest
/// block (`proptest!`), invokes a suite macro (`..._suite!(`), or declares
/// a suite check (a function generic over `LinkFactory`, which the suite
/// macros turn into one test per link). Anything else, a blank line
/// included, is misplaced.
pub fn sits_on_test(source: &str, line: usize) -> Result<(), String> {
    let mut lines = source.lines().skip(line.saturating_sub(1));
    // The reference's own line.
    lines.next();
    let mut depth = 0i64;
    for l in lines {
        let t = l.trim();
        if depth > 0 {
            depth += bracket_balance(t);
            continue;
        }
        if t.starts_with("//") {
            continue;
        }
        if let Some(attr) = t.strip_prefix("#[") {
            let name = attr
                .split(|c: char| c == ']' || c == '(' || c.is_whitespace())
                .next()
                .unwrap_or("");
            if matches!(name, "test" | "tokio::test" | "wasm_bindgen_test") {
                return Ok(());
            }
            depth = bracket_balance(t);
            continue;
        }
        let is_test = t.starts_with("proptest!")
            || t.contains("proptest::proptest!")
            || t.split('(')
                .next()
                .is_some_and(|head| head.trim_end().ends_with("_suite!"))
            || (t.contains("fn ") && t.contains("LinkFactory"));
        return if is_test { Ok(()) } else { Err(t.to_string()) };
    }
    Err("the end of the file".into())
}

fn bracket_balance(t: &str) -> i64 {
    t.chars()
        .map(|c| match c {
            '[' => 1,
            ']' => -1,
            _ => 0,
        })
        .sum()
}

/// Every `verify` reference that does not sit on a test (see
/// [`sits_on_test`]); `source` gives a file's text (`None`: unreadable,
/// reported as such).
pub fn verify_placement(
    refs: &[Reference],
    source: &dyn Fn(&Path) -> Option<String>,
) -> Vec<(Reference, String)> {
    let mut cache: BTreeMap<PathBuf, Option<String>> = BTreeMap::new();
    let mut out = Vec::new();
    for r in refs.iter().filter(|r| r.verb == Verb::Verify) {
        let text = cache
            .entry(r.file.clone())
            .or_insert_with(|| source(&r.file));
        match text {
            None => out.push((r.clone(), "an unreadable file".to_string())),
            Some(text) => {
                if let Err(what) = sits_on_test(text, r.line) {
                    out.push((r.clone(), what));
                }
            }
        }
    }
    out
}

/// The name of the function a reference at `line` sits above: the first
/// `fn name` (or suite macro `name!`) going down from it, if any.
pub fn item_name(source: &str, line: usize) -> Option<String> {
    for l in source.lines().skip(line).take(40) {
        let t = l.trim();
        if t.starts_with("//") || t.starts_with("#[") {
            continue;
        }
        if let Some(at) = t.find("fn ") {
            let name: String = t[at + 3..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            return (!name.is_empty()).then_some(name);
        }
        if let Some(head) = t.split('(').next()
            && let Some(m) = head.trim_end().strip_suffix('!')
        {
            return Some(format!("{m}!"));
        }
    }
    None
}

/// Per spec file, every rule with where it is implemented and the tests
/// that verify it (`file:line` and the test's name): the way from a rule
/// to its test in one step. Paths are shown relative to `root`; `source`
/// gives a file's text for the names.
pub fn rule_index(
    root: &Path,
    rules: &[Rule],
    refs: &[Reference],
    source: &dyn Fn(&Path) -> Option<String>,
) -> String {
    let rel = |p: &Path| p.strip_prefix(root).unwrap_or(p).display().to_string();
    let mut cache: BTreeMap<PathBuf, Option<String>> = BTreeMap::new();
    let mut out = String::new();
    let mut file: Option<&Path> = None;
    for rule in rules {
        if file != Some(rule.file.as_path()) {
            file = Some(rule.file.as_path());
            let _ = writeln!(out, "{}", rel(&rule.file));
        }
        let _ = writeln!(out, "  {} (line {})", rule.id, rule.line);
        for verb in [Verb::Impl, Verb::Verify] {
            for r in refs.iter().filter(|r| r.id == rule.id && r.verb == verb) {
                let name = cache
                    .entry(r.file.clone())
                    .or_insert_with(|| source(&r.file))
                    .as_deref()
                    .and_then(|text| item_name(text, r.line))
                    .unwrap_or_default();
                let what = if verb == Verb::Impl {
                    "impl  "
                } else {
                    "verify"
                };
                let _ = writeln!(out, "    {what} {}:{} {name}", rel(&r.file), r.line);
            }
        }
    }
    out
}
