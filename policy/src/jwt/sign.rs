//! Signing JWTs: for the demo's token issuer and for tests. Keys are made here and never
//! leave the process.

use super::alg::Alg;
use super::b64;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{self as sig, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use serde_json::{Value, json};

enum SigningKey {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

pub struct Signer {
    pub alg: Alg,
    pub kid: String,
    key: SigningKey,
}

impl Signer {
    /// A fresh key for `alg` (RSA keys are 2048 bits).
    pub fn generate(alg: Alg, kid: &str) -> Result<Self, aws_lc_rs::error::Unspecified> {
        let key = match alg {
            Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512 => {
                SigningKey::Rsa(RsaKeyPair::generate(KeySize::Rsa2048)?)
            }
            Alg::ES256 => SigningKey::Ec(EcdsaKeyPair::generate(
                &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
            )?),
            Alg::ES384 => SigningKey::Ec(EcdsaKeyPair::generate(
                &sig::ECDSA_P384_SHA384_FIXED_SIGNING,
            )?),
            Alg::EdDSA => SigningKey::Ed(Ed25519KeyPair::generate()?),
        };
        Ok(Self {
            alg,
            kid: kid.to_owned(),
            key,
        })
    }

    /// The public half as a JWK with `kid`, `alg` and `use: sig`.
    pub fn public_jwk(&self) -> Value {
        let mut jwk = match &self.key {
            SigningKey::Rsa(k) => {
                let c = PublicKeyComponents::<Vec<u8>>::from(k.public_key());
                json!({"kty": "RSA", "n": b64::encode(&c.n), "e": b64::encode(&c.e)})
            }
            SigningKey::Ec(k) => {
                let point = k.public_key().as_ref();
                let half = (point.len() - 1) / 2;
                let crv = if half == 32 { "P-256" } else { "P-384" };
                json!({"kty": "EC", "crv": crv,
                       "x": b64::encode(&point[1..1 + half]), "y": b64::encode(&point[1 + half..])})
            }
            SigningKey::Ed(k) => {
                json!({"kty": "OKP", "crv": "Ed25519", "x": b64::encode(k.public_key().as_ref())})
            }
        };
        if let Some(o) = jwk.as_object_mut() {
            o.insert("kid".into(), self.kid.clone().into());
            o.insert("alg".into(), self.alg.as_str().into());
            o.insert("use".into(), "sig".into());
        }
        jwk
    }

    /// `{"keys": [this key]}`.
    pub fn jwks(&self) -> String {
        json!({"keys": [self.public_jwk()]}).to_string()
    }

    /// A JWT with the standard header (`alg`, `typ`, `kid`) and these claims.
    pub fn sign(&self, claims: &Value) -> String {
        let header = json!({"alg": self.alg.as_str(), "typ": "JWT", "kid": self.kid});
        self.sign_raw(&header, claims.to_string().as_bytes())
    }

    /// A JWS over any header and payload, signed with this key's algorithm whatever the
    /// header says (tests build hostile headers with it).
    pub fn sign_raw(&self, header: &Value, payload: &[u8]) -> String {
        let input = format!(
            "{}.{}",
            b64::encode(header.to_string().as_bytes()),
            b64::encode(payload)
        );
        let signature = self.signature(input.as_bytes());
        format!("{input}.{}", b64::encode(&signature))
    }

    fn signature(&self, msg: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match &self.key {
            SigningKey::Rsa(k) => {
                let enc: &'static dyn sig::RsaEncoding = match self.alg {
                    Alg::RS384 => &sig::RSA_PKCS1_SHA384,
                    Alg::RS512 => &sig::RSA_PKCS1_SHA512,
                    Alg::PS256 => &sig::RSA_PSS_SHA256,
                    Alg::PS384 => &sig::RSA_PSS_SHA384,
                    Alg::PS512 => &sig::RSA_PSS_SHA512,
                    _ => &sig::RSA_PKCS1_SHA256,
                };
                let mut out = vec![0u8; k.public_modulus_len()];
                // Signing with a key made here cannot fail but for an allocation failure.
                if k.sign(enc, &rng, msg, &mut out).is_err() {
                    out.clear();
                }
                out
            }
            SigningKey::Ec(k) => k
                .sign(&rng, msg)
                .map(|s| s.as_ref().to_vec())
                .unwrap_or_default(),
            SigningKey::Ed(k) => k.sign(msg).as_ref().to_vec(),
        }
    }
}
