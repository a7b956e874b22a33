//! A server process a scenario starts, stops and restarts itself (`bench storm`,
//! `bench abuse`), so that it can read the process's memory and CPU across restarts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// The server process the generator started, and how to start it again.
pub(crate) struct Server {
    child: Child,
    command: Vec<String>,
    extra: Vec<String>,
    log: Option<PathBuf>,
}

impl Server {
    /// Starts `command` followed by `extra` arguments, its output appended to `log` (else
    /// discarded).
    pub(crate) fn start(command: &[String], extra: &[String], log: Option<&Path>) -> anyhow::Result<Server> {
        let (program, rest) = command.split_first().context("the server command after -- is empty")?;
        let output = || -> anyhow::Result<Stdio> {
            Ok(match log {
                Some(path) => std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("opening {}", path.display()))?
                    .into(),
                None => Stdio::null(),
            })
        };
        let child = Command::new(program)
            .args(rest)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(output()?)
            .stderr(output()?)
            .spawn()
            .with_context(|| format!("starting the server: {}", command.join(" ")))?;
        Ok(Server { child, command: command.to_vec(), extra: extra.to_vec(), log: log.map(Into::into) })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub(crate) fn up(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn signal(&mut self, kill_it: bool) {
        use nix::sys::signal::{Signal, kill};
        if self.up() {
            let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
            let _ = kill(pid, if kill_it { Signal::SIGKILL } else { Signal::SIGTERM });
        }
    }

    /// Stops the server (SIGTERM, or SIGKILL if `kill_it`) and waits for it to exit.
    pub(crate) fn stop(&mut self, kill_it: bool) {
        self.signal(kill_it);
        let _ = self.child.wait();
    }

    /// As [`stop`](Server::stop), without blocking the runtime (SIGKILL after 30 s: the
    /// server's own drain deadline is shorter).
    pub(crate) async fn stop_while_running(&mut self, kill_it: bool) {
        self.signal(kill_it);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.up() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.stop(true);
    }

    /// Starts the same command again (after a stop).
    pub(crate) fn restart(&mut self) -> anyhow::Result<()> {
        *self = Server::start(&self.command, &self.extra, self.log.as_deref())?;
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop(false);
    }
}

/// Waits until `addr` accepts TCP connections, or the server exits, or 30 s pass.
pub(crate) async fn wait_listening(addr: SocketAddr, server: &mut Server) -> anyhow::Result<()> {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        anyhow::ensure!(server.up(), "the server exited before listening on {addr}");
        anyhow::ensure!(Instant::now() < until, "the server did not listen on {addr} within 30 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The server a scenario starts itself: its command line and where its output goes.
#[derive(Debug, clap::Args, Clone)]
pub struct ServerCommand {
    /// Where the server's output goes (else it is discarded).
    #[arg(long)]
    pub server_log: Option<std::path::PathBuf>,
    /// The server's command line (`peregrine serve ...`, which takes `--set`): started
    /// before the run, and again after a stop.
    #[arg(last = true, required = true)]
    pub server: Vec<String>,
}
