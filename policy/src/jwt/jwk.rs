//! JSON Web Keys (RFC 7517) usable for verifying signatures, parsed once into aws-lc-rs
//! public keys. Keys that cannot verify signatures here (`use: enc`, `key_ops` without
//! `verify`, symmetric `oct` keys, curves other than P-256, P-384 and Ed25519) are left out
//! of a key set with the reason, never used.

use super::alg::{ALL, Alg, KeyKind};
use super::b64;
use aws_lc_rs::signature::{ParsedPublicKey, RsaPublicKeyComponents};
use serde_json::Value;

/// One verification key, ready for each algorithm it may be used with.
pub struct Key {
    pub kid: Option<String>,
    /// The JWK's own `alg`, when it names one: then only that algorithm may use the key.
    pub alg: Option<Alg>,
    pub kind: KeyKind,
    verifiers: Vec<(Alg, ParsedPublicKey)>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("kind", &self.kind)
            .finish()
    }
}

impl Key {
    pub(super) fn verifier(&self, alg: Alg) -> Option<&ParsedPublicKey> {
        self.verifiers
            .iter()
            .find(|(a, _)| *a == alg)
            .map(|(_, k)| k)
    }
}

/// Keys of one provider.
#[derive(Debug, Default)]
pub struct KeySet {
    pub keys: Vec<Key>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwkError {
    #[error("not JSON: {0}")]
    Json(String),
    #[error("a JWK set is an object with a `keys` array")]
    NotASet,
    #[error("a JWK is a JSON object")]
    NotAnObject,
    #[error("`{0}` is missing or not a string")]
    Field(&'static str),
    #[error("`{0}` is not valid base64url")]
    Base64(&'static str),
    #[error("`use` is `{0}`, not `sig`")]
    Use(String),
    #[error("`key_ops` does not allow `verify`")]
    KeyOps,
    #[error("key type `{0}` cannot verify signatures here")]
    Kty(String),
    #[error("curve `{0}` is not supported (P-256, P-384, Ed25519 are)")]
    Curve(String),
    #[error("algorithm `{0}` is not supported for signatures")]
    Alg(String),
    #[error("algorithm {alg} does not fit a {kty} key")]
    AlgMismatch { alg: Alg, kty: &'static str },
    #[error("the key material is invalid: {0}")]
    Material(String),
}

impl KeySet {
    /// Parses a JWK set (`{"keys": [...]}`). Keys that cannot verify signatures are skipped
    /// and reported with their position; the set may end up empty.
    pub fn from_json(text: &str) -> Result<(KeySet, Vec<(usize, JwkError)>), JwkError> {
        let v: Value = serde_json::from_str(text).map_err(|e| JwkError::Json(e.to_string()))?;
        let keys = v
            .get("keys")
            .and_then(Value::as_array)
            .ok_or(JwkError::NotASet)?;
        let mut set = KeySet::default();
        let mut skipped = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            match Key::from_jwk(k) {
                Ok(key) => set.keys.push(key),
                Err(e) => skipped.push((i, e)),
            }
        }
        Ok((set, skipped))
    }

    pub fn from_keys(keys: Vec<Key>) -> Self {
        Self { keys }
    }

    /// True when some key carries this `kid`.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }
}

fn str_field<'a>(
    o: &'a serde_json::Map<String, Value>,
    name: &'static str,
) -> Result<&'a str, JwkError> {
    o.get(name)
        .and_then(Value::as_str)
        .ok_or(JwkError::Field(name))
}

fn bytes_field(
    o: &serde_json::Map<String, Value>,
    name: &'static str,
) -> Result<Vec<u8>, JwkError> {
    b64::decode(str_field(o, name)?).ok_or(JwkError::Base64(name))
}

impl Key {
    pub fn from_jwk(v: &Value) -> Result<Key, JwkError> {
        let o = v.as_object().ok_or(JwkError::NotAnObject)?;
        if let Some(u) = o.get("use") {
            let u = u.as_str().ok_or(JwkError::Field("use"))?;
            if u != "sig" {
                return Err(JwkError::Use(u.to_owned()));
            }
        }
        if let Some(ops) = o.get("key_ops") {
            let ops = ops.as_array().ok_or(JwkError::Field("key_ops"))?;
            if !ops.iter().any(|op| op.as_str() == Some("verify")) {
                return Err(JwkError::KeyOps);
            }
        }
        let kid = match o.get("kid") {
            None => None,
            Some(k) => Some(k.as_str().ok_or(JwkError::Field("kid"))?.to_owned()),
        };
        let alg = match o.get("alg") {
            None => None,
            Some(a) => {
                let a = a.as_str().ok_or(JwkError::Field("alg"))?;
                Some(Alg::parse(a).ok_or_else(|| JwkError::Alg(a.to_owned()))?)
            }
        };
        let kty = str_field(o, "kty")?;
        let (kind, material) = match kty {
            "RSA" => {
                let n = bytes_field(o, "n")?;
                let e = bytes_field(o, "e")?;
                if roca_fingerprint(&n) {
                    return Err(JwkError::Material(
                        "the modulus has the ROCA fingerprint (CVE-2017-15361): a weak key".into(),
                    ));
                }
                (KeyKind::Rsa, Material::Rsa { n, e })
            }
            "EC" => {
                let crv = str_field(o, "crv")?;
                let (kind, len) = match crv {
                    "P-256" => (KeyKind::P256, 32),
                    "P-384" => (KeyKind::P384, 48),
                    other => return Err(JwkError::Curve(other.to_owned())),
                };
                let (x, y) = (bytes_field(o, "x")?, bytes_field(o, "y")?);
                if x.len() != len || y.len() != len {
                    return Err(JwkError::Material(format!(
                        "{crv} coordinates are {len} bytes"
                    )));
                }
                let mut point = Vec::with_capacity(1 + 2 * len);
                point.push(4);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                (kind, Material::Raw(point))
            }
            "OKP" => {
                let crv = str_field(o, "crv")?;
                if crv != "Ed25519" {
                    return Err(JwkError::Curve(crv.to_owned()));
                }
                let x = bytes_field(o, "x")?;
                if x.len() != 32 {
                    return Err(JwkError::Material("Ed25519 keys are 32 bytes".into()));
                }
                (KeyKind::Ed25519, Material::Raw(x))
            }
            other => return Err(JwkError::Kty(other.to_owned())),
        };
        if let Some(a) = alg
            && a.key_kind() != kind
        {
            return Err(JwkError::AlgMismatch {
                alg: a,
                kty: kty_name(kind),
            });
        }
        let mut verifiers = Vec::new();
        for a in ALL
            .into_iter()
            .filter(|a| a.key_kind() == kind && alg.is_none_or(|k| k == *a))
        {
            let parsed = match &material {
                Material::Rsa { n, e } => {
                    let params = a
                        .rsa_params()
                        .ok_or(JwkError::AlgMismatch { alg: a, kty: "RSA" })?;
                    RsaPublicKeyComponents {
                        n: strip_zeros(n),
                        e: strip_zeros(e),
                    }
                    .to_parsed_public_key(params)
                }
                Material::Raw(bytes) => ParsedPublicKey::new(a.verification(), bytes),
            }
            .map_err(|e| JwkError::Material(e.to_string()))?;
            verifiers.push((a, parsed));
        }
        Ok(Key {
            kid,
            alg,
            kind,
            verifiers,
        })
    }
}

enum Material {
    Rsa { n: Vec<u8>, e: Vec<u8> },
    Raw(Vec<u8>),
}

/// RFC 7518 asks for no leading zero octets, but some libraries write one; the integer is
/// the same either way.
fn strip_zeros(b: &[u8]) -> &[u8] {
    let i = b
        .iter()
        .position(|&x| x != 0)
        .unwrap_or(b.len().saturating_sub(1));
    &b[i..]
}

fn kty_name(k: KeyKind) -> &'static str {
    match k {
        KeyKind::Rsa => "RSA",
        KeyKind::P256 | KeyKind::P384 => "EC",
        KeyKind::Ed25519 => "OKP",
    }
}

/// Small primes for the ROCA test (CVE-2017-15361). Keys from the flawed generator have a
/// modulus that, modulo each of these primes, lies in the subgroup generated by 65537; for
/// a sound key that happens with negligible probability across all of them.
const ROCA_PRIMES: [u32; 38] = [
    3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97,
    101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167,
];

fn roca_fingerprint(n: &[u8]) -> bool {
    ROCA_PRIMES.iter().all(|&p| {
        let r = n
            .iter()
            .fold(0u32, |acc, &b| (acc * 256 + u32::from(b)) % p);
        // Walk the powers of 65537 mod p until they repeat.
        let g = 65537 % p;
        let mut x = 1u32;
        loop {
            if x == r {
                return true;
            }
            x = x * g % p;
            if x == 1 {
                return false;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roca_test_flags_subgroup_moduli_only() {
        // 65537^5 is in the subgroup for every prime by construction.
        let mut n = vec![1u8];
        for _ in 0..5 {
            // n *= 65537, big-endian
            let mut carry = 0u64;
            for b in n.iter_mut().rev() {
                let v = u64::from(*b) * 65537 + carry;
                *b = (v & 0xff) as u8;
                carry = v >> 8;
            }
            while carry > 0 {
                n.insert(0, (carry & 0xff) as u8);
                carry >>= 8;
            }
        }
        assert!(roca_fingerprint(&n));
        // 65537 = 1 (mod 7): modulo 7 only the residue 1 is in the subgroup, and 10 = 3.
        assert!(!roca_fingerprint(&[10]));
    }
}
