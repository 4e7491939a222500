use super::Bootstrap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Why a configuration was refused. Every variant names the file; the ones about content name
/// the line, the column and the field, so that an operator can go straight to the mistake.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read the file: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", Positioned(self))]
    Invalid {
        file: PathBuf,
        line: u64,
        column: u64,
        /// Dotted path of the field, e.g. `listeners[0].virtual_hosts[1].routes[2].forward.cluster`.
        field: String,
        message: String,
        /// The top-level entry the mistake is in, when it is in one (set by the compiler):
        /// the xDS client refuses the resource that entry came from.
        owner: Option<Owner>,
    },
    #[error("{file}: {message}")]
    Apply { file: PathBuf, message: String },
}

/// A top-level entry of a bootstrap, by kind and index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Listener(usize),
    Cluster(usize),
    JwtProvider(usize),
}

impl ConfigError {
    /// The error, attributed to `owner`.
    pub fn owned_by(mut self, owner: Owner) -> Self {
        if let ConfigError::Invalid { owner: o, .. } = &mut self {
            *o = Some(owner);
        }
        self
    }

    pub fn owner(&self) -> Option<Owner> {
        match self {
            ConfigError::Invalid { owner, .. } => *owner,
            _ => None,
        }
    }
}

/// Several mistakes of one configuration, each on a line of its own.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

struct Positioned<'a>(&'a ConfigError);

impl fmt::Display for Positioned<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ConfigError::Invalid {
            file,
            line,
            column,
            field,
            message,
            ..
        } = self.0
        else {
            return Ok(());
        };
        write!(f, "{}:{line}:{column}: ", file.display())?;
        if !field.is_empty() {
            write!(f, "field `{field}`: ")?;
        }
        f.write_str(message)
    }
}

/// Reads and parses a bootstrap file.
pub fn read_file(path: &Path) -> Result<(Bootstrap, String), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: path.to_owned(),
        source,
    })?;
    let config = parse(path, &text)?;
    Ok((config, text))
}

/// Parses bootstrap YAML. `file` is only used to name the source in errors.
pub fn parse(file: &Path, text: &str) -> Result<Bootstrap, ConfigError> {
    membrane_api::yaml::from_str(text).map_err(|e| ConfigError::Invalid {
        file: file.to_owned(),
        line: e.line,
        column: e.column,
        field: e.field,
        message: e.message,
        owner: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(yaml: &str) -> String {
        parse(Path::new("bad.yaml"), yaml).unwrap_err().to_string()
    }

    #[test]
    fn a_wrong_type_names_file_line_column_and_field() {
        let e = error_of(
            "listeners:\n  - name: a\n    address: 127.0.0.1:1\nclusters:\n  - name: c\n    endpoints: []\n    max_connections: lots\n",
        );
        assert!(
            e.starts_with("bad.yaml:7:22: field `clusters[0].max_connections`: "),
            "{e}"
        );
    }

    #[test]
    fn an_unknown_field_is_refused_with_what_is_valid() {
        let e = error_of("listeners:\n  - name: a\n    adress: 127.0.0.1:1\n");
        assert!(e.starts_with("bad.yaml:3:5: "), "{e}");
        assert!(e.contains("unknown field `adress`"), "{e}");
        assert!(e.contains("address"), "{e}");
    }

    #[test]
    fn a_bad_duration_says_what_would_be_valid() {
        let e = error_of("drain_timeout: 5 parsecs\n");
        assert!(
            e.starts_with("bad.yaml:1:16: field `drain_timeout`: "),
            "{e}"
        );
        assert!(e.contains("valid units"), "{e}");
    }

    #[test]
    fn broken_yaml_is_an_error_not_a_panic() {
        let e = error_of("listeners: [\n");
        assert!(e.starts_with("bad.yaml:1:"), "{e}");
    }
}
