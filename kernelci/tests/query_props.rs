//! Property tests: parsing a query and evaluating it agrees with a straightforward reference
//! written against the typed node fields, on random nodes.

use kernelci::models::{Node, NodeKind, ObjectId, ResultValue, State, Timestamp};
use kernelci::query::Query;
use proptest::prelude::*;

const NAMES: [&str; 4] = ["alpha", "beta", "gamma", "123"];
const OWNERS: [&str; 3] = ["alice", "bob", "carol"];

fn arb_node() -> impl Strategy<Value = Node> {
    (
        0usize..4,
        0usize..5,
        0usize..4,
        0usize..3,
        0i64..4,
        0i64..100_000,
        any::<bool>(),
        proptest::option::of(0u32..3),
    )
        .prop_map(|(name, result, state, owner, retry, secs, kcidb, parent)| {
            let mut n = Node::new(NodeKind::Test, NAMES[name]);
            n.result = if result == 4 {
                None
            } else {
                Some(ResultValue::ALL[result])
            };
            n.state = State::ALL[state];
            n.owner = Some(OWNERS[owner].into());
            n.retry_counter = retry;
            n.created =
                Timestamp::from_micros(1_700_000_000_000_000 + secs * 1_000_000).expect("time");
            n.processed_by_kcidb_bridge = kcidb;
            n.parent = parent.map(|p| ObjectId::from_bytes([p as u8; 12]));
            n
        })
}

#[derive(Debug, Clone)]
enum Q {
    Name(&'static str, &'static str),
    Result(&'static str, Option<usize>),
    Retry(&'static str, i64),
    Created(&'static str, i64),
    Parent(&'static str, Option<u32>),
    Kcidb(bool),
    OwnerIn(bool, Vec<usize>),
}

fn arb_q() -> impl Strategy<Value = Q> {
    let cmp = prop_oneof![
        Just("eq"),
        Just("ne"),
        Just("lt"),
        Just("lte"),
        Just("gt"),
        Just("gte")
    ];
    prop_oneof![
        (cmp.clone(), 0usize..4).prop_map(|(op, i)| Q::Name(op, NAMES[i])),
        (
            prop_oneof![Just("eq"), Just("ne")],
            proptest::option::of(0usize..4)
        )
            .prop_map(|(op, r)| Q::Result(op, r)),
        (cmp.clone(), 0i64..5).prop_map(|(op, v)| Q::Retry(op, v)),
        (cmp.clone(), 0i64..100_000).prop_map(|(op, v)| Q::Created(op, v)),
        (
            prop_oneof![Just("eq"), Just("ne")],
            proptest::option::of(0u32..3)
        )
            .prop_map(|(op, p)| Q::Parent(op, p)),
        any::<bool>().prop_map(Q::Kcidb),
        (any::<bool>(), proptest::collection::vec(0usize..3, 1..3))
            .prop_map(|(neg, v)| Q::OwnerIn(neg, v)),
    ]
}

fn key(field: &str, op: &str) -> String {
    if op == "eq" {
        field.to_owned()
    } else {
        format!("{field}__{op}")
    }
}

fn ord<T: PartialOrd>(op: &str, a: T, b: T) -> bool {
    match op {
        "eq" => a == b,
        "ne" => a != b,
        "lt" => a < b,
        "lte" => a <= b,
        "gt" => a > b,
        _ => a >= b,
    }
}

/// The query pair and the reference answer for a node.
fn pair_and_reference(q: &Q, n: &Node) -> ((String, String), bool) {
    match q {
        Q::Name(op, v) => {
            // Upstream typing: digits are integers for ne and the ordering operators, so they
            // never equal or compare with a string name.
            let digits = v.bytes().all(|b| b.is_ascii_digit());
            let want = if digits && *op != "eq" {
                *op == "ne"
            } else {
                ord(op, n.name.as_str(), v)
            };
            ((key("name", op), (*v).to_owned()), want)
        }
        Q::Result(op, r) => {
            let value = r.map(|i| ResultValue::ALL[i]);
            let raw = value
                .map(|v| v.as_str().to_owned())
                .unwrap_or_else(|| "null".into());
            (
                (key("result", op), raw),
                (n.result == value) == (*op == "eq"),
            )
        }
        Q::Retry(op, v) => (
            (key("retry_counter", op), v.to_string()),
            ord(op, n.retry_counter, *v),
        ),
        Q::Created(op, secs) => {
            let t = Timestamp::from_micros(1_700_000_000_000_000 + secs * 1_000_000).expect("time");
            ((key("created", op), t.to_string()), ord(op, n.created, t))
        }
        Q::Parent(op, p) => {
            let id = p.map(|p| ObjectId::from_bytes([p as u8; 12]));
            let raw = id.map(|i| i.to_hex()).unwrap_or_else(|| "null".into());
            ((key("parent", op), raw), ord(op, n.parent, id))
        }
        Q::Kcidb(b) => (
            ("processed_by_kcidb_bridge".into(), b.to_string()),
            n.processed_by_kcidb_bridge == *b,
        ),
        Q::OwnerIn(neg, owners) => {
            let names: Vec<&str> = owners.iter().map(|i| OWNERS[*i]).collect();
            let hit = n.owner.as_deref().is_some_and(|o| names.contains(&o));
            (
                (
                    key("owner", if *neg { "nin" } else { "in" }),
                    names.join(","),
                ),
                hit != *neg,
            )
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parse_then_evaluate_agrees_with_reference(node in arb_node(), qs in proptest::collection::vec(arb_q(), 1..4)) {
        let mut pairs = Vec::new();
        let mut want = true;
        for q in &qs {
            let (pair, answer) = pair_and_reference(q, &node);
            pairs.push(pair);
            want &= answer;
        }
        let query = Query::parse(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))).expect("parses");
        prop_assert_eq!(query.filter.matches_node(&node), want, "pairs {:?}", pairs);
    }

    #[test]
    fn parser_never_panics(key in "[a-z_.]{0,12}(__[a-z]{0,4})?", value in ".{0,20}") {
        let _ = Query::parse([(key.as_str(), value.as_str())]);
    }
}
