//! Node JSON: decoding never panics; a decoded node validates without panicking and re-encodes
//! to JSON that decodes to the same node.
#![no_main]

use kernelci::models::Node;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(mut node) = Node::from_json(data) {
        let text = serde_json::to_string(&node).expect("node encodes");
        let again = Node::from_json(text.as_bytes()).expect("re-decodes");
        assert_eq!(again, node);
        let _ = node.validate();
        node.coerce_version_numbers();
    }
});
