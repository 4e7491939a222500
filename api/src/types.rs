//! The type URL of each Membrane resource, as carried in `Any.type_url` and in the
//! discovery requests' `type_url`.

pub const TYPE_LISTENER: &str = "type.googleapis.com/membrane.v1.Listener";
pub const TYPE_CLUSTER: &str = "type.googleapis.com/membrane.v1.Cluster";
pub const TYPE_JWT_PROVIDER: &str = "type.googleapis.com/membrane.v1.JwtProvider";
pub const TYPE_TRUST_BUNDLE: &str = "type.googleapis.com/membrane.v1.TrustBundle";
