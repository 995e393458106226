//! containerd's snapshotter test suite (`snapshots/testsuite/testsuite.go`), ported as checks
//! generic over containerd-snapshots' `Snapshotter` trait: any snapshotter that gives mounts
//! [`crate::common::mount_all`] can make passes them. Each check takes a fresh snapshotter and
//! a scratch directory; names follow the Go suite's where one is ported.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use containerd_snapshots::{tonic::Code, Kind, Snapshotter};
use futures::StreamExt;

use crate::common::{mount_all, unmount};

fn labels(kv: &[(&str, &str)]) -> HashMap<String, String> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn code<S: Snapshotter, T: std::fmt::Debug>(r: Result<T, S::Error>) -> Code {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => Into::<containerd_snapshots::tonic::Status>::into(e).code(),
    }
}

fn target(work: &Path, name: &str) -> PathBuf {
    let t = work.join(name);
    fs::create_dir_all(&t).unwrap();
    t
}

/// prepare KEY on PARENT, mount it, let `f` change the tree, unmount, commit it as NAME.
async fn layer<S: Snapshotter>(
    sn: &S,
    work: &Path,
    name: &str,
    parent: &str,
    f: impl FnOnce(&Path),
) {
    let key = format!("{name}-active");
    let mounts = sn
        .prepare(key.clone(), parent.into(), HashMap::new())
        .await
        .unwrap();
    let t = target(work, &key);
    let m = mount_all(&mounts, &t);
    f(&t);
    unmount(m);
    sn.commit(name.into(), key, HashMap::new()).await.unwrap();
}

/// A read-only view of PARENT, mounted, given to `f`, then removed.
async fn with_view<S: Snapshotter>(sn: &S, work: &Path, parent: &str, f: impl FnOnce(&Path)) {
    let key = format!("view-of-{parent}");
    let mounts = sn
        .view(key.clone(), parent.into(), HashMap::new())
        .await
        .unwrap();
    let t = target(work, &key);
    let m = mount_all(&mounts, &t);
    f(&t);
    unmount(m);
    sn.remove(key).await.unwrap();
}

async fn walk<S: Snapshotter>(sn: &S, filters: &[&str]) -> Vec<containerd_snapshots::Info> {
    let filters = filters.iter().map(|s| s.to_string()).collect();
    let stream = sn.list(String::new(), filters).await.unwrap();
    let mut out: Vec<_> = stream.map(|r| r.unwrap()).collect().await;
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Basic: a committed base, a child that adds and removes, a view of the child, walk, remove.
pub async fn basic<S: Snapshotter>(sn: &S, work: &Path) {
    layer(sn, work, "committed", "", |t| {
        fs::create_dir_all(t.join("a/b")).unwrap();
        fs::write(t.join("a/b/foo"), "foo\n").unwrap();
        fs::write(t.join("baz"), "baz\n").unwrap();
    })
    .await;
    let si = sn.stat("committed".into()).await.unwrap();
    assert_eq!(
        (si.name.as_str(), si.parent.as_str(), &si.kind),
        ("committed", "", &Kind::Committed)
    );

    layer(sn, work, "next", "committed", |t| {
        assert_eq!(fs::read_to_string(t.join("a/b/foo")).unwrap(), "foo\n");
        fs::write(t.join("bar"), "bar\n").unwrap();
        fs::remove_file(t.join("baz")).unwrap();
    })
    .await;
    let ni = sn.stat("next".into()).await.unwrap();
    assert_eq!(
        (ni.parent.as_str(), &ni.kind),
        ("committed", &Kind::Committed)
    );

    let view = sn
        .view("nextView".into(), "next".into(), HashMap::new())
        .await
        .unwrap();
    let t = target(work, "nextView");
    let m = mount_all(&view, &t);
    assert_eq!(fs::read_to_string(t.join("a/b/foo")).unwrap(), "foo\n");
    assert_eq!(fs::read_to_string(t.join("bar")).unwrap(), "bar\n");
    assert!(
        !t.join("baz").exists(),
        "a file removed in a child shows in its view"
    );
    unmount(m);
    let names: Vec<String> = walk(sn, &[]).await.into_iter().map(|i| i.name).collect();
    assert_eq!(names, ["committed", "next", "nextView"]);
    assert_eq!(sn.stat("nextView".into()).await.unwrap().kind, Kind::View);

    for k in ["nextView", "next", "committed"] {
        sn.remove(k.into()).await.unwrap();
    }
    assert!(walk(sn, &[]).await.is_empty());
}

/// StatActive: an active snapshot stats as active, its parent named.
pub async fn stat_active<S: Snapshotter>(sn: &S, work: &Path) {
    layer(sn, work, "base", "", |_| {}).await;
    sn.prepare("active".into(), "base".into(), labels(&[("l", "v")]))
        .await
        .unwrap();
    let si = sn.stat("active".into()).await.unwrap();
    assert_eq!(si.kind, Kind::Active);
    assert_eq!(si.parent, "base");
    assert_eq!(si.labels, labels(&[("l", "v")]));
    assert_eq!(code::<S, _>(sn.stat("absent".into()).await), Code::NotFound);
}

/// StatCommitted: labels given at commit are the committed snapshot's.
pub async fn stat_committed<S: Snapshotter>(sn: &S, _work: &Path) {
    sn.prepare("k".into(), String::new(), HashMap::new())
        .await
        .unwrap();
    sn.commit("c".into(), "k".into(), labels(&[("at", "commit")]))
        .await
        .unwrap();
    let si = sn.stat("c".into()).await.unwrap();
    assert_eq!(
        (si.kind, si.labels),
        (Kind::Committed, labels(&[("at", "commit")]))
    );
    assert_eq!(
        code::<S, _>(sn.stat("k".into()).await),
        Code::NotFound,
        "the active key is gone"
    );
}

/// Transitivity: a file changed in each of two layers shows the upper layer's content.
pub async fn transitivity<S: Snapshotter>(sn: &S, work: &Path) {
    layer(sn, work, "l1", "", |t| {
        fs::write(t.join("foo"), "layer 1").unwrap()
    })
    .await;
    layer(sn, work, "l2", "l1", |t| {
        assert_eq!(fs::read_to_string(t.join("foo")).unwrap(), "layer 1");
        fs::write(t.join("foo"), "layer 2").unwrap();
    })
    .await;
    with_view(sn, work, "l2", |t| {
        assert_eq!(fs::read_to_string(t.join("foo")).unwrap(), "layer 2");
    })
    .await;
    with_view(sn, work, "l1", |t| {
        assert_eq!(
            fs::read_to_string(t.join("foo")).unwrap(),
            "layer 1",
            "a parent never changes"
        );
    })
    .await;
}

/// PreparingViewFailing / CommitOfAView: a key is taken once, and a view cannot be committed.
pub async fn prepare_view_failing<S: Snapshotter>(sn: &S, work: &Path) {
    layer(sn, work, "base", "", |_| {}).await;
    sn.view("v".into(), "base".into(), HashMap::new())
        .await
        .unwrap();
    assert_eq!(
        code::<S, _>(sn.prepare("v".into(), "base".into(), HashMap::new()).await),
        Code::AlreadyExists
    );
    assert_eq!(
        code::<S, _>(sn.view("v".into(), "base".into(), HashMap::new()).await),
        Code::AlreadyExists
    );
    assert_eq!(
        code::<S, _>(sn.commit("vc".into(), "v".into(), HashMap::new()).await),
        Code::FailedPrecondition
    );
    sn.prepare("a".into(), "base".into(), HashMap::new())
        .await
        .unwrap();
    assert_eq!(
        code::<S, _>(sn.commit("base".into(), "a".into(), HashMap::new()).await),
        Code::AlreadyExists
    );
}

/// PrepareWithActiveParent / missing parent: only a committed snapshot can be a parent.
pub async fn parent_must_be_committed<S: Snapshotter>(sn: &S, _work: &Path) {
    sn.prepare("active".into(), String::new(), HashMap::new())
        .await
        .unwrap();
    assert_eq!(
        code::<S, _>(
            sn.prepare("child".into(), "active".into(), HashMap::new())
                .await
        ),
        Code::InvalidArgument
    );
    assert_eq!(
        code::<S, _>(
            sn.prepare("child".into(), "absent".into(), HashMap::new())
                .await
        ),
        Code::NotFound
    );
    assert_eq!(
        code::<S, _>(sn.stat("child".into()).await),
        Code::NotFound,
        "a failed prepare leaves nothing"
    );
}

/// Update: labels change (all, or one by field path); other fields are refused.
pub async fn update<S: Snapshotter>(sn: &S, _work: &Path) {
    sn.prepare("k".into(), String::new(), labels(&[("a", "1"), ("b", "2")]))
        .await
        .unwrap();
    let before = sn.stat("k".into()).await.unwrap();
    let mut new = sn.stat("k".into()).await.unwrap();
    new.labels = labels(&[("a", "10"), ("c", "3")]);
    let got = sn
        .update(new, Some(vec!["labels.a".into(), "labels.b".into()]))
        .await
        .unwrap();
    assert_eq!(
        got.labels,
        labels(&[("a", "10")]),
        "b removed (absent in the update), c not named"
    );
    assert!(got.updated_at >= before.updated_at && got.created_at == before.created_at);
    let mut new = sn.stat("k".into()).await.unwrap();
    new.labels = labels(&[("x", "y")]);
    assert_eq!(
        sn.update(new, None).await.unwrap().labels,
        labels(&[("x", "y")])
    );
    let new = sn.stat("k".into()).await.unwrap();
    assert_eq!(
        code::<S, _>(sn.update(new, Some(vec!["parent".into()])).await),
        Code::InvalidArgument
    );
    assert_eq!(
        sn.stat("k".into()).await.unwrap().labels,
        labels(&[("x", "y")])
    );
    let mut absent = sn.stat("k".into()).await.unwrap();
    absent.name = "absent".into();
    assert_eq!(code::<S, _>(sn.update(absent, None).await), Code::NotFound);
}

/// RemoveIntermediateSnapshot: a parent goes only after its children.
pub async fn remove_intermediate_snapshot<S: Snapshotter>(sn: &S, work: &Path) {
    layer(sn, work, "base", "", |t| {
        fs::write(t.join("f"), "1").unwrap()
    })
    .await;
    layer(sn, work, "mid", "base", |_| {}).await;
    sn.prepare("top".into(), "mid".into(), HashMap::new())
        .await
        .unwrap();
    assert_eq!(
        code::<S, _>(sn.remove("mid".into()).await),
        Code::FailedPrecondition
    );
    assert_eq!(
        code::<S, _>(sn.remove("base".into()).await),
        Code::FailedPrecondition
    );
    sn.remove("top".into()).await.unwrap();
    sn.remove("mid".into()).await.unwrap();
    sn.remove("base".into()).await.unwrap();
    assert_eq!(code::<S, _>(sn.remove("base".into()).await), Code::NotFound);
}

/// LayerFileupdate: the same file rewritten in three layers, and a directory turned into a file.
pub async fn layer_file_update<S: Snapshotter>(sn: &S, work: &Path) {
    layer(sn, work, "l1", "", |t| {
        fs::write(t.join("foo"), "one").unwrap();
        fs::create_dir(t.join("d")).unwrap();
        fs::write(t.join("d/inner"), "x").unwrap();
    })
    .await;
    layer(sn, work, "l2", "l1", |t| {
        fs::write(t.join("foo"), "two").unwrap()
    })
    .await;
    layer(sn, work, "l3", "l2", |t| {
        fs::write(t.join("foo"), "three").unwrap();
        fs::remove_dir_all(t.join("d")).unwrap();
        fs::write(t.join("d"), "now a file").unwrap();
    })
    .await;
    with_view(sn, work, "l3", |t| {
        assert_eq!(fs::read_to_string(t.join("foo")).unwrap(), "three");
        assert_eq!(fs::read_to_string(t.join("d")).unwrap(), "now a file");
    })
    .await;
}

/// RemoveDirectoryInLowerLayer: a directory of a lower layer removed in an upper one is gone,
/// and a new one of the same name does not bring its old content back.
pub async fn remove_directory_in_lower_layer<S: Snapshotter>(sn: &S, work: &Path) {
    layer(sn, work, "l1", "", |t| {
        fs::create_dir_all(t.join("lib/sub")).unwrap();
        fs::write(t.join("lib/a"), "a").unwrap();
        fs::write(t.join("lib/sub/b"), "b").unwrap();
    })
    .await;
    layer(sn, work, "l2", "l1", |t| {
        fs::remove_dir_all(t.join("lib")).unwrap()
    })
    .await;
    layer(sn, work, "l3", "l2", |t| {
        fs::create_dir(t.join("lib")).unwrap();
        fs::write(t.join("lib/new"), "n").unwrap();
    })
    .await;
    with_view(sn, work, "l2", |t| assert!(!t.join("lib").exists())).await;
    with_view(sn, work, "l3", |t| {
        let mut names: Vec<_> = fs::read_dir(t.join("lib"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["new"]);
    })
    .await;
}

/// Chown: an owner changed in an upper layer shows; the lower layer keeps its own.
pub async fn chown<S: Snapshotter>(sn: &S, work: &Path) {
    layer(sn, work, "l1", "", |t| {
        fs::create_dir(t.join("dir")).unwrap();
        fs::write(t.join("dir/file"), "x").unwrap();
    })
    .await;
    layer(sn, work, "l2", "l1", |t| {
        std::os::unix::fs::chown(t.join("dir"), Some(1000), Some(1001)).unwrap();
        std::os::unix::fs::chown(t.join("dir/file"), Some(1002), Some(1003)).unwrap();
    })
    .await;
    with_view(sn, work, "l2", |t| {
        let d = fs::metadata(t.join("dir")).unwrap();
        let f = fs::metadata(t.join("dir/file")).unwrap();
        assert_eq!(
            (d.uid(), d.gid(), f.uid(), f.gid()),
            (1000, 1001, 1002, 1003)
        );
    })
    .await;
    with_view(sn, work, "l1", |t| {
        assert_eq!(fs::metadata(t.join("dir/file")).unwrap().uid(), 0)
    })
    .await;
}

/// DirectoryPermissionOnCommit: modes (and a sticky bit) survive commits and copy-ups.
pub async fn directory_permission_on_commit<S: Snapshotter>(sn: &S, work: &Path) {
    layer(sn, work, "l1", "", |t| {
        fs::create_dir(t.join("dir-1")).unwrap();
        fs::set_permissions(t.join("dir-1"), fs::Permissions::from_mode(0o700)).unwrap();
        fs::create_dir(t.join("tmp")).unwrap();
        fs::set_permissions(t.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    })
    .await;
    layer(sn, work, "l2", "l1", |t| {
        fs::write(t.join("dir-1/new"), "n").unwrap();
        fs::create_dir(t.join("dir-2")).unwrap();
        fs::set_permissions(t.join("dir-2"), fs::Permissions::from_mode(0o750)).unwrap();
    })
    .await;
    with_view(sn, work, "l2", |t| {
        let mode = |p: &str| fs::metadata(t.join(p)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(
            (mode("dir-1"), mode("tmp"), mode("dir-2")),
            (0o700, 0o1777, 0o750)
        );
    })
    .await;
}

/// Rename (MoveFileFromLowerLayer): a lower file renamed in an upper layer shows once, under its
/// new name; a lower directory renamed keeps its content.
pub async fn rename<S: Snapshotter>(sn: &S, work: &Path) {
    layer(sn, work, "l1", "", |t| {
        fs::write(t.join("old"), "content").unwrap();
        fs::create_dir(t.join("dir")).unwrap();
        fs::write(t.join("dir/f"), "f").unwrap();
    })
    .await;
    layer(sn, work, "l2", "l1", |t| {
        fs::rename(t.join("old"), t.join("new")).unwrap();
        fs::rename(t.join("dir"), t.join("moved")).unwrap();
    })
    .await;
    with_view(sn, work, "l2", |t| {
        assert!(!t.join("old").exists() && !t.join("dir").exists());
        assert_eq!(fs::read_to_string(t.join("new")).unwrap(), "content");
        assert_eq!(fs::read_to_string(t.join("moved/f")).unwrap(), "f");
    })
    .await;
}

/// DeletedFilesInChildSnapshot: files deleted in an active child are gone from it, and still in
/// the parent.
pub async fn deleted_files_in_child_snapshot<S: Snapshotter>(sn: &S, work: &Path) {
    layer(sn, work, "l1", "", |t| {
        fs::write(t.join("a"), "a").unwrap();
        fs::write(t.join("b"), "b").unwrap();
    })
    .await;
    let mounts = sn
        .prepare("child".into(), "l1".into(), HashMap::new())
        .await
        .unwrap();
    let t = target(work, "child");
    let m = mount_all(&mounts, &t);
    fs::remove_file(t.join("a")).unwrap();
    let names: Vec<_> = fs::read_dir(&t)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["b"]);
    unmount(m);
    // Mounted again from Mounts (not from Prepare's answer): the deletion stays.
    let again = sn.mounts("child".into()).await.unwrap();
    assert_eq!(again, mounts);
    let m = mount_all(&again, &t);
    assert!(!t.join("a").exists());
    unmount(m);
    with_view(sn, work, "l1", |t| assert!(t.join("a").exists())).await;
}

/// ViewReadonly: nothing can be written through a view (bind of one parent, or union of many).
pub async fn view_readonly<S: Snapshotter>(sn: &S, work: &Path) {
    layer(sn, work, "l1", "", |t| fs::write(t.join("f"), "x").unwrap()).await;
    layer(sn, work, "l2", "l1", |t| {
        fs::write(t.join("g"), "y").unwrap()
    })
    .await;
    for parent in ["l1", "l2"] {
        with_view(sn, work, parent, |t| {
            let err = fs::write(t.join("new"), "z").unwrap_err();
            assert_eq!(
                err.raw_os_error(),
                Some(nix::libc::EROFS),
                "{parent}: {err}"
            );
            let err = fs::remove_file(t.join("f")).unwrap_err();
            assert_eq!(
                err.raw_os_error(),
                Some(nix::libc::EROFS),
                "{parent}: {err}"
            );
        })
        .await;
    }
}

/// StatInWalk and walk filters: walk gives what stat gives, filtered in containerd's syntax.
pub async fn stat_in_walk<S: Snapshotter>(sn: &S, work: &Path) {
    layer(sn, work, "base", "", |_| {}).await;
    sn.prepare(
        "a1".into(),
        "base".into(),
        labels(&[("containerd.io/gc.root", "yes")]),
    )
    .await
    .unwrap();
    sn.view("v1".into(), "base".into(), labels(&[("team", "x")]))
        .await
        .unwrap();
    for info in walk(sn, &[]).await {
        let st = sn.stat(info.name.clone()).await.unwrap();
        assert_eq!(
            (
                &st.name,
                &st.parent,
                &st.kind,
                &st.labels,
                st.created_at,
                st.updated_at
            ),
            (
                &info.name,
                &info.parent,
                &info.kind,
                &info.labels,
                info.created_at,
                info.updated_at
            )
        );
    }
    let names =
        |v: Vec<containerd_snapshots::Info>| v.into_iter().map(|i| i.name).collect::<Vec<_>>();
    assert_eq!(names(walk(sn, &["kind==active"]).await), ["a1"]);
    assert_eq!(
        names(walk(sn, &[r#"labels."containerd.io/gc.root""#]).await),
        ["a1"]
    );
    assert_eq!(
        names(walk(sn, &["kind==view", "name==base"]).await),
        ["base", "v1"]
    );
    assert_eq!(
        names(walk(sn, &["parent==base,labels.team==x"]).await),
        ["v1"]
    );
    let stream = sn.list(String::new(), vec!["kind~=act.*".into()]).await;
    assert_eq!(code::<S, _>(stream.map(|_| ())), Code::InvalidArgument);
}

/// Usage: an active snapshot's usage grows with what is written; a committed one keeps it.
pub async fn usage<S: Snapshotter>(sn: &S, work: &Path) {
    layer(sn, work, "base", "", |t| {
        fs::write(t.join("small"), "x").unwrap()
    })
    .await;
    let mounts = sn
        .prepare("a".into(), "base".into(), HashMap::new())
        .await
        .unwrap();
    let empty = sn.usage("a".into()).await.unwrap();
    let t = target(work, "a");
    let m = mount_all(&mounts, &t);
    fs::write(t.join("big"), vec![7u8; 1 << 20]).unwrap();
    fs::create_dir(t.join("d")).unwrap();
    unmount(m);
    let used = sn.usage("a".into()).await.unwrap();
    assert!(used.size - empty.size >= 1 << 20, "{empty:?} -> {used:?}");
    assert_eq!(used.inodes - empty.inodes, 2, "one file and one directory");
    sn.commit("c".into(), "a".into(), HashMap::new())
        .await
        .unwrap();
    let committed = sn.usage("c".into()).await.unwrap();
    assert_eq!((committed.size, committed.inodes), (used.size, used.inodes));
    assert_eq!(code::<S, _>(sn.usage("a".into()).await), Code::NotFound);
}

/// Mounts of a committed snapshot are refused; of an unknown one, not found.
pub async fn mounts_only_of_active_and_views<S: Snapshotter>(sn: &S, work: &Path) {
    layer(sn, work, "c", "", |_| {}).await;
    assert_eq!(
        code::<S, _>(sn.mounts("c".into()).await),
        Code::FailedPrecondition
    );
    assert_eq!(
        code::<S, _>(sn.mounts("absent".into()).await),
        Code::NotFound
    );
}

/// 128LayersMount: 128 layers, each writing its own file and rewriting a shared one, mounted as
/// one union of 128 read-only branches under a writable one.
pub async fn layers_128_mount<S: Snapshotter>(sn: &S, work: &Path) {
    let mut parent = String::new();
    for i in 0..128 {
        let name = format!("layer-{i}");
        layer(sn, work, &name, &parent, |t| {
            fs::write(t.join("bottom"), format!("{i}")).unwrap();
            fs::write(t.join(format!("file-{i}")), format!("{i}")).unwrap();
            if i > 0 {
                // The previous layer's own file, seen through 'i' branches.
                assert_eq!(
                    fs::read_to_string(t.join(format!("file-{}", i - 1))).unwrap(),
                    format!("{}", i - 1)
                );
            }
        })
        .await;
        parent = name;
    }
    let mounts = sn
        .prepare("top".into(), parent, HashMap::new())
        .await
        .unwrap();
    let t = target(work, "top");
    let m = mount_all(&mounts, &t);
    assert_eq!(fs::read_to_string(t.join("bottom")).unwrap(), "127");
    let files = fs::read_dir(&t).unwrap().count();
    assert_eq!(files, 129, "128 own files and the shared one");
    fs::write(t.join("bottom"), "top").unwrap();
    unmount(m);
}

/// ConcurrentPrepare: many prepares of one key at once; exactly one wins.
pub async fn concurrent_prepare_same_key<S: Snapshotter>(sn: &S, work: &Path) {
    layer(sn, work, "base", "", |_| {}).await;
    let tries = (0..8).map(|_| sn.prepare("same".into(), "base".into(), HashMap::new()));
    let results = futures::future::join_all(tries).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 1, "{results:?}");
    for r in results.into_iter().filter(|r| r.is_err()) {
        assert_eq!(code::<S, _>(r), Code::AlreadyExists);
    }
}

/// RootPermission: the root of a new snapshot is a 0755 directory, through its mount too.
pub async fn root_permission<S: Snapshotter>(sn: &S, work: &Path) {
    let mounts = sn
        .prepare("p".into(), String::new(), HashMap::new())
        .await
        .unwrap();
    let t = target(work, "p");
    let m = mount_all(&mounts, &t);
    assert_eq!(
        fs::metadata(&t).unwrap().permissions().mode() & 0o7777,
        0o755
    );
    unmount(m);
    sn.commit("c".into(), "p".into(), HashMap::new())
        .await
        .unwrap();
    let mounts = sn
        .prepare("q".into(), "c".into(), HashMap::new())
        .await
        .unwrap();
    let t = target(work, "q");
    let m = mount_all(&mounts, &t);
    assert_eq!(
        fs::metadata(&t).unwrap().permissions().mode() & 0o7777,
        0o755
    );
    unmount(m);
}

/// Remove: an active snapshot, a committed one and a view each go, and their keys are free
/// again.
pub async fn remove<S: Snapshotter>(sn: &S, work: &Path) {
    sn.prepare("p".into(), String::new(), HashMap::new())
        .await
        .unwrap();
    sn.remove("p".into()).await.unwrap();
    layer(sn, work, "c", "", |t| fs::write(t.join("f"), "x").unwrap()).await;
    sn.view("v".into(), "c".into(), HashMap::new())
        .await
        .unwrap();
    sn.remove("v".into()).await.unwrap();
    sn.remove("c".into()).await.unwrap();
    assert!(walk(sn, &[]).await.is_empty());
    // The keys can be used again, for new snapshots.
    layer(sn, work, "c", "", |t| assert!(!t.join("f").exists())).await;
    sn.prepare("p".into(), "c".into(), HashMap::new())
        .await
        .unwrap();
}

/// MoveFileFromLowerLayer: a file of a lower layer moved into a directory of the same lower
/// layer, and a file moved out of a lower directory.
pub async fn move_file_from_lower_layer<S: Snapshotter>(sn: &S, work: &Path) {
    layer(sn, work, "l1", "", |t| {
        fs::write(t.join("file1"), "1").unwrap();
        fs::create_dir(t.join("dir1")).unwrap();
        fs::write(t.join("dir1/f2"), "2").unwrap();
    })
    .await;
    layer(sn, work, "l2", "l1", |t| {
        fs::rename(t.join("file1"), t.join("dir1/file1")).unwrap();
        fs::rename(t.join("dir1/f2"), t.join("f2")).unwrap();
    })
    .await;
    with_view(sn, work, "l2", |t| {
        assert!(!t.join("file1").exists() && !t.join("dir1/f2").exists());
        assert_eq!(fs::read_to_string(t.join("dir1/file1")).unwrap(), "1");
        assert_eq!(fs::read_to_string(t.join("f2")).unwrap(), "2");
    })
    .await;
}
