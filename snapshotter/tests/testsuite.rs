//! containerd's snapshotter suite (tests/suite/mod.rs) run on unionfs-snapshotter's service:
//! the containerd-snapshots trait as containerd's gRPC calls reach it, over a fresh store in a
//! temporary directory, with real unionfs mounts made through mount.fuse3.

mod common;
mod suite;

use std::sync::Arc;

use snapshotter::{service::Service, Store};

macro_rules! suite {
    ($($check:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $check() {
            if !common::can_run(stringify!($check)) {
                return;
            }
            let dir = tempfile::Builder::new().prefix("snapshotter-suite").tempdir().unwrap();
            let store = Store::open(&dir.path().join("root")).unwrap();
            let service = Service::new(Arc::new(store));
            let work = dir.path().join("mnt");
            suite::$check(&service, &work).await;
        }
    )*};
}

suite!(
    basic,
    stat_active,
    stat_committed,
    transitivity,
    prepare_view_failing,
    parent_must_be_committed,
    update,
    remove_intermediate_snapshot,
    layer_file_update,
    remove_directory_in_lower_layer,
    chown,
    directory_permission_on_commit,
    rename,
    deleted_files_in_child_snapshot,
    view_readonly,
    stat_in_walk,
    usage,
    mounts_only_of_active_and_views,
    layers_128_mount,
    concurrent_prepare_same_key,
    root_permission,
    remove,
    move_file_from_lower_layer,
);
