//! The trigger service: new revisions on kernel trees become checkout nodes.
