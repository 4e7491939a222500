//! Generated protocol types: Envoy's discovery service (wire-compatible subset) and
//! Membrane's resources and certificate service.
#![allow(clippy::all, clippy::pedantic, missing_docs)]

pub mod google {
    pub mod rpc {
        tonic::include_proto!("google.rpc");
    }
}

pub mod envoy {
    pub mod config {
        pub mod core {
            pub mod v3 {
                tonic::include_proto!("envoy.config.core.v3");
            }
        }
    }
    pub mod service {
        pub mod discovery {
            pub mod v3 {
                tonic::include_proto!("envoy.service.discovery.v3");
            }
        }
    }
}

pub mod membrane {
    pub mod v1 {
        tonic::include_proto!("membrane.v1");
    }
    pub mod ca {
        pub mod v1 {
            tonic::include_proto!("membrane.ca.v1");
        }
    }
}
