//! The ledger: one record per accepted submit (preload or refresh/purge), kept in memory for
//! `GET /_emulator/requests` and, with `--ledger PATH`, appended to a file as JSON lines.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::model::VendorKind;

/// One accepted vendor request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerRecord {
    pub vendor: VendorKind,
    pub action: String,
    /// The access key id that signed the request.
    pub account: String,
    pub urls: Vec<String>,
    /// RFC 3339 UTC with milliseconds, on the emulator's clock.
    pub received_at: String,
    pub task_ids: Vec<String>,
}

pub(super) struct Ledger {
    /// The file is written under the same lock, so its lines are in the order of `records`.
    inner: Mutex<(Vec<LedgerRecord>, Option<File>)>,
}

impl Ledger {
    pub fn open(path: Option<&Path>) -> std::io::Result<Ledger> {
        let file = path.map(|p| OpenOptions::new().create(true).append(true).open(p)).transpose()?;
        Ok(Ledger { inner: Mutex::new((Vec::new(), file)) })
    }

    /// Keeps the record and appends it as one line, flushed, so a reader (or a crash) never sees
    /// half a record.
    pub fn append(&self, record: LedgerRecord) -> std::io::Result<()> {
        let mut inner = super::lock(&self.inner);
        let (records, file) = &mut *inner;
        let written = match file {
            Some(f) => {
                let mut line = serde_json::to_string(&record).map_err(std::io::Error::other)?;
                line.push('\n');
                f.write_all(line.as_bytes()).and_then(|()| f.flush())
            }
            None => Ok(()),
        };
        records.push(record);
        written
    }

    pub fn records(&self) -> Vec<LedgerRecord> {
        super::lock(&self.inner).0.clone()
    }

    pub fn len(&self) -> usize {
        super::lock(&self.inner).0.len()
    }
}
