#!/usr/bin/env python3
"""Small file-system loops for bench/run.sh, timed inside the process.

Creating or unlinking thousands of files from a shell would time the shell's forks, not the
file system, so these loops run in one process and time only the loop itself (time.perf_counter
around it, interpreter start-up excluded). Each timing command prints the elapsed seconds.

  fsops.py mktree DIR NDIRS FILES_PER_DIR   build the lower tree: DIR/dNNNN/fNNNNN (untimed)
  fsops.py mkfiles DIR N                    N small files DIR/fNNNNN with content (untimed)
  fsops.py create DIR N                     time creating N empty files DIR/fNNNNN
  fsops.py unlink DIR N                     time unlinking DIR/fNNNNN, N of them
  fsops.py fio-iops JSON                    print the read IOPS from fio's --output-format=json
"""
import json
import os
import sys
import time


def name(i):
    return f"f{i:05d}"


def payload(i):
    # Deterministic contents of 0..4095 bytes (about 2 KiB on average), so a tarball of the tree
    # carries data and not only headers.
    size = (i * 2654435761) % 4096
    return (f"{i:08d}\n" * (size // 9 + 1)).encode()[:size]


def write_file(path, data):
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def mktree(root, ndirs, per_dir):
    n = 0
    for d in range(ndirs):
        sub = os.path.join(root, f"d{d:04d}")
        os.makedirs(sub, exist_ok=True)
        for _ in range(per_dir):
            write_file(os.path.join(sub, name(n)), payload(n))
            n += 1


def mkfiles(root, n):
    os.makedirs(root, exist_ok=True)
    for i in range(n):
        write_file(os.path.join(root, name(i)), payload(i))


def create(root, n):
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY
    t0 = time.perf_counter()
    for i in range(n):
        os.close(os.open(os.path.join(root, name(i)), flags, 0o644))
    return time.perf_counter() - t0


def unlink(root, n):
    t0 = time.perf_counter()
    for i in range(n):
        os.unlink(os.path.join(root, name(i)))
    return time.perf_counter() - t0


def fio_iops(path):
    with open(path) as f:
        report = json.load(f)
    # --group_reporting folds all jobs into jobs[0].
    return report["jobs"][0]["read"]["iops"]


def main(argv):
    cmd, args = argv[1], argv[2:]
    if cmd == "mktree":
        mktree(args[0], int(args[1]), int(args[2]))
    elif cmd == "mkfiles":
        mkfiles(args[0], int(args[1]))
    elif cmd == "create":
        print(f"{create(args[0], int(args[1])):.6f}")
    elif cmd == "unlink":
        print(f"{unlink(args[0], int(args[1])):.6f}")
    elif cmd == "fio-iops":
        print(f"{fio_iops(args[0]):.1f}")
    else:
        sys.exit(f"fsops.py: unknown command {cmd!r}")


if __name__ == "__main__":
    main(sys.argv)
