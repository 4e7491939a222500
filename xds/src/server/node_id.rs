//! A gateway's node id, `<cell>/<instance>`, checked before a stream is served.
//!
//! The cell names the resources the node gets, so an id that names no cell would be served
//! an empty configuration in silence and the gateway would say it is ready with nothing to
//! serve; it is refused with a status that says why. The id also becomes a label in the
//! control server's metrics and a key of its node table, so it is held to a small alphabet
//! and length.

use tonic::Status;

/// Longest node id accepted.
pub const MAX_LEN: usize = 128;

/// A checked node id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeId {
    id: String,
    cell_len: usize,
}

impl NodeId {
    /// Checks the syntax: `<cell>/<instance>`, each of ASCII letters, digits, `-`, `_`
    /// and `.`, neither empty.
    pub fn parse(id: &str) -> Result<NodeId, Status> {
        if id.is_empty() {
            return Err(Status::invalid_argument(
                "the first request needs node.id (`<cell>/<instance>`)",
            ));
        }
        if id.len() > MAX_LEN {
            return Err(Status::invalid_argument(format!(
                "node.id is {} bytes; at most {MAX_LEN}",
                id.len()
            )));
        }
        let Some((cell, instance)) = id.split_once('/') else {
            return Err(Status::invalid_argument(format!(
                "node.id `{}` has no instance: write `<cell>/<instance>`, e.g. `{}/gw-1`",
                printable(id),
                printable(id)
            )));
        };
        let ok = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        };
        if !ok(cell) || !ok(instance) {
            return Err(Status::invalid_argument(format!(
                "node.id `{}` is not `<cell>/<instance>` of letters, digits, `-`, `_` and `.`",
                printable(id)
            )));
        }
        Ok(NodeId {
            id: id.to_owned(),
            cell_len: cell.len(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.id
    }

    pub fn cell(&self) -> &str {
        &self.id[..self.cell_len]
    }
}

/// The id as it may be shown in an error: control characters and quotes escaped.
fn printable(id: &str) -> String {
    id.chars()
        .take(MAX_LEN)
        .flat_map(char::escape_default)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_cell_slash_instance_of_a_small_alphabet() {
        let id = NodeId::parse("orders/gw-1").unwrap();
        assert_eq!((id.cell(), id.as_str()), ("orders", "orders/gw-1"));
        for bad in [
            "",
            "orders",
            "orders/",
            "/gw-1",
            "orders/gw/1",
            "orders/gw 1",
            "orders\"} 1\nmembrane_fake{a=\"/x",
            &"a".repeat(200),
        ] {
            let e = NodeId::parse(bad).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad:?}");
            assert!(!e.message().contains('\n'), "{bad:?}: {}", e.message());
        }
    }
}
