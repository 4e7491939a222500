/// A radix tree of path prefixes. Walking it along a path visits, shortest first, every
/// prefix that the path starts with, in time linear in the path length and independent of
/// how many prefixes there are.
#[derive(Debug, Clone)]
pub struct PrefixTrie {
    nodes: Vec<Node>,
}

#[derive(Debug, Clone, Default)]
struct Node {
    label: Box<[u8]>,
    /// Route indexes whose prefix ends exactly here, ascending.
    routes: Vec<u32>,
    /// First byte of each child's label, sorted, parallel to `children`.
    first_bytes: Vec<u8>,
    children: Vec<u32>,
}

impl Default for PrefixTrie {
    fn default() -> Self {
        Self {
            nodes: vec![Node::default()],
        }
    }
}

impl PrefixTrie {
    /// Adds a route under `prefix`. Routes must be inserted in ascending index order.
    pub fn insert(&mut self, prefix: &[u8], route: u32) {
        let mut node = 0usize;
        let mut rest = prefix;
        loop {
            let Some(&first) = rest.first() else {
                self.nodes[node].routes.push(route);
                return;
            };
            match self.nodes[node].first_bytes.binary_search(&first) {
                Err(pos) => {
                    let leaf = self.push(Node {
                        label: rest.into(),
                        routes: vec![route],
                        ..Node::default()
                    });
                    self.nodes[node].first_bytes.insert(pos, first);
                    self.nodes[node].children.insert(pos, leaf);
                    return;
                }
                Ok(pos) => {
                    let child = self.nodes[node].children[pos] as usize;
                    let label = &self.nodes[child].label;
                    let common = label.iter().zip(rest).take_while(|(a, b)| a == b).count();
                    if common < label.len() {
                        // Split the edge: a new node takes the shared part of the label.
                        let tail: Box<[u8]> = label[common..].into();
                        let head: Box<[u8]> = label[..common].into();
                        let tail_first = tail[0];
                        self.nodes[child].label = tail;
                        let mid = self.push(Node {
                            label: head,
                            routes: Vec::new(),
                            first_bytes: vec![tail_first],
                            children: vec![child as u32],
                        });
                        self.nodes[node].children[pos] = mid;
                        node = mid as usize;
                    } else {
                        node = child;
                    }
                    rest = &rest[common..];
                }
            }
        }
    }

    fn push(&mut self, n: Node) -> u32 {
        self.nodes.push(n);
        (self.nodes.len() - 1) as u32
    }

    /// Calls `visit` with the routes of every prefix of `path`, shortest prefix first.
    /// `visit` returns false to stop the walk early.
    #[inline]
    pub fn walk(&self, path: &[u8], mut visit: impl FnMut(&[u32]) -> bool) {
        let mut node = &self.nodes[0];
        let mut rest = path;
        loop {
            if !node.routes.is_empty() && !visit(&node.routes) {
                return;
            }
            let Some(&first) = rest.first() else { return };
            let Some(pos) = node.first_bytes.iter().position(|&b| b == first) else {
                return;
            };
            let child = &self.nodes[node.children[pos] as usize];
            if !rest.starts_with(&child.label) {
                return;
            }
            rest = &rest[child.label.len()..];
            node = child;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hits(t: &PrefixTrie, path: &str) -> Vec<u32> {
        let mut out = Vec::new();
        t.walk(path.as_bytes(), |r| {
            out.extend_from_slice(r);
            true
        });
        out
    }

    #[test]
    fn visits_every_matching_prefix_and_nothing_else() {
        let mut t = PrefixTrie::default();
        for (i, p) in ["/api", "/api/v1", "/apx", "/", "/api/v1/users", "/b", ""]
            .iter()
            .enumerate()
        {
            t.insert(p.as_bytes(), i as u32);
        }
        assert_eq!(hits(&t, "/api/v1/users/7"), vec![6, 3, 0, 1, 4]);
        assert_eq!(hits(&t, "/apx"), vec![6, 3, 2]);
        assert_eq!(hits(&t, "/ap"), vec![6, 3]);
        assert_eq!(hits(&t, "/apiv2"), vec![6, 3, 0]);
        assert_eq!(hits(&t, ""), vec![6]);
        assert_eq!(hits(&t, "/c"), vec![6, 3]);
    }

    #[test]
    fn agrees_with_a_naive_scan_on_random_prefixes() {
        let mut rng = fastrand::Rng::with_seed(7);
        let alphabet = b"/ab";
        let word = |rng: &mut fastrand::Rng| -> Vec<u8> {
            (0..rng.usize(0..6))
                .map(|_| alphabet[rng.usize(0..3)])
                .collect()
        };
        for _ in 0..200 {
            let prefixes: Vec<Vec<u8>> = (0..rng.usize(1..20)).map(|_| word(&mut rng)).collect();
            let mut t = PrefixTrie::default();
            for (i, p) in prefixes.iter().enumerate() {
                t.insert(p, i as u32);
            }
            for _ in 0..20 {
                let path = word(&mut rng);
                let mut got = Vec::new();
                t.walk(&path, |r| {
                    got.extend_from_slice(r);
                    true
                });
                got.sort_unstable();
                let want: Vec<u32> = (0..prefixes.len() as u32)
                    .filter(|&i| path.starts_with(&prefixes[i as usize]))
                    .collect();
                assert_eq!(got, want, "prefixes {prefixes:?} path {path:?}");
            }
        }
    }
}
