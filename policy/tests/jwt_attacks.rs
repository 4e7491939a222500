//! Tokens an attacker would try, made here with real keys, each refused for its reason; and
//! every supported algorithm round-trips.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use membrane_policy::jwt::alg::ALL;
use membrane_policy::jwt::{
    Alg, Claims, JwtError, KeySet, Signer, TokenCache, Validation, b64, verify, verify_jws,
};
use serde_json::json;
use std::sync::Arc;

const NOW: u64 = 1_800_000_000;

fn validation() -> Validation {
    Validation {
        issuer: Some("https://idp.test".into()),
        audiences: vec!["orders".into()],
        leeway: 30,
        require_exp: true,
    }
}

fn claims() -> serde_json::Value {
    json!({"iss": "https://idp.test", "aud": ["orders", "other"], "sub": "alice",
           "exp": NOW + 600, "nbf": NOW - 10, "iat": NOW - 10})
}

fn keys_of(signers: &[&Signer]) -> KeySet {
    let jwks = json!({"keys": signers.iter().map(|s| s.public_jwk()).collect::<Vec<_>>()});
    KeySet::from_json(&jwks.to_string()).unwrap().0
}

#[test]
fn every_supported_algorithm_round_trips() {
    for alg in ALL {
        let s = Signer::generate(alg, &format!("k-{alg}")).unwrap();
        let keys = keys_of(&[&s]);
        let c = verify(&s.sign(&claims()), &keys, &validation(), NOW)
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(c.map["sub"], "alice");
    }
}

#[test]
fn attack_tokens_are_refused_for_their_reason() {
    let rsa = Signer::generate(Alg::RS256, "rsa-1").unwrap();
    let ec = Signer::generate(Alg::ES256, "ec-1").unwrap();
    let keys = keys_of(&[&rsa, &ec]);
    let v = validation();
    let payload = claims().to_string();
    let enc = |h: serde_json::Value| b64::encode(h.to_string().as_bytes());

    // alg none, with and without a signature part.
    let none = format!(
        "{}.{}.",
        enc(json!({"alg": "none"})),
        b64::encode(payload.as_bytes())
    );
    assert_eq!(verify(&none, &keys, &v, NOW), Err(JwtError::AlgNone));

    // HS256 keyed with the RSA public key (the classic confusion): refused before any key.
    let public_key_bytes = rsa.public_jwk().to_string();
    let input = format!(
        "{}.{}",
        enc(json!({"alg": "HS256", "kid": "rsa-1"})),
        b64::encode(payload.as_bytes())
    );
    let mac = aws_lc_rs::hmac::sign(
        &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, public_key_bytes.as_bytes()),
        input.as_bytes(),
    );
    let hs = format!("{input}.{}", b64::encode(mac.as_ref()));
    assert_eq!(
        verify(&hs, &keys, &v, NOW),
        Err(JwtError::Hmac("HS256".into()))
    );

    // An RSA key named by a token that claims ES256: the key does not fit.
    let wrong_kind = ec.sign_raw(&json!({"alg": "ES256", "kid": "rsa-1"}), payload.as_bytes());
    assert_eq!(
        verify(&wrong_kind, &keys, &v, NOW),
        Err(JwtError::NoKey(Alg::ES256))
    );

    // Forged and truncated signatures.
    let good = rsa.sign(&claims());
    let (head, sig) = good.rsplit_once('.').unwrap();
    let mut raw = b64::decode(sig).unwrap();
    raw[10] ^= 1;
    let forged = format!("{head}.{}", b64::encode(&raw));
    assert_eq!(verify(&forged, &keys, &v, NOW), Err(JwtError::BadSignature));
    let truncated = format!("{head}.{}", b64::encode(&raw[..raw.len() / 2]));
    assert_eq!(
        verify(&truncated, &keys, &v, NOW),
        Err(JwtError::BadSignature)
    );
    // A payload swapped under a valid signature.
    let other_payload = b64::encode(
        json!({"sub": "mallory", "exp": NOW + 600})
            .to_string()
            .as_bytes(),
    );
    let (h, rest) = good.split_once('.').unwrap();
    let (_, s) = rest.split_once('.').unwrap();
    let swapped = format!("{h}.{other_payload}.{s}");
    assert_eq!(
        verify(&swapped, &keys, &v, NOW),
        Err(JwtError::BadSignature)
    );

    // Time and audience.
    let mut c = claims();
    c["exp"] = json!(NOW - 31);
    assert_eq!(
        verify(&rsa.sign(&c), &keys, &v, NOW),
        Err(JwtError::Expired)
    );
    c["exp"] = json!(NOW - 29); // within the leeway
    assert!(verify(&rsa.sign(&c), &keys, &v, NOW).is_ok());
    let mut c = claims();
    c["nbf"] = json!(NOW + 60);
    assert_eq!(
        verify(&rsa.sign(&c), &keys, &v, NOW),
        Err(JwtError::NotYetValid)
    );
    let mut c = claims();
    c["iat"] = json!(NOW + 3600);
    assert_eq!(
        verify(&rsa.sign(&c), &keys, &v, NOW),
        Err(JwtError::IssuedInFuture)
    );
    let mut c = claims();
    c["iss"] = json!("https://evil.test");
    assert_eq!(verify(&rsa.sign(&c), &keys, &v, NOW), Err(JwtError::Issuer));
    let mut c = claims();
    c["aud"] = json!("billing");
    assert_eq!(
        verify(&rsa.sign(&c), &keys, &v, NOW),
        Err(JwtError::Audience)
    );
    let mut c = claims();
    c.as_object_mut().unwrap().remove("exp");
    assert_eq!(
        verify(&rsa.sign(&c), &keys, &v, NOW),
        Err(JwtError::MissingClaim("exp"))
    );

    // Unknown kid, and a kid with path characters: only a lookup, never a path.
    let stranger = Signer::generate(Alg::RS256, "rsa-2").unwrap();
    assert_eq!(
        verify(&stranger.sign(&claims()), &keys, &v, NOW),
        Err(JwtError::UnknownKid("rsa-2".into()))
    );
    let traversal = stranger.sign_raw(
        &json!({"alg": "RS256", "kid": "../../../../etc/passwd"}),
        payload.as_bytes(),
    );
    assert_eq!(
        verify(&traversal, &keys, &v, NOW),
        Err(JwtError::UnknownKid("../../../../etc/passwd".into()))
    );

    // The attacker's own key embedded (jwk) or pointed to (jku, x5u): never used.
    for (name, value) in [
        ("jwk", stranger.public_jwk()),
        ("jku", json!("https://evil.test/jwks.json")),
        ("x5u", json!("https://evil.test/cert.pem")),
    ] {
        let t = stranger.sign_raw(
            &json!({"alg": "RS256", "kid": "rsa-1", name: value}),
            payload.as_bytes(),
        );
        assert_eq!(
            verify(&t, &keys, &v, NOW),
            Err(JwtError::BadSignature),
            "{name}"
        );
    }

    // A critical header nobody here understands, even with a valid signature.
    let crit = rsa.sign_raw(
        &json!({"alg": "RS256", "kid": "rsa-1", "crit": ["exp-policy"], "exp-policy": 1}),
        payload.as_bytes(),
    );
    assert_eq!(
        verify(&crit, &keys, &v, NOW),
        Err(JwtError::Crit("exp-policy".into()))
    );
    let b64_false = rsa.sign_raw(
        &json!({"alg": "RS256", "kid": "rsa-1", "b64": false, "crit": ["b64"]}),
        payload.as_bytes(),
    );
    assert_eq!(
        verify(&b64_false, &keys, &v, NOW),
        Err(JwtError::Crit("b64".into()))
    );

    // Structure: JWE-like five parts, padding, garbage.
    assert!(matches!(
        verify_jws("a.b.c.d.e", &keys),
        Err(JwtError::Malformed(_))
    ));
    let padded = good.replacen('.', "=.", 1);
    assert!(matches!(
        verify_jws(&padded, &keys),
        Err(JwtError::Malformed(_))
    ));
    assert!(matches!(
        verify_jws("not a token", &keys),
        Err(JwtError::Malformed(_))
    ));
    assert_eq!(
        verify_jws(&"a".repeat(20_000), &keys).err(),
        Some(JwtError::TooLong)
    );
}

#[test]
fn the_cache_answers_repeats_and_never_outlives_the_token() {
    let cache = TokenCache::new(4, 3600);
    let claims = |exp| {
        Arc::new(Claims {
            map: Default::default(),
            exp: Some(exp),
        })
    };
    cache.insert("token-a", claims(NOW + 100), NOW, 30);
    assert!(
        cache.get("token-a", NOW + 130).is_some(),
        "within exp + leeway"
    );
    assert!(cache.get("token-a", NOW + 131).is_none(), "past it");
    assert!(cache.get("token-b", NOW).is_none());
    // Bounded: inserting many keeps it small.
    for i in 0..1000 {
        cache.insert(&format!("t{i}"), claims(NOW + 100), NOW, 0);
    }
    assert!(cache.len() <= 16, "{} entries", cache.len());
    cache.clear();
    assert!(cache.is_empty());
}
