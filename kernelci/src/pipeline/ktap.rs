//! Parsing KTAP, kselftest and KUnit output into test nodes.
