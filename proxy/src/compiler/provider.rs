//! Compiling JWT providers: the key set (inline, from a file, or fetched over HTTPS), the
//! claims checked and the claims forwarded as headers. Key stores and token caches are
//! carried over from the previous generation while their source is unchanged, so a reload
//! does not forget verified tokens.

use super::Compiler;
use crate::config::{ConfigError, JwksSource, JwtProviderConfig, Located};
use crate::enforce::authn::JwtProvider;
use crate::enforce::jwks::{ProviderKeys, RemoteSpec};
use crate::snapshot::{Fetcher, KeyInstall, Pending};
use http::HeaderName;
use membrane_policy::jwt::{KeySet, Validation};
use std::sync::Arc;

impl Compiler<'_> {
    /// A JWT provider. Its key store is kept from the previous generation while the key
    /// source is the same (verified tokens stay cached); a changed static set is installed,
    /// and a new remote set's fetcher started, by `activate`.
    pub(super) fn provider(
        &self,
        i: usize,
        p: &JwtProviderConfig,
        pending: &mut Pending,
    ) -> Result<JwtProvider, ConfigError> {
        {
            let at = format!("jwt_providers[{i}]");
            let name: Arc<str> = p.name.value().as_str().into();
            let (source, keys, remote) = match &p.jwks {
                JwksSource::Inline(text) => {
                    let set = self.key_set(text.value(), text, &format!("{at}.jwks.inline"))?;
                    (
                        "inline".to_owned(),
                        Some((text_hash(text.value()), set)),
                        None,
                    )
                }
                JwksSource::File(f) => {
                    let field = format!("{at}.jwks.file");
                    let (path, bytes) = self.file(f, &field)?;
                    let text = std::str::from_utf8(bytes).map_err(|_| {
                        self.err(
                            f,
                            field.clone(),
                            format!("{}: not UTF-8 text", path.display()),
                        )
                    })?;
                    let set = self.key_set(text, f, &field)?;
                    (
                        format!("file:{}", path.display()),
                        Some((text_hash(text), set)),
                        None,
                    )
                }
                JwksSource::Url(r) => {
                    let f = format!("{at}.jwks.url.url");
                    let url: http::Uri = r
                        .url
                        .value()
                        .parse()
                        .map_err(|e| self.err(&r.url, f.clone(), format!("not a URL: {e}")))?;
                    if url.scheme_str() != Some("https") || url.host().is_none() {
                        return Err(self.err(
                            &r.url,
                            f,
                            "a JWKS URL must be https://host/...".into(),
                        ));
                    }
                    let roots = match &r.trust_bundle {
                        Some(b) => {
                            let field = format!("{at}.jwks.url.trust_bundle");
                            let (path, pem) = self.file(b, &field)?;
                            crate::tls::material::bundle(&path, pem)
                                .map_err(|e| self.err(b, field, e.to_string()))?
                                .0
                        }
                        None => self.system_roots(),
                    };
                    let tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
                        .with_safe_default_protocol_versions()
                        .map_err(|e| self.err(&r.url, at.clone(), e.to_string()))?
                        .with_root_certificates(roots)
                        .with_no_client_auth();
                    let spec = RemoteSpec {
                        url,
                        tls: Arc::new(tls),
                        refresh: r.refresh.0,
                        min_refetch: r.min_refetch.0,
                        timeout: r.timeout.0,
                    };
                    let source = format!(
                        "url:{}|{:?}|{:?}|{:?}",
                        r.url.value(),
                        r.trust_bundle.as_ref().map(|b| b.value()),
                        r.refresh.0,
                        r.min_refetch.0
                    );
                    (source, None, Some(spec))
                }
            };
            let kept = self
                .prev
                .and_then(|s| s.providers.get(&name))
                .map(|old| old.keys.clone())
                .filter(|k| k.source == source);
            let keys = match kept {
                Some(k) => {
                    if let Some((content, set)) = keys {
                        pending.key_sets.push(KeyInstall {
                            keys: k.clone(),
                            content,
                            set,
                        });
                    }
                    k
                }
                None => {
                    // Not shared with any generation yet: filled here.
                    let k = ProviderKeys::new(
                        source,
                        KeySet::default(),
                        self.metrics.provider(&name),
                        remote.is_some(),
                    );
                    if let Some((content, set)) = keys {
                        k.replace_if_changed(content, set);
                    }
                    if let Some(spec) = remote {
                        pending.fetchers.push(Fetcher {
                            keys: k.clone(),
                            spec,
                        });
                    }
                    k
                }
            };
            let mut forward = Vec::new();
            for (j, c) in p.forward_claims.iter().enumerate() {
                let h = HeaderName::from_bytes(c.header.value().as_bytes()).map_err(|_| {
                    self.err(
                        &c.header,
                        format!("{at}.forward_claims[{j}].header"),
                        "not a valid header name".into(),
                    )
                })?;
                forward.push((c.claim.clone(), h));
            }
            Ok(JwtProvider {
                name,
                validation: Validation {
                    issuer: p.issuer.clone(),
                    audiences: p.audiences.clone(),
                    leeway: p.leeway.0.as_secs(),
                    require_exp: p.require_exp,
                },
                from: p.from.clone(),
                forward,
                keys,
            })
        }
    }

    fn key_set<T>(&self, text: &str, at: &Located<T>, field: &str) -> Result<KeySet, ConfigError> {
        let (set, skipped) = KeySet::from_json(text)
            .map_err(|e| self.err(at, field.to_owned(), format!("not a JWK set: {e}")))?;
        if set.keys.is_empty() {
            let why: Vec<String> = skipped
                .iter()
                .map(|(i, e)| format!("keys[{i}]: {e}"))
                .collect();
            return Err(self.err(
                at,
                field.to_owned(),
                format!("no usable signing key ({})", why.join("; ")),
            ));
        }
        Ok(set)
    }
}

fn text_hash(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = rustc_hash::FxHasher::default();
    text.hash(&mut h);
    // 0 means "nothing loaded yet".
    h.finish().max(1)
}
