//! The gRPC edge: containerd-snapshots' `Snapshotter` trait over the synchronous [`Store`].
//! Each call moves its arguments into one `spawn_blocking` call of the core (which does file
//! I/O and fsyncs) and converts the answer; nothing else happens here.

use std::collections::HashMap;
use std::sync::Arc;

use containerd_snapshots::{api, tonic, Info, Kind, Usage};
use futures::stream::{self, BoxStream};

use crate::error::Error;
use crate::meta;
use crate::store::{self, Store};

pub struct Service {
    store: Arc<Store>,
}

impl Service {
    pub fn new(store: Arc<Store>) -> Service {
        Service { store }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Runs one core call on the blocking pool, in a span naming the operation and its key;
    /// failures are logged here, once.
    async fn run<T, F>(&self, op: &'static str, key: &str, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, Error> + Send + 'static,
    {
        let store = self.store.clone();
        let span = tracing::debug_span!("snapshots", op, key);
        let result = tokio::task::spawn_blocking(move || span.in_scope(|| f(&store)))
            .await
            .map_err(|e| Error::Internal(format!("a snapshotter task failed: {e}")))
            .and_then(|r| r);
        match &result {
            // Expected answers of the protocol (containerd probes with them), not failures.
            Err(e @ (Error::NotFound(_) | Error::AlreadyExists(_))) => {
                tracing::debug!(op, key, error = %e, "answered")
            }
            Err(e) => tracing::warn!(op, key, error = %e, "failed"),
            Ok(_) => tracing::debug!(op, key, "done"),
        }
        result
    }
}

fn to_api(i: store::Info) -> Info {
    Info {
        kind: match i.kind {
            meta::Kind::View => Kind::View,
            meta::Kind::Active => Kind::Active,
            meta::Kind::Committed => Kind::Committed,
        },
        name: i.name,
        parent: i.parent,
        labels: i.labels,
        created_at: i.created,
        updated_at: i.updated,
    }
}

fn from_api(i: Info) -> store::Info {
    store::Info {
        kind: match i.kind {
            Kind::View => meta::Kind::View,
            Kind::Committed => meta::Kind::Committed,
            Kind::Active | Kind::Unknown => meta::Kind::Active,
        },
        name: i.name,
        parent: i.parent,
        labels: i.labels,
        created: i.created_at,
        updated: i.updated_at,
    }
}

fn mounts(m: Vec<crate::mounts::MountSpec>) -> Vec<api::types::Mount> {
    m.into_iter().map(Into::into).collect()
}

#[tonic::async_trait]
impl containerd_snapshots::Snapshotter for Service {
    type Error = Error;

    async fn stat(&self, key: String) -> Result<Info, Error> {
        self.run("stat", &key.clone(), move |s| s.stat(&key))
            .await
            .map(to_api)
    }

    async fn update(&self, info: Info, fieldpaths: Option<Vec<String>>) -> Result<Info, Error> {
        let info = from_api(info);
        let key = info.name.clone();
        self.run("update", &key, move |s| {
            s.update(info, &fieldpaths.unwrap_or_default())
        })
        .await
        .map(to_api)
    }

    async fn usage(&self, key: String) -> Result<Usage, Error> {
        let u = self
            .run("usage", &key.clone(), move |s| s.usage(&key))
            .await?;
        Ok(Usage {
            size: u.size,
            inodes: u.inodes,
        })
    }

    async fn mounts(&self, key: String) -> Result<Vec<api::types::Mount>, Error> {
        self.run("mounts", &key.clone(), move |s| s.mounts(&key))
            .await
            .map(mounts)
    }

    async fn prepare(
        &self,
        key: String,
        parent: String,
        labels: HashMap<String, String>,
    ) -> Result<Vec<api::types::Mount>, Error> {
        self.run("prepare", &key.clone(), move |s| {
            s.prepare(&key, &parent, labels)
        })
        .await
        .map(mounts)
    }

    async fn view(
        &self,
        key: String,
        parent: String,
        labels: HashMap<String, String>,
    ) -> Result<Vec<api::types::Mount>, Error> {
        self.run("view", &key.clone(), move |s| s.view(&key, &parent, labels))
            .await
            .map(mounts)
    }

    async fn commit(
        &self,
        name: String,
        key: String,
        labels: HashMap<String, String>,
    ) -> Result<(), Error> {
        self.run("commit", &key.clone(), move |s| {
            s.commit(&name, &key, labels)
        })
        .await
    }

    async fn remove(&self, key: String) -> Result<(), Error> {
        self.run("remove", &key.clone(), move |s| s.remove(&key))
            .await
    }

    async fn clear(&self) -> Result<(), Error> {
        self.run("cleanup", "", |s| s.cleanup()).await
    }

    type InfoStream = BoxStream<'static, Result<Info, Error>>;

    async fn list(
        &self,
        _snapshotter: String,
        filters: Vec<String>,
    ) -> Result<Self::InfoStream, Error> {
        let infos = self.run("walk", "", move |s| s.walk(&filters)).await?;
        Ok(Box::pin(stream::iter(
            infos.into_iter().map(|i| Ok(to_api(i))),
        )))
    }
}
