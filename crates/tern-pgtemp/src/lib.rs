//! A private, throwaway PostgreSQL cluster for when `DATABASE_URL` is unset.
//!
//! tern keeps all of its state in PostgreSQL. Asking every developer, every test run and every
//! first-time user to set up a server before anything works would be a poor welcome, so when no
//! `DATABASE_URL` is given, tern's commands and its test suite call [`TempCluster::start`]
//! instead. That runs `initdb` into a fresh temporary directory and starts the locally installed
//! `postgres` on a Unix socket inside that directory, with durability switched off because the
//! data is meant to vanish. Nothing listens on TCP, so clusters never collide on a port and
//! nothing outside the machine can reach them. This crate only manages processes and files; it
//! contains no SQL client, and callers connect with the URL from [`TempCluster::url`].
//!
//! # How cleanup works
//!
//! A cluster is only useful if it also disappears, and it must disappear even when its owner
//! cannot run any cleanup code: a test binary keeps its cluster in a `static`, which Rust never
//! drops, and any process may be killed with `SIGKILL`. So the server is not started directly.
//! It is started by a tiny `/bin/sh` supervisor whose standard input is a pipe whose only
//! writing end is held by the [`TempCluster`]. Nothing is ever written to that pipe; it exists
//! so that the kernel closes it when the owner goes away, for whatever reason. When the
//! supervisor sees end-of-file it asks `postgres` for a fast shutdown (`SIGINT`), escalates to
//! an immediate shutdown (`SIGQUIT`) after five seconds and to `SIGKILL` after ten, and then
//! removes the whole temporary directory. If `postgres` dies on its own, the supervisor cleans up
//! and exits as well, so no half-dead cluster lingers.
//!
//! [`TempCluster::stop`] (also run on drop) closes the pipe itself, waits for the supervisor to
//! finish, and removes the directory from the owner's side if the supervisor could not.
//!
//! # Running as root
//!
//! PostgreSQL refuses to run as root. When the owner is root (as in containers and CI), the
//! directory tree is handed to the `postgres` system user (or `nobody` when that does not
//! exist), and `initdb`, the supervisor and the server all run as that user. The supervisor owns
//! the directory it has to delete, so its cleanup works under a sticky `/tmp` too.
//!
//! # Finding the server binaries
//!
//! The binaries are looked up in this order: the `TERN_PG_BINDIR` environment variable; the
//! real directory of `initdb` on `PATH` when `postgres` sits beside it (Debian's `/usr/bin` only
//! has wrapper scripts, while some images link the real binaries into `/usr/local/bin`); the
//! highest-numbered `/usr/lib/postgresql/*/bin`; and finally `pg_config --bindir`.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs::{self, DirBuilder};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The name of the cluster's superuser, which every URL from [`TempCluster::url`] logs in as.
pub const SUPERUSER: &str = "tern";

/// The port number the server uses. It only names the socket file (`.s.PGSQL.5432`), and the
/// socket directory is private to one cluster, so a fixed number cannot collide.
pub const PORT: u16 = 5432;

/// How long [`TempCluster::start`] waits for the server to accept connections. `initdb` and the
/// first start take one to three seconds on an idle machine, but a loaded CI box running many
/// test binaries at once can be far slower, and a spurious failure costs more than a wait.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long [`TempCluster::stop`] waits for the supervisor before killing it and removing the
/// directory itself. The supervisor escalates to `SIGQUIT` after about five seconds and to
/// `SIGKILL` after about ten, so fifteen lets it finish its own cleanup in every case.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// How often start-up and shutdown are polled; short, because both usually finish in well under
/// a second and every test run waits for them.
const POLL_INTERVAL: Duration = Duration::from_millis(25);

/// The longest Unix socket path Linux accepts (`sun_path` is 108 bytes including the NUL).
const MAX_SOCKET_PATH: usize = 107;

/// How many lines of a failing program's output end up in an error message: enough to show the
/// cause, few enough to read.
const TAIL_LINES: usize = 8;

/// The log file, inside the temporary directory, that receives the server's output.
const LOG_FILE: &str = "postgres.log";

/// Environment variables that libpq programs and the server read. They describe whatever
/// cluster the user normally works with, not ours, so they are removed from every child.
const PG_ENV_VARS: &[&str] = &[
    "PGDATA",
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGDATABASE",
    "PGOPTIONS",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGSYSCONFDIR",
    "PGPASSFILE",
    "PGPASSWORD",
    "PGSSLMODE",
    "PGCONNECT_TIMEOUT",
];

/// The supervisor, run as `sh -c SUPERVISOR tern-pg-supervisor DIR POSTGRES ARGS...`.
///
/// It keeps the owner's pipe on fd 3 for the watcher subshell alone, sends everything it says
/// itself to the log, and keeps its original stderr on fd 4 so that, when the server dies on its
/// own, the tail of the log reaches an owner that is still waiting for start-up. The watcher
/// uses only shell built-ins while it waits, so killing it leaves no stray process behind.
const SUPERVISOR: &str = r#"
dir=$1
postgres=$2
shift 2
log="$dir/postgres.log"
exec 3<&0 4>&2 </dev/null >>"$log" 2>&1
"$postgres" "$@" 3<&- 4>&- &
pg=$!
(
    exec 4>&-
    while read -r _ <&3; do :; done
    : >"$dir/stop-requested"
    kill -INT "$pg" 2>/dev/null
    i=0
    while kill -0 "$pg" 2>/dev/null; do
        i=$((i + 1))
        if [ "$i" -eq 50 ]; then kill -QUIT "$pg" 2>/dev/null; fi
        if [ "$i" -eq 100 ]; then kill -KILL "$pg" 2>/dev/null; fi
        sleep 0.1 2>/dev/null || sleep 1
    done
) &
watcher=$!
exec 3<&-
wait "$pg"
status=$?
kill "$watcher" 2>/dev/null
wait "$watcher" 2>/dev/null
[ -e "$dir/stop-requested" ] || tail -n 20 "$log" >&4
rm -rf "$dir"
exit "$status"
"#;

/// Distinguishes the directories of clusters started by one process within one nanosecond.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Why a temporary cluster could not be started. Every message is a sentence meant for the
/// person running tern, saying what went wrong and, where it can, what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgTempError {
    /// No usable `initdb` and `postgres` pair was found.
    #[error(
        "PostgreSQL server binaries (initdb, postgres) were not found in {searched}; install them \
         (Debian/Ubuntu: `apt-get install postgresql`) or set DATABASE_URL to a running server"
    )]
    NotInstalled {
        /// Where the binaries were looked for.
        searched: String,
    },

    /// A file-system or process operation failed.
    #[error("could not {action} {}: {cause}", path.display())]
    Io {
        /// What was being done, as a verb phrase ("create directory").
        action: &'static str,
        /// The file, directory or program involved.
        path: PathBuf,
        /// The underlying error. It is part of the message rather than a `source`, so that a
        /// plain `{}` shows the person the actual cause.
        cause: io::Error,
    },

    /// The owner is root and there is no unprivileged account to run PostgreSQL as.
    #[error(
        "PostgreSQL refuses to run as root and neither a `postgres` nor a `nobody` user exists; \
         create a `postgres` user, run tern as a normal user, or set DATABASE_URL to a running server"
    )]
    NoUnprivilegedUser,

    /// `initdb` ran but failed.
    #[error(
        "initdb could not create a temporary PostgreSQL cluster ({status}); \
         its output ends with:\n{output}"
    )]
    Initdb {
        /// How `initdb` exited.
        status: ExitStatus,
        /// The last lines of its output.
        output: String,
    },

    /// The server exited before it accepted connections.
    #[error("the temporary PostgreSQL server exited during start-up; its log ends with:\n{log}")]
    Start {
        /// The last lines of the server's log.
        log: String,
    },

    /// The server did not accept connections in time.
    #[error(
        "the temporary PostgreSQL server did not accept connections within {} seconds; \
         its log ends with:\n{log}",
        timeout.as_secs()
    )]
    Timeout {
        /// How long start-up was given.
        timeout: Duration,
        /// The last lines of the server's log.
        log: String,
    },
}

impl PgTempError {
    fn io(action: &'static str, path: impl Into<PathBuf>, cause: io::Error) -> Self {
        PgTempError::Io {
            action,
            path: path.into(),
            cause,
        }
    }
}

/// How to start a cluster. [`TempCluster::start`] reads these from the environment; tests and
/// embedders pass them explicitly to [`TempCluster::start_with`], because the environment is
/// shared by every thread of a process and cannot safely be changed per test.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// The directory holding `initdb` and `postgres`. When `None`, the binaries are searched
    /// for as the crate documentation describes; when set, only this directory is used.
    pub bindir: Option<PathBuf>,
}

impl Options {
    /// Reads the options from the environment: `TERN_PG_BINDIR` sets [`Options::bindir`] when it
    /// is set and not empty.
    pub fn from_env() -> Self {
        Options {
            bindir: std::env::var_os("TERN_PG_BINDIR")
                .filter(|dir| !dir.is_empty())
                .map(PathBuf::from),
        }
    }
}

/// A running private PostgreSQL cluster, removed again by [`TempCluster::stop`], on drop, or by
/// its supervisor once this process is gone.
#[derive(Debug)]
pub struct TempCluster {
    root: PathBuf,
    data: PathBuf,
    sock: PathBuf,
    bindir: PathBuf,
    run_as: Option<RunAs>,
    /// The writing end of the supervisor's standard input. It is never written to; closing it,
    /// explicitly or because this process died, is what tells the supervisor to clean up.
    keepalive: Option<ChildStdin>,
    supervisor: Option<Child>,
    stopped: bool,
}

/// The unprivileged account that runs PostgreSQL when the owner is root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RunAs {
    uid: u32,
    gid: u32,
}

impl TempCluster {
    /// Creates a fresh cluster and blocks until it accepts connections, which usually takes one
    /// to three seconds. The binaries are found as [`Options::from_env`] and the crate
    /// documentation describe.
    pub fn start() -> Result<TempCluster, PgTempError> {
        Self::start_with(Options::from_env())
    }

    /// Like [`TempCluster::start`], with explicit options instead of the environment.
    pub fn start_with(options: Options) -> Result<TempCluster, PgTempError> {
        let bindir = find_bindir(&options)?;
        let run_as = if effective_uid() == Some(0) {
            Some(unprivileged_user()?)
        } else {
            None
        };
        let root = create_root(&choose_base(run_as), run_as)?;
        // From here on, `cluster` owns the directory: any early return drops it, and dropping
        // removes the directory and stops whatever was started.
        let mut cluster = TempCluster {
            data: root.join("data"),
            sock: root.join("sock"),
            root,
            bindir,
            run_as,
            keepalive: None,
            supervisor: None,
            stopped: false,
        };
        for dir in [&cluster.data, &cluster.sock] {
            make_private_dir(dir, run_as)?;
        }
        cluster.initdb()?;
        cluster.spawn_supervisor()?;
        cluster.wait_until_ready()?;
        Ok(cluster)
    }

    /// A URL for database `db` on this cluster, logged in as the superuser `tern`, in the form
    /// `postgres://tern@localhost/{db}?host={socket_dir}`. libpq and sqlx both read a `host`
    /// that starts with `/` as the directory of a Unix socket.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://{SUPERUSER}@localhost/{}?host={}",
            percent_encode(db.as_bytes()),
            percent_encode(self.sock.as_os_str().as_bytes())
        )
    }

    /// The directory that holds the server's Unix socket (`.s.PGSQL.5432`).
    pub fn socket_dir(&self) -> &Path {
        &self.sock
    }

    /// The cluster's data directory (`PGDATA`).
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The temporary directory that holds everything belonging to this cluster: the data
    /// directory, the socket directory and the server log. It is gone after cleanup.
    pub fn root_dir(&self) -> &Path {
        &self.root
    }

    /// The directory the server binaries came from, so that callers can run the matching
    /// client tools (`psql`, `pg_isready`, `pg_dump`).
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// Stops the server (fast shutdown, escalating to immediate) and removes the temporary
    /// directory. It blocks until both are done (usually well under a second, at most about
    /// fifteen), and does
    /// nothing when called again. Dropping the cluster does the same.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        // Closing the pipe is the same signal the supervisor gets when this process dies, so
        // the normal path and the crash path are one and the same.
        drop(self.keepalive.take());
        if let Some(mut supervisor) = self.supervisor.take() {
            let deadline = Instant::now() + STOP_TIMEOUT;
            loop {
                match supervisor.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => thread::sleep(POLL_INTERVAL),
                    _ => {
                        // The server will also notice on its own that its data directory is
                        // gone and shut down within a minute.
                        let _ = supervisor.kill();
                        let _ = supervisor.wait();
                        break;
                    }
                }
            }
        }
        // A few attempts, because a server that is still shutting down can add files while
        // the tree is being removed.
        for _ in 0..3 {
            match fs::remove_dir_all(&self.root) {
                Err(err) if err.kind() != io::ErrorKind::NotFound => {
                    thread::sleep(POLL_INTERVAL);
                }
                _ => break,
            }
        }
    }

    /// Prepares a command that runs as the cluster's user, in its directory, with a clean
    /// PostgreSQL environment.
    fn command(&self, program: impl AsRef<Path>) -> Command {
        let mut command = Command::new(program.as_ref());
        command.current_dir(&self.root).env("HOME", &self.root);
        for var in PG_ENV_VARS {
            command.env_remove(var);
        }
        if let Some(user) = self.run_as {
            command.gid(user.gid).uid(user.uid);
        }
        command
    }

    fn initdb(&self) -> Result<(), PgTempError> {
        let initdb = self.bindir.join("initdb");
        let output = self
            .command(&initdb)
            .arg("-D")
            .arg(&self.data)
            .args([
                "-U",
                SUPERUSER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .stdin(Stdio::null())
            .output()
            .map_err(|err| PgTempError::io("run", &initdb, err))?;
        if output.status.success() {
            return Ok(());
        }
        let text = if output.stderr.iter().all(u8::is_ascii_whitespace) {
            output.stdout
        } else {
            output.stderr
        };
        Err(PgTempError::Initdb {
            status: output.status,
            output: tail(&String::from_utf8_lossy(&text)),
        })
    }

    fn spawn_supervisor(&mut self) -> Result<(), PgTempError> {
        let postgres = self.bindir.join("postgres");
        let mut command = self.command("/bin/sh");
        command
            .arg("-c")
            .arg(SUPERVISOR)
            .arg("tern-pg-supervisor")
            .arg(&self.root)
            .arg(&postgres)
            .arg("-D")
            .arg(&self.data)
            .arg("-k")
            .arg(&self.sock)
            .args(["-p", &PORT.to_string()])
            .args(["-c", "listen_addresses="])
            .args(["-c", "fsync=off"])
            .args(["-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off"])
            .args(["-c", "max_connections=200"])
            // Sized for bulk work (benchmarks, the demo): the working set of a million
            // opportunities stays in memory, and no checkpoint interrupts a run.
            .args(["-c", "shared_buffers=512MB"])
            .args(["-c", "max_wal_size=4GB"])
            .args(["-c", "checkpoint_timeout=1h"])
            .args(["-c", "wal_level=minimal"])
            .args(["-c", "max_wal_senders=0"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // A process group of its own keeps a Ctrl-C at the terminal from reaching the
            // server, so an owner that shuts down gracefully can still use its database.
            .process_group(0);
        let mut child = command
            .spawn()
            .map_err(|err| PgTempError::io("start", "/bin/sh", err))?;
        self.keepalive = child.stdin.take();
        self.supervisor = Some(child);
        Ok(())
    }

    fn wait_until_ready(&mut self) -> Result<(), PgTempError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(supervisor) = self.supervisor.as_mut() {
                if let Ok(Some(_)) = supervisor.try_wait() {
                    // The supervisor only exits this early when the server died; it has printed
                    // the tail of the log and removed the directory.
                    let mut log = String::new();
                    if let Some(mut stderr) = supervisor.stderr.take() {
                        let _ = stderr.read_to_string(&mut log);
                    }
                    return Err(PgTempError::Start {
                        log: tail_or_placeholder(&log),
                    });
                }
            }
            if self.is_ready() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let log = fs::read(self.root.join(LOG_FILE)).unwrap_or_default();
                self.stop();
                return Err(PgTempError::Timeout {
                    timeout: START_TIMEOUT,
                    log: tail_or_placeholder(&String::from_utf8_lossy(&log)),
                });
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// Whether the server accepts connections: its socket exists and `pg_isready` says so, or,
    /// without `pg_isready`, the server has marked itself ready in `postmaster.pid` (which is
    /// what `pg_ctl -w` checks).
    fn is_ready(&self) -> bool {
        if !self.sock.join(format!(".s.PGSQL.{PORT}")).exists() {
            return false;
        }
        let pg_isready = self.bindir.join("pg_isready");
        if is_executable(&pg_isready) {
            let mut command = Command::new(&pg_isready);
            for var in PG_ENV_VARS {
                command.env_remove(var);
            }
            command
                .arg("-h")
                .arg(&self.sock)
                .args(["-p", &PORT.to_string(), "-U", SUPERUSER, "-d", "postgres"])
                .args(["-t", "5", "-q"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success())
        } else {
            fs::read_to_string(self.data.join("postmaster.pid"))
                .is_ok_and(|pid_file| pid_file.lines().nth(7).map(str::trim) == Some("ready"))
        }
    }
}

impl Drop for TempCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Finds the directory that holds `initdb` and `postgres`, in the order the crate documentation
/// gives.
fn find_bindir(options: &Options) -> Result<PathBuf, PgTempError> {
    if let Some(dir) = &options.bindir {
        // An explicit choice is never second-guessed: falling back to another installation
        // would hide the mistake and start a server of the wrong version.
        return if has_server(dir) {
            Ok(dir.clone())
        } else {
            Err(PgTempError::NotInstalled {
                searched: format!("TERN_PG_BINDIR ({})", dir.display()),
            })
        };
    }
    if let Some(dir) = find_on_path("initdb")
        .and_then(|initdb| fs::canonicalize(initdb).ok())
        .and_then(|initdb| initdb.parent().map(Path::to_path_buf))
        .filter(|dir| has_server(dir))
    {
        return Ok(dir);
    }
    if let Some(dir) = newest_debian_bindir(Path::new("/usr/lib/postgresql")) {
        return Ok(dir);
    }
    if let Some(dir) = pg_config_bindir().filter(|dir| has_server(dir)) {
        return Ok(dir);
    }
    Err(PgTempError::NotInstalled {
        searched: "PATH, /usr/lib/postgresql/*/bin or `pg_config --bindir`".to_owned(),
    })
}

fn has_server(dir: &Path) -> bool {
    is_executable(&dir.join("initdb")) && is_executable(&dir.join("postgres"))
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

/// Debian and Ubuntu install each major version under `/usr/lib/postgresql/<version>/bin`;
/// the newest one is the best guess when several are installed.
fn newest_debian_bindir(parent: &Path) -> Option<PathBuf> {
    fs::read_dir(parent)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry
                .file_name()
                .to_str()?
                .split('.')
                .map(|part| part.parse::<u32>().ok())
                .collect::<Option<Vec<u32>>>()?;
            let bin = entry.path().join("bin");
            has_server(&bin).then_some((version, bin))
        })
        .max()
        .map(|(_, bin)| bin)
}

fn pg_config_bindir() -> Option<PathBuf> {
    let pg_config = find_on_path("pg_config")?;
    let output = Command::new(pg_config)
        .arg("--bindir")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let mut bytes = output.stdout;
    while bytes.last().is_some_and(u8::is_ascii_whitespace) {
        bytes.pop();
    }
    (!bytes.is_empty()).then(|| PathBuf::from(OsStr::from_bytes(&bytes)))
}

/// The effective user id, read from the owner of `/proc/self` (which Linux gives the effective
/// ids of the process) so that no libc binding is needed, with `id -u` as the fallback.
fn effective_uid() -> Option<u32> {
    if let Ok(meta) = fs::metadata("/proc/self") {
        return Some(meta.uid());
    }
    let output = Command::new("id")
        .arg("-u")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    String::from_utf8_lossy(&output.stdout).trim().parse().ok()
}

/// The account to run PostgreSQL as when the owner is root: `postgres`, which packaged
/// installations create, or else `nobody`.
fn unprivileged_user() -> Result<RunAs, PgTempError> {
    let passwd = fs::read_to_string("/etc/passwd")
        .map_err(|err| PgTempError::io("read", "/etc/passwd", err))?;
    ["postgres", "nobody"]
        .iter()
        .find_map(|wanted| {
            passwd.lines().find_map(|line| {
                let mut fields = line.split(':');
                if fields.next()? != *wanted {
                    return None;
                }
                let _password = fields.next()?;
                let uid = fields.next()?.parse().ok()?;
                let gid = fields.next()?.parse().ok()?;
                (uid != 0).then_some(RunAs { uid, gid })
            })
        })
        .ok_or(PgTempError::NoUnprivilegedUser)
}

/// Picks the directory to create the cluster in: the system temporary directory, unless its
/// path is too long for a Unix socket inside it, or the account that runs PostgreSQL cannot
/// reach it (a root-only `TMPDIR`); `/tmp` serves then.
fn choose_base(run_as: Option<RunAs>) -> PathBuf {
    let base = std::env::temp_dir();
    // "/tern-pg-<pid>-<counter>-<nanos>/sock/.s.PGSQL.5432" with generous widths.
    let socket_len = base.as_os_str().len() + "/tern-pg-".len() + 10 + 1 + 10 + 1 + 9 + 19;
    let reachable = run_as.is_none_or(|user| reachable_by(&base, user));
    if socket_len <= MAX_SOCKET_PATH && reachable {
        base
    } else {
        PathBuf::from("/tmp")
    }
}

/// Whether `user` may traverse every directory from `/` to `dir`.
fn reachable_by(dir: &Path, user: RunAs) -> bool {
    let Ok(dir) = fs::canonicalize(dir) else {
        return false;
    };
    dir.ancestors().all(|ancestor| {
        fs::metadata(ancestor).is_ok_and(|meta| {
            let mode = meta.mode();
            mode & 0o001 != 0
                || (meta.uid() == user.uid && mode & 0o100 != 0)
                || (meta.gid() == user.gid && mode & 0o010 != 0)
        })
    })
}

/// Creates the cluster's top directory under `base` with a name no other cluster uses.
fn create_root(base: &Path, run_as: Option<RunAs>) -> Result<PathBuf, PgTempError> {
    let pid = std::process::id();
    loop {
        let counter = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |now| now.subsec_nanos());
        let root = base.join(format!("tern-pg-{pid}-{counter}-{nanos}"));
        match make_private_dir(&root, run_as) {
            Err(PgTempError::Io { cause, .. }) if cause.kind() == io::ErrorKind::AlreadyExists => {
                // Left behind by an earlier process with the same pid; try the next name.
            }
            result => return result.map(|()| root),
        }
    }
}

/// Creates `dir` readable only by the account that runs PostgreSQL, which `initdb` requires of
/// the data directory and which keeps other local users away from the socket.
fn make_private_dir(dir: &Path, run_as: Option<RunAs>) -> Result<(), PgTempError> {
    DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .map_err(|err| PgTempError::io("create directory", dir, err))?;
    // The mode above is filtered through the umask; make sure it is exactly 0700.
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(|err| PgTempError::io("set permissions on", dir, err))?;
    if let Some(user) = run_as {
        std::os::unix::fs::chown(dir, Some(user.uid), Some(user.gid))
            .map_err(|err| PgTempError::io("change the owner of", dir, err))?;
    }
    Ok(())
}

/// Percent-encodes everything but the characters that are safe in a URL path segment or query
/// value, keeping `/` readable because socket directories are full of them.
fn percent_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &byte in bytes {
        if byte.is_ascii_alphanumeric() || b"-._~/".contains(&byte) {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// The last few non-empty lines of `text`, indented, for an error message.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|line| !line.trim().is_empty())
        .collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..]
        .iter()
        .map(|line| format!("    {}", line.trim_start()))
        .collect::<Vec<_>>()
        .join("\n")
}

fn tail_or_placeholder(text: &str) -> String {
    let tail = tail(text);
    if tail.is_empty() {
        "    (nothing was logged)".to_owned()
    } else {
        tail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_cluster_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<TempCluster>();
        assert_send_sync::<PgTempError>();
    }

    #[test]
    fn percent_encoding_keeps_paths_readable() {
        assert_eq!(
            percent_encode(b"/tmp/tern-pg-1-2-3/sock"),
            "/tmp/tern-pg-1-2-3/sock"
        );
        assert_eq!(percent_encode(b"a b?&#"), "a%20b%3F%26%23");
    }

    #[test]
    fn tail_keeps_the_last_non_empty_lines() {
        let text = (1..=20)
            .map(|n| format!("line {n}\n\n"))
            .collect::<String>();
        let tail = tail(&text);
        assert_eq!(tail.lines().count(), TAIL_LINES);
        assert!(tail.ends_with("    line 20"));
        assert_eq!(tail_or_placeholder(" \n"), "    (nothing was logged)");
    }

    #[test]
    fn newest_debian_bindir_compares_versions_numerically() {
        let parent =
            std::env::temp_dir().join(format!("tern-pgtemp-versions-{}", std::process::id()));
        let _ = fs::remove_dir_all(&parent);
        for version in ["9.6", "10", "15", "not-a-version"] {
            let bin = parent.join(version).join("bin");
            fs::create_dir_all(&bin).unwrap();
            for program in ["initdb", "postgres"] {
                fs::write(bin.join(program), "").unwrap();
                fs::set_permissions(bin.join(program), fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
        assert_eq!(
            newest_debian_bindir(&parent),
            Some(parent.join("15").join("bin"))
        );
        fs::remove_dir_all(&parent).unwrap();
    }
}
