//! The access log's fields, which a listener (in the gateway's file, or a cell spec through
//! the control server) picks from.

/// Every field a line can have, in the order they are written.
pub const FIELDS: [&str; 18] = [
    "ts",
    "listener",
    "route",
    "cluster",
    "method",
    "path",
    "protocol",
    "status",
    "error",
    "duration_ms",
    "request_id",
    "client",
    "peer",
    "peer_cell",
    "subject",
    "authz",
    "authz_rule",
    "trace_id",
];
