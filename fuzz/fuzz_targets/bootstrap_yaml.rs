//! The bootstrap file: YAML with positions, then the pure compiler on what parsed (no file
//! or DNS is read: the loaded inputs are given empty). No input may panic; a refusal names
//! the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use membrane_proxy::compiler::{self, Loaded};
use membrane_proxy::config;
use membrane_proxy::metrics::Metrics;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = Path::new("fuzz.yaml");
    let Ok(cfg) = config::parse(file, text) else {
        return;
    };
    let loaded = Loaded {
        file: file.to_owned(),
        text: text.to_owned(),
        config: cfg,
        files: Default::default(),
        resolved: Default::default(),
        system_roots: None,
    };
    if let Err(errors) = compiler::compile(&loaded, None, &Metrics::new()) {
        assert!(!errors.is_empty());
        for e in errors {
            assert!(e.to_string().starts_with("fuzz.yaml"), "{e}");
        }
    }
});
