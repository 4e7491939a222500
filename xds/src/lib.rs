//! membrane-xds: the cell model and its compiler, the xDS protocol types, the control server
//! and the client the proxy uses.
//!
//! Nothing is built here yet: the control-server issue fills this crate.
