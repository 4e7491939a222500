//! The control server as the cells' certificate authority (`membrane control --ca DIR`):
//! join tokens for first contact ([`tokens`]) and the certificate service that signs a
//! gateway's request for its cell's SPIFFE ID ([`service`]). Both it and ADS check the deny
//! list (`crate::revoked`). A CA roll-over runs by itself once the next CA is in the
//! directory ([`rollover`]). The signing itself, and the
//! rules a request must meet, are `membrane_identity::authority`'s.

pub mod current;
pub mod rollover;
pub mod service;
pub mod shared_tokens;
pub mod tokens;

pub use current::CurrentCa;
pub use service::{CaCounters, CertService};
pub use tokens::{TokenError, TokenStore};
