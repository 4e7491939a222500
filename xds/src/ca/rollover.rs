//! A CA roll-over the control server runs by itself, once the operator has put the next CA
//! in the CA directory as `next-ca.pem` and `next-ca-key.pem` (the key first; a key without
//! its certificate, or the other way round, is ignored until both match):
//!
//! 1. **Publish**: the next CA's root joins the trust bundle (pushed to gateways over xDS
//!    and sent with every certificate), while the current CA keeps signing. The start is
//!    written to `rollover-started`, so a restart neither skips nor repeats the wait.
//! 2. **Switch**, after `overlap` (three quarters of a lifetime: a gateway renews after at
//!    most 0.6 of one, so each has the new root for its control channel too): the current
//!    roots are written to `retiring-<unix time>.pem`, named for when they may go, and the
//!    next CA becomes `ca.pem`/`ca-key.pem`. New certificates, the control server's own
//!    included, come from it.
//! 3. **Drop**, `keep_old` after the switch (a lifetime and a twentieth, for clock skew):
//!    the last certificate the old CA signed has expired, and `retiring-*.pem` is deleted.
//!
//! No request fails: every certificate in use chains to a root every gateway trusts at
//! every step. An operator's `bundle.pem` (the roots above an intermediate) is not edited:
//! an intermediate rolled under the same root needs no bundle change.
//!
//! Assumption: one control server writes the directory (several replicas on a shared store
//! are issue 15's).

use membrane_identity::authority::{Authority, LoadError};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const NEXT_CERT: &str = "next-ca.pem";
pub const NEXT_KEY: &str = "next-ca-key.pem";
const STARTED: &str = "rollover-started";
const RETIRING: &str = "retiring-";

/// The files in the CA directory a roll-over reads or writes.
pub fn is_rollover_file(name: &str) -> bool {
    name == NEXT_CERT
        || name == NEXT_KEY
        || name == STARTED
        || (name.starts_with(RETIRING) && name.ends_with(".pem"))
}

/// How long each step waits, from the certificates' lifetime.
#[derive(Debug, Clone, Copy)]
pub struct Timeline {
    pub overlap: Duration,
    pub keep_old: Duration,
}

impl Timeline {
    pub fn for_lifetime(lifetime: Duration) -> Self {
        Self {
            overlap: lifetime * 3 / 4,
            keep_old: lifetime + lifetime / 20,
        }
    }
}

/// What the directory says now, beyond `ca.pem`.
#[derive(Debug, Default)]
pub struct Plan {
    /// Roots to trust besides the current CA's: the next CA's and the retiring ones.
    pub extra_roots: String,
    /// When the roll-over has its next step to take, if it is under way.
    pub next_step: Option<SystemTime>,
    /// Which step it is in, for `/config` and the metric: "idle", "published" or "retiring".
    pub phase: &'static str,
}

/// Why a roll-over step could not be taken (the current CA keeps signing).
#[derive(Debug, thiserror::Error)]
pub enum RolloverError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the next CA does not load: {0}")]
    Next(#[from] LoadError),
    #[error("{0}: a roll-over is under way already; let it finish first")]
    UnderWay(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RolloverError + '_ {
    move |source| RolloverError::Io {
        path: path.to_owned(),
        source,
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Starts a roll-over to the CA in `next_dir` (`ca.pem` and `ca-key.pem`, as `membrane cert
/// ca` writes them): checks that it loads, then writes its key (0600) and its certificate
/// into `dir` under the roll-over's names, each by a rename, the key first. The control
/// server watching `dir` takes it from there.
pub fn stage(dir: &Path, next_dir: &Path, lifetime: Duration) -> Result<(), RolloverError> {
    let (cert, key) = (next_dir.join("ca.pem"), next_dir.join("ca-key.pem"));
    Authority::load_files(next_dir, &cert, &key, None, lifetime)?;
    let under_way = dir.join(NEXT_CERT);
    if under_way.exists() || dir.join(NEXT_KEY).exists() {
        return Err(RolloverError::UnderWay(under_way));
    }
    for (from, name, private) in [(&key, NEXT_KEY, true), (&cert, NEXT_CERT, false)] {
        let text = std::fs::read(from).map_err(io(from))?;
        let tmp = dir.join(format!(".{name}.tmp"));
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create(true).truncate(true);
        #[cfg(unix)]
        if private {
            use std::os::unix::fs::OpenOptionsExt;
            o.mode(0o600);
        }
        #[cfg(not(unix))]
        let _ = private;
        use std::io::Write;
        o.open(&tmp)
            .and_then(|mut f| f.write_all(&text))
            .map_err(io(&tmp))?;
        let to = dir.join(name);
        std::fs::rename(&tmp, &to).map_err(io(&to))?;
    }
    Ok(())
}

/// Takes the steps that are due at `now` and says what to trust until the next one.
/// `current` is the CA signing now (loaded from `ca.pem`); after a switch the caller loads
/// the directory again.
pub fn advance(
    dir: &Path,
    current: &Authority,
    timeline: Timeline,
    now: SystemTime,
) -> Result<(Plan, bool), RolloverError> {
    let mut plan = Plan {
        phase: "idle",
        ..Plan::default()
    };
    // Retiring roots: dropped when due, trusted until then.
    let entries = std::fs::read_dir(dir).map_err(io(dir))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(due) = name
            .to_str()
            .and_then(|n| n.strip_prefix(RETIRING))
            .and_then(|n| n.strip_suffix(".pem"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        let path = entry.path();
        if unix(now) >= due {
            std::fs::remove_file(&path).map_err(io(&path))?;
            tracing::info!(file = %path.display(), "CA roll-over: the old roots are no longer trusted");
            continue;
        }
        plan.extra_roots
            .push_str(&std::fs::read_to_string(&path).map_err(io(&path))?);
        plan.phase = "retiring";
        let at = UNIX_EPOCH + Duration::from_secs(due);
        plan.next_step = Some(plan.next_step.map_or(at, |n| n.min(at)));
    }

    let (next_cert, next_key) = (dir.join(NEXT_CERT), dir.join(NEXT_KEY));
    if !next_cert.exists() && !next_key.exists() {
        return Ok((plan, false));
    }
    let next = Authority::load_files(dir, &next_cert, &next_key, None, current.lifetime())?;
    let started_path = dir.join(STARTED);
    let started = match std::fs::read_to_string(&started_path) {
        Ok(t) => t.trim().parse::<u64>().unwrap_or(unix(now)),
        Err(_) => {
            std::fs::write(&started_path, format!("{}\n", unix(now))).map_err(io(&started_path))?;
            tracing::info!(
                "CA roll-over: the next CA's root is published; the current CA signs until the switch"
            );
            unix(now)
        }
    };
    let switch_at = UNIX_EPOCH + Duration::from_secs(started) + timeline.overlap;
    if now < switch_at {
        plan.extra_roots.push_str(next.own_root_pem());
        plan.phase = "published";
        plan.next_step = Some(plan.next_step.map_or(switch_at, |n| n.min(switch_at)));
        return Ok((plan, false));
    }
    // The switch: keep the current roots until the old CA's last leaf has expired, then
    // the next CA signs. The key is renamed first; a reader between the two renames finds
    // a mismatched pair and keeps the CA it has.
    let due = unix(now + timeline.keep_old);
    let retiring = dir.join(format!("{RETIRING}{due}.pem"));
    std::fs::write(&retiring, current.bundle_pem()).map_err(io(&retiring))?;
    let (ca, key) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
    std::fs::rename(&next_key, &key).map_err(io(&key))?;
    std::fs::rename(&next_cert, &ca).map_err(io(&ca))?;
    std::fs::remove_file(&started_path).map_err(io(&started_path))?;
    tracing::info!(old_roots_until = due, "CA roll-over: the next CA signs now");
    Ok((plan, true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use membrane_identity::devca::DevCa;

    fn dir(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("membrane-rollover-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn write_ca(d: &Path, cert: &str, key: &str, ca: &DevCa) {
        std::fs::write(d.join(key), ca.key_pem()).unwrap();
        std::fs::write(d.join(cert), ca.cert_pem()).unwrap();
    }

    /// The three steps at the times they are due, as a restart would see them.
    #[test]
    fn publish_then_switch_then_drop_at_their_times() {
        let d = dir("steps");
        let life = Duration::from_secs(400);
        let t = Timeline::for_lifetime(life);
        let old = DevCa::new("old", Duration::from_secs(86_400)).unwrap();
        let new = DevCa::new("new", Duration::from_secs(86_400)).unwrap();
        write_ca(&d, "ca.pem", "ca-key.pem", &old);
        let load = || Authority::load(&d, life).unwrap();
        let t0 = SystemTime::now();

        let (plan, switched) = advance(&d, &load(), t, t0).unwrap();
        assert_eq!(
            (plan.phase, switched, plan.next_step),
            ("idle", false, None)
        );

        let staged = d.join("staged");
        std::fs::create_dir_all(&staged).unwrap();
        write_ca(&staged, "ca.pem", "ca-key.pem", &new);
        stage(&d, &staged, life).unwrap();
        assert!(matches!(
            stage(&d, &staged, life),
            Err(RolloverError::UnderWay(_))
        ));
        let (plan, switched) = advance(&d, &load(), t, t0).unwrap();
        assert_eq!((plan.phase, switched), ("published", false));
        assert!(plan.extra_roots.contains(new.cert_pem().trim()));
        let switch_at = plan.next_step.unwrap();
        assert!(switch_at >= t0 + Duration::from_secs(299) && switch_at <= t0 + t.overlap);
        // Later, still before the switch: the start is remembered, not taken again.
        let (plan, _) = advance(&d, &load(), t, t0 + Duration::from_secs(100)).unwrap();
        assert_eq!(plan.next_step, Some(switch_at));

        let (_, switched) = advance(&d, &load(), t, switch_at).unwrap();
        assert!(switched);
        let now = load();
        assert!(now.own_root_pem().contains(new.cert_pem().trim()));
        let (plan, switched) = advance(&d, &now, t, switch_at).unwrap();
        assert_eq!((plan.phase, switched), ("retiring", false));
        assert!(plan.extra_roots.contains(old.cert_pem().trim()));
        let drop_at = plan.next_step.unwrap();
        assert!(drop_at >= switch_at + t.keep_old - Duration::from_secs(1));

        let (plan, _) = advance(&d, &now, t, drop_at).unwrap();
        assert_eq!((plan.phase, plan.extra_roots.as_str()), ("idle", ""));
        let trusted = now.trusting(&plan.extra_roots);
        assert!(!trusted.bundle_pem().contains(old.cert_pem().trim()));
        let _ = std::fs::remove_dir_all(&d);
    }

    /// Half a next CA (a key that is not its certificate's) is an error, and nothing moves.
    #[test]
    fn a_mismatched_next_ca_is_refused_and_nothing_moves() {
        let d = dir("mismatch");
        let life = Duration::from_secs(400);
        let old = DevCa::new("old", Duration::from_secs(86_400)).unwrap();
        let new = DevCa::new("new", Duration::from_secs(86_400)).unwrap();
        write_ca(&d, "ca.pem", "ca-key.pem", &old);
        std::fs::write(d.join(NEXT_CERT), new.cert_pem()).unwrap();
        std::fs::write(d.join(NEXT_KEY), old.key_pem()).unwrap();
        let current = Authority::load(&d, life).unwrap();
        let far = SystemTime::now() + Duration::from_secs(10_000);
        let r = advance(&d, &current, Timeline::for_lifetime(life), far);
        assert!(matches!(r, Err(RolloverError::Next(_))), "{r:?}");
        assert!(!d.join(STARTED).exists());
        assert!(Authority::load(&d, life).unwrap().same_as(&current));
        let _ = std::fs::remove_dir_all(&d);
    }
}
