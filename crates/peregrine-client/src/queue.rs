//! The publish queue: every publish waits here, in order, until the server acknowledges it.
//!
//! A publish is sent at once when connected (up to a window of unacknowledged ones), and
//! again after a reconnect or an acknowledgement timeout, always with the same idempotency
//! key, so the server publishes it once however often it is sent. The queue is bounded:
//! when it is full a new publish is refused with [`Error::QueueFull`] instead of being
//! dropped later. With a queue file, queued publishes survive a restart of the program.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use peregrine_wire::Payload;
use peregrine_wire::PublishResult;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::error::Error;

/// Where a queued publish stands on the current connection.
#[derive(Debug)]
pub(crate) struct Sent {
    /// Command id of the latest attempt.
    pub(crate) id: u64,
    /// When that attempt times out.
    pub(crate) deadline: Instant,
}

/// One publish waiting for its acknowledgement.
#[derive(Debug)]
pub(crate) struct Queued {
    pub(crate) key: String,
    pub(crate) channel: String,
    pub(crate) data: Payload,
    /// `None` for publishes loaded from the queue file: nobody waits for them.
    pub(crate) reply: Option<oneshot::Sender<Result<PublishResult, Error>>>,
    /// Sent on the current connection and not yet answered.
    pub(crate) sent: Option<Sent>,
    /// Attempts that timed out.
    pub(crate) timeouts: u32,
    /// Do not send before this (after a rate-limit answer).
    pub(crate) not_before: Option<Instant>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Record {
    /// `data` and `binary` as in a `publish` command: the payload as published.
    Add {
        key: String,
        channel: String,
        data: Box<RawValue>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        binary: bool,
    },
    Done {
        key: String,
    },
}

/// A publish read back from the queue file: key, channel, data.
type Stored = (String, String, Payload);

impl Record {
    fn add(key: &str, channel: &str, payload: &Payload) -> std::io::Result<Record> {
        let data = RawValue::from_string(serde_json::to_string(payload)?)?;
        Ok(Record::Add {
            key: key.to_owned(),
            channel: channel.to_owned(),
            data,
            binary: payload.is_binary(),
        })
    }
}

/// An append-only log of queued publishes: `add` when queued, `done` when acknowledged or
/// failed. Rewritten without the finished ones when it is opened and when they pile up.
#[derive(Debug)]
struct QueueFile {
    path: PathBuf,
    file: File,
    finished: usize,
}

impl QueueFile {
    /// Opens (or creates) the file and returns the publishes still pending, in order. A
    /// truncated last line (the program died while writing it) is ignored.
    fn open(path: &Path) -> Result<(QueueFile, Vec<Stored>), Error> {
        let fail = |what: &str, e: std::io::Error| Error::Queue {
            message: format!("{what} {}: {e}", path.display()),
        };
        let mut pending: Vec<Stored> = Vec::new();
        match File::open(path) {
            Ok(file) => {
                for line in BufReader::new(file).lines() {
                    let line = line.map_err(|e| fail("cannot read", e))?;
                    match serde_json::from_str::<Record>(&line) {
                        Ok(Record::Add { key, channel, data, binary }) => {
                            match Payload::from_json_data(data, binary) {
                                Ok(data) => pending.push((key, channel, data)),
                                Err(e) => {
                                    tracing::warn!(key, error = %e, "unreadable publish in the queue file")
                                }
                            }
                        }
                        Ok(Record::Done { key }) => pending.retain(|(k, _, _)| *k != key),
                        Err(_) => break,
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(fail("cannot open", e)),
        }
        let file =
            OpenOptions::new().create(true).append(true).open(path).map_err(|e| fail("cannot open", e))?;
        let mut queue_file = QueueFile { path: path.to_owned(), file, finished: 0 };
        queue_file
            .rewrite(pending.iter().map(|(k, c, d)| (k.as_str(), c.as_str(), d)))
            .map_err(|e| fail("cannot write", e))?;
        Ok((queue_file, pending))
    }

    fn append(&mut self, record: &Record) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(record).expect("queue records are JSON");
        line.push(b'\n');
        self.file.write_all(&line)
    }

    /// Replaces the file with only the pending publishes (write a temporary file, rename).
    fn rewrite<'a>(
        &mut self,
        pending: impl Iterator<Item = (&'a str, &'a str, &'a Payload)>,
    ) -> std::io::Result<()> {
        let tmp = self.path.with_extension("tmp");
        let mut out = std::io::BufWriter::new(File::create(&tmp)?);
        for (key, channel, data) in pending {
            serde_json::to_writer(&mut out, &Record::add(key, channel, data)?)?;
            out.write_all(b"\n")?;
        }
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        self.finished = 0;
        Ok(())
    }
}

/// The bounded, ordered publish queue.
#[derive(Debug)]
pub(crate) struct PublishQueue {
    items: VecDeque<Queued>,
    limit: usize,
    file: Option<QueueFile>,
}

impl PublishQueue {
    /// A queue of at most `limit` publishes, persisted to `path` if given (publishes left
    /// there by an earlier run are loaded first).
    pub(crate) fn new(limit: usize, path: Option<&Path>) -> Result<PublishQueue, Error> {
        let mut queue = PublishQueue { items: VecDeque::new(), limit, file: None };
        if let Some(path) = path {
            let (file, pending) = QueueFile::open(path)?;
            queue.file = Some(file);
            for (key, channel, data) in pending {
                queue.items.push_back(Queued {
                    key,
                    channel,
                    data,
                    reply: None,
                    sent: None,
                    timeouts: 0,
                    not_before: None,
                });
            }
        }
        Ok(queue)
    }

    /// Queues a publish, or refuses it when the queue is full.
    pub(crate) fn push(
        &mut self,
        key: String,
        channel: String,
        data: Payload,
        reply: oneshot::Sender<Result<PublishResult, Error>>,
    ) -> Result<(), (Error, oneshot::Sender<Result<PublishResult, Error>>)> {
        if self.items.len() >= self.limit {
            return Err((Error::QueueFull { limit: self.limit }, reply));
        }
        if let Some(file) = &mut self.file
            && let Err(e) = Record::add(&key, &channel, &data).and_then(|record| file.append(&record))
        {
            let message = format!("cannot write {}: {e}", file.path.display());
            return Err((Error::Queue { message }, reply));
        }
        self.items.push_back(Queued {
            key,
            channel,
            data,
            reply: Some(reply),
            sent: None,
            timeouts: 0,
            not_before: None,
        });
        Ok(())
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Queued> {
        self.items.iter()
    }

    /// The queued publish whose latest attempt has command id `id`.
    pub(crate) fn position_of_attempt(&self, id: u64) -> Option<usize> {
        self.items.iter().position(|q| q.sent.as_ref().is_some_and(|s| s.id == id))
    }

    pub(crate) fn get_mut(&mut self, index: usize) -> Option<&mut Queued> {
        self.items.get_mut(index)
    }

    /// Removes a publish that is finished (acknowledged or failed for good).
    pub(crate) fn finish(&mut self, index: usize) -> Option<Queued> {
        let item = self.items.remove(index)?;
        if let Some(file) = &mut self.file {
            let done = file.append(&Record::Done { key: item.key.clone() });
            file.finished += 1;
            let compact = file.finished > 1024 && file.finished > self.items.len();
            if let Err(e) = done.and_then(|()| {
                if compact {
                    let pending = self.items.iter().map(|q| (q.key.as_str(), q.channel.as_str(), &q.data));
                    file.rewrite(pending)
                } else {
                    Ok(())
                }
            }) {
                // The publish is done either way; at worst it is sent again after a restart,
                // and the server's idempotency window absorbs that.
                tracing::warn!(path = %file.path.display(), error = %e, "cannot update the queue file");
            }
        }
        Some(item)
    }

    /// Every publish, for closing the client: the caller fails them. With a queue file
    /// they stay in the file and are sent by the next run.
    pub(crate) fn is_persistent(&self) -> bool {
        self.file.is_some()
    }

    pub(crate) fn drain(&mut self) -> impl Iterator<Item = Queued> + '_ {
        self.items.drain(..)
    }

    /// Forgets what was sent on a connection that ended: everything is sent again.
    pub(crate) fn connection_lost(&mut self) {
        for q in &mut self.items {
            q.sent = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(q: &mut PublishQueue, key: &str) -> Result<(), Error> {
        let (tx, _rx) = oneshot::channel();
        q.push(key.into(), "c".into(), Payload::from(serde_json::Value::from(key)), tx).map_err(|(e, _)| e)
    }

    #[test]
    fn a_full_queue_refuses_instead_of_dropping() {
        let mut q = PublishQueue::new(2, None).unwrap();
        push(&mut q, "a").unwrap();
        push(&mut q, "b").unwrap();
        assert_eq!(push(&mut q, "c"), Err(Error::QueueFull { limit: 2 }));
        q.finish(0);
        push(&mut q, "c").unwrap();
        assert_eq!(q.iter().map(|x| x.key.as_str()).collect::<Vec<_>>(), ["b", "c"]);
    }

    #[test]
    fn the_queue_file_keeps_pending_publishes_in_order_across_runs() {
        let dir = std::env::temp_dir().join(format!("peregrine-queue-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("queue.jsonl");
        let _ = std::fs::remove_file(&path);
        {
            let mut q = PublishQueue::new(10, Some(&path)).unwrap();
            for k in ["a", "b", "c", "d"] {
                push(&mut q, k).unwrap();
            }
            q.finish(1); // "b" acknowledged
        }
        // A crash in the middle of a line leaves a partial record.
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"{\"add\":{\"ke").unwrap();
        let q = PublishQueue::new(10, Some(&path)).unwrap();
        assert_eq!(q.iter().map(|x| x.key.as_str()).collect::<Vec<_>>(), ["a", "c", "d"]);
        assert!(q.iter().all(|x| x.reply.is_none()));
        // Opening compacted the file to the pending ones.
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
