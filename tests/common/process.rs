//! The real `switchboard` binary as a child process, for what only a process can show (signals,
//! SIGKILL, exit codes).

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// Starts the binary with its stdout and stderr appended to `log`.
fn spawn(args: &[String], env: &[(String, String)], log: &std::path::Path) -> Child {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out))
        .spawn()
        .unwrap()
}

/// A `switchboard serve` process on a free port; killed when dropped.
pub struct Process {
    child: Child,
    pub url: String,
    dir: tempfile::TempDir,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Process {
    /// Starts `switchboard serve` with `yaml` as its config and `extra` arguments, and waits until
    /// it reports ready.
    pub async fn serve(yaml: &str, extra: &[&str]) -> Process {
        Process::serve_with_env(yaml, extra, &[]).await
    }

    /// [`Process::serve`] with more environment variables.
    pub async fn serve_with_env(yaml: &str, extra: &[&str], env: &[(&str, &str)]) -> Process {
        let process = Process::start(yaml, extra, env);
        super::wait_ready(&process.url).await;
        process
    }

    /// Starts it without waiting for readiness (for a gateway the plain-HTTP probe cannot reach,
    /// one serving TLS).
    pub fn start(yaml: &str, extra: &[&str], env: &[(&str, &str)]) -> Process {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, yaml).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut args = vec![
            "serve".to_string(),
            "--config".into(),
            config.display().to_string(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Process {
            child: spawn(&args, &env, &dir.path().join("output.log")),
            url: format!("http://127.0.0.1:{port}"),
            dir,
            args,
            env,
        }
    }

    /// Starts it again, same arguments and address, after it was killed.
    pub async fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(&self.args, &self.env, &self.dir.path().join("output.log"));
        super::wait_ready(&self.url).await;
    }

    /// The config file it was started with (tests rewrite it to exercise reloads).
    pub fn config_path(&self) -> std::path::PathBuf {
        self.dir.path().join("config.yaml")
    }

    /// Everything it wrote to stdout and stderr so far (its logs).
    pub fn output(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("output.log")).unwrap_or_default()
    }

    pub fn sighup(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGKILL: the process gets no chance to clean up.
    pub fn sigkill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Waits for the process to exit; returns how long it took and whether it exited cleanly.
    pub async fn exit(&mut self, limit: Duration) -> (Duration, bool) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (started.elapsed(), status.success());
            }
            assert!(
                started.elapsed() < limit,
                "the process did not exit within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
