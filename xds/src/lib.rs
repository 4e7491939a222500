//! membrane-xds: the cell model and its compiler, the xDS protocol types, the control server
//! and the client the proxy uses.
//!
//! Built so far: the cell model (`spec`: loading a directory of YAML documents with
//! positioned errors, and `check` across documents). The compiler, the xDS transport, the
//! control server and the proxy's client come next (issue 5).

pub mod compile;
pub mod control;
mod control_admin;
pub mod proto;
pub mod server;
pub mod spec;
pub mod yaml;
