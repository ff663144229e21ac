//! The client's job store: one small JSON file per push or pull, so a job can be
//! listed (`gfast jobs`) and run again where it stopped (`gfast resume ID`).
//!
//! The file is replaced atomically (written aside, fsync'd, renamed). What makes
//! a resumed job skip what already arrived is the receiver's journal; the store
//! only remembers the command and how far it got.

use serde_json::{json, Value};
use std::ffi::OsString;
use std::io::{self, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// How a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Started and not finished (or its process died).
    Running,
    /// Every entry arrived.
    Done,
    /// Ended with an error; can be resumed.
    Failed,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Done => "done",
            State::Failed => "failed",
        }
    }
}

/// One job as stored.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    /// Hex job id.
    pub id: String,
    /// The command's arguments after the program name, as given.
    pub args: Vec<OsString>,
    /// State when last written.
    pub state: String,
    /// Size of everything the job covers (as far as it got to know it).
    pub bytes_total: u64,
    /// Data bytes confirmed so far.
    pub bytes_done: u64,
    /// Seconds since the epoch when it started.
    pub created: u64,
    /// The last error, if it failed.
    pub error: Option<String>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The directory of job files.
pub(crate) struct Store {
    dir: PathBuf,
}

impl Store {
    /// The store in `dir` (created on first write).
    pub(crate) fn new(dir: PathBuf) -> Self {
        Store { dir }
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Writes (or rewrites) a job.
    pub(crate) fn save(&self, job: &Job, state: State) -> io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let v = json!({
            "id": job.id,
            "args_hex": job.args.iter().map(|a| hex(a.as_bytes())).collect::<Vec<_>>(),
            "args": job.args.iter().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>(),
            "state": state.as_str(),
            "bytes_total": job.bytes_total,
            "bytes_done": job.bytes_done,
            "created": job.created,
            "updated": now(),
            "error": job.error,
        });
        let tmp = self.dir.join(format!(".{}.json.tmp", job.id));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(v.to_string().as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, self.path(&job.id))
    }

    /// All stored jobs, oldest first; unreadable files are skipped.
    pub(crate) fn list(&self) -> Vec<Job> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        let mut jobs: Vec<Job> = rd.filter_map(|e| load(&e.ok()?.path())).collect();
        jobs.sort_by_key(|j| j.created);
        jobs
    }

    /// The job whose id starts with `prefix` (unique), or a message saying why not.
    pub(crate) fn find(&self, prefix: &str) -> Result<Job, String> {
        let m: Vec<Job> = self.list().into_iter().filter(|j| j.id.starts_with(prefix)).collect();
        match m.len() {
            1 => Ok(m.into_iter().next().expect("one")),
            0 => Err(format!("no job {prefix} in {} (see `gfast jobs`)", self.dir.display())),
            n => Err(format!("{n} jobs start with {prefix}: give more of the id")),
        }
    }

    /// Forgets a job (one that never got past checking its arguments).
    pub(crate) fn remove(&self, id: &str) {
        let _ = std::fs::remove_file(self.path(id));
    }

    /// Removes finished jobs; returns how many.
    pub(crate) fn prune(&self) -> usize {
        let mut n = 0;
        for j in self.list() {
            if j.state == State::Done.as_str() && std::fs::remove_file(self.path(&j.id)).is_ok() {
                n += 1;
            }
        }
        n
    }
}

impl Job {
    /// A new job for these arguments.
    pub(crate) fn new(id: &[u8; 16], args: Vec<OsString>) -> Self {
        Job {
            id: hex(id),
            args,
            state: State::Running.as_str().into(),
            bytes_total: 0,
            bytes_done: 0,
            created: now(),
            error: None,
        }
    }
}

fn load(p: &Path) -> Option<Job> {
    if p.extension()? != "json" {
        return None;
    }
    let v: Value = serde_json::from_slice(&std::fs::read(p).ok()?).ok()?;
    let args =
        v["args_hex"].as_array()?.iter().map(|a| unhex(a.as_str()?).map(OsString::from_vec)).collect::<Option<_>>()?;
    Some(Job {
        id: v["id"].as_str()?.to_string(),
        args,
        state: v["state"].as_str()?.to_string(),
        bytes_total: v["bytes_total"].as_u64()?,
        bytes_done: v["bytes_done"].as_u64()?,
        created: v["created"].as_u64()?,
        error: v["error"].as_str().map(String::from),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_list_find_prune() {
        let dir = std::env::temp_dir().join(format!("gfast-jobs-{}", std::process::id()));
        let st = Store::new(dir.clone());
        let mut a = Job::new(&[0xab; 16], vec![OsString::from("push"), OsString::from_vec(b"odd\xff".to_vec())]);
        st.save(&a, State::Running).unwrap();
        let mut b = Job::new(&[0xcd; 16], vec![OsString::from("pull")]);
        b.created += 1;
        st.save(&b, State::Done).unwrap();
        let l = st.list();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].args[1].as_bytes(), b"odd\xff");
        assert_eq!(st.find("abab").unwrap().id, a.id);
        assert!(st.find("ff").is_err());
        a.bytes_done = 5;
        a.error = Some("x".into());
        st.save(&a, State::Failed).unwrap();
        assert_eq!(st.find("ab").unwrap().state, "failed");
        assert_eq!(st.prune(), 1);
        assert_eq!(st.list().len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
