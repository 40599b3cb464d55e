//! Parsing KTAP, kselftest and KUnit output into test nodes.
//!
//! One tolerant parser reads KTAP v1 (`KTAP version 1`), TAP 13/14 (`TAP version 13`, as
//! kselftest prints it) and KUnit output, also straight from a kernel log (a `[  1.234567] `
//! timestamp prefix is removed):
//!
//! - the version line, the plan `1..N` (`1..0 # SKIP why` skips the whole level);
//! - result lines `ok N description` / `not ok N - description`, with the directives
//!   `# SKIP`, `# TODO` and `# XFAIL` (`not ok ... # TODO` is a skip, as TAP says);
//! - subtests: an indented block (with its own version line, `# Subtest: name` line and plan)
//!   followed by the parent's result line; nesting is unlimited;
//! - diagnostic lines (`# ...`) are kept on the test they precede or follow, other lines are
//!   ignored;
//! - truncated output: a subtest block without its result line becomes an `incomplete` test,
//!   and tests promised by a plan but never reported are counted in [`TestCase::missing`]
//!   (their level is `incomplete` unless something failed).
//!
//! The parser never fails and never panics (a proptest feeds it arbitrary input).
//!
//! ```
//! use kernelci::pipeline::ktap;
//! use kernelci::models::ResultValue;
//! let report = ktap::parse("KTAP version 1\n1..2\n    # Subtest: suite\n    1..2\n    ok 1 a\n    not ok 2 b\nnot ok 1 suite\nok 2 other # SKIP no hw\n");
//! assert_eq!(report.tests[0].children[1].result, ResultValue::Fail);
//! assert_eq!(report.tests[1].result, ResultValue::Skip);
//! assert_eq!(report.result(), Some(ResultValue::Fail));
//! ```

use crate::models::ResultValue;

/// A TAP directive on a result line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Directive {
    /// `# SKIP`.
    Skip,
    /// `# TODO`.
    Todo,
    /// `# XFAIL` (kselftest: an expected failure).
    Xfail,
}

/// One test (or a suite, when it has children).
#[derive(Debug, Clone, PartialEq)]
pub struct TestCase {
    /// The description of the result line (`- ` removed), or the `# Subtest:` name, or the
    /// test number when both are missing.
    pub name: String,
    /// The test number on the result line.
    pub number: Option<u64>,
    /// pass, fail, skip, or incomplete (no result line, or a plan not met).
    pub result: ResultValue,
    /// The directive, if any.
    pub directive: Option<Directive>,
    /// The text after the directive (`# SKIP no hardware` → `no hardware`).
    pub reason: Option<String>,
    /// Diagnostic lines seen inside this test's block (without the `#`).
    pub diagnostics: Vec<String>,
    /// Subtests.
    pub children: Vec<TestCase>,
    /// Subtests the plan promised but never reported.
    pub missing: u64,
}

/// What a parse found at the top level.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// The version line (`KTAP version 1`, `TAP version 13`), if any.
    pub version: Option<String>,
    /// The top-level plan.
    pub plan: Option<u64>,
    /// Top-level tests.
    pub tests: Vec<TestCase>,
    /// Top-level tests the plan promised but never reported.
    pub missing: u64,
    /// Top-level diagnostic lines.
    pub diagnostics: Vec<String>,
}

impl Report {
    /// Whether any TAP line (version, plan or result) was found.
    pub fn is_empty(&self) -> bool {
        self.version.is_none() && self.plan.is_none() && self.tests.is_empty()
    }

    /// The overall result: [`evaluate`] of the top-level tests, `incomplete` when the plan was
    /// not met and nothing failed. `None` when there are no tests.
    pub fn result(&self) -> Option<ResultValue> {
        level_result(&self.tests, self.missing)
    }

    /// Counts of every leaf test by result: (pass, fail, skip, incomplete).
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        fn walk(tests: &[TestCase], acc: &mut (usize, usize, usize, usize)) {
            for t in tests {
                if t.children.is_empty() {
                    match t.result {
                        ResultValue::Pass => acc.0 += 1,
                        ResultValue::Fail => acc.1 += 1,
                        ResultValue::Skip => acc.2 += 1,
                        ResultValue::Incomplete => acc.3 += 1,
                    }
                } else {
                    walk(&t.children, acc);
                }
            }
        }
        let mut acc = (0, 0, 0, 0);
        walk(&self.tests, &mut acc);
        acc
    }
}

/// Upstream's `evaluate_test_suite_result`, with `incomplete` between fail and pass: any
/// fail → fail; else any incomplete → incomplete; else any pass → pass; else any skip → skip;
/// else `None`.
pub fn evaluate<'a>(results: impl IntoIterator<Item = &'a ResultValue>) -> Option<ResultValue> {
    let mut seen = [false; 4];
    for r in results {
        seen[match r {
            ResultValue::Fail => 0,
            ResultValue::Incomplete => 1,
            ResultValue::Pass => 2,
            ResultValue::Skip => 3,
        }] = true;
    }
    [
        ResultValue::Fail,
        ResultValue::Incomplete,
        ResultValue::Pass,
        ResultValue::Skip,
    ]
    .into_iter()
    .zip(seen)
    .find_map(|(r, s)| s.then_some(r))
}

fn level_result(tests: &[TestCase], missing: u64) -> Option<ResultValue> {
    let eval = evaluate(tests.iter().map(|t| &t.result));
    if missing > 0 && eval != Some(ResultValue::Fail) {
        return Some(ResultValue::Incomplete);
    }
    eval
}

/// A block of lines at one indentation: the root, or a subtest.
#[derive(Debug, Default)]
struct Frame {
    indent: usize,
    name: Option<String>,
    plan: Option<u64>,
    plan_skip: Option<String>,
    tests: Vec<TestCase>,
    diagnostics: Vec<String>,
    /// A finished subtest block waiting for its result line at this level.
    pending: Option<Box<Frame>>,
}

impl Frame {
    fn new(indent: usize) -> Frame {
        Frame {
            indent,
            ..Frame::default()
        }
    }

    fn missing(&self) -> u64 {
        if self.plan_skip.is_some() {
            return 0;
        }
        self.plan
            .map_or(0, |n| n.saturating_sub(self.tests.len() as u64))
    }

    /// A subtest block whose parent result line never came: an incomplete test.
    fn into_orphan(mut self) -> TestCase {
        self.flush_pending();
        let missing = self.missing();
        let name = self.name.take().unwrap_or_else(|| "subtest".to_owned());
        TestCase {
            name,
            number: None,
            result: ResultValue::Incomplete,
            directive: None,
            reason: Some("no result line (truncated output)".to_owned()),
            diagnostics: self.diagnostics,
            children: self.tests,
            missing,
        }
    }

    fn flush_pending(&mut self) {
        if let Some(pending) = self.pending.take() {
            let orphan = pending.into_orphan();
            self.tests.push(orphan);
        }
    }
}

enum Line<'a> {
    Version(&'a str),
    Plan(u64, Option<String>),
    Subtest(&'a str),
    Result(ParsedResult),
    Diagnostic(&'a str),
    Other,
}

struct ParsedResult {
    ok: bool,
    number: Option<u64>,
    description: String,
    directive: Option<Directive>,
    reason: Option<String>,
}

/// Removes a kernel log timestamp (`[    1.234567] `) from the start of a line.
fn strip_timestamp(line: &str) -> &str {
    let Some(rest) = line.strip_prefix('[') else {
        return line;
    };
    let Some(end) = rest.find(']') else {
        return line;
    };
    let stamp = rest[..end].trim();
    if !stamp.is_empty() && stamp.chars().all(|c| c.is_ascii_digit() || c == '.') {
        let after = &rest[end + 1..];
        after.strip_prefix(' ').unwrap_or(after)
    } else {
        line
    }
}

fn indent_of(line: &str) -> (usize, &str) {
    let mut width = 0;
    for (i, c) in line.char_indices() {
        match c {
            ' ' => width += 1,
            '\t' => width += 8 - width % 8,
            _ => return (width, &line[i..]),
        }
    }
    (width, "")
}

fn parse_directive(comment: &str) -> (Option<Directive>, Option<String>) {
    let text = comment.trim();
    let word_end = text
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let word = &text[..word_end];
    let directive = if word.eq_ignore_ascii_case("skip") || word.eq_ignore_ascii_case("skipped") {
        Some(Directive::Skip)
    } else if word.eq_ignore_ascii_case("todo") {
        Some(Directive::Todo)
    } else if word.eq_ignore_ascii_case("xfail") {
        Some(Directive::Xfail)
    } else {
        None
    };
    match directive {
        Some(d) => {
            let reason = text[word_end..].trim_start_matches([':', ' ']).trim();
            (Some(d), (!reason.is_empty()).then(|| reason.to_owned()))
        }
        None => (None, (!text.is_empty()).then(|| text.to_owned())),
    }
}

fn classify(content: &str) -> Line<'_> {
    if let Some(v) = content
        .strip_prefix("KTAP version ")
        .or_else(|| content.strip_prefix("TAP version "))
    {
        let _ = v;
        return Line::Version(content);
    }
    if let Some(rest) = content.strip_prefix("1..") {
        let digits_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits_end > 0
            && let Ok(n) = rest[..digits_end].parse::<u64>()
        {
            let tail = rest[digits_end..].trim();
            if tail.is_empty() || tail.starts_with('#') {
                let skip = tail
                    .strip_prefix('#')
                    .and_then(|c| match parse_directive(c) {
                        (Some(Directive::Skip), reason) => Some(reason.unwrap_or_default()),
                        _ => None,
                    });
                return Line::Plan(n, skip);
            }
        }
    }
    if let Some(name) = content.strip_prefix("# Subtest:") {
        return Line::Subtest(name.trim());
    }
    let (ok, rest) = if let Some(rest) = content.strip_prefix("not ok") {
        (false, rest)
    } else if let Some(rest) = content.strip_prefix("ok") {
        (true, rest)
    } else if let Some(d) = content.strip_prefix('#') {
        return Line::Diagnostic(d.trim());
    } else {
        return Line::Other;
    };
    if !(rest.is_empty() || rest.starts_with([' ', '\t'])) {
        return Line::Other;
    }
    let rest = rest.trim_start();
    let num_end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let number = rest[..num_end].parse::<u64>().ok();
    let rest = rest[num_end..].trim_start();
    let (desc, comment) = match split_comment(rest) {
        Some((d, c)) => (d, Some(c)),
        None => (rest, None),
    };
    let description = desc.trim();
    let description = description
        .strip_prefix("- ")
        .or_else(|| (description == "-").then_some(""))
        .unwrap_or(description)
        .trim()
        .to_owned();
    let (directive, reason) = comment.map(parse_directive).unwrap_or((None, None));
    Line::Result(ParsedResult {
        ok,
        number,
        description,
        directive,
        reason,
    })
}

/// Splits `desc # comment` at the first unescaped `#`.
fn split_comment(s: &str) -> Option<(&str, &str)> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'#' => return Some((&s[..i], &s[i + 1..])),
            _ => i += 1,
        }
    }
    None
}

/// Parses KTAP / TAP / kselftest / KUnit output. Never fails; see the [module docs](self).
pub fn parse(text: &str) -> Report {
    let mut stack: Vec<Frame> = Vec::new();
    let mut root_indent: Option<usize> = None;
    let mut version = None;
    let mut root_diagnostics = Vec::new();

    for raw in text.lines() {
        let line = strip_timestamp(raw.trim_end_matches('\r'));
        let (indent, content) = indent_of(line);
        let content = content.trim_end();
        if content.is_empty() {
            continue;
        }
        let kind = classify(content);
        let structural = matches!(
            kind,
            Line::Version(_) | Line::Plan(..) | Line::Subtest(_) | Line::Result(_)
        );
        if !structural {
            if let Line::Diagnostic(d) = kind {
                match stack.last_mut() {
                    Some(top) => top.diagnostics.push(d.to_owned()),
                    None => root_diagnostics.push(d.to_owned()),
                }
            }
            continue;
        }
        let base = *root_indent.get_or_insert(indent);
        if stack.is_empty() {
            stack.push(Frame::new(base));
        }
        let indent = indent.max(base);
        // Leave deeper blocks: each finished block waits for its parent's result line.
        while stack.len() > 1 && stack.last().is_some_and(|f| indent < f.indent) {
            if let Some(done) = stack.pop()
                && let Some(parent) = stack.last_mut()
            {
                parent.flush_pending();
                parent.pending = Some(Box::new(done));
            }
        }
        if stack.last().is_some_and(|f| indent > f.indent) {
            if let Some(top) = stack.last_mut() {
                top.flush_pending();
            }
            stack.push(Frame::new(indent));
        }
        let nested = stack.len() > 1;
        let Some(top) = stack.last_mut() else {
            continue;
        };
        match kind {
            Line::Version(v) => {
                if stack.len() == 1 && version.is_none() {
                    version = Some(v.to_owned());
                }
            }
            Line::Subtest(name) => {
                if top.tests.is_empty() && top.plan.is_none() && nested {
                    top.name = Some(name.to_owned());
                } else {
                    // A `# Subtest:` line at its parent's level (old KUnit): the block follows.
                    top.flush_pending();
                    let mut frame = Frame::new(indent);
                    frame.name = Some(name.to_owned());
                    top.pending = Some(Box::new(frame));
                }
            }
            Line::Plan(n, skip) => {
                top.plan = Some(n);
                top.plan_skip = skip;
            }
            Line::Result(r) => {
                let sub = top.pending.take();
                let (children, missing, sub_diag, sub_name) = match sub {
                    Some(mut f) => {
                        f.flush_pending();
                        let missing = f.missing();
                        (f.tests, missing, f.diagnostics, f.name)
                    }
                    None => (Vec::new(), 0, Vec::new(), None),
                };
                let mut result = match (r.ok, r.directive) {
                    (_, Some(Directive::Skip)) => ResultValue::Skip,
                    (false, Some(Directive::Todo)) => ResultValue::Skip,
                    (true, _) => ResultValue::Pass,
                    (false, _) => ResultValue::Fail,
                };
                if result == ResultValue::Pass
                    && level_result(&children, missing) == Some(ResultValue::Incomplete)
                {
                    result = ResultValue::Incomplete;
                }
                let name = if !r.description.is_empty() {
                    r.description
                } else if let Some(n) = sub_name {
                    n
                } else {
                    r.number
                        .map_or_else(|| (top.tests.len() + 1).to_string(), |n| n.to_string())
                };
                top.tests.push(TestCase {
                    name,
                    number: r.number,
                    result,
                    directive: r.directive,
                    reason: r.reason,
                    diagnostics: sub_diag,
                    children,
                    missing,
                });
            }
            Line::Diagnostic(_) | Line::Other => {}
        }
    }

    // End of input: close every open block (truncated output leaves them without results).
    while stack.len() > 1 {
        if let Some(mut done) = stack.pop() {
            done.flush_pending();
            if let Some(parent) = stack.last_mut() {
                parent.flush_pending();
                parent.tests.push(done.into_orphan());
            }
        }
    }
    let mut report = Report {
        version,
        diagnostics: root_diagnostics,
        ..Report::default()
    };
    if let Some(mut root) = stack.pop() {
        root.flush_pending();
        report.missing = root.missing();
        report.plan = root.plan;
        report.tests = root.tests;
        report.diagnostics.extend(root.diagnostics);
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use ResultValue::{Fail, Incomplete, Pass, Skip};

    const KUNIT: &str = "\
[    0.412345] KTAP version 1
[    0.412350] 1..2
[    0.412360]     KTAP version 1
[    0.412361]     # Subtest: example
[    0.412362]     # module: kunit_example_test
[    0.412363]     1..4
[    0.412400]     # example_simple_test: initializing
[    0.412410]     ok 1 example_simple_test
[    0.412420]     ok 2 example_skip_test # SKIP this test should be skipped
[    0.412430]         KTAP version 1
[    0.412431]         # Subtest: example_params_test
[    0.412440]         ok 1 example value 3 # SKIP unsupported param value 3
[    0.412450]         ok 2 example value 2
[    0.412460]     ok 3 example_params_test
[    0.412470]     # example_fail_test: EXPECTATION FAILED at lib/kunit/kunit-example-test.c:42
[    0.412480]     not ok 4 example_fail_test
[    0.412490] # example: pass:2 fail:1 skip:1 total:4
[    0.412500] not ok 1 example
[    0.412510]     KTAP version 1
[    0.412511]     # Subtest: list-kunit-test
[    0.412512]     1..2
[    0.412520]     ok 1 list_test_list_init
[    0.412530]     ok 2 list_test_list_add
[    0.412540] ok 2 list-kunit-test
";

    const KSELFTEST: &str = "\
TAP version 13
1..4
# timeout set to 45
# selftests: net: reuseport_bpf
# ---- IPv4 UDP ----
ok 1 selftests: net: reuseport_bpf
# selftests: net: tls
# TAP version 13
# 1..2
# ok 1 tls.basic
# not ok 2 tls.sendfile
not ok 2 selftests: net: tls # exit=1
ok 3 selftests: net: udpgso # SKIP
Some garbage printed by a test without a prefix
not ok 4 selftests: net: fib_tests # TIMEOUT 45 seconds
";

    #[test]
    fn kunit_from_a_kernel_log() {
        let r = parse(KUNIT);
        assert_eq!(r.version.as_deref(), Some("KTAP version 1"));
        assert_eq!(r.plan, Some(2));
        assert_eq!(r.tests.len(), 2);
        let example = &r.tests[0];
        assert_eq!((example.name.as_str(), example.result), ("example", Fail));
        let names: Vec<_> = example.children.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "example_simple_test",
                "example_skip_test",
                "example_params_test",
                "example_fail_test"
            ]
        );
        let results: Vec<_> = example.children.iter().map(|t| t.result).collect();
        assert_eq!(results, [Pass, Skip, Pass, Fail]);
        assert_eq!(
            example.children[1].reason.as_deref(),
            Some("this test should be skipped")
        );
        let params = &example.children[2];
        assert_eq!(params.children.len(), 2);
        assert_eq!(params.children[0].name, "example value 3");
        assert_eq!(params.children[0].result, Skip);
        assert!(
            example.children[3]
                .diagnostics
                .iter()
                .any(|d| d.contains("EXPECTATION FAILED"))
                || example
                    .diagnostics
                    .iter()
                    .any(|d| d.contains("EXPECTATION FAILED"))
        );
        assert_eq!(r.tests[1].result, Pass);
        assert_eq!(r.result(), Some(Fail));
        assert_eq!(r.counts(), (4, 1, 2, 0));
    }

    #[test]
    fn kselftest_runner_output() {
        let r = parse(KSELFTEST);
        assert_eq!(r.version.as_deref(), Some("TAP version 13"));
        let got: Vec<_> = r
            .tests
            .iter()
            .map(|t| (t.name.as_str(), t.number, t.result))
            .collect();
        assert_eq!(
            got,
            [
                ("selftests: net: reuseport_bpf", Some(1), Pass),
                ("selftests: net: tls", Some(2), Fail),
                ("selftests: net: udpgso", Some(3), Skip),
                ("selftests: net: fib_tests", Some(4), Fail),
            ]
        );
        assert_eq!(r.tests[1].reason.as_deref(), Some("exit=1"));
        assert_eq!(r.missing, 0);
        assert!(r.diagnostics.iter().any(|d| d == "timeout set to 45"));
    }

    #[test]
    fn tap14_without_version_lines_in_subtests() {
        let r = parse(
            "TAP version 14\n1..1\n    # Subtest: suite\n    1..2\n    ok 1 - a\n    ok 2 - b\nok 1 - suite\n",
        );
        assert_eq!(r.tests[0].name, "suite");
        assert_eq!(r.tests[0].children.len(), 2);
        assert_eq!(r.tests[0].children[0].name, "a");
    }

    #[test]
    fn truncated_output_reports_incomplete() {
        // The run died inside the second subtest: no result line for it, one test missing.
        let r = parse(
            "KTAP version 1\n1..3\n    # Subtest: s1\n    1..1\n    ok 1 t\nok 1 s1\n    # Subtest: s2\n    1..3\n    ok 1 a\n    ok 2 b\n",
        );
        assert_eq!(r.tests.len(), 2);
        assert_eq!(r.tests[0].result, Pass);
        let s2 = &r.tests[1];
        assert_eq!((s2.name.as_str(), s2.result), ("s2", Incomplete));
        assert_eq!(s2.missing, 1);
        assert_eq!(s2.children.len(), 2);
        assert_eq!(r.missing, 1);
        assert_eq!(r.result(), Some(Incomplete));
        // A failure still wins over missing tests.
        let r = parse("1..3\nnot ok 1 x\n");
        assert_eq!((r.missing, r.result()), (2, Some(Fail)));
        // A suite that says ok but lost subtests is incomplete.
        let r = parse("1..1\n    1..3\n    ok 1 a\nok 1 suite\n");
        assert_eq!(r.tests[0].result, Incomplete);
    }

    #[test]
    fn directives_plans_and_garbage() {
        let r = parse(
            "garbage\n\tok\nok 1 # SKIP\nnot ok 2 flaky # TODO fix me\nok 3 hash \\# in name\nokay 4 nope\nnot ok\n1..0 # SKIP nothing\n",
        );
        let got: Vec<_> = r
            .tests
            .iter()
            .map(|t| (t.name.as_str(), t.result))
            .collect();
        assert_eq!(
            got,
            [
                ("1", Pass),
                ("1", Skip),
                ("flaky", Skip),
                ("hash \\# in name", Pass),
                ("5", Fail)
            ]
        );
        assert_eq!(r.tests[2].directive, Some(Directive::Todo));
        assert_eq!(r.missing, 0);
        assert!(parse("").is_empty());
        assert!(parse("just a log\nline two\n").is_empty());
        assert_eq!(parse("").result(), None);
    }

    #[test]
    fn evaluate_follows_upstream_order() {
        assert_eq!(evaluate(&[Pass, Skip, Fail]), Some(Fail));
        assert_eq!(evaluate(&[Pass, Skip]), Some(Pass));
        assert_eq!(evaluate(&[Skip]), Some(Skip));
        assert_eq!(evaluate(&[Pass, Incomplete]), Some(Incomplete));
        assert_eq!(evaluate(&[]), None);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_input_never_panics(text in "\\PC{0,400}") {
            let r = parse(&text);
            let _ = r.result();
            let _ = r.counts();
        }

        #[test]
        fn tap_shaped_input_never_panics(lines in proptest::collection::vec(
            (0usize..4, proptest::prop_oneof![
                proptest::strategy::Just("KTAP version 1".to_owned()),
                proptest::strategy::Just("# Subtest: s".to_owned()),
                "1\\.\\.[0-9]{1,3}",
                "(not )?ok [0-9]{0,3}( - )?[a-z ]{0,8}( # (SKIP|TODO|XFAIL) ?[a-z]{0,5})?",
                "# [a-z#: ]{0,10}",
                "\\[ *[0-9]{1,4}\\.[0-9]{1,6}\\] ?",
            ]), 0..60)) {
            let text: String = lines.iter().map(|(i, l)| format!("{}{l}\n", "    ".repeat(*i))).collect();
            let r = parse(&text);
            let (p, f, s, i) = r.counts();
            proptest::prop_assert!(p + f + s + i <= lines.len());
        }
    }
}
