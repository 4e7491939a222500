//! membrane-api: what the gateway and the control server share and nothing more. The
//! protocol types (`proto`), the access log's field names (`access_log`), the type URL of each resource (`types`), the gRPC stream and
//! message limits both ends agree on (`stream`), and YAML parsing with positions (`yaml`),
//! used by the gateway's bootstrap file and the control server's cell specs. Durations as
//! written in both (`duration`) and a cluster's resilience settings (`resilience`), which a
//! static bootstrap and a cell spec write the same way.

pub mod access_log;
pub mod duration;
pub mod proto;
pub mod resilience;
pub mod resilience_wire;
pub mod stream;
pub mod types;
pub mod yaml;
