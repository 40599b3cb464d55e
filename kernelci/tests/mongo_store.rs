//! The `NodeStore` conformance suite on `MongoStore` against a MongoDB-wire server, plus
//! MongoDB-specific checks (connection loss, upstream documents, index reconciliation).
#![cfg(all(feature = "mongodb", feature = "testsuite"))]

use kernelci::testsuite::mongo::fresh_store;

kernelci::node_store_suite!(option fresh_store());
