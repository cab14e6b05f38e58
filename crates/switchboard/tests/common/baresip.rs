//! A real softphone for the tests: Debian's baresip (`baresip-core`, installed by
//! `scripts/test`), headless on 127.0.0.1 only, with its configuration in a folder of the
//! test's; and [`Proc`], a child process whose output lines are collected.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A running process whose standard output and error lines are collected (in one
/// stream); killed when dropped.
pub struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    /// Everything it printed so far (as far as drained).
    pub out: Vec<String>,
}

impl Proc {
    /// Spawns `cmd` with its standard streams piped.
    pub fn spawn(mut cmd: Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {:?} (scripts/test installs it): {e}",
                    cmd.get_program()
                )
            });
        let (tx, lines) = mpsc::channel();
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let stdin = child.stdin.take();
        Proc {
            child,
            stdin,
            lines,
            out: Vec::new(),
        }
    }

    fn drain(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.out.push(line);
        }
    }

    /// All it printed so far, one line after another.
    pub fn printed(&mut self) -> String {
        self.drain();
        self.out.join("\n")
    }

    /// Waits for a line containing `what` (one printed before counts) and returns it;
    /// panics with the output after `within`.
    pub fn expect(&mut self, what: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            self.drain();
            if let Some(line) = self.out.iter().find(|l| l.contains(what)) {
                return line.clone();
            }
            if Instant::now() > deadline {
                panic!(
                    "no line with {what:?} within {within:?}:\n{}",
                    self.printed()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Types `keys` on its standard input, one every 400 ms.
    pub fn type_keys(&mut self, keys: &[&str]) {
        for key in keys {
            let stdin = self.stdin.as_mut().unwrap();
            stdin.write_all(key.as_bytes()).unwrap();
            stdin.flush().unwrap();
            std::thread::sleep(Duration::from_millis(400));
        }
    }

    /// Waits for it to exit; returns its exit code. Panics after `within`.
    pub fn wait(&mut self, within: Duration) -> i32 {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100));
                self.drain();
                return status.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("did not exit:\n{}", self.printed());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops it with SIGTERM (baresip unregisters on the way out) and waits up to 10 s
    /// for it to exit.
    pub fn stop(&mut self) -> ExitStatus {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.drain();
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("did not exit within 10 s of SIGTERM:\n{}", self.printed());
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts baresip with its configuration in `dir`: SIP on 127.0.0.1:`sip_port` and no
/// other interface, then the lines `config` (modules, audio), one account, `account`
/// (a line of baresip's `accounts` file), and `args` on its command line.
pub fn start(dir: &Path, sip_port: u16, config: &str, account: &str, args: &[&str]) -> Proc {
    let config = format!(
        "poll_method\t\tpoll\n\
         module_path\t\t/usr/lib/baresip/modules\n\
         sip_listen\t\t127.0.0.1:{sip_port}\n\
         net_interface\t\t127.0.0.1\n\
         {config}"
    );
    std::fs::write(dir.join("config"), config).unwrap();
    std::fs::write(dir.join("accounts"), format!("{account}\n")).unwrap();
    let mut cmd = Command::new("baresip");
    cmd.arg("-f").arg(dir).args(args);
    Proc::spawn(cmd)
}
