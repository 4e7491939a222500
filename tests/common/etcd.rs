//! A real etcd on 127.0.0.1 (Debian's `etcd-server`), with its data in a directory of the
//! test's own, for the spec store. Stopped (and startable again on the same data and port)
//! by the test; killed when dropped.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Etcd {
    pub addr: SocketAddr,
    peer: u16,
    dir: PathBuf,
    child: Option<Child>,
}

/// The etcd binary, or `None` with a message saying why the test is skipped (a failure in
/// CI, which installs it).
pub fn binary() -> Option<PathBuf> {
    for p in ["/usr/bin/etcd", "/usr/local/bin/etcd"] {
        if std::path::Path::new(p).exists() {
            return Some(PathBuf::from(p));
        }
    }
    super::missing("etcd is not installed (apt-get install etcd-server)");
    None
}

impl Etcd {
    pub fn start(tag: &str) -> Option<Etcd> {
        binary()?;
        let (port, peer) = (super::closed_port(), super::closed_port());
        let dir =
            std::env::temp_dir().join(format!("membrane-etcd-{tag}-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut e = Etcd {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            peer,
            dir,
            child: None,
        };
        e.resume();
        Some(e)
    }

    /// `etcd://127.0.0.1:port/prefix`
    pub fn url(&self, prefix: &str) -> String {
        format!("etcd://{}/{prefix}", self.addr)
    }

    /// Starts etcd (again) on its data and port, and waits until it takes connections.
    pub fn resume(&mut self) {
        let bin = binary().unwrap();
        let client = format!("http://{}", self.addr);
        let peer = format!("http://127.0.0.1:{}", self.peer);
        let child = Command::new(bin)
            .args(["--name", "t", "--data-dir"])
            .arg(self.dir.join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("t={peer}")])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("etcd.log")).unwrap())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let start = Instant::now();
        while std::net::TcpStream::connect(self.addr).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "etcd did not start: {}",
                std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops etcd (its data stays).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Puts every `.yaml` file of `dir` into `store` under its file name (a spec directory
/// moved into etcd).
pub async fn put_dir(store: &membrane_xds::store::Etcd, dir: &std::path::Path) {
    for f in std::fs::read_dir(dir).unwrap() {
        let p = f.unwrap().path();
        if p.extension().is_some_and(|e| e == "yaml") {
            let name = p.file_name().unwrap().to_str().unwrap().to_owned();
            store
                .put(&name, &std::fs::read_to_string(&p).unwrap())
                .await
                .unwrap();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
