//! membrane-xds: the cell model (`spec`: a directory of YAML documents, loaded with
//! positioned errors and checked across documents), its compiler into each gateway's
//! resources (`compile`), the ADS server (`server`: state of the world and delta, the node
//! table) and the control server around them (`control`), with its TLS listener
//! (`channel`) and the cells' certificate authority (`ca`).

pub mod ca;
pub mod channel;
pub mod compile;
pub mod control;
pub mod manage;
pub mod reasons;
pub mod revoked;
pub mod server;
pub mod spec;
pub mod store;

pub use membrane_api::{proto, yaml};
