//! Small documents about the store as a whole that every node serving it must see alike: GC's
//! last run, verify's checkpoint, the webhook configuration. They are records of
//! [`Collection::StoreState`]: with local records, files at the store's root under the names
//! they have always had; with PostgreSQL, rows every node reads. Verify's "one run at a time"
//! is that collection's lock, taken with [`Records::try_lock`].

use crate::meta::{Collection, RecordLock};
use crate::{Result, Store};

/// One document of [`Collection::StoreState`]; its record id is its local file name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateDoc {
    /// How the last GC went (`gc::GcRun`).
    GcLast,
    /// An interrupted verify's checkpoint.
    VerifyCheckpoint,
    /// Where events are delivered, with the HMAC secret.
    Webhook,
}

impl StateDoc {
    pub const ALL: [StateDoc; 3] = [
        StateDoc::GcLast,
        StateDoc::VerifyCheckpoint,
        StateDoc::Webhook,
    ];

    /// The record id, and the file name at the root of a store with local records.
    pub fn id(self) -> &'static str {
        match self {
            StateDoc::GcLast => "gc.last.json",
            StateDoc::VerifyCheckpoint => "verify.state",
            StateDoc::Webhook => "webhook.json",
        }
    }

    pub fn from_id(id: &str) -> Option<StateDoc> {
        StateDoc::ALL.into_iter().find(|d| d.id() == id)
    }
}

impl Store {
    pub fn state_get(&self, doc: StateDoc) -> Result<Option<Vec<u8>>> {
        self.records().get(Collection::StoreState, doc.id())
    }

    /// Replace the document atomically (a reader sees the old one or the new one).
    pub fn state_put(&self, doc: StateDoc, body: &[u8]) -> Result<()> {
        self.records().put(Collection::StoreState, doc.id(), body)
    }

    /// False if there was none.
    pub fn state_delete(&self, doc: StateDoc) -> Result<bool> {
        self.records().delete(Collection::StoreState, doc.id())
    }

    /// Where the document is kept, for messages.
    pub fn state_location(&self, doc: StateDoc) -> String {
        if self.config().records.is_local() {
            self.root().join(doc.id()).display().to_string()
        } else {
            format!(
                "record {}/{} of {}",
                Collection::StoreState,
                doc.id(),
                self.records().describe()
            )
        }
    }

    /// Verify's lock: `None` while another run (on any node) holds it.
    pub(crate) fn try_lock_verify(&self) -> Result<Option<RecordLock>> {
        self.records().try_lock(Collection::StoreState)
    }
}
