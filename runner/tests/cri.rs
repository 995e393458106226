//! A Kubernetes pod through containerd 1.6's CRI with `runner` as the runtime handler
//! (`io.containerd.runc.v2` with `BinaryName` = runner): the calls a kubelet makes, from a CRI
//! v1 client, against a private containerd (tests/cri_env).

mod cri_env;

use std::collections::HashMap;
use std::fs;
use std::time::Duration;

use cri_env::*;
use k8s_cri::v1::*;

/// A CRI call, with a deadline: a hung runtime fails the test instead of blocking it.
macro_rules! cri {
    ($what:expr, $call:expr) => {
        tokio::time::timeout(Duration::from_secs(120), $call)
            .await
            .unwrap_or_else(|_| panic!("{}: no answer in 120 s", $what))
            .unwrap_or_else(|e| panic!("{}: {e}", $what))
            .into_inner()
    };
}

fn pod_config(
    name: &str,
    uid: &str,
    cgroup_parent: &str,
    logs: &std::path::Path,
) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: uid.into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: "unionfs-pod".into(),
        log_directory: logs.display().to_string(),
        labels: HashMap::from([("test".into(), "cri".into())]),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent.into(),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Pod as i32,
                    pid: NamespaceMode::Container as i32,
                    ipc: NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container_config(name: &str, script: &str, tty: bool, pid: NamespaceMode) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: DEMO_REF.into(),
            ..Default::default()
        }),
        command: vec!["/bin/sh".into(), "-c".into(), script.into()],
        log_path: format!("{name}.log"),
        tty,
        // The kubelet sets CONTAINER for a pod without shareProcessNamespace, POD with it (the
        // CRI's default, POD, puts the container in the pause process's pid namespace).
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Pod as i32,
                    pid: pid as i32,
                    ipc: NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn a_pod_with_runner_as_runtime_handler_from_start_to_nothing_left() {
    if can_run("a_pod_with_runner_as_runtime_handler_from_start_to_nothing_left") {
        pod_end_to_end(false);
    }
}

/// The same pod with its roots (the pause container's and both containers') served by
/// unionfs-snapshotter: each `/` is a fuse.unionfs mount containerd made with mount.fuse3.
#[test]
fn a_pod_on_unionfs_roots_from_unionfs_snapshotter() {
    if can_run("a_pod_on_unionfs_roots_from_unionfs_snapshotter") {
        pod_end_to_end(true);
    }
}

fn pod_end_to_end(unionfs: bool) {
    let (demo, pause) = image_archives();
    let dir = tempfile::Builder::new()
        .prefix("runner-cri")
        .tempdir()
        .unwrap();
    // Declared before containerd, so dropped after it.
    let snapshotter = unionfs.then(|| {
        Snapshotter::start(
            &dir.path().join("snap.sock"),
            &dir.path().join("snapshots"),
            &dir.path().join("snap.log"),
        )
    });
    let env = CriContainerd::start(
        &dir.path().join("containerd"),
        snapshotter.as_ref().map(|s| s.socket.as_path()),
    );
    for archive in [demo, pause] {
        let mut args = vec!["images", "import"];
        if unionfs {
            args.extend(["--snapshotter", "unionfs"]);
        }
        args.push(archive.to_str().unwrap());
        env.ctr_ok(&args);
    }
    let cgroup_parent = env.cgroup_parent.clone();
    let logs = dir.path().join("pod-logs");
    fs::create_dir(&logs).unwrap();

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (mut runtime, mut images) = env.clients().await;
        // The CRI plugin serves once it has loaded (its CNI configuration, its images).
        let mut version = None;
        for _ in 0..300 {
            match runtime.version(VersionRequest { version: "v1".into() }).await {
                Ok(v) => {
                    version = Some(v.into_inner());
                    break;
                }
                Err(e) if e.code() == tonic::Code::Unimplemented => {
                    let log = env.log();
                    let refused = log.lines().find(|l| l.contains("failed to load plugin io.containerd.grpc.v1.cri"));
                    assert!(refused.is_none(), "containerd refused the CRI configuration: {refused:?}");
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(e) => panic!("Version: {e}"),
            }
        }
        let version = version.unwrap_or_else(|| {
            panic!("the CRI plugin never served; containerd's log:\n{}", env.log())
        });
        assert_eq!(version.runtime_api_version, "v1");
        let image = cri!(
            "ImageStatus",
            images.image_status(ImageStatusRequest {
                image: Some(ImageSpec { image: DEMO_REF.into(), ..Default::default() }),
                verbose: false,
            })
        );
        assert!(image.image.is_some(), "the imported image is not seen by the CRI plugin");

        // The pod sandbox: runner runs its pause container.
        let config = pod_config("unionfs-pod", &format!("uid-{}", std::process::id()), &cgroup_parent, &logs);
        let pod = cri!(
            "RunPodSandbox",
            runtime.run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: "runner".into(),
            })
        )
        .pod_sandbox_id;
        let state = ok(
            "runner state",
            std::process::Command::new(env!("CARGO_BIN_EXE_runner"))
                .args(["--root", "/run/containerd/runc/k8s.io", "state", &pod])
                .output()
                .unwrap(),
        );
        assert!(state.contains("\"running\""), "runner does not know the pause container: {state}");
        let status = cri!("PodSandboxStatus", runtime.pod_sandbox_status(PodSandboxStatusRequest { pod_sandbox_id: pod.clone(), verbose: false }));
        let status = status.status.unwrap();
        assert_eq!(status.state, PodSandboxState::SandboxReady as i32);
        assert_eq!(status.runtime_handler, "runner");

        // Two containers: a server on localhost:8080 and a client that exits 7 when told to.
        let mut ids = Vec::new();
        for (name, script, tty, pid) in [
            ("server", "echo server-starting; mkdir -p /www; echo pod-ok > /www/index.html; exec httpd -f -p 127.0.0.1:8080 -h /www", false, NamespaceMode::Container),
            ("client", "echo client-starting; while [ ! -e /tmp/stop ]; do sleep 0.1; done; exit 7", false, NamespaceMode::Container),
            // A terminal (runner's console socket, under the shim) and the pod's pid namespace.
            ("shared", "[ -t 1 ] && echo stdout-is-a-tty; echo \"pid 1: $(tr '\\0' ' ' < /proc/1/cmdline)\"; while :; do echo tick; sleep 0.2; done", true, NamespaceMode::Pod),
        ] {
            let id = cri!(
                format!("CreateContainer {name}"),
                runtime.create_container(CreateContainerRequest {
                    pod_sandbox_id: pod.clone(),
                    config: Some(container_config(name, script, tty, pid)),
                    sandbox_config: Some(config.clone()),
                })
            )
            .container_id;
            cri!(format!("StartContainer {name}"), runtime.start_container(StartContainerRequest { container_id: id.clone() }));
            ids.push(id);
        }
        let (server, client, shared) = (ids[0].clone(), ids[1].clone(), ids[2].clone());

        let exec = |id: String, cmd: &'static str| {
            let mut runtime = runtime.clone();
            async move {
                cri!(
                    format!("ExecSync {cmd}"),
                    runtime.exec_sync(ExecSyncRequest {
                        container_id: id,
                        cmd: vec!["/bin/sh".into(), "-c".into(), cmd.into()],
                        timeout: 30,
                    })
                )
            }
        };
        // The client reaches the server on localhost: one network namespace, the pod's.
        let mut fetched = None;
        for _ in 0..100 {
            let r = exec(client.clone(), "wget -q -O - http://127.0.0.1:8080/index.html").await;
            if r.exit_code == 0 {
                fetched = Some(String::from_utf8_lossy(&r.stdout).into_owned());
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(fetched.as_deref(), Some("pod-ok\n"), "the client never reached the server on localhost");
        // Network, IPC and UTS namespaces are the pod's in both; the pid namespaces are not.
        let ns = "readlink /proc/self/ns/net /proc/self/ns/ipc /proc/self/ns/uts; hostname";
        let a = exec(server.clone(), ns).await;
        let b = exec(client.clone(), ns).await;
        assert_eq!((a.exit_code, b.exit_code), (0, 0), "{a:?} {b:?}");
        assert_eq!(a.stdout, b.stdout);
        assert!(String::from_utf8_lossy(&a.stdout).ends_with("unionfs-pod\n"), "{a:?}");
        let pid = exec(client.clone(), "tr '\\0' ' ' < /proc/1/cmdline").await;
        let pid1 = String::from_utf8_lossy(&pid.stdout);
        assert!(pid1.contains("client-starting"), "the client's pid 1 is not its own shell: {pid1:?}");
        // The cgroup parent the kubelet chose.
        let cg = exec(client.clone(), "cat /proc/self/cgroup").await;
        assert!(String::from_utf8_lossy(&cg.stdout).contains(&format!("{cgroup_parent}/")), "{cg:?}");
        // Each container's root: a unionfs mount from the snapshotter, or kernel overlayfs.
        let root = exec(server.clone(), "grep ' / / ' /proc/self/mountinfo").await;
        let root = String::from_utf8_lossy(&root.stdout).into_owned();
        let want = if unionfs { " - fuse.unionfs " } else { " - overlay " };
        assert!(root.contains(want), "the server's / is not{want}: {root}");
        // ExecSync gives the command's exit code and stderr.
        let failed = exec(client.clone(), "echo oops >&2; exit 3").await;
        assert_eq!((failed.exit_code, failed.stderr.as_slice()), (3, &b"oops\n"[..]));

        // The client exits 7; ContainerStatus says so.
        exec(client.clone(), "touch /tmp/stop").await;
        let mut exited = None;
        for _ in 0..300 {
            let s = cri!("ContainerStatus", runtime.container_status(ContainerStatusRequest { container_id: client.clone(), verbose: false }))
                .status
                .unwrap();
            if s.state == ContainerState::ContainerExited as i32 {
                exited = Some(s);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let exited = exited.unwrap_or_else(|| {
            let log = env.log();
            let about: Vec<&str> = log.lines().filter(|l| l.contains(&client[..12]) && !l.contains("level=debug")).collect();
            panic!("the client never exited; containerd's log about it:\n{}", about.join("\n"))
        });
        assert_eq!(exited.exit_code, 7, "{exited:?}");
        // Logs through the shim, in the CRI's format.
        let log = fs::read_to_string(logs.join("server.log")).unwrap();
        assert!(log.lines().any(|l| l.contains(" stdout F server-starting")), "{log}");
        // The terminal container: its stdout is a tty, and it sees the pause process as pid 1.
        let log = wait_for("the shared container's log", Duration::from_secs(30), || {
            let log = fs::read_to_string(logs.join("shared.log")).unwrap_or_default();
            log.contains("pid 1:").then_some(log)
        });
        assert!(log.contains("stdout-is-a-tty"), "{log}");
        assert!(log.contains("pid 1: /bin/sleep 2147483647"), "{log}");
        let s = cri!("ContainerStatus", runtime.container_status(ContainerStatusRequest { container_id: shared.clone(), verbose: false }))
            .status
            .unwrap();
        assert_eq!(s.state, ContainerState::ContainerRunning as i32);

        // Attach (the kubelet's `kubectl attach`): the running terminal's output, live.
        let url = cri!(
            "Attach",
            runtime.attach(AttachRequest { container_id: shared.clone(), stdin: false, tty: true, stdout: true, stderr: false })
        )
        .url;
        let seen = tokio::time::timeout(
            Duration::from_secs(30),
            stream(&url, |ch| String::from_utf8_lossy(&ch[1]).matches("tick").count() >= 2),
        )
        .await
        .expect("no ticks through attach in 30 s");
        assert!(String::from_utf8_lossy(&seen[1]).contains("tick"), "{seen:?}");
        // Exec through the streaming server (`kubectl exec`): output, and the exit code in the
        // final status.
        let url = cri!(
            "Exec",
            runtime.exec(ExecRequest {
                container_id: server.clone(),
                cmd: vec!["/bin/sh".into(), "-c".into(), "echo streamed; echo to-stderr >&2; exit 5".into()],
                tty: false,
                stdin: false,
                stdout: true,
                stderr: true,
            })
        )
        .url;
        let got = tokio::time::timeout(Duration::from_secs(30), stream(&url, |_| false))
            .await
            .expect("the streamed exec did not end in 30 s");
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        assert_eq!((text(&got[1]), text(&got[2])), ("streamed\n".into(), "to-stderr\n".into()), "{got:?}");
        let status = text(&got[3]);
        assert!(status.contains("\"reason\":\"ExitCode\"") && status.contains("\"message\":\"5\""), "{status}");

        cri!("StopPodSandbox", runtime.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: pod.clone() }));
        let s = cri!("ContainerStatus", runtime.container_status(ContainerStatusRequest { container_id: server.clone(), verbose: false }))
            .status
            .unwrap();
        assert_eq!(s.state, ContainerState::ContainerExited as i32, "the server outlived StopPodSandbox");
        // Idempotent, as the kubelet expects.
        cri!("StopPodSandbox again", runtime.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: pod.clone() }));
        cri!("RemovePodSandbox", runtime.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: pod.clone() }));
        cri!("RemovePodSandbox again", runtime.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: pod.clone() }));
        let left = cri!("ListContainers", runtime.list_containers(ListContainersRequest { filter: None }));
        assert!(left.containers.is_empty(), "{left:?}");

        // Nothing left on the host: mounts, cgroups, processes (shim, pause, containers).
        for id in [&pod, &server, &client, &shared] {
            wait_for(&format!("nothing left of {id}"), Duration::from_secs(30), || leftovers(id).is_empty().then_some(()));
        }
    });
    let under_parent: Vec<String> = cgroups_under(std::path::Path::new("/sys/fs/cgroup"), 3)
        .into_iter()
        .filter(|p| p.contains(&cgroup_parent) && !p.ends_with(&cgroup_parent))
        .collect();
    assert_eq!(
        under_parent,
        Vec::<String>::new(),
        "container cgroups left under the pod's parent"
    );
    assert!(
        !fs::read_dir("/var/run/netns")
            .into_iter()
            .flatten()
            .flatten()
            .any(|ns| {
                let name = ns.file_name().to_string_lossy().into_owned();
                let links = std::process::Command::new("ip")
                    .args(["-n", &name, "-d", "link", "show"])
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&links.stdout).contains(&format!("alias {}\n", env.netdev))
            }),
        "the pod's network namespace is left"
    );
}
