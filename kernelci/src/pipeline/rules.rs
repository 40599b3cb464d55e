//! Scheduler rules: event matching, `should_create_node`, job filters and job node creation.
