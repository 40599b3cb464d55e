//! Query strings: parse never panics, and a parsed filter evaluates on any JSON document.
#![no_main]

use kernelci::query::Query;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // Split like a URL query string: '&' between pairs, '=' between key and value; a line
    // after a NUL byte is used as the document.
    let (query, doc) = text.split_once('\0').unwrap_or((text, "{}"));
    let pairs: Vec<(&str, &str)> = query.split('&').map(|p| p.split_once('=').unwrap_or((p, ""))).collect();
    if let Ok(q) = Query::parse(pairs)
        && let Ok(doc) = serde_json::from_str::<serde_json::Value>(doc)
    {
        let _ = q.filter.matches(&doc);
        // Conditions survive their JSON form (used by stores to run them in-database).
        for c in &q.filter.conditions {
            let json = serde_json::to_string(c).expect("condition encodes");
            let back: kernelci::query::Condition = serde_json::from_str(&json).expect("condition decodes");
            assert_eq!(&back, c);
        }
    }
});
