//! A real nginx on 127.0.0.1, the normalizing upstream of the audit: it merges slashes,
//! removes dot segments and decodes escapes before it picks a `location`, as most upstreams
//! do. Its `/admin` location answers `ADMIN`; every other path answers what nginx received
//! (`request_uri`) and what it made of it (`uri`, decoded and normalized), and the host.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Nginx {
    pub addr: SocketAddr,
    child: Child,
    dir: PathBuf,
}

/// The nginx binary, or `None` with a message saying why the test is skipped. CI installs
/// nginx; there (`CI=true`, or `MEMBRANE_REQUIRE_NGINX=1`) a missing binary is a failure.
pub fn binary() -> Option<PathBuf> {
    for p in ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"] {
        if std::path::Path::new(p).exists() {
            return Some(PathBuf::from(p));
        }
    }
    assert!(
        std::env::var_os("MEMBRANE_REQUIRE_NGINX").is_none(),
        "nginx is required (MEMBRANE_REQUIRE_NGINX is set) but not installed"
    );
    super::missing("nginx is not installed (apt-get install nginx-light)");
    None
}

impl Nginx {
    pub fn start() -> Option<Nginx> {
        let bin = binary()?;
        let port = super::closed_port();
        let dir =
            std::env::temp_dir().join(format!("membrane-nginx-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let d = dir.display();
        let conf = format!(
            r#"worker_processes 1; daemon off; master_process off; pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d};
  uwsgi_temp_path {d}; scgi_temp_path {d};
  server {{
    listen 127.0.0.1:{port};
    location = /admin {{ return 200 "ADMIN\n"; }}
    location /admin/ {{ return 200 "ADMIN\n"; }}
    location / {{ return 200 "uri=$uri\nrequest_uri=$request_uri\nhost=$host\n"; }}
  }}
}}
"#
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let child = Command::new(bin)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-p")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "nginx did not start: {d}/error.log"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Nginx { addr, child, dir })
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What nginx's catch-all location answered: `uri`, `request_uri`, `host`.
pub fn seen(body: &str) -> Option<(String, String, String)> {
    let field = |name: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .map(str::to_owned)
    };
    Some((field("uri")?, field("request_uri")?, field("host")?))
}
